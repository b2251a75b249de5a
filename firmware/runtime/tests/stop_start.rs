//! Stopping and starting apps on request: a stopped app keeps its file, its
//! key-value store and its last good copy, is not restarted by crash
//! handling, stays stopped across reboots and through new versions, and runs
//! again once started.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{device, device_on_fake_clock, example, manifest, pack, with_config};
use trellis_control::Device as _;
use trellis_runtime::device::RuntimeDevice;
use trellis_runtime::{AppState, LoadError, RuntimeEvent};

const SECS: Duration = Duration::from_secs(30);

fn state(dev: &support::TestRuntime, app: &str) -> Option<(AppState, String)> {
    dev.runtime.app_status(app).map(|s| (s.state, s.version))
}

fn stopped_list(dev: &support::TestRuntime) -> String {
    std::fs::read_to_string(dev.state().join("stopped")).unwrap_or_default()
}

fn tick(rx: &trellis_runtime::MessageReceiver) -> u64 {
    String::from_utf8(rx.recv_timeout(SECS).unwrap().payload).unwrap().parse().unwrap()
}

/// Nothing arrives on `rx` for `quiet`.
fn silent<T: std::fmt::Debug>(rx: &crossbeam_channel::Receiver<T>, quiet: Duration) {
    while rx.try_recv().is_ok() {}
    if let Ok(m) = rx.recv_timeout(quiet) {
        panic!("a stopped app still publishes: {m:?}");
    }
}

#[test]
fn a_stopped_app_stays_stopped_across_a_reboot_and_starts_where_it_left_off() {
    let fast = with_config(manifest("counter"), &[("period-ms", "10")]);
    let dev = device(&[("counter", pack("counter", &fast)), ("blinky", example("blinky"))], |_| {});
    dev.wait_started("counter", "1.0.0");
    dev.wait_started("blinky", "1.0.0");
    let values = dev.runtime.subscribe("counter/value");
    let counted = tick(&values);

    dev.runtime.stop_app("counter").unwrap();
    let e =
        dev.wait_for("counter stopped", SECS, |e| matches!(e, RuntimeEvent::Stopped { app, .. } if app == "counter"));
    assert_eq!(e, RuntimeEvent::Stopped { app: "counter".into(), reason: "stopped on request".into() });
    assert_eq!(state(&dev, "counter"), Some((AppState::Stopped, "1.0.0".into())));
    silent(&values, Duration::from_millis(300));
    // Its file, its key-value store and the record of the stop stay.
    assert!(dev.apps().join("counter.wasm").exists());
    assert!(dev.state().join("kv/counter.db").exists());
    assert_eq!(stopped_list(&dev), "counter\n");
    // Stopping it again changes nothing; blinky stopped frees its line.
    dev.runtime.stop_app("counter").unwrap();
    assert_eq!(dev.board.gpio.holder(17).as_deref(), Some("blinky"));
    dev.runtime.stop_app("blinky").unwrap();
    assert!(dev.board.gpio.holder(17).is_none(), "a stopped app holds no GPIO line");
    assert_eq!(stopped_list(&dev), "blinky\ncounter\n");
    dev.runtime.start_app("blinky").unwrap();
    assert_eq!(dev.board.gpio.holder(17).as_deref(), Some("blinky"));

    // Unknown apps and names that are none are named.
    let e = dev.runtime.stop_app("nope").unwrap_err();
    assert!(matches!(e, LoadError::NoApp { .. }) && e.to_string() == "no app nope", "{e}");
    let e = dev.runtime.start_app("nope").unwrap_err();
    assert_eq!(e.to_string(), "no app nope");
    assert!(matches!(dev.runtime.stop_app("../x").unwrap_err(), LoadError::FileName { .. }));

    // A reboot: blinky runs, counter stays stopped (and the device is healthy).
    let support::TestRuntime { dir, runtime, .. } = dev;
    runtime.shutdown();
    let dev = support::boot(dir, |_| {});
    dev.wait_started("blinky", "1.0.0");
    assert_eq!(state(&dev, "counter"), Some((AppState::Stopped, "1.0.0".into())));
    let config = trellis_runtime::RuntimeConfig::new(dev.apps(), dev.state());
    let runtime = Arc::new(dev.runtime);
    assert_eq!(trellis_runtime::device::health(&runtime, &config), Ok(()), "stopped on request is not a fault");
    let values = runtime.subscribe("counter/value");
    silent(&values, Duration::from_millis(300));

    // Started through the device interface: it counts on from its store.
    let api = RuntimeDevice::new(runtime.clone(), config);
    let summary = api.start_app("counter").unwrap();
    assert_eq!(
        (summary.name.as_str(), summary.version.as_str(), summary.state.as_str()),
        ("counter", "1.0.0", "running")
    );
    let next = tick(&values);
    assert!(next > counted, "counted {counted} before the stop, {next} after the start");
    assert_eq!(std::fs::read_to_string(dev.dir.path().join("state/stopped")).unwrap(), "", "no longer recorded");
    // Through the device interface: the summary says stopped; a running app's start is answered at once.
    assert_eq!(api.stop_app("counter").unwrap().state, "stopped");
    assert!(api.apps().iter().any(|a| a.name == "counter" && a.state == "stopped"));
    assert_eq!(api.start_app("blinky").unwrap().state, "running");
    assert_eq!(api.stop_app("nope").unwrap_err().status(), 404);
    assert_eq!(api.start_app("../x").unwrap_err().status(), 400);
}

