//! What the management API shows of the runtime beyond the device interface
//! (docs/api.md): the log book of its events, metrics in Prometheus' text
//! format, and the mDNS announcement.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::sync::lock;
use crate::{AppState, AppStatus, EventReceiver, Runtime, RuntimeEvent};

/// Announce the API on `port` over mDNS as `_trellis._tcp`, named after the
/// hostname, with the firmware's version and board; for the runtime's
/// lifetime. A failure is logged: the API works without it.
pub fn announce(port: u16) {
    let host = mdns_name();
    let field = |key: &str| crate::fleet::release_field(key).unwrap_or_else(|| "unknown".to_owned());
    let (version, board) = (field("TRELLIS_VERSION"), field("TRELLIS_BOARD"));
    match trellis_api::mdns::announce(&host, port, &[("version", &version), ("board", &board)]) {
        Ok(announcer) => {
            tracing::info!(name = announcer.fullname(), "announced over mDNS");
            // Withdrawn when the runtime exits.
            std::mem::forget(announcer);
        }
        Err(e) => tracing::warn!("not announced over mDNS: {e}"),
    }
}

/// The name this device announces itself by over mDNS: its hostname, or
/// `trellis` when that cannot be read.
pub(crate) fn mdns_name() -> String {
    std::fs::read_to_string(crate::paths::HOSTNAME).map_or_else(|_| "trellis".to_owned(), |h| h.trim().to_owned())
}

/// How many log entries a new follower gets first.
pub const LOG_HISTORY: usize = 200;

/// The runtime's events as log entries: the recent ones kept, each new one
/// handed to every follower (`GET /v1/logs`).
#[derive(Debug, Default)]
pub(crate) struct LogBook(Mutex<(VecDeque<String>, Vec<Sender<String>>)>);

impl LogBook {
    pub(crate) fn start(events: EventReceiver) -> Arc<Self> {
        let book = Arc::new(Self::default());
        let b = Arc::clone(&book);
        let spawned = std::thread::Builder::new().name("api-logs".into()).spawn(move || {
            for event in events {
                b.push(log_entry(&event, SystemTime::now()));
            }
        });
        if let Err(e) = spawned {
            tracing::error!("api: no thread for the log: {e}");
        }
        book
    }

    fn push(&self, entry: String) {
        let mut guard = lock(&self.0);
        let (recent, followers) = &mut *guard;
        if recent.len() == LOG_HISTORY {
            recent.pop_front();
        }
        followers.retain(|f| f.send(entry.clone()).is_ok());
        recent.push_back(entry);
    }

    pub(crate) fn follow(&self) -> (Vec<String>, Receiver<String>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut guard = lock(&self.0);
        guard.1.push(tx);
        (guard.0.iter().cloned().collect(), rx)
    }
}

/// One event as a log entry: `{"time": seconds since the epoch, "app", "level", "message"}`.
#[must_use]
pub fn log_entry(event: &RuntimeEvent, at: SystemTime) -> String {
    let (app, level, message) = match event {
        RuntimeEvent::Log { app, level, message } => (app.as_str(), *level, message.clone()),
        RuntimeEvent::Started { app, version, replaced: Some(old) } => {
            (app.as_str(), "info", format!("{version} replaced {old}"))
        }
        RuntimeEvent::Started { app, version, replaced: None } => (app.as_str(), "info", format!("{version} started")),
        RuntimeEvent::Refused { app, reason } => {
            (app.as_deref().unwrap_or("-"), "warn", format!("refused a new file, the old version runs on: {reason}"))
        }
        RuntimeEvent::Crashed { app, fault } => (app.as_str(), "error", format!("crashed: {fault}")),
        RuntimeEvent::FellBack { app, version } => (app.as_str(), "warn", format!("went back to {version}")),
        RuntimeEvent::Stopped { app, reason } => (app.as_str(), "info", format!("stopped: {reason}")),
        RuntimeEvent::Denied { app, reason } => (app.as_str(), "warn", format!("denied: {reason}")),
    };
    let time = at.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let entry =
        serde_json::json!({ "time": (time * 1000.0).round() / 1000.0, "app": app, "level": level, "message": message });
    entry.to_string()
}

/// The metrics of `runtime` in Prometheus' text format.
#[must_use]
pub fn metrics(runtime: &Runtime, uptime_ms: u64) -> String {
    let mut out = String::new();
    #[allow(clippy::cast_precision_loss)]
    let uptime = format!("{:.3}", uptime_ms as f64 / 1000.0);
    family(&mut out, "trellis_uptime_seconds", "gauge", "Time since the kernel started.", [(String::new(), uptime)]);
    if let Some(rss) = resident_bytes() {
        let help = "The runtime's resident memory.";
        family(&mut out, "trellis_runtime_resident_bytes", "gauge", help, [(String::new(), rss.to_string())]);
    }
    let apps = runtime.status();
    let per_app = |value: &dyn Fn(&AppStatus) -> String| -> Vec<(String, String)> {
        apps.iter().map(|a| (format!("app=\"{}\"", a.name), value(a))).collect()
    };
    let running = apps.iter().map(|a| {
        let labels = format!("app=\"{}\",version=\"{}\"", a.name, a.version);
        (labels, u8::from(a.state == AppState::Running).to_string())
    });
    let help = "Whether the app's current version is running.";
    family(&mut out, "trellis_app_running", "gauge", help, running);
    let help = "Restarts after crashes of the app's current version.";
    family(&mut out, "trellis_app_restarts_total", "counter", help, per_app(&|a| a.restarts.to_string()));
    let help = "The app's linear memory.";
    family(&mut out, "trellis_app_memory_bytes", "gauge", help, per_app(&|a| a.usage.memory_bytes().to_string()));
    let help = "Time spent in calls into the app.";
    let cpu = per_app(&|a| format!("{:.6}", a.usage.cpu_time().as_secs_f64()));
    family(&mut out, "trellis_app_cpu_seconds_total", "counter", help, cpu);
    let help = "Events dropped for a full mailbox.";
    family(&mut out, "trellis_app_dropped_events_total", "counter", help, per_app(&|a| a.dropped_events.to_string()));
    out
}

/// One metric family in Prometheus' text format: its help, its type, and a
/// sample per `(labels, value)` (labels without braces; empty: none).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: impl IntoIterator<Item = (String, String)>) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    for (labels, value) in samples {
        if labels.is_empty() {
            out.push_str(&format!("{name} {value}\n"));
        } else {
            out.push_str(&format!("{name}{{{labels}}} {value}\n"));
        }
    }
}

/// `VmRSS` of this process, in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}
