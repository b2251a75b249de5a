//! The device agent against a real `nats-server`: artifacts with a wrong
//! hash and releases with a wrong signature or for another board are
//! refused and reported, and nothing reaches the device; an object store
//! that is away for a while costs a retry, an object it does not hold is
//! refused; consent deferral
//! and a maintenance window hold an update until allowed (on a fake clock);
//! firmware goes through its trial boot and a roll-back is reported; events
//! made while the server is away are delivered when it is back; firmware
//! whose app interface an installed app was not built for is refused naming
//! it, and installed with a version of the app that fits; a device that
//! streams firmware is given its piece root and fetches nothing first; a
//! device whose own key is deleted never follows an older copy of its
//! group's.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use trellis_fleet::sim as support;

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use support::Sim;
use support::{Pki, until};
use trellis_control::testing::FakeDevice;
use trellis_control::{AppError, AppInstalled, Consent, Device, DeviceStatus, Progress, UpdateRecord};
use trellis_fleet::agent::Agent;
use trellis_fleet::clock::ManualClock;
use trellis_fleet::link::{After, Link};
use trellis_fleet::names::{self, DESIRED};
use trellis_fleet::sim;
use trellis_fleet::state::Window;
use trellis_fleet::{DesiredState, EventKind, Release, ReportedState, Urgency, ops};

struct One {
    pki: Pki,
    server: support::Server,
    operator: Link,
    key: trellis_appfmt::SigningKey,
}

async fn one(devices: &[&str]) -> One {
    let pki = Pki::new();
    let users: Vec<(&str, &str)> = devices.iter().map(|d| (*d, "north")).collect();
    let server = support::single(&pki, &["operator"], &users);
    let operator = support::operator(&pki, &[server.addr()], 1).await;
    One { pki, server, operator, key: trellis_appfmt::generate_key() }
}

async fn desire(link: &Link, device: &str, d: &DesiredState) {
    link.put(DESIRED, &names::device_key(device), serde_json::to_vec(d).unwrap()).await.unwrap();
}

async fn report(link: &Link, device: &str) -> Option<ReportedState> {
    link.get(names::REPORTED, device).await.unwrap().map(|b| serde_json::from_slice(&b).unwrap())
}

