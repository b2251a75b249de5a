//! The update lifecycle against a RAUC and a device that record what they are
//! asked to do. (The real RAUC, trellis-boot, init and firmware run the same
//! paths in the twin: tests/twin/tests/update.rs.)
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use trellis_update::{
    Bundle, GateOutcome, Mark, Phase, Platform, Policy, Progress, Rauc, Reboot, Resume, SlotInfo, Slots, StateFile,
    UpdateError, Updater,
};

#[derive(Debug, Default)]
struct World {
    booted: String,
    boot_id: String,
    uptime: Duration,
    install_fails: Option<String>,
    /// Failures of the next installs, one each, before they succeed.
    next_failures: Vec<String>,
    installs: Vec<String>,
    /// No install running: the bundle written, if any ([`Rauc::settled`]).
    settled: Vec<Option<String>>,
    /// Bundles rolled back, and why ([`Rauc::rolled_back`]).
    rolled_back: Vec<(String, String)>,
    sleeps: Vec<Duration>,
    installed_version: String,
    marks: Vec<(Mark, String)>,
    reboots: Vec<Reboot>,
    rauc_down: bool,
    /// RAUC's service not yet answering: this many more calls to `slots` fail.
    slots_unanswered: u32,
    /// RAUC's service going away: `slots` answers this many more times, then fails.
    slots_answered: Option<u32>,
}

#[derive(Debug, Clone, Default)]
struct Fake(Arc<Mutex<World>>);

impl Fake {
    fn new(booted: &str, boot_id: &str) -> Self {
        let w = World {
            booted: booted.into(),
            boot_id: boot_id.into(),
            installed_version: "2.0.0".into(),
            ..World::default()
        };
        Self(Arc::new(Mutex::new(w)))
    }
    fn w(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap()
    }
}

impl Rauc for Fake {
    fn install(&self, bundle: &Bundle, progress: &mut dyn FnMut(&Progress)) -> Result<(), UpdateError> {
        progress(&Progress { percent: 0, message: "Installing".into() });
        let mut w = self.w();
        w.installs.push(bundle.to_string());
        if let Some(why) = w.install_fails.clone() {
            return Err(UpdateError::Rauc(why));
        }
        if !w.next_failures.is_empty() {
            return Err(UpdateError::Rauc(w.next_failures.remove(0)));
        }
        drop(w);
        progress(&Progress { percent: 100, message: "Installing done.".into() });
        Ok(())
    }
    fn settled(&self, written: Option<&Bundle>) {
        self.w().settled.push(written.map(Bundle::to_string));
    }
    fn rolled_back(&self, bundle: &Bundle, why: &str) {
        self.w().rolled_back.push((bundle.to_string(), why.to_owned()));
    }
    fn mark(&self, mark: Mark, slot: &str) -> Result<String, UpdateError> {
        let mut w = self.w();
        if w.rauc_down {
            return Err(UpdateError::Bus("not running".into()));
        }
        w.marks.push((mark, slot.into()));
        Ok(format!("marked {slot} {}", mark.as_str()))
    }
    fn slots(&self) -> Result<Slots, UpdateError> {
        let mut w = self.w();
        if w.slots_unanswered > 0 {
            w.slots_unanswered -= 1;
            return Err(UpdateError::Bus("The name de.pengutronix.rauc was not provided".into()));
        }
        match w.slots_answered {
            Some(0) => return Err(UpdateError::Bus("The name de.pengutronix.rauc has no owner".into())),
            Some(n) => w.slots_answered = Some(n - 1),
            None => {}
        }
        let slot = |name: &str, bootname: &str| SlotInfo {
            name: name.into(),
            bootname: bootname.into(),
            state: if w.booted == bootname { "booted".into() } else { "inactive".into() },
            boot_status: Some("good".into()),
            version: (w.booted != bootname).then(|| w.installed_version.clone()),
        };
        Ok(Slots {
            booted: w.booted.clone(),
            primary: Some(w.booted.clone()),
            compatible: "trellis-test".into(),
            slots: vec![slot("rootfs.0", "A"), slot("rootfs.1", "B")],
        })
    }
}

impl Platform for Fake {
    fn boot_id(&self) -> String {
        self.w().boot_id.clone()
    }
    fn booted_slot(&self) -> Option<String> {
        Some(self.w().booted.clone())
    }
    fn uptime(&self) -> Duration {
        self.w().uptime
    }
    fn now(&self) -> u64 {
        1_700_000_000
    }
    fn sleep(&self, d: Duration) {
        let mut w = self.w();
        w.uptime += d;
        w.sleeps.push(d);
    }
    fn reboot(&self, how: Reboot) -> Result<(), UpdateError> {
        self.w().reboots.push(how);
        Ok(())
    }
}

