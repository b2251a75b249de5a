//! What each request does. The device behind the API is a trait, so the
//! routing, the limits and the refusals are tested without a runtime.
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/status` | the device's state (firmware, slots, last update, apps) |
//! | `GET /v1/apps` | the apps with version, state, restarts |
//! | `PUT /v1/apps/NAME` (body: the app file) | 201 once the new version runs; 422 with the runtime's reason when it refused it (the old one runs on) |
//! | `DELETE /v1/apps/NAME` | 204; the app stops |
//! | `GET /metrics` | Prometheus text |

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use trellis_update::control::{AppSummary, DeviceStatus};

use crate::apps::{AppLocks, UploadError, admit, install, receive};
use crate::http::Head;

/// What the API serves (the runtime implements it).
pub trait Device: Send + Sync {
    /// The device's state: firmware, slots, last update, apps.
    fn status(&self) -> DeviceStatus;
    /// Metrics in Prometheus' text format.
    fn metrics(&self) -> String;
    /// The apps.
    fn apps(&self) -> Vec<AppSummary> {
        self.status().apps
    }
    /// Where app files live.
    fn apps_dir(&self) -> PathBuf;
    /// Check an uploaded file before it goes in place (format, manifest name,
    /// signature policy); its version when acceptable.
    ///
    /// # Errors
    /// Why the file is not acceptable.
    fn verify_app(&self, name: &str, bytes: &[u8]) -> Result<String, String>;
    /// Start watching for the runtime's verdict on `name`, before its new
    /// file goes in place (so a fast swap is not missed).
    fn watch_app(&self, name: &str) -> Box<dyn Verdict>;
}

/// The runtime's verdict on one app's new file.
pub trait Verdict: Send {
    /// Wait until the runtime runs `version`, or refuses it.
    ///
    /// # Errors
    /// The runtime refused it (the old version runs on), or no verdict came in time.
    fn wait(self: Box<Self>, version: &str) -> Result<(), String>;
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Its content type.
    pub content_type: String,
    /// Its body.
    pub body: Vec<u8>,
}

impl Answer {
    fn json(status: u16, value: &impl serde::Serialize) -> Self {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
        body.push(b'\n');
        Self { status, content_type: "application/json".into(), body }
    }

    /// A JSON error `{"error": "..."}`.
    #[must_use]
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self::json(status, &serde_json::json!({ "error": message.into() }))
    }
}

impl From<UploadError> for Answer {
    fn from(e: UploadError) -> Self {
        Self::error(e.status(), e.to_string())
    }
}

/// The routes over one device.
pub struct Routes {
    device: Arc<dyn Device>,
    locks: AppLocks,
    max_app_bytes: u64,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes").field("max_app_bytes", &self.max_app_bytes).finish_non_exhaustive()
    }
}

impl Routes {
    /// Routes over `device`; apps larger than `max_app_bytes` are refused unread.
    #[must_use]
    pub fn new(device: Arc<dyn Device>, max_app_bytes: u64) -> Self {
        Self { device, locks: AppLocks::default(), max_app_bytes }
    }

    /// Serve one request; `body` holds what the client sends after the head.
    pub fn route(&self, head: &Head, body: &mut dyn Read) -> Answer {
        let segments = head.segments();
        match (head.method.as_str(), segments.as_slice()) {
            ("GET", ["v1", "status"]) => Answer::json(200, &self.device.status()),
            ("GET", ["v1", "apps"]) => Answer::json(200, &self.device.apps()),
            ("PUT", ["v1", "apps", name]) => self.upload(name, head.content_length, body),
            ("DELETE", ["v1", "apps", name]) => self.remove(name),
            ("GET", ["metrics"]) => Answer {
                status: 200,
                content_type: "text/plain; version=0.0.4".into(),
                body: self.device.metrics().into_bytes(),
            },
            (_, ["v1", "status" | "apps"] | ["v1", "apps", _] | ["metrics"]) => {
                Answer::error(405, format!("{} is not allowed on {}", head.method, head.path))
            }
            _ => Answer::error(404, format!("no such resource: {}", head.path)),
        }
    }

    fn upload(&self, name: &str, size: Option<u64>, body: &mut dyn Read) -> Answer {
        let dir = self.device.apps_dir();
        let size = match admit(name, size, self.max_app_bytes, &dir) {
            Ok(s) => s,
            Err(e) => return e.into(),
        };
        let _turn = self.locks.lock(name);
        let bytes = match receive(body, size) {
            Ok(b) => b,
            Err(e) => return e.into(),
        };
        let version = match self.device.verify_app(name, &bytes) {
            Ok(v) => v,
            Err(why) => return UploadError::Invalid(why).into(),
        };
        let verdict = self.device.watch_app(name);
        if let Err(e) = install(&dir, name, &bytes) {
            return e.into();
        }
        match verdict.wait(&version) {
            Ok(()) => Answer::json(201, &serde_json::json!({ "app": name, "version": version, "state": "running" })),
            Err(why) => Answer::error(422, why),
        }
    }

    fn remove(&self, name: &str) -> Answer {
        if !trellis_appfmt::valid_name(name) {
            return UploadError::Name(name.to_owned()).into();
        }
        let _turn = self.locks.lock(name);
        let path = self.device.apps_dir().join(format!("{name}.wasm"));
        match std::fs::remove_file(&path) {
            Ok(()) => Answer { status: 204, content_type: "text/plain".into(), body: Vec::new() },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Answer::error(404, format!("no app {name}")),
            Err(e) => Answer::error(500, format!("{}: {e}", path.display())),
        }
    }
}