async fn refusal(link: &Link, device: &str, release: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let found = sim::events(link)
            .await
            .into_iter()
            .find(|e| e.device == device && e.release == release && e.kind == EventKind::Refused);
        if let Some(e) = found {
            return e.reason.unwrap_or_default();
        }
        assert!(std::time::Instant::now() < deadline, "{device} did not refuse {release}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_and_releases_that_do_not_check_are_refused_and_reported() {
    let f = one(&["pi-1"]).await;
    let mut d = Sim::new(&f.pki, &[f.server.addr()], "pi-1", "north", sim::trust(&f.key));
    d.start().await;

    // The object store holds other bytes under the artifact's name (a tampered store).
    let (release, _) = sim::release("thermostat-2.0.0", &f.key, &[("thermostat", "2.0.0")]);
    let object = format!("sha256-{}", release.apps[0].sha256);
    let store = f.operator.artifacts().await.unwrap();
    let mut evil: &[u8] = b"APP thermostat 6.6.6\n";
    store.put(object.as_str(), &mut evil).await.unwrap();
    f.operator.put(names::RELEASES, &release.id, release.to_json()).await.unwrap();
    desire(&f.operator, "pi-1", &DesiredState::release(&release.id)).await;
    let why = refusal(&f.operator, "pi-1", &release.id).await;
    assert!(why.contains(&format!("expected sha256 {}", release.apps[0].sha256)), "{why}");
    let rep = report(&f.operator, "pi-1").await.unwrap();
    // Failed at the release, the device itself healthy (it runs what it ran).
    assert_eq!((rep.phase.as_str(), rep.healthy), ("failed", true), "{rep:?}");
    assert!(rep.error.unwrap().contains("expected sha256"));

    // Signed by a key the device does not trust.
    let stranger = trellis_appfmt::generate_key();
    let (untrusted, artifacts) = sim::release("thermostat-2.0.1", &stranger, &[("thermostat", "2.0.1")]);
    ops::publish(&f.operator, &untrusted, &artifacts).await.unwrap();
    desire(&f.operator, "pi-1", &DesiredState::release(&untrusted.id)).await;
    let why = refusal(&f.operator, "pi-1", &untrusted.id).await;
    assert!(why.contains("thermostat-2.0.1") && why.contains("not in the trust list"), "{why}");

    // A signed release changed after signing (the app's version edited).
    let (mut edited, artifacts) = sim::release("thermostat-2.0.2", &f.key, &[("thermostat", "2.0.2")]);
    edited.apps[0].version = "9.9.9".into();
    f.operator.put(names::RELEASES, &edited.id, edited.to_json()).await.unwrap();
    ops::publish(&f.operator, &sim::release("other", &f.key, &[("thermostat", "2.0.2")]).0, &artifacts).await.unwrap();
    desire(&f.operator, "pi-1", &DesiredState::release(&edited.id)).await;
    let why = refusal(&f.operator, "pi-1", &edited.id).await;
    assert!(why.contains("thermostat-2.0.2") && why.contains("signature"), "{why}");

    // For another board.
    let mut other = Release::new("thermostat-2.0.3", "bbb", sim::INTERFACE).with_app(
        "thermostat",
        "2.0.3",
        &sim::app("thermostat", "2.0.3"),
    );
    other = other.signed(&f.key);
    ops::publish(&f.operator, &other, &[("thermostat".into(), sim::app("thermostat", "2.0.3"))]).await.unwrap();
    desire(&f.operator, "pi-1", &DesiredState::release(&other.id)).await;
    let why = refusal(&f.operator, "pi-1", &other.id).await;
    assert!(why.contains("board bbb") && why.contains("rpi4"), "{why}");

    // Nothing reached the device.
    assert!(d.device.apps_installed.lock().unwrap().is_empty());
    assert!(d.runs("thermostat", "1.0.0"));
    // And a good release still goes through.
    let (good, artifacts) = sim::release("thermostat-2.1.0", &f.key, &[("thermostat", "2.1.0")]);
    ops::publish(&f.operator, &good, &artifacts).await.unwrap();
    desire(&f.operator, "pi-1", &DesiredState::release(&good.id)).await;
    until(20, "the good release running", || async { d.runs("thermostat", "2.1.0") }).await;
    d.stop();
}

/// An object store that is not there for a while (its stream gone, as
/// while a cluster loses the server that held it) costs the device a retry,
/// not the release: only an object the store says it does not hold is
/// refused. The store's errors then say "stream not found", which the agent
/// once took for the object's absence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_that_is_away_for_a_while_is_retried_and_a_missing_object_refused() {
    let f = one(&["pi-1"]).await;
    let mut d = Sim::new(&f.pki, &[f.server.addr()], "pi-1", "north", sim::trust(&f.key));
    d.start().await;
    f.operator.js.delete_object_store(names::ARTIFACTS).await.unwrap();
    let (release, artifacts) = sim::release("thermostat-2.0.0", &f.key, &[("thermostat", "2.0.0")]);
    f.operator.put(names::RELEASES, &release.id, release.to_json()).await.unwrap();
    desire(&f.operator, "pi-1", &DesiredState::release(&release.id)).await;
    until(20, "the device downloading", || async {
        report(&f.operator, "pi-1").await.is_some_and(|r| r.phase == "downloading")
    })
    .await;
    // Long enough for several attempts (the agent retries within a second).
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(d.runs("thermostat", "1.0.0"));
    let refused = sim::events(&f.operator).await.into_iter().find(|e| e.kind == EventKind::Refused);
    assert!(refused.is_none(), "an object store away refused the release: {refused:?}");
    // The store is back with the artifact: the release goes through.
    // (The events stream's reservation takes all of this test server's
    // storage: it goes too, and setup makes both again, the store first; the
    // device's outbox sends its events again.)
    f.operator.js.delete_stream(names::EVENTS_STREAM).await.unwrap();
    ops::setup(&f.operator, 1).await.unwrap();
    let store = f.operator.artifacts().await.unwrap();
    let mut bytes: &[u8] = &artifacts[0].1;
    store.put(format!("sha256-{}", release.apps[0].sha256).as_str(), &mut bytes).await.unwrap();
    until(30, "the release running", || async { d.runs("thermostat", "2.0.0") }).await;

    // The store is there but does not hold the artifact: refused, named.
    let (missing, _) = sim::release("thermostat-2.0.1", &f.key, &[("thermostat", "2.0.1")]);
    f.operator.put(names::RELEASES, &missing.id, missing.to_json()).await.unwrap();
    desire(&f.operator, "pi-1", &DesiredState::release(&missing.id)).await;
    let why = refusal(&f.operator, "pi-1", &missing.id).await;
    assert!(why.contains("artifact thermostat") && why.contains("not found"), "{why}");
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_the_operator_stopped_is_healthy_and_named_when_a_release_needs_it() {
    let f = one(&["pi-1"]).await;
    let mut d = Sim::new(&f.pki, &[f.server.addr()], "pi-1", "north", sim::trust(&f.key));
    d.start().await;
    d.device.stop_app("thermostat").unwrap();
    // Stopped on purpose is not sick: the device reports itself healthy.
    until(20, "a report with the app stopped", || async {
        report(&f.operator, "pi-1").await.is_some_and(|r| r.apps.iter().any(|a| a.state == "stopped"))
    })
    .await;
    assert!(report(&f.operator, "pi-1").await.unwrap().healthy);

    // A release of that app installs it (it stays stopped) and fails, saying why.
    let (release, artifacts) = sim::release("thermostat-2.0.0", &f.key, &[("thermostat", "2.0.0")]);
    ops::publish(&f.operator, &release, &artifacts).await.unwrap();
    desire(&f.operator, "pi-1", &DesiredState::release(&release.id)).await;
    let why = refusal(&f.operator, "pi-1", &release.id).await;
    assert!(why.contains("thermostat 2.0.0 is stopped on the device") && why.contains("trellis app start"), "{why}");
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_and_a_maintenance_window_hold_an_update_until_allowed() {
    let f = one(&["pi-1"]).await;
    // 2026-12-02 (a Wednesday) 01:00 UTC.
    let clock = Arc::new(ManualClock::at(1_796_169_600_000 + 3_600_000));
    let mut d = Sim::new(&f.pki, &[f.server.addr()], "pi-1", "north", sim::trust(&f.key));
    d.clock = clock.clone();
    *d.device.defer.lock().unwrap() = Some(("press".into(), 600));
    d.start().await;
    let (release, artifacts) = sim::release("thermostat-2.0.0", &f.key, &[("thermostat", "2.0.0")]);
    ops::publish(&f.operator, &release, &artifacts).await.unwrap();

    // The app in use defers it.
    desire(&f.operator, "pi-1", &DesiredState::release(&release.id)).await;
    until(20, "deferred by the app", || async {
        report(&f.operator, "pi-1").await.is_some_and(|r| r.phase == "deferred")
    })
    .await;
    let deferred = sim::events(&f.operator).await;
    let e = deferred.iter().find(|e| e.kind == EventKind::Deferred).unwrap();
    assert_eq!(e.reason.as_deref(), Some("app press asked to wait 600 s"));
    // Still deferred while the app says so, even after its time.
    clock.advance(601_000);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(d.runs("thermostat", "1.0.0"));
    // The app is done: the update goes through at the next check.
    d.device.defer.lock().unwrap().take();
    clock.advance(601_000);
    until(20, "applied once the app agreed", || async { d.runs("thermostat", "2.0.0") }).await;

    // A window 02:00-05:00; it is about 01:20.
    let (next, artifacts) = sim::release("thermostat-3.0.0", &f.key, &[("thermostat", "3.0.0")]);
    ops::publish(&f.operator, &next, &artifacts).await.unwrap();
    let window = Window { days: Vec::new(), start: "02:00".into(), end: "05:00".into() };
    desire(&f.operator, "pi-1", &DesiredState { window: Some(window.clone()), ..DesiredState::release(&next.id) })
        .await;
    until(20, "held by the window", || async {
        sim::events(&f.operator).await.iter().any(|e| {
            e.release == next.id
                && e.kind == EventKind::Deferred
                && e.reason.as_deref() == Some("outside the maintenance window 02:00-05:00 UTC")
        })
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(d.runs("thermostat", "2.0.0"), "not before the window opens");
    clock.set(1_796_169_600_000 + 2 * 3_600_000 + 60_000);
    until(20, "applied in the window", || async { d.runs("thermostat", "3.0.0") }).await;

    // A critical release is held by neither.
    *d.device.defer.lock().unwrap() = Some(("press".into(), 600));
    clock.set(1_796_169_600_000 + 10 * 3_600_000);
    let mut urgent = Release::new("thermostat-3.0.1", sim::BOARD, sim::INTERFACE).with_app(
        "thermostat",
        "3.0.1",
        &sim::app("thermostat", "3.0.1"),
    );
    urgent.urgency = Urgency::Critical;
    let urgent = urgent.signed(&f.key);
    ops::publish(&f.operator, &urgent, &[("thermostat".into(), sim::app("thermostat", "3.0.1"))]).await.unwrap();
    desire(&f.operator, "pi-1", &DesiredState { window: Some(window), ..DesiredState::release(&urgent.id) }).await;
    until(20, "a critical release applied at once", || async { d.runs("thermostat", "3.0.1") }).await;
    d.stop();
}

/// The fake device, whose trial reboot waits until the test lets it go.
struct HeldReboot {
    inner: Arc<FakeDevice>,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl Device for HeldReboot {
    fn status(&self) -> DeviceStatus {
        self.inner.status()
    }
    fn apps_dir(&self) -> PathBuf {
        self.inner.apps_dir()
    }
    fn install_app(&self, name: &str, bytes: &[u8]) -> Result<AppInstalled, AppError> {
        self.inner.install_app(name, bytes)
    }
    fn remove_app(&self, name: &str) -> Result<(), AppError> {
        self.inner.remove_app(name)
    }
    fn firmware_dir(&self) -> Option<PathBuf> {
        self.inner.firmware_dir()
    }
    fn install_firmware(
        &self,
        bundle: &trellis_control::Bundle,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<UpdateRecord, String> {
        self.inner.install_firmware(bundle, progress)
    }
    fn installed(&self) {
        let (lock, cvar) = &*self.gate;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = cvar.wait(open).unwrap();
        }
        self.inner.installed();
    }
    fn update_consent(&self, release: &str) -> Consent {
        self.inner.update_consent(release)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firmware_commits_after_its_trial_and_events_wait_for_the_server() {
    let mut f = one(&["pi-1", "pi-2"]).await;
    // (The fake RAUC records every bundle as version 2.0.0; the release's 2.1.0 is what runs after the commit.)
    let bundle = b"RAUC BUNDLE 2.1.0".to_vec();
    let release = Release::new("os-2.1.0", sim::BOARD, sim::INTERFACE).with_firmware("2.1.0", &bundle).signed(&f.key);
    ops::publish(&f.operator, &release, &[("firmware".into(), bundle.clone())]).await.unwrap();

    // pi-1 installs; while it reboots into the trial the server goes away.
    let d = Sim::new(&f.pki, &[f.server.addr()], "pi-1", "north", sim::trust(&f.key));
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let held = Arc::new(HeldReboot { inner: d.device.clone(), gate: gate.clone() });
    let link = Link::connect(&d.creds, Some("pi-1"), true).await.unwrap();
    let agent = Agent::new(d.config(), held, d.trust.clone(), d.clock.clone()).unwrap();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let task = tokio::spawn(agent.run(link));
    desire(&f.operator, "pi-1", &DesiredState::release(&release.id)).await;
    until(20, "the bundle given to RAUC", || async { !d.device.bundles.lock().unwrap().is_empty() }).await;
    assert_eq!(d.device.bundles.lock().unwrap()[0].as_bytes(), bundle.as_slice(), "the checked bytes, whole");
    f.server.kill();
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    // Committed while offline: the event waits in the outbox.
    let outbox = d.dir.path().join("fleet/outbox");
    until(20, "the commit recorded offline", || async {
        std::fs::read_dir(&outbox)
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| std::fs::read_to_string(e.path()).unwrap().contains("firmware committed"))
    })
    .await;
    f.server.restart();
    until(30, "the outbox delivered and the report current", || async {
        std::fs::read_dir(&outbox).unwrap().count() == 0
            && report(&f.operator, "pi-1")
                .await
                .is_some_and(|r| r.release.as_deref() == Some("os-2.1.0") && r.firmware == "2.1.0" && r.healthy)
    })
    .await;
    let kinds: Vec<EventKind> =
        sim::events(&f.operator).await.into_iter().filter(|e| e.device == "pi-1").map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [EventKind::Downloaded, EventKind::Verified, EventKind::Installed, EventKind::Installed, EventKind::Healthy]
    );
    assert_eq!(d.device.bundles.lock().unwrap().len(), 1, "installed once: committed firmware is not installed again");
    task.abort();
    assert!(
        std::fs::read_dir(d.dir.path().join("firmware")).unwrap().count() == 0,
        "the downloaded bundle is removed after the install"
    );

    // pi-2's trial boot fails its health gate: rolled back, reported, not tried again.
    let mut d2 = Sim::new(&f.pki, &[f.server.addr()], "pi-2", "north", sim::trust(&f.key));
    Arc::get_mut(&mut d2.device).unwrap().rolls_back =
        Some("not healthy within 60 s of boot: thermostat: failed".into());
    d2.start().await;
    desire(&f.operator, "pi-2", &DesiredState::release(&release.id)).await;
    until(30, "the roll-back reported", || async {
        sim::events(&f.operator).await.iter().any(|e| {
            e.device == "pi-2"
                && e.kind == EventKind::RolledBack
                && e.reason.as_deref().is_some_and(|r| r.contains("not healthy within 60 s"))
        }) && report(&f.operator, "pi-2").await.is_some_and(|r| r.phase == "failed" && r.firmware == "1.0.0")
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(d2.device.bundles.lock().unwrap().len(), 1, "a failed attempt is not repeated by itself");
}

/// The server stored an event but its acknowledgement never came back (the
/// link cut, or the ack timed out on a loaded server): the event stays in the
/// outbox and is sent again, and the audit log still holds it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_sent_again_after_a_lost_acknowledgement_is_recorded_once() {
    let f = one(&["pi-1"]).await;
    let mut d = Sim::new(&f.pki, &[f.server.addr()], "pi-1", "north", sim::trust(&f.key));
    let outbox = d.dir.path().join("fleet/outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    let event = trellis_fleet::Event {
        device: "pi-1".into(),
        at_ms: 1_700_000_000_000,
        kind: EventKind::Deferred,
        release: "r-lost-ack".into(),
        reason: Some("outside the maintenance window".into()),
    };
    // Named as the agent names it: the number and a random part.
    let file = outbox.join(format!("{:020}-{:016x}.json", 0, 0x5eed_u64));
    std::fs::write(&file, serde_json::to_vec(&event).unwrap()).unwrap();
    let copy = std::fs::read(&file).unwrap();
    d.start().await;
    until(20, "the event delivered", || async {
        std::fs::read_dir(&outbox).unwrap().count() == 0
            && sim::events(&f.operator).await.iter().any(|e| e.release == "r-lost-ack")
    })
    .await;
    // The same file again, as the agent leaves it when the ack is lost.
    d.stop();
    std::fs::write(&file, &copy).unwrap();
    d.start().await;
    until(20, "the outbox sent again", || async { std::fs::read_dir(&outbox).unwrap().count() == 0 }).await;
    let stored: Vec<_> = sim::events(&f.operator).await.into_iter().filter(|e| e.release == "r-lost-ack").collect();
    assert_eq!(stored.len(), 1, "stored once: {stored:?}");
    d.stop();
}

/// A firmware release whose runtime provides another `trellis:app` interface
/// than an installed app was built for (here an older firmware, 0.1.1, under
/// an app built for 0.1.2) is refused naming the app, before anything is
/// fetched; the same firmware with a version of the app that runs on both
/// interfaces installs both, the app first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firmware_that_would_break_an_installed_app_is_refused_unless_the_release_carries_one_that_fits() {
    let f = one(&["pi-1"]).await;
    let mut d = Sim::new(&f.pki, &[f.server.addr()], "pi-1", "north", sim::trust(&f.key));
    d.device.status.lock().unwrap().apps[0].interface = Some(sim::INTERFACE.into());
    d.start().await;
    let bundle = b"RAUC BUNDLE 1.9.0".to_vec();

    let breaks = Release::new("os-1.9.0", sim::BOARD, sim::INTERFACE)
        .with_firmware("1.9.0", &bundle)
        .firmware_provides("0.1.1")
        .signed(&f.key);
    ops::publish(&f.operator, &breaks, &[("firmware".into(), bundle.clone())]).await.unwrap();
    desire(&f.operator, "pi-1", &DesiredState::release(&breaks.id)).await;
    let why = refusal(&f.operator, "pi-1", &breaks.id).await;
    assert!(
        why.contains("provides app interface 0.1.1") && why.contains("thermostat 1.0.0 (built for 0.1.2)"),
        "{why}"
    );
    assert!(d.device.bundles.lock().unwrap().is_empty(), "nothing given to RAUC");
    assert!(d.runs("thermostat", "1.0.0"));

    // The release carries a thermostat built for 0.1.1, which 0.1.2 (now) and 0.1.1 (after) both run.
    let thermostat = b"APP thermostat 1.1.0 0.1.1\n".to_vec();
    let fits = Release::new("os-1.9.0-apps", sim::BOARD, "0.1.1")
        .with_app("thermostat", "1.1.0", &thermostat)
        .with_firmware("1.9.0", &bundle)
        .firmware_provides("0.1.1")
        .signed(&f.key);
    ops::publish(&f.operator, &fits, &[("thermostat".into(), thermostat), ("firmware".into(), bundle.clone())])
        .await
        .unwrap();
    desire(&f.operator, "pi-1", &DesiredState::release(&fits.id)).await;
    until(30, "the app and the firmware installed, committed", || async {
        report(&f.operator, "pi-1")
            .await
            .is_some_and(|r| r.release.as_deref() == Some("os-1.9.0-apps") && r.firmware == "1.9.0" && r.healthy)
    })
    .await;
    assert!(d.runs("thermostat", "1.1.0"));
    assert_eq!(d.device.bundles.lock().unwrap().len(), 1);
    let app = d.device.apps().into_iter().find(|a| a.name == "thermostat").unwrap();
    assert_eq!(app.interface.as_deref(), Some("0.1.1"), "the device reports what the app was built for");
    d.stop();
}

/// A device that streams firmware by its piece root (the runtime has asset
/// sources) is given the root the signed release names, and fetches nothing
/// from the object store: here the bundle was never uploaded to it. A device
/// that does not stream fetches the bundle whole, and refuses the release
/// naming the missing artifact; one whose stream fails fetches it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_streams_firmware_is_given_the_piece_root_and_fetches_nothing_first() {
    let f = one(&["pi-1", "pi-2", "pi-3"]).await;
    let bundle = b"RAUC BUNDLE 2.2.0, streamed".to_vec();
    let release = Release::new("os-2.2.0", sim::BOARD, sim::INTERFACE).with_firmware("2.2.0", &bundle).signed(&f.key);
    let root = release.firmware.as_ref().unwrap().pieces.clone().unwrap();
    ops::publish(&f.operator, &release, &[]).await.unwrap();

    let mut d = Sim::new(&f.pki, &[f.server.addr()], "pi-1", "north", sim::trust(&f.key));
    Arc::get_mut(&mut d.device).unwrap().streams_firmware = true;
    d.start().await;
    desire(&f.operator, "pi-1", &DesiredState::release(&release.id)).await;
    until(30, "the streamed firmware committed", || async {
        report(&f.operator, "pi-1")
            .await
            .is_some_and(|r| r.release.as_deref() == Some("os-2.2.0") && r.firmware == "2.2.0" && r.healthy)
    })
    .await;
    assert_eq!(*d.device.bundles.lock().unwrap(), [format!("asset:{root}")], "RAUC was given the root");
    assert_eq!(std::fs::read_dir(d.dir.path().join("firmware")).map_or(0, Iterator::count), 0, "nothing stored");
    let events: Vec<_> = sim::events(&f.operator).await.into_iter().filter(|e| e.device == "pi-1").collect();
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [EventKind::Downloaded, EventKind::Verified, EventKind::Installed, EventKind::Installed, EventKind::Healthy]
    );
    assert!(events[0].reason.as_deref().is_some_and(|r| r.contains(&format!("streamed as asset:{root}"))));
    d.stop();

    let mut d2 = Sim::new(&f.pki, &[f.server.addr()], "pi-2", "north", sim::trust(&f.key));
    d2.start().await;
    desire(&f.operator, "pi-2", &DesiredState::release(&release.id)).await;
    let why = refusal(&f.operator, "pi-2", &release.id).await;
    assert!(why.contains("artifact firmware of release os-2.2.0"), "{why}");
    assert!(d2.device.bundles.lock().unwrap().is_empty(), "nothing given to RAUC");
    d2.stop();

    // pi-3 streams, but its site's sources do not hold the bundle: it is
    // fetched whole from the object store and installed from the file. Where
    // the object store lacks it too, both reasons are reported.
    let mut d3 = Sim::new(&f.pki, &[f.server.addr()], "pi-3", "north", sim::trust(&f.key));
    let device = Arc::get_mut(&mut d3.device).unwrap();
    device.streams_firmware = true;
    device.stream_fails = Some("failed to configure streaming: server not responding".into());
    d3.start().await;
    desire(&f.operator, "pi-3", &DesiredState::release(&release.id)).await;
    let why = refusal(&f.operator, "pi-3", &release.id).await;
    assert!(why.contains("server not responding; fetched whole: artifact firmware of release os-2.2.0"), "{why}");
    let later = Release::new("os-2.2.1", sim::BOARD, sim::INTERFACE).with_firmware("2.2.1", &bundle).signed(&f.key);
    ops::publish(&f.operator, &later, &[("firmware".into(), bundle.clone())]).await.unwrap();
    desire(&f.operator, "pi-3", &DesiredState::release(&later.id)).await;
    until(30, "the firmware fetched whole committed", || async {
        report(&f.operator, "pi-3")
            .await
            .is_some_and(|r| r.release.as_deref() == Some("os-2.2.1") && r.firmware == "2.2.1" && r.healthy)
    })
    .await;
    let given = d3.device.bundles.lock().unwrap().clone();
    // os-2.2.0 streamed (failed); os-2.2.1 streamed (failed), then the file.
    assert_eq!(given.len(), 3, "{given:?}");
    assert_eq!((given[1].as_str(), given[2].as_bytes()), (&*format!("asset:{root}"), bundle.as_slice()));
    let fetched_whole = sim::events(&f.operator).await.into_iter().any(|e| {
        e.device == "pi-3"
            && e.release == "os-2.2.1"
            && e.kind == EventKind::Downloaded
            && e.reason.as_deref().is_some_and(|r| r.contains("server not responding; fetched whole"))
    });
    assert!(fetched_whole, "the fall-back is in the audit log");
    d3.stop();
}

/// After a power cut mid-stream the runtime resumes the install of the
/// release's bundle by itself; the agent, converging again, finds the device
/// busy with that very bundle and follows it to its trial boot instead of
/// starting (or fetching) another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firmware_install_the_device_resumed_is_followed_not_started_again() {
    let f = one(&["pi-4", "pi-5"]).await;
    let bundle = b"RAUC BUNDLE 2.3.0, resumed".to_vec();
    let release = Release::new("os-2.3.0", sim::BOARD, sim::INTERFACE).with_firmware("2.3.0", &bundle).signed(&f.key);
    let root = release.firmware.as_ref().unwrap().pieces.clone().unwrap();
    ops::publish(&f.operator, &release, &[]).await.unwrap();
    let mut d = Sim::new(&f.pki, &[f.server.addr()], "pi-4", "north", sim::trust(&f.key));
    let device = Arc::get_mut(&mut d.device).unwrap();
    device.streams_firmware = true;
    device.installing.store(true, std::sync::atomic::Ordering::SeqCst);
    let resumed = UpdateRecord {
        bundle: format!("asset:{root}"),
        version: None,
        from: "A".into(),
        to: None,
        phase: trellis_control::Phase::Installing,
        reason: None,
        boot_id: "boot-2".into(),
        started: 100,
        changed: 100,
        resumed: 1,
    };
    device.status.lock().unwrap().firmware.last_update = Some(resumed.clone());
    d.start().await;
    desire(&f.operator, "pi-4", &DesiredState::release(&release.id)).await;
    until(20, "the resumed install followed", || async {
        report(&f.operator, "pi-4").await.is_some_and(|r| r.phase == "trial-boot")
    })
    .await;
    assert!(d.device.bundles.lock().unwrap().is_empty(), "no second install was started");
    // The resumed install reaches its trial, which commits.
    d.device.installing.store(false, std::sync::atomic::Ordering::SeqCst);
    if let Some(r) = d.device.status.lock().unwrap().firmware.last_update.as_mut() {
        r.phase = trellis_control::Phase::Committed;
    }
    until(30, "the release applied and healthy", || async {
        report(&f.operator, "pi-4")
            .await
            .is_some_and(|r| r.release.as_deref() == Some("os-2.3.0") && r.firmware == "2.3.0" && r.healthy)
    })
    .await;
    assert!(d.device.bundles.lock().unwrap().is_empty(), "still no second install");
    d.stop();

    // Another device's resumed install fails for good before its trial: a
    // failure of the release, not a rollback (no slot was switched).
    let mut d = Sim::new(&f.pki, &[f.server.addr()], "pi-5", "north", sim::trust(&f.key));
    let device = Arc::get_mut(&mut d.device).unwrap();
    device.streams_firmware = true;
    device.installing.store(true, std::sync::atomic::Ordering::SeqCst);
    let failing = UpdateRecord { boot_id: "boot-7".into(), ..resumed };
    device.status.lock().unwrap().firmware.last_update = Some(failing);
    d.start().await;
    desire(&f.operator, "pi-5", &DesiredState::release(&release.id)).await;
    until(20, "the resumed install followed", || async {
        report(&f.operator, "pi-5").await.is_some_and(|r| r.phase == "trial-boot")
    })
    .await;
    if let Some(r) = d.device.status.lock().unwrap().firmware.last_update.as_mut() {
        r.phase = trellis_control::Phase::Failed;
        r.reason = Some("RAUC: streaming failed on the network".into());
    }
    let why = refusal(&f.operator, "pi-5", &release.id).await;
    assert!(why.starts_with("firmware: RAUC: streaming failed"), "{why}");
    let kinds: Vec<EventKind> =
        sim::events(&f.operator).await.into_iter().filter(|e| e.device == "pi-5").map(|e| e.kind).collect();
    assert!(!kinds.contains(&EventKind::RolledBack), "{kinds:?}");
    d.stop();
}

/// A device with asset sources (its LAN peers, the site's origin) fetches a
/// release's app by the piece root the signed release names, and nothing
/// from the object store: here the app was never uploaded there. Where its
/// sources lack the app it comes whole from the object store, and the audit
/// log says so. Bytes that match the root but not the signed hash (a
/// release whose root and hash name other files) are refused, and the app
/// running stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_with_asset_sources_fetches_apps_by_their_piece_root() {
    let f = one(&["pi-6", "pi-7"]).await;
    let root_of = |bytes: &[u8]| trellis_assets::Index::of(bytes).id().to_string();
    let (release, _) = sim::release("thermostat-2.1.0", &f.key, &[("thermostat", "2.1.0")]);
    let root = release.apps[0].pieces.clone().unwrap();
    assert_eq!(root, root_of(&sim::app("thermostat", "2.1.0")));
    ops::publish(&f.operator, &release, &[]).await.unwrap();
    // Signed with the root of another file of the same size.
    let (mut crossed, _) = sim::release("thermostat-2.1.2", &f.key, &[("thermostat", "2.1.2")]);
    let other = sim::app("thermostat", "2.1.3");
    crossed.apps[0].pieces = Some(root_of(&other));
    let crossed = crossed.signed(&f.key);
    ops::publish(&f.operator, &crossed, &[]).await.unwrap();

    let mut d = Sim::new(&f.pki, &[f.server.addr()], "pi-6", "north", sim::trust(&f.key));
    let held = [(root.clone(), sim::app("thermostat", "2.1.0")), (root_of(&other), other)];
    Arc::get_mut(&mut d.device).unwrap().sources = Some(held.into_iter().collect());
    d.start().await;
    desire(&f.operator, "pi-6", &DesiredState::release(&release.id)).await;
    until(30, "the app fetched by its root runs", || async {
        report(&f.operator, "pi-6").await.is_some_and(|r| r.release.as_deref() == Some("thermostat-2.1.0"))
    })
    .await;
    assert!(d.runs("thermostat", "2.1.0"));
    assert_eq!(*d.device.fetched_by_root.lock().unwrap(), std::slice::from_ref(&root));
    let downloaded = sim::events(&f.operator)
        .await
        .into_iter()
        .find(|e| e.device == "pi-6" && e.release == "thermostat-2.1.0" && e.kind == EventKind::Downloaded);
    let how = downloaded.and_then(|e| e.reason).unwrap_or_default();
    assert_eq!(
        how,
        format!("app thermostat by asset:{root} (0 of 1 blocks from LAN peers)"),
        "the reason says where the blocks came from"
    );
    let done = || d.device.fetches_done.load(std::sync::atomic::Ordering::SeqCst);
    assert!(done() >= 1, "the device was told the attempt ended");
    let before = done();

    desire(&f.operator, "pi-6", &DesiredState::release(&crossed.id)).await;
    let why = refusal(&f.operator, "pi-6", &crossed.id).await;
    assert!(
        why.starts_with(&format!("app thermostat by asset:{}: ", root_of(&sim::app("thermostat", "2.1.3"))))
            && why.contains(&format!("expected sha256 {}", crossed.apps[0].sha256)),
        "{why}"
    );
    assert!(d.runs("thermostat", "2.1.0"), "the app running stays");
    until(10, "the refused attempt's end told", || async { done() > before }).await;
    assert_eq!(d.device.apps_installed.lock().unwrap().len(), 1, "nothing else installed");
    d.stop();

    // pi-7's sources do not hold it: whole from the object store.
    let (whole, artifacts) = sim::release("thermostat-2.1.1", &f.key, &[("thermostat", "2.1.1")]);
    ops::publish(&f.operator, &whole, &artifacts).await.unwrap();
    let mut d7 = Sim::new(&f.pki, &[f.server.addr()], "pi-7", "north", sim::trust(&f.key));
    Arc::get_mut(&mut d7.device).unwrap().sources = Some(std::collections::BTreeMap::new());
    d7.start().await;
    desire(&f.operator, "pi-7", &DesiredState::release(&release.id)).await;
    let why = refusal(&f.operator, "pi-7", &release.id).await;
    assert!(
        why.contains("nor a peer holds what was asked; fetched whole: artifact thermostat of release thermostat-2.1.0"),
        "both reasons: {why}"
    );
    desire(&f.operator, "pi-7", &DesiredState::release(&whole.id)).await;
    until(30, "the app fetched whole runs", || async {
        report(&f.operator, "pi-7").await.is_some_and(|r| r.release.as_deref() == Some("thermostat-2.1.1"))
    })
    .await;
    assert!(d7.runs("thermostat", "2.1.1"));
    let how = sim::events(&f.operator)
        .await
        .into_iter()
        .find(|e| e.device == "pi-7" && e.release == "thermostat-2.1.1" && e.kind == EventKind::Downloaded)
        .and_then(|e| e.reason)
        .unwrap_or_default();
    let whole_root = whole.apps[0].pieces.clone().unwrap();
    assert!(
        how.starts_with(&format!("app thermostat by asset:{whole_root}: asset {whole_root} from (no origin): "))
            && how.ends_with("nor a peer holds what was asked; fetched whole"),
        "{how}"
    );
    d7.stop();
}

/// A device whose own key is deleted follows its group again, but not a
/// copy of the group's key older than the write the deletion names. That is
/// what the device reads when the replica on its server lags the leader at
/// the end of a rollout (the group's key set to the release, then the
/// devices' keys deleted): following it would take the device back to the
/// release before. Here the group's write simply comes later. A deletion
/// naming a write that never comes (a bucket made again) holds the device
/// for `LAG_MAX` only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_whose_own_key_is_deleted_never_follows_an_older_copy_of_its_group() {
    let f = one(&["pi-1"]).await;
    let clock = Arc::new(ManualClock::at(1_796_169_600_000));
    let mut d = Sim::new(&f.pki, &[f.server.addr()], "pi-1", "north", sim::trust(&f.key));
    d.clock = clock.clone();
    d.start().await;
    for v in ["2.0.0", "3.0.0", "4.0.0"] {
        let (release, artifacts) = sim::release(&format!("thermostat-{v}"), &f.key, &[("thermostat", v)]);
        ops::publish(&f.operator, &release, &artifacts).await.unwrap();
    }
    let set = |key: String, release: &'static str| {
        let link = f.operator.clone();
        async move { link.put(DESIRED, &key, serde_json::to_vec(&DesiredState::release(release)).unwrap()).await.unwrap() }
    };
    let (group, own) = (names::group_key("north"), names::device_key("pi-1"));
    set(group.clone(), "thermostat-2.0.0").await;
    until(20, "pi-1 on its group's 2.0.0", || async { d.runs("thermostat", "2.0.0") }).await;
    let revision = set(own.clone(), "thermostat-3.0.0").await;
    until(20, "pi-1 on its own 3.0.0", || async { d.runs("thermostat", "3.0.0") }).await;

    // Deleted after a group write that this server does not hold yet (the
    // deletion is revision + 1, the group's write will be revision + 2).
    let after = |revision| Some(After { key: group.clone(), revision });
    f.operator.delete_after(DESIRED, &own, after(revision + 2).as_ref()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(d.runs("thermostat", "3.0.0") && !d.runs("thermostat", "2.0.0"), "{:?}", d.apps());
    // The write comes: the device follows its group.
    assert_eq!(set(group.clone(), "thermostat-4.0.0").await, revision + 2);
    until(20, "pi-1 on its group's 4.0.0", || async { d.runs("thermostat", "4.0.0") }).await;

    // Deleted after a write that never comes: waited out for LAG_MAX, then
    // the group is followed as it is.
    let revision = set(own.clone(), "thermostat-3.0.0").await;
    until(20, "pi-1 on its own 3.0.0 again", || async { d.runs("thermostat", "3.0.0") }).await;
    f.operator.delete_after(DESIRED, &own, after(revision + 1_000).as_ref()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(d.runs("thermostat", "3.0.0"), "{:?}", d.apps());
    clock.advance(u64::try_from(trellis_fleet::agent::LAG_MAX.as_millis()).unwrap());
    until(20, "pi-1 on its group's 4.0.0 after LAG_MAX", || async { d.runs("thermostat", "4.0.0") }).await;
}

/// A device learns of a change to its desired state from its watch (a
/// subscription to its keys' subjects), not its poll (here ten minutes): at
/// once, and again after its server restarted (the client subscribes again
/// and the link coming back wakes the agent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_wakes_the_agent_and_is_made_again_after_its_server_restarts() {
    let mut f = one(&["pi-1"]).await;
    let mut d = Sim::new(&f.pki, &[f.server.addr()], "pi-1", "north", sim::trust(&f.key));
    let mut config = d.config();
    config.poll = std::time::Duration::from_secs(600);
    config.heartbeat = std::time::Duration::from_secs(600);
    d.start_with(config).await;
    until(20, "a first report", || async { report(&f.operator, "pi-1").await.is_some() }).await;
    for (i, version) in ["2.0.0", "3.0.0"].into_iter().enumerate() {
        if i > 0 {
            f.server.restart();
        }
        let (release, artifacts) = sim::release(&format!("thermostat-{version}"), &f.key, &[("thermostat", version)]);
        // The operator's link comes back by itself after a restart.
        until(20, "the release published", || async { ops::publish(&f.operator, &release, &artifacts).await.is_ok() })
            .await;
        desire(&f.operator, "pi-1", &DesiredState::release(&release.id)).await;
        until(30, &format!("thermostat {version}, woken by the watch"), || async { d.runs("thermostat", version) })
            .await;
    }
    d.stop();
}

