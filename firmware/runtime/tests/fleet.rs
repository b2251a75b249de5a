//! The runtime with its fleet agent, against a real `nats-server`: the
//! device's provisioning file on the data partition starts the agent; a
//! release's app is installed through the runtime's own load; an app that
//! is busy (its consent hook defers) holds the update until it is done.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{device, example, manifest, pack, with_config};
use trellis_fleet::names::{self, DESIRED, REPORTED};
use trellis_fleet::sim::{self, Pki};
use trellis_fleet::{DesiredState, EventKind, Release, ReportedState, ops};
use trellis_runtime::RuntimeConfig;
use trellis_runtime::device::RuntimeDevice;

fn wait(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_provisioned_runtime_follows_its_desired_state_and_a_busy_app_holds_the_update() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let pki = Pki::new();
    let server = sim::single(&pki, &["operator"], &[("rt-1", "north")]);
    let operator = rt.block_on(sim::operator(&pki, &[server.addr()], 1));
    let key = trellis_appfmt::generate_key();

    // A device running counter 1.0.0 and an app that says when it is busy (asking again every 2 s).
    let busy = pack("busy", &with_config(manifest("busy"), &[("defer-s", "2")]));
    let dev = device(&[("counter", example("counter")), ("busy", busy)], |_| {});
    dev.wait_started("counter", "1.0.0");
    dev.wait_started("busy", "1.0.0");
    dev.runtime.publish("busy/set", b"1");

    // Its provisioning file on the data partition.
    let (cert, cert_key) = pki.issue("rt-1", false);
    let trust = dev.dir.path().join("release.pub");
    std::fs::write(&trust, hex::encode(key.public_key_bytes())).unwrap();
    let config = RuntimeConfig::new(dev.apps(), dev.state());
    std::fs::write(
        dev.state().join("fleet.toml"),
        format!(
            "servers = [\"tls://{}\"]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\ndevice = \"rt-1\"\ngroup = \"north\"\n\
             board = \"{}\"\npoll-s = 1\ntrust = [\"{}\"]\n",
            server.addr(),
            pki.ca().display(),
            cert.display(),
            cert_key.display(),
            sim::BOARD,
            trust.display()
        ),
    )
    .unwrap();
    let fleet = trellis_runtime::fleet::configured(&config).unwrap().expect("the provisioning file");
    let support::TestRuntime { runtime, .. } = dev;
    let runtime = Arc::new(runtime);
    let device = Arc::new(RuntimeDevice::new(runtime.clone(), config.clone()));
    trellis_runtime::fleet::start(&config, &fleet, device).unwrap();

    // The agent reports.
    let report = || -> Option<ReportedState> {
        rt.block_on(operator.get(REPORTED, "rt-1")).unwrap().map(|b| serde_json::from_slice(&b).unwrap())
    };
    wait("the first report", 30, || report().is_some());
    let first = report().unwrap();
    assert!(
        first.apps.iter().any(|a| a.name == "counter" && a.version == "1.0.0" && a.state == "running"),
        "{first:?}"
    );

    // A release of counter 9.0.0; the device is told to run it.
    let next = pack("counter", &{
        let mut m = manifest("counter");
        m.version = "9.0.0".into();
        m
    });
    let release = Release::new("counter-9.0.0", sim::BOARD, trellis_runtime::INTERFACE_VERSION)
        .with_app("counter", "9.0.0", &next)
        .signed(&key);
    rt.block_on(ops::publish(&operator, &release, &[("counter".into(), next)])).unwrap();
    let desired = DesiredState::release(&release.id);
    rt.block_on(operator.put(DESIRED, &names::device_key("rt-1"), serde_json::to_vec(&desired).unwrap())).unwrap();

    // The busy app holds it, and says so.
    wait("the deferral", 30, || report().is_some_and(|r| r.phase == "deferred"));
    let events = rt.block_on(sim::events(&operator));
    let deferred = events.iter().find(|e| e.kind == EventKind::Deferred).expect("a deferred event");
    assert_eq!(deferred.reason.as_deref(), Some("app busy asked to wait 2 s"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(runtime.app_status("counter").unwrap().version, "1.0.0", "not while the app is busy");

    // Done: the update goes through the runtime's own load, and is reported.
    runtime.publish("busy/set", b"0");
    wait("counter 9.0.0 running and reported", 60, || {
        report().is_some_and(|r| {
            r.release.as_deref() == Some("counter-9.0.0")
                && r.healthy
                && r.apps.iter().any(|a| a.name == "counter" && a.version == "9.0.0" && a.state == "running")
        })
    });
    assert_eq!(runtime.app_status("counter").unwrap().version, "9.0.0");
    let kinds: Vec<EventKind> = rt.block_on(sim::events(&operator)).into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [EventKind::Deferred, EventKind::Downloaded, EventKind::Verified, EventKind::Installed, EventKind::Healthy]
    );
}
