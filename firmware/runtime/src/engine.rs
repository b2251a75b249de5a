//! The wasmtime engine (pooling allocator, epoch interruption) and the linker
//! holding every host import.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use trellis_appfmt::Limits;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ProfilingStrategy};

use crate::RuntimeError;
use crate::bindings::App;
use crate::config::Profiler;
use crate::host::HostState;

/// Address space each linear memory reserves: all a 32-bit index reaches.
const MEMORY_RESERVATION: u64 = 1 << 32;
/// Unmapped address space after each linear memory.
const MEMORY_GUARD: u64 = 32 << 20;

/// Build the engine: one per runtime.
///
/// The pool holds twice `max_apps` component instances (old and new version
/// side by side during a swap). Each linear memory reserves 4 GiB of address
/// space and a 32 MiB guard after it, so compiled code needs no explicit
/// bounds check: a 32-bit index plus any offset below the guard lands in
/// memory or in the guard, which traps (MobileNetV2 takes a fifth less time
/// through rten, an eighth less through tract, than with 256 MiB reservations
/// and explicit checks). The pool of
/// `max_apps` 32 reserves about 1 TiB, untouched and uncommitted: the
/// images' kernels have 48-bit addresses (`CONFIG_ARM64_VA_BITS_48`); on a
/// 39-bit kernel lower `max-apps` to 8.
///
/// `profiler` announces the code it compiles (or loads from the cache) to
/// `perf`; it changes no instruction of it. A profiler that cannot start
/// (its file cannot be written) is logged and left out: never a reason not
/// to run apps.
pub(crate) fn engine(max_apps: u32, profiler: Profiler) -> Result<Engine, RuntimeError> {
    let instances = max_apps.max(1) * 2;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances * 16)
        .total_memories(instances * 4)
        .total_tables(instances * 8)
        .total_stacks(instances)
        .max_memory_size(Limits::MAX_MEMORY_KIB as usize * 1024)
        .max_unused_warm_slots(4);
    let mut config = code_config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let new = |config: &Config| Engine::new(config).map_err(|e| RuntimeError::Engine(format!("{e:#}")));
    let strategy = match profiler {
        Profiler::None => return new(&config),
        Profiler::Perfmap => ProfilingStrategy::PerfMap,
        Profiler::Jitdump => ProfilingStrategy::JitDump,
    };
    let mut profiled = config.clone();
    profiled.profiler(strategy);
    match Engine::new(&profiled) {
        Ok(engine) => Ok(engine),
        Err(e) => {
            // Blamed on the profiler only if the engine starts without it.
            let engine = new(&config)?;
            tracing::warn!("profiler {} cannot start ({e:#}): apps run without it", profiler.describe());
            Ok(engine)
        }
    }
}

/// Every setting of the engine that shapes the code it compiles: the
/// runtime's engine and [`precompile`]'s use the same, so code compiled on a
/// build machine loads on the device.
fn code_config() -> Config {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .wasm_component_model(true)
        .memory_reservation(MEMORY_RESERVATION)
        .memory_guard_size(MEMORY_GUARD)
        .memory_reservation_for_growth(0)
        .max_wasm_stack(512 * 1024);
    config
}

/// Compile the code of app file `app` ahead of time for `target` (a target
/// triple: `aarch64-unknown-linux-gnu` for a Pi 4) with the runtime's engine
/// settings, and return the app file carrying it ([`trellis_appfmt::with_native`];
/// unsigned: a runtime loads precompiled code only from a file signed by a key
/// it trusts).
///
/// # Errors
/// The file is not a usable app, the target is unknown to this build's
/// compiler, or the component does not compile.
pub fn precompile(app: &[u8], target: &str) -> Result<Vec<u8>, RuntimeError> {
    let engine_error = |e: wasmtime::Error| RuntimeError::Engine(format!("precompiling for {target}: {e:#}"));
    let code = trellis_appfmt::component_code(app).map_err(|e| RuntimeError::Engine(e.to_string()))?;
    let mut config = code_config();
    config.target(target).map_err(engine_error)?;
    let engine = Engine::new(&config).map_err(engine_error)?;
    let compiled = engine.precompile_component(&code).map_err(engine_error)?;
    trellis_appfmt::with_native(app, target, &compiled).map_err(|e| RuntimeError::Engine(e.to_string()))
}

/// The linker: WASI 0.2 (clocks, random; no files, sockets or environment are
/// granted in the context), wasi:http's outgoing handler (to the manifest's
/// hosts only) plus the `trellis:app` imports.
pub(crate) fn linker(engine: &Engine) -> Result<Linker<HostState>, RuntimeError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
    // wasi:http's outgoing handler; every request goes through the app's `HttpHooks`.
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)
        .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
    App::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
        .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
    Ok(linker)
}

/// Advances the engine's epoch every `tick` until dropped; call deadlines are
/// counted in these ticks.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: Engine, tick: Duration) -> Result<Self, RuntimeError> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("epoch".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch thread: {e}")))?;
        Ok(Self { stop, thread: Some(thread) })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
