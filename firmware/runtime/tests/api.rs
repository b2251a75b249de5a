//! The runtime as a device (the one implementation of the device interface)
//! on the simulated board: uploads go through the runtime's own load, whose
//! verdict is the answer; refusals write nothing; the log and the metrics.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{device, example, manifest, pack};
use trellis_control::{AppError, Device as _, FirmwareStatus, Progress, UpdateRecord};
use trellis_runtime::device::{Firmware, RuntimeDevice};

/// The firmware side of a host without RAUC: no updates, a known uptime.
struct NoUpdates;

impl Firmware for NoUpdates {
    fn status(&self) -> FirmwareStatus {
        FirmwareStatus::idle()
    }
    fn uptime(&self) -> Duration {
        Duration::from_millis(1500)
    }
    fn install(&self, _: &trellis_control::Bundle, _: &mut dyn FnMut(&Progress)) -> Result<UpdateRecord, String> {
        Err("no firmware updates here".into())
    }
    fn reboot_into_trial(&self) -> Result<(), String> {
        Err("no firmware updates here".into())
    }
    fn reboot(&self) -> Result<(), String> {
        Err("no reboots here".into())
    }
}

#[test]
fn uploads_are_checked_like_copied_files_and_the_swap_is_reported() {
    let dev = device(&[("blinky", example("blinky"))], |_| {});
    dev.wait_started("blinky", "1.0.0");
    let apps_dir = dev.apps();
    let runtime = Arc::new(dev.runtime);
    let config = trellis_runtime::RuntimeConfig::new(dev.dir.path().join("apps"), dev.dir.path().join("state"));
    let api = RuntimeDevice::new(runtime.clone(), config).with_firmware(Arc::new(NoUpdates));
    let file = |name: &str| std::fs::read(apps_dir.join(format!("{name}.wasm"))).ok();

    let mut v2 = manifest("blinky");
    v2.version = "2.0.0".into();
    let good = pack("blinky", &v2);
    // Refusals: the old version runs on and its file stays as it was.
    let before = file("blinky");
    let misnamed = api.install_app("thermostat", &good).unwrap_err();
    assert!(misnamed.to_string().contains("the manifest names the app \"blinky\""), "{misnamed}");
    assert_eq!(misnamed.status(), 422);
    assert_eq!(file("thermostat"), None, "a refused upload is not written");
    let truncated = api.install_app("blinky", &good[..good.len() / 2]).unwrap_err();
    assert!(matches!(truncated, AppError::Refused(_)), "a truncated file: {truncated}");
    assert_eq!(file("blinky"), before);

    // The verdict is the load's own: the new version runs, then its file is in place...
    let done = api.install_app("blinky", &good).unwrap();
    assert_eq!((done.version.as_str(), done.replaced.as_deref()), ("2.0.0", Some("1.0.0")));
    assert_eq!(file("blinky").as_deref(), Some(good.as_slice()));
    assert!(api.apps().iter().any(|a| a.name == "blinky" && a.version == "2.0.0" && a.state == "running"));
    // ... or the runtime refuses it and the old one runs on.
    let mut greedy = manifest("blinky");
    greedy.version = "3.0.0".into();
    greedy.permissions.gpio_outputs = vec![99];
    let why = api.install_app("blinky", &pack("blinky", &greedy)).unwrap_err().to_string();
    assert!(why.contains("refused, the old version runs on") && why.contains("GPIO line 99"), "{why}");
    assert_eq!(file("blinky").as_deref(), Some(good.as_slice()), "the refused file did not replace the running one");

    // The log: the swap and the refusal are in the recent entries (the log's
    // own thread takes the events, so give it a moment), and a follower gets
    // what comes next.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (recent, live) = loop {
        let (recent, live) = api.logs();
        let all = recent.join("\n");
        // The first refusals were logged before the swap: wait for the
        // swap and for the last refusal (GPIO line 99), not the first line.
        let done = all.contains("2.0.0 replaced 1.0.0") && all.contains("GPIO line 99");
        if done || Instant::now() > deadline {
            break (recent, live);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let recent = recent.join("\n");
    assert!(recent.contains(r#""app":"blinky""#) && recent.contains("2.0.0 replaced 1.0.0"), "{recent}");
    assert!(recent.contains("refused a new file, the old version runs on"), "{recent}");
    assert!(recent.contains("GPIO line 99"), "the runtime's refusal is logged too: {recent}");
    // A file copied in (cp, scp) is still swapped in by the watcher.
    let mut v4 = manifest("blinky");
    v4.version = "4.0.0".into();
    support::install(&api.apps_dir(), "blinky", &pack("blinky", &v4));
    let next = live.recv_timeout(Duration::from_secs(30)).unwrap();
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

    // Removal stops the app and removes its file.
    api.remove_app("blinky").unwrap();
    assert_eq!(file("blinky"), None);
    assert!(api.apps().iter().all(|a| a.name != "blinky"));
    assert_eq!(api.remove_app("blinky").unwrap_err().status(), 404);
}

#[test]
fn with_signatures_required_an_unsigned_upload_is_refused_before_it_is_written() {
    let dev = device(&[], |c| {
        c.require_signatures = true;
        c.trust = Vec::new(); // no key trusted: every app is refused
    });
    let apps_dir = dev.apps();
    let config = trellis_runtime::RuntimeConfig::new(&apps_dir, dev.dir.path().join("state"));
    let strict = RuntimeDevice::new(Arc::new(dev.runtime), config);
    let unsigned = strict.install_app("blinky", &example("blinky")).unwrap_err().to_string();
    assert!(unsigned.contains("not signed") || unsigned.contains("unsigned"), "{unsigned}");
    assert!(!apps_dir.join("blinky.wasm").exists());
}

/// `PUT /v1/apps/NAME` as the management API receives it: the status, the
/// body and how long the answer took.
fn put(routes: &trellis_api::Routes, name: &str, bytes: &[u8]) -> (u16, String, Duration) {
    let raw =
        [format!("PUT /v1/apps/{name} HTTP/1.1\r\nContent-Length: {}\r\n\r\n", bytes.len()).as_bytes(), bytes].concat();
    let (head, used) = trellis_api::http::parse_head(&raw).unwrap().unwrap();
    let t0 = Instant::now();
    let answer = routes.route(&head, &mut &raw[used..]).collect().unwrap();
    (answer.status, String::from_utf8_lossy(&answer.body).into_owned(), t0.elapsed())
}

/// Uploading the bytes that already run is answered at once (the load's own
/// outcome), not after a wait for an event that never comes.
#[test]
fn uploading_the_running_bytes_again_succeeds_at_once() {
    let dev = device(&[("blinky", example("blinky"))], |_| {});
    dev.wait_started("blinky", "1.0.0");
    let config = trellis_runtime::RuntimeConfig::new(dev.apps(), dev.dir.path().join("state"));
    let routes = trellis_api::Routes::new(Arc::new(RuntimeDevice::new(Arc::new(dev.runtime), config)), 1 << 24);
    let (status, body, took) = put(&routes, "blinky", &example("blinky"));
    assert_eq!(status, 201, "{body}");
    assert!(body.contains("1.0.0"), "{body}");
    assert!(took < Duration::from_secs(10), "answered in {took:?}");
}

/// An app the configuration's `only` list excludes is refused at once, naming
/// the setting, and nothing is written.
#[test]
fn uploading_an_app_the_configuration_does_not_run_is_refused_at_once() {
    let dev = device(&[("blinky", example("blinky"))], |c| c.only = Some(vec!["blinky".into()]));
    dev.wait_started("blinky", "1.0.0");
    let apps_dir = dev.apps();
    let mut config = trellis_runtime::RuntimeConfig::new(&apps_dir, dev.dir.path().join("state"));
    config.only = Some(vec!["blinky".into()]);
    let routes = trellis_api::Routes::new(Arc::new(RuntimeDevice::new(Arc::new(dev.runtime), config)), 1 << 24);
    let (status, body, took) = put(&routes, "counter", &example("counter"));
    assert!(took < Duration::from_secs(10), "answered in {took:?}");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("`only`") && body.contains("counter"), "{body}");
    assert!(!apps_dir.join("counter.wasm").exists(), "nothing was written");
}

/// Follow `live` until blinky `version` started.
fn dev_wait(api: &RuntimeDevice, version: &str, live: &std::sync::mpsc::Receiver<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if api.apps().iter().any(|a| a.name == "blinky" && a.version == version) {
            return;
        }
        let _ = live.recv_timeout(Duration::from_millis(200));
    }
    panic!("blinky {version} did not start");
}
