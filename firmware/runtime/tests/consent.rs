//! The update consent hook (`trellis:app/update`): which apps are asked, who
//! wins, and that a broken hook never holds an update back.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{device, example, manifest, pack, with_config};
use trellis_control::{Consent, Device};
use trellis_runtime::device::RuntimeDevice;
use trellis_runtime::{CONSENT_MARGIN, EventReceiver, Fault, MAX_DEFERRAL_S, Runtime, RuntimeConfig, RuntimeEvent};

const SECS: Duration = Duration::from_secs(30);

/// The `busy` fixture packed as app `name` with `config`.
fn busy(name: &str, config: &[(&str, &str)]) -> (String, Vec<u8>) {
    let mut m = with_config(manifest("busy"), config);
    m.name = name.to_owned();
    (name.to_owned(), pack("busy", &m))
}

/// A started device running `apps`, sharing its runtime with the device interface.
struct Consenting {
    _dir: tempfile::TempDir,
    runtime: Arc<Runtime>,
    events: EventReceiver,
    device: RuntimeDevice,
}

impl Consenting {
    /// Wait for an event matching `pred`.
    fn wait_for(&self, what: &str, pred: impl Fn(&RuntimeEvent) -> bool) -> RuntimeEvent {
        let deadline = Instant::now() + SECS;
        while let Ok(e) = self.events.recv_deadline(deadline) {
            if pred(&e) {
                return e;
            }
        }
        panic!("timed out waiting for {what}");
    }
}

fn consenting(apps: &[(String, Vec<u8>)]) -> Consenting {
    let apps: Vec<(&str, Vec<u8>)> = apps.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let dev = device(&apps, |_| {});
    for (name, _) in &apps {
        dev.wait_started(name, "1.0.0");
    }
    let config = RuntimeConfig::new(dev.apps(), dev.state());
    let support::TestRuntime { dir, runtime, events, .. } = dev;
    let runtime = Arc::new(runtime);
    let device = RuntimeDevice::new(runtime.clone(), config);
    Consenting { _dir: dir, runtime, events, device }
}

#[test]
fn a_busy_app_defers_the_update_and_names_itself() {
    let Consenting { device, .. } =
        &consenting(&[busy("busy", &[("busy", "true")]), ("counter".into(), example("counter"))]);
    assert_eq!(device.update_consent("r-42"), Consent::Defer { app: "busy".into(), seconds: 600 });
}

#[test]
fn apps_without_the_hook_consent() {
    let Consenting { device, .. } =
        &consenting(&[("counter".into(), example("counter")), ("publisher".into(), example("publisher"))]);
    let t0 = Instant::now();
    assert_eq!(device.update_consent("r-42"), Consent::Apply);
    assert!(t0.elapsed() < Duration::from_secs(1), "no app was asked, yet it took {:?}", t0.elapsed());
}

#[test]
fn the_hook_follows_the_apps_own_state() {
    let dev = consenting(&[busy("busy", &[("defer-s", "90")])]);
    assert_eq!(dev.device.update_consent("r-1"), Consent::Apply, "not busy yet");
    // The message is queued ahead of the question: the answer sees it.
    dev.runtime.publish("busy/set", b"1");
    assert_eq!(dev.device.update_consent("r-1"), Consent::Defer { app: "busy".into(), seconds: 90 });
    dev.runtime.publish("busy/set", b"0");
    assert_eq!(dev.device.update_consent("r-1"), Consent::Apply, "done");
}

#[test]
fn the_longest_deferral_wins() {
    let Consenting { device, .. } = &consenting(&[
        busy("busy", &[("busy", "true"), ("defer-s", "600")]),
        busy("later", &[("busy", "true"), ("defer-s", "1200")]),
        busy("idle", &[("defer-s", "5000")]),
    ]);
    assert_eq!(device.update_consent("r-1"), Consent::Defer { app: "later".into(), seconds: 1200 });
}

#[test]
fn a_deferral_is_capped_at_a_day_and_zero_means_one_second() {
    let Consenting { device, .. } =
        &consenting(&[busy("busy", &[("busy", "true"), ("defer-s", &u32::MAX.to_string())])]);
    assert_eq!(MAX_DEFERRAL_S, 86_400);
    assert_eq!(device.update_consent("r-1"), Consent::Defer { app: "busy".into(), seconds: MAX_DEFERRAL_S });

    let Consenting { device, .. } = &consenting(&[busy("busy", &[("busy", "true"), ("defer-s", "0")])]);
    assert_eq!(device.update_consent("r-1"), Consent::Defer { app: "busy".into(), seconds: 1 });
}

/// A hook that traps or loops is cut at the app's deadline and counts as
/// "apply"; the fault is the app's like any other (it is restarted).
fn a_broken_hook_counts_as_apply(mode: &str, expect: impl Fn(&Fault) -> bool) {
    let dev = consenting(&[
        busy("broken", &[("busy", "true"), ("defer-s", "5000"), ("hook", mode)]),
        busy("busy", &[("busy", "true"), ("defer-s", "60")]),
    ]);
    let t0 = Instant::now();
    let answer = dev.device.update_consent("r-1");
    let elapsed = t0.elapsed();
    assert_eq!(answer, Consent::Defer { app: "busy".into(), seconds: 60 }, "the broken app's answer does not count");
    let call_ms = u64::from(manifest("busy").limits.call_ms);
    assert!(elapsed < Duration::from_millis(call_ms) + CONSENT_MARGIN, "took {elapsed:?}");
    let crash = dev.wait_for("the hook's fault", |e| matches!(e, RuntimeEvent::Crashed { app, .. } if app == "broken"));
    let RuntimeEvent::Crashed { fault, .. } = crash else { unreachable!() };
    assert!(expect(&fault), "{mode}: {fault:?}");

    // Alone, the broken app holds nothing back.
    let Consenting { device, .. } = &consenting(&[busy("broken", &[("busy", "true"), ("hook", mode)])]);
    assert_eq!(device.update_consent("r-1"), Consent::Apply);
}

#[test]
fn a_hook_that_traps_counts_as_apply() {
    a_broken_hook_counts_as_apply("trap", |f| matches!(f, Fault::Trap(_)));
}

#[test]
fn a_hook_that_loops_is_cut_by_the_deadline_and_counts_as_apply() {
    a_broken_hook_counts_as_apply("spin", |f| matches!(f, Fault::Deadline { .. }));
}

/// The hook of an app built against 0.1.0 (`update@0.1.0`) is found too.
#[test]
fn the_hook_of_an_app_built_against_an_older_patch_is_asked() {
    let (new, old) = (b"@0.1.2", b"@0.1.0");
    let mut code = support::component("busy");
    for i in 0..=code.len() - new.len() {
        if &code[i..i + new.len()] == new {
            code[i..i + new.len()].copy_from_slice(old);
        }
    }
    let m = with_config(manifest("busy"), &[("busy", "true")]);
    let bytes = trellis_appfmt::pack(&code, &m).unwrap();
    let Consenting { device, .. } = &consenting(&[("busy".into(), bytes)]);
    assert_eq!(device.update_consent("r-1"), Consent::Defer { app: "busy".into(), seconds: 600 });
}
