//! The management API's view of the runtime (`trellis-api`, docs/api.md):
//! the same status the control socket gives, metrics, and app uploads
//! checked the way the runtime checks a copied file before it goes in place.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_api::Verdict;
use trellis_appfmt::{AppFile, TrustList};
use trellis_update::control::{DeviceStatus, Handler};

use crate::{AppState, EventReceiver, Runtime, RuntimeConfig, RuntimeEvent};

/// How long an upload waits for the runtime's verdict (a cold compile on a
/// slow CPU takes seconds).
pub const VERDICT_TIMEOUT: Duration = Duration::from_secs(120);

/// The runtime behind the API.
pub struct ApiDevice {
    runtime: Arc<Runtime>,
    config: RuntimeConfig,
    status: Arc<dyn Handler>,
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
        Self { runtime, config, status }
    }
}

/// The metrics of `runtime` in Prometheus' text format.
#[must_use]
pub fn metrics(runtime: &Runtime, uptime_ms: u64) -> String {
    let mut out = String::new();
    out.push_str("# HELP trellis_uptime_seconds Time since the kernel started.\n# TYPE trellis_uptime_seconds gauge\n");
    #[allow(clippy::cast_precision_loss)]
    out.push_str(&format!("trellis_uptime_seconds {:.3}\n", uptime_ms as f64 / 1000.0));
    if let Some(rss) = resident_bytes() {
        out.push_str("# HELP trellis_runtime_resident_bytes The runtime's resident memory.\n");
        out.push_str(&format!("# TYPE trellis_runtime_resident_bytes gauge\ntrellis_runtime_resident_bytes {rss}\n"));
    }
    out.push_str(
        "# HELP trellis_app_running Whether the app's current version is running.\n# TYPE trellis_app_running gauge\n",
    );
    let apps = runtime.status();
    for a in &apps {
        let up = u8::from(a.state == AppState::Running);
        out.push_str(&format!("trellis_app_running{{app=\"{}\",version=\"{}\"}} {up}\n", a.name, a.version));
    }
    out.push_str("# HELP trellis_app_restarts_total Restarts after crashes of the app's current version.\n");
    out.push_str("# TYPE trellis_app_restarts_total counter\n");
    for a in &apps {
        out.push_str(&format!("trellis_app_restarts_total{{app=\"{}\"}} {}\n", a.name, a.restarts));
    }
    out.push_str("# HELP trellis_app_dropped_events_total Events dropped for a full mailbox.\n");
    out.push_str("# TYPE trellis_app_dropped_events_total counter\n");
    for a in &apps {
        out.push_str(&format!("trellis_app_dropped_events_total{{app=\"{}\"}} {}\n", a.name, a.dropped_events));
    }
    out
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