const POLICY: Policy = Policy {
    health_deadline_ms: 30_000,
    settle_ms: 2_000,
    poll_ms: 250,
    stream_retries: 3,
    stream_retry_ms: 1_000,
    stream_tls: None,
};

fn updater(fake: &Fake, file: &StateFile) -> Updater<Fake, Fake> {
    Updater::new(fake.clone(), fake.clone(), file.clone(), POLICY)
}

/// Install on A, then "reboot" into the trial: B booted, a new boot id.
fn installed_then_trial_boot(dir: &Path) -> (Fake, StateFile) {
    let fake = Fake::new("A", "boot-1");
    let file = StateFile::new(dir.join("update.json"));
    let bundle = dir.join("update.raucb");
    std::fs::write(&bundle, b"bundle").unwrap();
    let mut seen = Vec::new();
    let record = updater(&fake, &file).install(&bundle.into(), &mut |p| seen.push(p.percent)).unwrap();
    assert_eq!(seen, [0, 100], "progress is passed on");
    assert_eq!(
        (record.phase, record.to.as_deref(), record.version.as_deref()),
        (Phase::Trial, Some("B"), Some("2.0.0"))
    );
    {
        let mut w = fake.w();
        w.booted = "B".into();
        w.boot_id = "boot-2".into();
    }
    (fake, file)
}

#[test]
fn a_healthy_trial_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, file) = installed_then_trial_boot(dir.path());
    let u = updater(&fake, &file);
    fake.w().settled.clear();
    assert_eq!(u.resume(), Resume::Trial);
    let bundle = file.load().unwrap().bundle;
    assert_eq!(fake.w().settled, [Some(bundle.clone())], "what the trial's bundle fetched may stay");
    assert_eq!(u.status().operation, "trial");
    // Healthy only from 5 s on: committed once it stayed healthy for the settle time.
    let f = fake.clone();
    let health =
        move || if f.w().uptime >= Duration::from_secs(5) { Ok(()) } else { Err("counter: not running".into()) };
    assert_eq!(u.gate(&health), GateOutcome::Committed);
    let w = fake.w();
    assert_eq!(w.marks, [(Mark::Good, "booted".into())]);
    assert!(w.uptime >= Duration::from_secs(7), "settled for 2 s: {:?}", w.uptime);
    assert!(w.reboots.is_empty());
    assert!(w.rolled_back.is_empty(), "still offered to the peers");
    drop(w);
    let r = file.load().unwrap();
    assert_eq!(r.phase, Phase::Committed, "the verdict is on the data partition");
    assert_eq!(updater(&fake, &file).resume(), Resume::Idle, "and is final");
    assert_eq!(fake.w().settled.last(), Some(&Some(bundle)), "and may stay while it is committed");
}

#[test]
fn an_unhealthy_trial_is_marked_bad_and_rebooted_into_the_old_slot() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, file) = installed_then_trial_boot(dir.path());
    let u = updater(&fake, &file);
    assert_eq!(u.resume(), Resume::Trial);
    // Healthy now and then, never for the settle time.
    let f = fake.clone();
    let health = move || {
        if f.w().uptime.as_millis() % 1000 == 0 { Ok(()) } else { Err("thermostat: failed: unsigned".into()) }
    };
    let GateOutcome::RolledBack(why) = u.gate(&health) else { panic!("committed") };
    assert!(why.contains("within 30 s") && why.contains("thermostat: failed: unsigned"), "{why}");
    let w = fake.w();
    assert_eq!(w.marks, [(Mark::Bad, "booted".into())]);
    assert_eq!(w.reboots, [Reboot::Normal], "a plain reboot boots the old slot");
    assert!(w.uptime >= Duration::from_secs(30));
    drop(w);
    let r = file.load().unwrap();
    assert_eq!((r.phase, r.reason.as_deref()), (Phase::RolledBack, Some(why.as_str())));
    assert_eq!(fake.w().rolled_back, [(r.bundle.clone(), why.clone())], "no longer offered to the peers");
    // Back on A, nothing more happens.
    fake.w().booted = "A".into();
    fake.w().boot_id = "boot-3".into();
    assert_eq!(updater(&fake, &file).resume(), Resume::Idle);
    assert_eq!(fake.w().marks.len(), 1);
    assert_eq!(fake.w().rolled_back.len(), 1);
}

