//! Whether the apps agree to an update being applied now: each running app
//! that exports the optional `update` interface is asked (`update.consent`),
//! all at once, each under its call deadline; the longest deferral wins.

use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, bounded};
use trellis_control::Consent;

use crate::mailbox::WorkerMsg;

/// The longest an app can hold an update back in one answer, in seconds (one
/// day): a longer answer is cut to this, so a buggy hook cannot hold updates
/// forever. The agent asks again when it is over.
pub const MAX_DEFERRAL_S: u32 = 24 * 60 * 60;

/// How much longer than its `call-ms` an app's answer is waited for: the
/// question queues behind events already in its mailbox.
pub const CONSENT_MARGIN: Duration = Duration::from_secs(2);

/// A running app with the hook, as the supervisor hands it out.
pub(crate) struct Hook {
    pub app: String,
    pub tx: Sender<WorkerMsg>,
    pub call_ms: u32,
}

/// Ask every app in `hooks` about `release`, at once; wait for each at most
/// its `call-ms` plus [`CONSENT_MARGIN`]. An app that does not answer in time,
/// traps, overruns its deadline or is gone counts as "apply" (and is logged).
/// Of the apps that defer, the one asking for the longest wait is named (the
/// first by name on a tie), its wait capped at [`MAX_DEFERRAL_S`].
pub(crate) fn ask(hooks: Vec<Hook>, release: &str) -> Consent {
    let t0 = Instant::now();
    let asked: Vec<_> = hooks
        .into_iter()
        .filter_map(|hook| {
            let deadline = t0 + Duration::from_millis(u64::from(hook.call_ms)) + CONSENT_MARGIN;
            let (reply, answer) = bounded(1);
            let msg = WorkerMsg::Consent { release: release.to_owned(), reply };
            match hook.tx.send_timeout(msg, deadline.saturating_duration_since(Instant::now())) {
                Ok(()) => Some((hook.app, answer, deadline)),
                Err(_) => {
                    tracing::warn!(app = %hook.app, release, "consent hook not asked (mailbox full or app stopped): applying");
                    None
                }
            }
        })
        .collect();
    let mut longest: Option<(String, u32)> = None;
    for (app, answer, deadline) in asked {
        let seconds = match answer.recv_deadline(deadline) {
            Ok(Ok(None)) => continue,
            Ok(Ok(Some(seconds))) => seconds,
            Ok(Err(fault)) => {
                tracing::warn!(app, release, "consent hook failed: {fault}; counted as apply");
                continue;
            }
            Err(_) => {
                tracing::warn!(app, release, "consent hook did not answer in time; counted as apply");
                continue;
            }
        };
        let capped = seconds.clamp(1, MAX_DEFERRAL_S);
        if capped != seconds {
            tracing::warn!(app, release, asked = seconds, "consent hook's deferral is out of range: {capped} s");
        }
        tracing::info!(app, release, seconds = capped, "app asks the update to wait");
        if longest.as_ref().is_none_or(|(_, s)| capped > *s) {
            longest = Some((app, capped));
        }
    }
    match longest {
        Some((app, seconds)) => Consent::Defer { app, seconds },
        None => Consent::Apply,
    }
}
