//! The host side of the `trellis:app` world: what an app's imports do, with
//! every permission checked against its manifest before anything happens.
//!
//! This module owns the per-app [`HostState`] (the data of its `Store`), the
//! [`Services`] every app shares, and the helpers several interfaces use
//! (refusals, blocking-time accounting, forgetting unplugged buses). Each WIT
//! interface's `Host` impl lives in its own file, as `wasmtime-wasi` does;
//! `types` and `events` declare no functions and are implemented here.

mod assets;
mod clocks;
mod gpio;
mod hotplug;
mod http;
mod i2c;
mod kv;
mod log;
mod pubsub;
mod pwm;
mod spi;
mod timers;
mod usage;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trellis_appfmt::Manifest;
use trellis_hal::i2c::I2cBus;
use trellis_hal::spi::SpiBus;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings::WitError;
use crate::bindings::trellis::app::{events, types};
use crate::broker::{Broker, Subscriptions};
use crate::events::{EventBus, RuntimeEvent};
use crate::hw::Hardware;
use crate::kv::KvStore;

pub(crate) use timers::Timers;
pub use usage::Usage;
pub(crate) use usage::{MemoryLimitExceeded, MemoryLimiter};

/// Largest single I2C or SPI transfer.
const MAX_TRANSFER: usize = 4096;

/// Services shared by every app.
pub(crate) struct Services {
    pub hw: Arc<Hardware>,
    pub broker: Arc<Broker>,
    pub events: EventBus,
    /// Told after each change of the apps directory is handled.
    pub apps_changed: EventBus<()>,
    pub epoch: Instant,
    /// How much each app may log.
    pub app_log: crate::config::LogPolicy,
    /// Per-app outgoing rate limits (`[network]`), when set up.
    pub shaper: Option<Arc<crate::shaping::Shaper>>,
    /// Apps' assets: the blocks on the device, and the origin of the rest.
    pub assets: Arc<trellis_assets::Fetcher>,
}

/// The data of one app's `Store`.
pub(crate) struct HostState {
    pub app: String,
    pub generation: u64,
    pub manifest: Arc<Manifest>,
    pub services: Arc<Services>,
    pub kv: Arc<Mutex<KvStore>>,
    pub limiter: MemoryLimiter,
    pub timers: Timers,
    /// Subscriptions made by this version; applied to the broker at commit.
    pub subs: Subscriptions,
    /// Committed: subscriptions go to the broker at once.
    pub live: bool,
    /// When the current call into the app began (wall clock, and this
    /// thread's CPU clock), and how much of its CPU time the host spent in
    /// calls that may block (not charged to the app's deadline).
    call_started: Instant,
    call_started_cpu: Duration,
    host_time: Duration,
    /// The deadline of the current call.
    call_limit: Duration,
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    http_hooks: http::HttpHooks,
    i2c: HashMap<u32, Box<dyn I2cBus>>,
    spi: HashMap<String, Box<dyn SpiBus>>,
    /// [`Hardware::unplugged`] when the handles above were last checked.
    unplugged: u64,
    /// The app's log rate limit.
    log_limit: log::LogLimiter,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.http_hooks }
    }
}

impl HostState {
    pub fn new(
        app: &str,
        generation: u64,
        manifest: Arc<Manifest>,
        services: Arc<Services>,
        kv: Arc<Mutex<KvStore>>,
        usage: Arc<Usage>,
    ) -> Self {
        // No arguments, environment, preopened directories or network: WASI gives
        // clocks and randomness only; everything else goes through `trellis:app`.
        let wasi =
            wasmtime_wasi::WasiCtxBuilder::new().allow_ip_name_lookup(false).allow_tcp(false).allow_udp(false).build();
        let log_limit = log::LogLimiter::new(services.app_log, services.epoch.elapsed());
        // A limited app's sockets carry its mark: its traffic class in the shaper.
        let mark = services
            .shaper
            .as_ref()
            .filter(|_| manifest.limits.net_kbit > 0)
            .and_then(|s| s.mark(app).inspect_err(|e| tracing::warn!(app, "{e}: its traffic is not limited")).ok());
        let http_hooks = http::HttpHooks::new(app, &manifest, mark, services.clone());
        Self {
            app: app.to_owned(),
            generation,
            limiter: MemoryLimiter::new(manifest.limits.memory_bytes(), usage),
            manifest,
            services,
            kv,
            timers: Timers::default(),
            subs: Subscriptions::default(),
            live: false,
            call_started: Instant::now(),
            call_started_cpu: Duration::ZERO,
            host_time: Duration::ZERO,
            call_limit: Duration::ZERO,
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            http_hooks,
            i2c: HashMap::new(),
            spi: HashMap::new(),
            unplugged: 0,
            log_limit,
        }
    }

    /// A call into the app begins, with `limit` for the app's own time.
    pub fn begin_call(&mut self, limit: Duration) {
        self.call_started = Instant::now();
        self.call_started_cpu = thread_cpu_time();
        self.host_time = Duration::ZERO;
        self.call_limit = limit;
    }

    /// The call [`HostState::begin_call`] began is over: count it in the app's usage.
    pub fn end_call(&self) {
        self.limiter.usage().called(self.call_started.elapsed());
    }

    /// Time the current call has spent in the app itself, and its limit.
    ///
    /// It is the CPU time of the app's thread (Linux's thread CPU clock), less
    /// what host calls that may block used: waiting (on a response, a bus, a
    /// CPU share that other apps outweigh) costs the app nothing.
    pub fn guest_time(&self) -> (Duration, Duration) {
        let used = thread_cpu_time().saturating_sub(self.call_started_cpu);
        (used.saturating_sub(self.host_time), self.call_limit)
    }

    /// Run a host operation that may block on I/O, not charging it to the app.
    fn blocking<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let t = thread_cpu_time();
        let r = f(self);
        self.host_time += thread_cpu_time().saturating_sub(t);
        r
    }

    /// Refuse with `Denied`, naming what and the app in the log.
    fn denied(&self, what: String) -> WitError {
        tracing::warn!(app = %self.app, "denied: {what}");
        self.services.events.emit(RuntimeEvent::Denied { app: self.app.clone(), reason: what.clone() });
        WitError::Denied(what)
    }

    fn io_error(&self, what: String) -> WitError {
        tracing::debug!(app = %self.app, "host call failed: {what}");
        WitError::Io(what)
    }

    /// Drop the open I2C and SPI handles when a device went away since they
    /// were last used: the next use opens the device again, or fails naming it.
    fn forget_unplugged(&mut self) {
        let now = self.services.hw.unplugged();
        if now != self.unplugged {
            self.unplugged = now;
            self.i2c.clear();
            self.spi.clear();
        }
    }

    fn check_len(len: usize) -> Result<(), WitError> {
        if len > MAX_TRANSFER {
            return Err(WitError::Invalid(format!("transfer of {len} bytes is above the {MAX_TRANSFER}-byte limit")));
        }
        Ok(())
    }
}

/// CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0))
}

impl types::Host for HostState {}
impl events::Host for HostState {}