#[test]
fn a_trial_that_cannot_mark_good_is_not_committed() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, file) = installed_then_trial_boot(dir.path());
    fake.w().rauc_down = true;
    let u = updater(&fake, &file);
    let GateOutcome::RolledBack(why) = u.gate(&|| Ok(())) else { panic!("committed without RAUC") };
    assert!(why.contains("marking the slot good"), "{why}");
    assert_eq!(fake.w().reboots, [Reboot::Normal]);
}

#[test]
fn a_trial_that_never_reached_the_gate_is_recorded_as_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, file) = installed_then_trial_boot(dir.path());
    // The kernel of B did not boot; the firmware booted A again.
    fake.w().booted = "A".into();
    fake.w().boot_id = "boot-3".into();
    let u = updater(&fake, &file);
    assert_eq!(u.resume(), Resume::Idle);
    let r = file.load().unwrap();
    assert_eq!(r.phase, Phase::RolledBack);
    assert!(r.reason.as_deref().unwrap().contains("trial boot of slot B did not come up"), "{r:?}");
    assert_eq!(fake.w().marks, [(Mark::Bad, "other".into())]);
    assert_eq!(fake.w().rolled_back, [(r.bundle.clone(), r.reason.clone().unwrap())], "no longer offered to the peers");
    assert_eq!(fake.w().settled.last(), Some(&None), "nothing kept");
    assert!(fake.w().reboots.is_empty());
}

#[test]
fn a_runtime_restarted_before_the_trial_reboot_asks_for_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, file) = installed_then_trial_boot(dir.path());
    fake.w().booted = "A".into();
    fake.w().boot_id = "boot-1".into();
    assert_eq!(updater(&fake, &file).resume(), Resume::RebootPending);
    assert_eq!(file.load().unwrap().phase, Phase::Trial);
}

#[test]
fn a_refused_bundle_is_recorded_as_failed_and_nothing_reboots() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new("A", "boot-1");
    fake.w().install_fails = Some("signature verification failed".into());
    let file = StateFile::new(dir.path().join("update.json"));
    let bundle = dir.path().join("b.raucb");
    std::fs::write(&bundle, b"x").unwrap();
    let u = updater(&fake, &file);
    let e = u.install(&bundle.into(), &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("signature verification failed"), "{e}");
    let r = file.load().unwrap();
    assert_eq!((r.phase, r.to), (Phase::Failed, None));
    assert!(r.reason.unwrap().contains("signature verification failed"));
    assert!(fake.w().reboots.is_empty() && fake.w().marks.is_empty());
    assert_eq!(u.status().operation, "idle");
    // A missing file is named.
    let e = u.install(&dir.path().join("nope.raucb").into(), &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("nope.raucb: no such file"), "{e}");
}

#[test]
fn an_installation_cut_by_a_reboot_is_recorded_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path().join("update.json"));
    let fake = Fake::new("A", "boot-2");
    cut_install(&file, "/data/u.raucb", 0);
    assert_eq!(updater(&fake, &file).resume(), Resume::Idle);
    failed_with(&file, "interrupted");
}

/// The record an install of `bundle` left when the power went in boot `boot-1`.
fn cut_install(file: &StateFile, bundle: &str, resumed: u32) {
    let record = trellis_update::UpdateRecord {
        bundle: bundle.into(),
        version: None,
        from: "A".into(),
        to: None,
        phase: Phase::Installing,
        reason: None,
        boot_id: "boot-1".into(),
        started: 1,
        changed: 1,
        resumed,
    };
    file.save(&record).unwrap();
}

/// The record says failed, with `why` in its reason.
fn failed_with(file: &StateFile, why: &str) {
    let r = file.load().unwrap();
    assert_eq!(r.phase, Phase::Failed);
    assert!(r.reason.as_deref().unwrap_or_default().contains(why), "{r:?}");
}

/// A streamed install cut by the power in boot `boot-1`.
fn cut_streamed_install(file: &StateFile, resumed: u32) {
    cut_install(file, "https://origin.example/u.raucb", resumed);
}

