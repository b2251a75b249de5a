//! Shared test helpers: the example apps built by `make apps`, packing them
//! with changed manifests, and a runtime on a simulated board in a temp dir.

#![allow(dead_code, clippy::unwrap_used, clippy::missing_panics_doc)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_appfmt::Manifest;
use trellis_hal::sim::SimBoard;
use trellis_runtime::{Clock, EventReceiver, FakeClock, Runtime, RuntimeConfig, RuntimeEvent};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The compiled component `name` from `wasm-apps/` (built by `make apps`).
pub fn component(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("TRELLIS_WASM_DIR")
        .map_or_else(|| repo().join("wasm-apps/target/wasm32-wasip2/release"), PathBuf::from);
    let path = dir.join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; build the apps first with `make apps`", path.display()))
}

/// The manifest in `wasm-apps/{examples,fixtures}/name/trellis.toml`.
pub fn manifest(name: &str) -> Manifest {
    for group in ["examples", "fixtures"] {
        let path = repo().join("wasm-apps").join(group).join(name).join("trellis.toml");
        if let Ok(text) = std::fs::read_to_string(&path) {
            return Manifest::from_toml(&text).unwrap();
        }
    }
    panic!("no manifest for {name}");
}

/// Component `code` packed with `manifest`.
pub fn pack(code: &str, manifest: &Manifest) -> Vec<u8> {
    trellis_appfmt::pack(&component(code), manifest).unwrap()
}

/// An example app as shipped.
pub fn example(name: &str) -> Vec<u8> {
    pack(name, &manifest(name))
}

/// `manifest` with config `key` set to `value`.
pub fn with_config(mut m: Manifest, pairs: &[(&str, &str)]) -> Manifest {
    for (k, v) in pairs {
        m.config.insert((*k).to_owned(), (*v).to_owned());
    }
    m
}

#[derive(Debug)]
pub struct TestRuntime {
    pub dir: tempfile::TempDir,
    pub board: SimBoard,
    pub runtime: Runtime,
    pub events: EventReceiver,
    backlog: RefCell<VecDeque<RuntimeEvent>>,
}

impl TestRuntime {
    pub fn apps(&self) -> PathBuf {
        self.dir.path().join("apps")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Put an app file in place the way a careful writer does: a temporary
    /// name, then a rename.
    pub fn install(&self, name: &str, bytes: &[u8]) {
        install(&self.apps(), name, bytes);
    }

    /// Wait until an event matches `pred`; panics with what was seen otherwise.
    /// Events seen while waiting for others are kept, so waits can come in any order.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&RuntimeEvent) -> bool) -> RuntimeEvent {
        let mut backlog = self.backlog.borrow_mut();
        if let Some(i) = backlog.iter().position(&pred) {
            return backlog.remove(i).unwrap();
        }
        let deadline = Instant::now() + timeout;
        while let Ok(e) = self.events.recv_deadline(deadline) {
            if pred(&e) {
                return e;
            }
            backlog.push_back(e);
        }
        let seen: Vec<&RuntimeEvent> = backlog.iter().filter(|e| !matches!(e, RuntimeEvent::Log { .. })).collect();
        panic!("timed out waiting for {what}; saw {seen:#?}");
    }

    pub fn wait_started(&self, app: &str, version: &str) {
        self.wait_for(
            &format!("{app} {version} started"),
            Duration::from_secs(30),
            |e| matches!(e, RuntimeEvent::Started { app: a, version: v, .. } if a == app && v == version),
        );
    }

    pub fn wait_refused(&self, app: &str) -> String {
        match self.wait_for(
            &format!("{app} refused"),
            Duration::from_secs(30),
            |e| matches!(e, RuntimeEvent::Refused { app: Some(a), .. } if a == app),
        ) {
            RuntimeEvent::Refused { reason, .. } => reason,
            _ => unreachable!(),
        }
    }

    pub fn running_version(&self, app: &str) -> Option<String> {
        self.runtime.app_status(app).filter(|s| s.state == trellis_runtime::AppState::Running).map(|s| s.version)
    }
}

pub fn install(dir: &Path, name: &str, bytes: &[u8]) {
    trellis_layout::write_atomic(&trellis_layout::AppsDir::new(dir).path(name), bytes).unwrap();
}

/// A device with `apps` (name, bytes) in its apps directory, started.
pub fn device(apps: &[(&str, Vec<u8>)], configure: impl FnOnce(&mut RuntimeConfig)) -> TestRuntime {
    let dir = tempfile::tempdir().unwrap();
    let apps_dir = dir.path().join("apps");
    std::fs::create_dir_all(&apps_dir).unwrap();
    for (name, bytes) in apps {
        install(&apps_dir, name, bytes);
    }
    boot(dir, configure)
}

/// Start a runtime over an existing directory (a reboot).
pub fn boot(dir: tempfile::TempDir, configure: impl FnOnce(&mut RuntimeConfig)) -> TestRuntime {
    start(dir, configure, trellis_runtime::SystemClock::shared())
}

/// Like [`device`], with the supervisor on a fake clock the test advances
/// ([`TestRuntime::advance`]): back-off, crash windows and "good after" take
/// no real time.
pub fn device_on_fake_clock(apps: &[(&str, Vec<u8>)]) -> (TestRuntime, Arc<FakeClock>) {
    device_on_fake_clock_with(apps, |_| {})
}

/// [`device_on_fake_clock`], configured by `configure`.
pub fn device_on_fake_clock_with(
    apps: &[(&str, Vec<u8>)],
    configure: impl FnOnce(&mut RuntimeConfig),
) -> (TestRuntime, Arc<FakeClock>) {
    let dir = tempfile::tempdir().unwrap();
    let apps_dir = dir.path().join("apps");
    std::fs::create_dir_all(&apps_dir).unwrap();
    for (name, bytes) in apps {
        install(&apps_dir, name, bytes);
    }
    let clock = Arc::new(FakeClock::default());
    (start(dir, configure, clock.clone()), clock)
}

fn start(dir: tempfile::TempDir, configure: impl FnOnce(&mut RuntimeConfig), clock: Arc<dyn Clock>) -> TestRuntime {
    let mut config = RuntimeConfig::new(dir.path().join("apps"), dir.path().join("state"));
    configure(&mut config);
    let board = SimBoard::standard();
    // Subscribe before starting so no event of the first loads is missed.
    let (runtime, events) = Runtime::start_with_clock(config, board.board(), clock).unwrap();
    TestRuntime { dir, board, runtime, events, backlog: RefCell::new(VecDeque::new()) }
}