/// Another device cannot keep a device's events out of the audit log by
/// sending their ids first (the events stream drops a message whose id it
/// has seen within its duplicate window, whoever sent it): here it sends,
/// as its own events, every id pi-2's first events would have were an id
/// only the device, the event's number and its time, on a clock it knows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_device_cannot_keep_a_devices_events_out_of_the_log() {
    let f = one(&["pi-1", "pi-2"]).await;
    let at = 1_796_169_600_000u64;
    let pi1 = support::Client::connect(&f.pki, &[f.server.addr()], "pi-1").await;
    for n in 0..8u64 {
        let event = serde_json::json!({ "device": "pi-1", "at-ms": at, "kind": "healthy", "release": "r" });
        let publish = async_nats::jetstream::context::Publish::build()
            .payload(serde_json::to_vec(&event).unwrap().into())
            .message_id(format!("pi-2.{n:020}.{at}"));
        pi1.js.send_publish(names::events_subject("pi-1"), publish).await.unwrap().await.unwrap();
    }
    let mut d = Sim::new(&f.pki, &[f.server.addr()], "pi-2", "north", sim::trust(&f.key));
    d.clock = Arc::new(ManualClock::at(at));
    d.start().await;
    let stranger = trellis_appfmt::generate_key();
    let (untrusted, artifacts) = sim::release("thermostat-2.0.1", &stranger, &[("thermostat", "2.0.1")]);
    ops::publish(&f.operator, &untrusted, &artifacts).await.unwrap();
    desire(&f.operator, "pi-2", &DesiredState::release(&untrusted.id)).await;
    let why = refusal(&f.operator, "pi-2", &untrusted.id).await;
    assert!(why.contains("not in the trust list"), "{why}");
    d.stop();
}