#[test]
fn a_streamed_install_cut_by_a_reboot_is_started_again_in_the_next_boot() {
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path().join("update.json"));
    cut_streamed_install(&file, 0);
    let fake = Fake::new("A", "boot-2");
    let u = updater(&fake, &file);
    let url = Bundle::parse("https://origin.example/u.raucb").unwrap();
    assert_eq!(u.resume(), Resume::Install(url.clone()));
    assert_eq!(file.load().unwrap().resumed, 1, "the resume is counted before it starts");
    assert!(fake.w().settled.is_empty(), "what the install fetched stays for it");
    // Until it has run, it holds the place: another install is told so.
    assert_eq!(u.status().operation, "installing");
    fake.w().slots_unanswered = 3; // RAUC's service is still starting
    let e = u.install(&url, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("already running"), "{e}");
    // Right after boot the clock may still read the image's build time: a
    // certificate "not yet valid" is retried for a resumed install.
    fake.w().next_failures =
        vec!["failed to configure streaming: server not responding: server certificate verification failed.".into()];
    let r = u.install_again(&url, &mut |_| {}).unwrap();
    assert_eq!((r.phase, r.resumed, r.boot_id.as_str()), (Phase::Trial, 1, "boot-2"));
    assert_eq!(fake.w().installs, ["https://origin.example/u.raucb"; 2]);
    let sleeps = fake.w().sleeps.clone();
    assert_eq!(sleeps.len(), 4, "waited for RAUC three times, then once to retry: {sleeps:?}");
    assert_eq!(u.status().operation, "trial", "the place is given back");
    // Cut again in each of the next boots: resumed stream-retries (3) times, then given up.
    for (boot, resumed) in [("boot-3", 2), ("boot-4", 3)] {
        let mut cut = file.load().unwrap();
        (cut.phase, cut.boot_id) = (Phase::Installing, "boot-1".into());
        file.save(&cut).unwrap();
        let fake = Fake::new("A", boot);
        assert_eq!(updater(&fake, &file).resume(), Resume::Install(url.clone()));
        assert_eq!(file.load().unwrap().resumed, resumed);
    }
    let mut cut = file.load().unwrap();
    (cut.phase, cut.boot_id) = (Phase::Installing, "boot-4".into());
    file.save(&cut).unwrap();
    let fake = Fake::new("A", "boot-5");
    assert_eq!(updater(&fake, &file).resume(), Resume::Idle);
    failed_with(&file, "interrupted again");
    assert!(fake.w().installs.is_empty());
    assert_eq!(fake.w().settled, [None], "given up: nothing kept");
}

#[test]
fn a_streamed_install_is_not_resumed_in_its_own_boot_nor_without_rauc() {
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path().join("update.json"));
    // The runtime restarted while RAUC may still be installing: not started twice.
    cut_streamed_install(&file, 0);
    let fake = Fake::new("A", "boot-1");
    assert_eq!(updater(&fake, &file).resume(), Resume::Idle);
    failed_with(&file, "the runtime restarted");
    // RAUC never answers: recorded as failed, with the reason.
    resume_given_up(&file, "boot-2", |w| w.slots_unanswered = u32::MAX, "RAUC did not answer within 60 s");
    // RAUC answers, then goes away before the install starts: the same.
    resume_given_up(&file, "boot-3", |w| w.slots_answered = Some(1), "has no owner");
}

/// A streamed install cut by a reboot, resumed in `boot` on a RAUC set up
/// by `rauc`, fails for `why`: recorded so, nothing installed, the place
/// given back, and the backend told nothing is kept.
fn resume_given_up(file: &StateFile, boot: &str, rauc: impl FnOnce(&mut World), why: &str) {
    cut_streamed_install(file, 0);
    let fake = Fake::new("A", boot);
    rauc(&mut fake.w());
    let u = updater(&fake, file);
    let Resume::Install(url) = u.resume() else { panic!("not resumed") };
    u.install_again(&url, &mut |_| {}).unwrap_err();
    failed_with(file, why);
    assert_eq!(u.status().operation, "idle", "the place is given back");
    assert!(fake.w().installs.is_empty());
    assert_eq!(fake.w().settled, [None], "given up: nothing kept");
}

#[test]
fn no_second_installation_during_a_trial() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, file) = installed_then_trial_boot(dir.path());
    let u = updater(&fake, &file);
    let e = u.install(&dir.path().join("update.raucb").into(), &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("slot B is in its trial boot"), "{e}");
}

/// What RAUC says when the origin of a streamed bundle goes away while it
/// writes a slot (seen in the twin: tests/twin/tests/stream.rs).
const CUT: &str = "Installation error: Failed updating slot rootfs.0: Failed to copy data: Error reading from file: Input/output error";

