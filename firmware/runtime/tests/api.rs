//! The management API's view of a real runtime on the simulated board:
//! uploads checked as the runtime checks files, the verdict of the swap, and
//! the metrics.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod support;

use std::path::Path;
use std::sync::Arc;

use support::{device, example, manifest, pack};
use trellis_api::Device as _;
use trellis_runtime::api::ApiDevice;
use trellis_update::control::{DeviceStatus, Handler};
use trellis_update::{FirmwareStatus, Progress, UpdateRecord};

/// Status without firmware updates (the host has no RAUC).
struct Apps(Arc<trellis_runtime::Runtime>);

impl Handler for Apps {
    fn status(&self) -> DeviceStatus {
        let firmware = FirmwareStatus::idle();
        DeviceStatus { uptime_ms: 1500, firmware, apps: trellis_runtime::device::apps(&self.0) }
    }
    fn install(&self, _: &Path, _: &mut dyn FnMut(&Progress)) -> Result<UpdateRecord, String> {
        Err("no firmware updates here".into())
    }
    fn installed(&self) {}
}

#[test]
fn uploads_are_checked_like_copied_files_and_the_swap_is_reported() {
    let dev = device(&[("blinky", example("blinky"))], |_| {});
    dev.wait_started("blinky", "1.0.0");
    let runtime = Arc::new(dev.runtime);
    let mut config = trellis_runtime::RuntimeConfig::new(dev.dir.path().join("apps"), dev.dir.path().join("state"));
    let api = ApiDevice::new(runtime.clone(), config.clone(), Arc::new(Apps(runtime.clone())));

    let mut v2 = manifest("blinky");
    v2.version = "2.0.0".into();
    let good = pack("blinky", &v2);
    assert_eq!(api.verify_app("blinky", &good).unwrap(), "2.0.0");
    let misnamed = api.verify_app("thermostat", &good).unwrap_err();
    assert!(misnamed.contains("the manifest names the app \"blinky\""), "{misnamed}");
    assert!(api.verify_app("blinky", &good[..good.len() / 2]).is_err(), "a truncated file");

    // The verdict: the new version runs...
    let verdict = api.watch_app("blinky");
    support::install(&api.apps_dir(), "blinky", &good);
    verdict.wait("2.0.0").unwrap();
    // ... or the runtime refuses it and the old one runs on.
    let mut greedy = manifest("blinky");
    greedy.version = "3.0.0".into();
    greedy.permissions.gpio_outputs = vec![99];
    let verdict = api.watch_app("blinky");
    support::install(&api.apps_dir(), "blinky", &pack("blinky", &greedy));
    let why = verdict.wait("3.0.0").unwrap_err();
    assert!(why.contains("refused, the old version runs on") && why.contains("GPIO line 99"), "{why}");

    // The log: the swap and the refusal are in the recent entries (the log's
    // own thread takes the events, so give it a moment), and a follower gets
    // what comes next.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (recent, live) = loop {
        let (recent, live) = api.logs();
        if recent.iter().any(|e| e.contains("refused a new file")) || std::time::Instant::now() > deadline {
            break (recent, live);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let recent = recent.join("\n");
    assert!(recent.contains(r#""app":"blinky""#) && recent.contains("2.0.0 replaced 1.0.0"), "{recent}");
    assert!(recent.contains("refused a new file, the old version runs on"), "{recent}");
    let mut v4 = manifest("blinky");
    v4.version = "4.0.0".into();
    support::install(&api.apps_dir(), "blinky", &pack("blinky", &v4));
    let next = live.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
    let entry: serde_json::Value = serde_json::from_str(&next).unwrap();
    assert_eq!(entry["app"], "blinky", "{next}");
    assert!(entry["time"].as_f64().unwrap() > 1.7e9, "seconds since the epoch: {next}");
    dev_wait(&api, "4.0.0", &live);

    let metrics = api.metrics();
    assert!(metrics.contains("trellis_uptime_seconds 1.500\n"), "{metrics}");
    assert!(metrics.contains("trellis_app_running{app=\"blinky\",version=\"4.0.0\"} 1\n"), "{metrics}");
    assert!(metrics.contains("trellis_app_restarts_total{app=\"blinky\"} 0\n"), "{metrics}");
    // Resource use per app: its linear memory now and the time spent in it.
    let memory: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("trellis_app_memory_bytes{app=\"blinky\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(memory >= 64 * 1024, "at least one wasm page: {metrics}");
    assert!(metrics.contains("trellis_app_cpu_seconds_total{app=\"blinky\"} "), "{metrics}");
    let blinky = trellis_runtime::device::apps(&runtime).into_iter().find(|a| a.name == "blinky").unwrap();
    assert_eq!(blinky.memory_bytes, memory);
    assert!(blinky.calls >= 1, "start was a call: {blinky:?}");

    // With signatures required, an unsigned upload is refused before it is written.
    config.require_signatures = true;
    let strict = ApiDevice::new(runtime.clone(), config, Arc::new(Apps(runtime)));
    let unsigned = strict.verify_app("blinky", &good).unwrap_err();
    assert!(unsigned.contains("not signed") || unsigned.contains("unsigned"), "{unsigned}");
}

/// Follow `live` until blinky `version` started.
fn dev_wait(api: &ApiDevice, version: &str, live: &std::sync::mpsc::Receiver<String>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if api.apps().iter().any(|a| a.name == "blinky" && a.version == version) {
            return;
        }
        let _ = live.recv_timeout(std::time::Duration::from_millis(200));
    }
    panic!("blinky {version} did not start");
}
