//! The management API's view of the runtime (`trellis-api`, docs/api.md):
//! the same status the control socket gives, metrics, and app uploads
//! checked the way the runtime checks a copied file before it goes in place.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use trellis_api::Verdict;
use trellis_appfmt::{AppFile, TrustList};
use trellis_update::control::{DeviceStatus, Handler};
use trellis_update::{Progress, UpdateRecord};

use crate::sync::lock;
use crate::{AppState, AppStatus, EventReceiver, Runtime, RuntimeConfig, RuntimeEvent};

/// How long an upload waits for the runtime's verdict (a cold compile on a
/// slow CPU takes seconds).
pub const VERDICT_TIMEOUT: Duration = Duration::from_secs(120);

/// The runtime behind the API.
pub struct ApiDevice {
    runtime: Arc<Runtime>,
    config: RuntimeConfig,
    status: Arc<dyn Handler>,
    logs: Arc<LogBook>,
}

impl std::fmt::Debug for ApiDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiDevice").field("apps_dir", &self.config.apps_dir).finish_non_exhaustive()
    }
}

impl ApiDevice {
    /// The API over `runtime` (configured by `config`); `status` answers
    /// status requests (the control socket's handler: apps and firmware).
    pub fn new(runtime: Arc<Runtime>, config: RuntimeConfig, status: Arc<dyn Handler>) -> Self {
        let logs = LogBook::start(runtime.events());
        Self { runtime, config, status, logs }
    }
}

/// Announce the API on `port` over mDNS as `_trellis._tcp`, named after the
/// hostname, with the firmware's version and board; for the runtime's
/// lifetime. A failure is logged: the API works without it.
pub fn announce(port: u16) {
    let host =
        std::fs::read_to_string(crate::paths::HOSTNAME).map_or_else(|_| "trellis".to_owned(), |h| h.trim().to_owned());
    let release = std::fs::read_to_string(crate::paths::RELEASE_FILE).unwrap_or_default();
    let field = |key: &str| {
        release.lines().find_map(|l| l.strip_prefix(key)).map_or_else(|| "unknown".to_owned(), str::to_owned)
    };
    let (version, board) = (field("TRELLIS_VERSION="), field("TRELLIS_BOARD="));
    match trellis_api::mdns::announce(&host, port, &[("version", &version), ("board", &board)]) {
        Ok(announcer) => {
            tracing::info!(name = announcer.fullname(), "announced over mDNS");
            // Withdrawn when the runtime exits.
            std::mem::forget(announcer);
        }
        Err(e) => tracing::warn!("not announced over mDNS: {e}"),
    }
}

/// How many log entries a new follower gets first.
pub const LOG_HISTORY: usize = 200;

/// The runtime's events as log entries: the recent ones kept, each new one
/// handed to every follower (`GET /v1/logs`).
#[derive(Debug, Default)]
struct LogBook(Mutex<(VecDeque<String>, Vec<Sender<String>>)>);

impl LogBook {
    fn start(events: EventReceiver) -> Arc<Self> {
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

    fn follow(&self) -> (Vec<String>, Receiver<String>) {
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

impl trellis_api::Device for ApiDevice {
    fn status(&self) -> DeviceStatus {
        self.status.status()
    }

    fn metrics(&self) -> String {
        metrics(&self.runtime, self.status.uptime_ms())
    }

    fn apps_dir(&self) -> PathBuf {
        self.config.apps_dir.clone()
    }

    fn verify_app(&self, name: &str, bytes: &[u8]) -> Result<String, String> {
        let file = AppFile::parse(bytes).map_err(|e| e.to_string())?;
        if file.manifest.name != name {
            return Err(format!("the manifest names the app {:?}: upload it as {0:?}", file.manifest.name));
        }
        if self.config.require_signatures {
            let trust = TrustList::load(&self.config.trust).map_err(|e| e.to_string())?;
            file.verify(bytes, &trust).map_err(|e| e.to_string())?;
        }
        Ok(file.manifest.version)
    }

    fn watch_app(&self, name: &str) -> Box<dyn Verdict> {
        Box::new(Watch { name: name.to_owned(), events: self.runtime.events() })
    }

    fn firmware_dir(&self) -> Option<PathBuf> {
        Some(self.config.state_dir.join(crate::paths::state::FIRMWARE))
    }

    fn install_firmware(&self, bundle: &Path, progress: &mut dyn FnMut(&Progress)) -> Result<UpdateRecord, String> {
        self.status.install(bundle, progress)
    }

    fn installed(&self) {
        self.status.installed();
    }

    fn reboot(&self) -> Result<(), String> {
        self.status.reboot()
    }

    fn logs(&self) -> (Vec<String>, Receiver<String>) {
        self.logs.follow()
    }
}

/// The runtime's events about one app, from before its file went in place.
struct Watch {
    name: String,
    events: EventReceiver,
}

impl Verdict for Watch {
    fn wait(self: Box<Self>, version: &str) -> Result<(), String> {
        let deadline = Instant::now() + VERDICT_TIMEOUT;
        loop {
            match self.events.recv_deadline(deadline) {
                Ok(RuntimeEvent::Started { app, version: v, .. }) if app == self.name && v == version => return Ok(()),
                Ok(RuntimeEvent::Refused { app: Some(app), reason, .. }) if app == self.name => {
                    return Err(format!("refused, the old version runs on: {reason}"));
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(format!(
                        "no verdict on {} {version} within {} s",
                        self.name,
                        VERDICT_TIMEOUT.as_secs()
                    ));
                }
            }
        }
    }
}