#[test]
fn a_streamed_install_cut_by_the_network_is_started_again_until_it_completes() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new("A", "boot-1");
    fake.w().next_failures = vec![CUT.into(), CUT.into()];
    let file = StateFile::new(dir.path().join("update.json"));
    let url = Bundle::parse("http://10.0.2.2:8080/update.raucb").unwrap();
    let record = updater(&fake, &file).install(&url, &mut |_| {}).unwrap();
    assert_eq!((record.phase, record.bundle.as_str()), (Phase::Trial, "http://10.0.2.2:8080/update.raucb"));
    let w = fake.w();
    assert_eq!(w.installs.len(), 3, "two cuts, then the install that completes");
    assert_eq!(w.sleeps, [Duration::from_secs(1), Duration::from_secs(2)], "the wait doubles");
    let url = url.to_string();
    assert_eq!(
        w.settled,
        [Some(url)],
        "what was kept stays for every attempt: over once, after the one that completed"
    );
}

#[test]
fn a_streamed_install_gives_up_after_its_retries_and_never_retries_a_refusal_or_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path().join("update.json"));
    let url = Bundle::parse("https://origin.example/u.raucb").unwrap();
    // The network never comes back: 1 + 3 attempts, then failed with RAUC's reason.
    let fake = Fake::new("A", "boot-1");
    fake.w().install_fails = Some(CUT.into());
    let e = updater(&fake, &file).install(&url, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("https://origin.example/u.raucb: RAUC: Installation error: Failed updating"), "{e}");
    assert_eq!(fake.w().installs.len(), 4);
    assert_eq!(file.load().unwrap().phase, Phase::Failed);
    assert_eq!(fake.w().settled, [None], "given up once, after the last attempt");
    // A refused bundle is refused once, streamed or not.
    for refusal in [
        "signature verification failed: certificate not trusted",
        "Compatible mismatch: Expected 'trellis-qemu-aarch64' but bundle manifest has 'trellis-rpi4'",
        "Failed to mount bundle: unexpected HTTP error code 404",
        "Failed updating slot rootfs.0: No space left on device",
        "Failed to stream bundle https://o/u.raucb: failed to configure streaming: server not responding: \
         server certificate verification failed. CAfile: /etc/trellis/update/origin-ca.pem CRLfile: none",
        "Failed to stream bundle https://o/u.raucb: failed to configure streaming: server not responding: \
         GnuTLS recv error (-12): A TLS fatal alert has been received.",
    ] {
        let fake = Fake::new("A", "boot-1");
        fake.w().install_fails = Some(refusal.into());
        updater(&fake, &file).install(&url, &mut |_| {}).unwrap_err();
        assert_eq!(fake.w().installs.len(), 1, "{refusal}");
    }
    // A file cut short is not the network's doing.
    let fake = Fake::new("A", "boot-1");
    fake.w().install_fails = Some(CUT.into());
    let bundle = dir.path().join("b.raucb");
    std::fs::write(&bundle, b"x").unwrap();
    updater(&fake, &file).install(&bundle.into(), &mut |_| {}).unwrap_err();
    assert_eq!(fake.w().installs.len(), 1);
}

#[test]
fn a_bundle_is_a_path_or_an_http_url() {
    assert_eq!(Bundle::parse("/data/u.raucb").unwrap(), Bundle::File("/data/u.raucb".into()));
    assert!(Bundle::parse("HTTPS://h/u.raucb").unwrap().is_streamed());
    assert_eq!(Bundle::parse("").unwrap_err(), "no bundle given");
    for bad in ["http://", "https:///u.raucb", "http://h/a b.raucb", "http://h/u\u{0}.raucb", "http://?x"] {
        assert!(Bundle::parse(bad).unwrap_err().contains("is not a bundle URL"), "{bad:?}");
    }
    let e = Bundle::parse("https://ops:secret@origin/u.raucb").unwrap_err();
    assert!(e.contains("cannot carry a login"), "{e}");
    assert!(
        Bundle::parse("http://origin/u.raucb?user@example").unwrap().is_streamed(),
        "an @ in the query is no login"
    );
    // A bundle named by its piece root streams; its id is checked, and kept in lower case.
    let root = format!("asset:{}", "C0".repeat(32));
    let b = Bundle::parse(&root).unwrap();
    assert!(b.is_streamed());
    assert_eq!(b, Bundle::Asset("c0".repeat(32)));
    assert_eq!(b.to_string(), root.to_lowercase());
    for bad in ["asset:", "asset:c0", &format!("asset:{}", "g0".repeat(32))] {
        assert!(Bundle::parse(bad).unwrap_err().contains("asset:<64 hex digits>"), "{bad:?}");
    }
    // As JSON, the text: what the control socket carried before URLs.
    let b: Bundle = serde_json::from_str("\"/data/u.raucb\"").unwrap();
    assert_eq!(serde_json::to_string(&b).unwrap(), "\"/data/u.raucb\"");
}