#[test]
fn a_new_version_of_a_stopped_app_is_checked_and_kept_but_not_run() {
    let dev = device(&[("counter", example("counter"))], |_| {});
    dev.wait_started("counter", "1.0.0");
    dev.runtime.stop_app("counter").unwrap();
    let file = || std::fs::read(dev.apps().join("counter.wasm")).unwrap();

    // An upload: every check short of running it, then the file is in place.
    let mut v2 = manifest("counter");
    v2.version = "2.0.0".into();
    let v2 = pack("counter", &v2);
    let outcome = dev.runtime.install("counter", &v2).unwrap();
    assert!(outcome.stopped, "the answer says it stays stopped");
    assert_eq!((outcome.version.as_str(), outcome.replaced.as_deref()), ("2.0.0", Some("1.0.0")));
    assert_eq!(file(), v2);
    assert_eq!(state(&dev, "counter"), Some((AppState::Stopped, "2.0.0".into())));
    // A broken one is refused as always and writes nothing.
    assert!(dev.runtime.install("counter", &v2[..v2.len() / 2]).is_err());
    let mut greedy = manifest("counter");
    greedy.permissions.gpio_outputs = vec![99];
    let why = dev.runtime.install("counter", &pack("counter", &greedy)).unwrap_err().to_string();
    assert!(why.contains("GPIO line 99"), "{why}");
    assert_eq!(file(), v2);

    // A file copied in (cp, scp) is shown, not run.
    let mut v3 = manifest("counter");
    v3.version = "3.0.0".into();
    dev.install("counter", &pack("counter", &v3));
    let deadline = Instant::now() + SECS;
    while state(&dev, "counter").is_some_and(|(_, v)| v != "3.0.0") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(state(&dev, "counter"), Some((AppState::Stopped, "3.0.0".into())));
    assert!(
        !dev.events.try_iter().any(|e| matches!(e, RuntimeEvent::Started { ref app, .. } if app == "counter")),
        "a stopped app was started by a new version"
    );

    // Started: the newest version runs.
    let started = dev.runtime.start_app("counter").unwrap();
    assert_eq!((started.version.as_str(), started.stopped), ("3.0.0", false));
    assert_eq!(dev.running_version("counter").as_deref(), Some("3.0.0"));

    // Removed while stopped: gone, and no longer stopped when it comes back.
    dev.runtime.stop_app("counter").unwrap();
    dev.runtime.remove("counter").unwrap();
    assert!(dev.runtime.app_status("counter").is_none());
    assert_eq!(stopped_list(&dev), "");
    let back = dev.runtime.install("counter", &example("counter")).unwrap();
    assert!(!back.stopped);
    assert_eq!(dev.running_version("counter").as_deref(), Some("1.0.0"));
}

/// A stopped app is not restarted when its back-off ends; started, it runs
/// again (and one given up on after a crash loop is loaded again).
#[test]
fn crash_handling_leaves_a_stopped_app_alone() {
    let bad = pack("faulty", &with_config(manifest("faulty"), &[("mode", "trap")]));
    let (dev, clock) = device_on_fake_clock(&[("faulty", bad)]);
    let policy = trellis_runtime::CrashPolicy::default();
    dev.wait_for("a trap", SECS, |e| matches!(e, RuntimeEvent::Crashed { .. }));
    assert_eq!(state(&dev, "faulty").unwrap().0, AppState::Restarting);
    dev.runtime.stop_app("faulty").unwrap();
    clock.advance(policy.backoff(1) * 10);
    dev.runtime.tick();
    let status = dev.runtime.app_status("faulty").unwrap();
    assert_eq!((status.state, status.restarts), (AppState::Stopped, 0), "restarted although stopped");
    assert!(status.last_error.unwrap().contains("trapped"), "the last fault is still shown");

    dev.runtime.start_app("faulty").unwrap();
    dev.wait_started("faulty", "1.0.0");
    // It crash-loops (no good version to go back to) and is given up on ...
    for n in 1..=policy.max_crashes {
        dev.wait_for("a trap", SECS, |e| matches!(e, RuntimeEvent::Crashed { .. }));
        if n < policy.max_crashes {
            clock.advance(policy.backoff(n));
            dev.runtime.tick();
        }
    }
    dev.wait_for(
        "given up",
        SECS,
        |e| matches!(e, RuntimeEvent::Stopped { reason, .. } if reason.contains("crash loop")),
    );
    assert!(matches!(state(&dev, "faulty").unwrap().0, AppState::Failed(_)));
    // ... and a start loads it again (and it traps again).
    let events = dev.runtime.events();
    assert!(!dev.runtime.start_app("faulty").unwrap().stopped);
    let again = events.iter().find(|e| matches!(e, RuntimeEvent::Crashed { .. } | RuntimeEvent::Refused { .. }));
    assert!(matches!(again, Some(RuntimeEvent::Crashed { .. })), "{again:?}");
}
