//! What each request does, over the one device interface
//! ([`trellis_control::Device`]), so the routing, the limits and the refusals
//! are tested against its fake (`trellis_control::testing`) without a runtime.
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/status` | the device's state (firmware, slots, last update, apps) |
//! | `GET /v1/apps` | the apps with version, state, restarts |
//! | `PUT /v1/apps/NAME` (body: the app file) | 201 once the new version runs (then its file is in place); 422 with the runtime's reason when it refused it (the old one runs on, nothing is written); 409 when the device's configuration does not run that app |
//! | `DELETE /v1/apps/NAME` | 204; the app stops |
//! | `POST /v1/apps/NAME/stop` | 200 with the app's status (state `stopped`); it stays stopped, across reboots, until started |
//! | `POST /v1/apps/NAME/start` | 200 with the app's status once it runs; 422 with the runtime's reason (it stays stopped) |
//! | `PUT /v1/firmware` (body: a RAUC bundle) | 200, then the installation as it goes: one JSON line per step (the control socket's replies: `progress`, then `installed` or `error`); the device reboots into the trial after `installed` |
//! | `POST /v1/firmware` (body: `{"url": "http(s)://..."}`) | the same, RAUC streaming the bundle from that URL (nothing stored on the device); 400 when the body is not such a URL |
//! | `POST /v1/reboot` | 202; the device reboots |
//! | `GET /v1/logs[?follow=false]` | server-sent events: the recent log, then each new line as it comes |
//! | `GET /metrics` | Prometheus text |

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use trellis_control::socket::Reply;
use trellis_control::{AppError, Bundle, Device};

use crate::apps::{AppLocks, UploadError, admit, receive};
use crate::firmware;
use crate::http::Head;

/// How often a quiet log stream sends a comment, so a client that went away
/// is noticed (the write fails) and its connection freed.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

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

/// Writes a streamed answer's body.
pub type StreamWriter = Box<dyn FnOnce(&mut dyn Write) -> std::io::Result<()> + Send>;

/// A streamed answer: written as it is produced, its end is the end of the
/// connection (no `Content-Length`).
pub struct Stream {
    /// HTTP status.
    pub status: u16,
    /// Its content type.
    pub content_type: String,
    /// Writes the body.
    pub write: StreamWriter,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("status", &self.status).field("content_type", &self.content_type).finish()
    }
}

/// What a request gets.
#[derive(Debug)]
pub enum Response {
    /// A whole answer.
    Full(Answer),
    /// An answer written as it is produced.
    Stream(Stream),
}

impl Response {
    /// The whole answer, a stream written to its end (for tests and tools).
    ///
    /// # Errors
    /// The stream's writer failed.
    pub fn collect(self) -> std::io::Result<Answer> {
        match self {
            Self::Full(a) => Ok(a),
            Self::Stream(s) => {
                let mut body = Vec::new();
                (s.write)(&mut body)?;
                Ok(Answer { status: s.status, content_type: s.content_type, body })
            }
        }
    }
}

impl From<Answer> for Response {
    fn from(a: Answer) -> Self {
        Self::Full(a)
    }
}

impl From<UploadError> for Response {
    fn from(e: UploadError) -> Self {
        Self::Full(e.into())
    }
}

impl From<UploadError> for Answer {
    fn from(e: UploadError) -> Self {
        Self::error(e.status(), e.to_string())
    }
}

impl From<AppError> for Answer {
    fn from(e: AppError) -> Self {
        Self::error(e.status(), e.to_string())
    }
}

/// The routes over one device.
pub struct Routes {
    device: Arc<dyn Device>,
    locks: AppLocks,
    max_app_bytes: u64,
    max_bundle_bytes: u64,
    installing: Arc<AtomicBool>,
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
        Self {
            device,
            locks: AppLocks::default(),
            max_app_bytes,
            max_bundle_bytes: firmware::DEFAULT_MAX_BUNDLE_BYTES,
            installing: Arc::default(),
        }
    }

    /// Firmware bundles larger than `limit` are refused unread.
    #[must_use]
    pub fn with_bundle_limit(mut self, limit: u64) -> Self {
        self.max_bundle_bytes = limit;
        self
    }

    /// Serve one request; `body` holds what the client sends after the head.
    pub fn route(&self, head: &Head, body: &mut dyn Read) -> Response {
        let segments = head.segments();
        match (head.method.as_str(), segments.as_slice()) {
            ("GET", ["v1", "status"]) => Answer::json(200, &self.device.status()).into(),
            ("GET", ["v1", "apps"]) => Answer::json(200, &self.device.apps()).into(),
            ("PUT", ["v1", "apps", name]) => self.upload(name, head.content_length, body).into(),
            ("DELETE", ["v1", "apps", name]) => self.remove(name).into(),
            ("POST", ["v1", "apps", name, action @ ("stop" | "start")]) => self.stop_start(name, action).into(),
            ("PUT", ["v1", "firmware"]) => self.firmware(head.content_length, body),
            ("POST", ["v1", "firmware"]) => self.firmware_url(head.content_length, body),
            ("POST", ["v1", "reboot"]) => self.reboot(),
            ("GET", ["v1", "logs"]) => self.logs(head.query.as_deref() != Some("follow=false")),
            ("GET", ["metrics"]) => Answer {
                status: 200,
                content_type: "text/plain; version=0.0.4".into(),
                body: self.device.metrics().into_bytes(),
            }
            .into(),
            (
                _,
                ["v1", "status" | "apps" | "firmware" | "reboot" | "logs"]
                | ["v1", "apps", _]
                | ["v1", "apps", _, "stop" | "start"]
                | ["metrics"],
            ) => Answer::error(405, format!("{} is not allowed on {}", head.method, head.path)).into(),
            _ => Answer::error(404, format!("no such resource: {}", head.path)).into(),
        }
    }

    /// A firmware bundle: checked against the limit and the free space, streamed
    /// to the data partition (temporary name, synced, renamed), then installed
    /// by RAUC with the progress streamed back. One at a time.
    fn firmware(&self, size: Option<u64>, body: &mut dyn Read) -> Response {
        let Some(dir) = self.device.firmware_dir() else {
            return Answer::error(404, "this device takes no firmware updates").into();
        };
        let size = match firmware::admit(size, self.max_bundle_bytes, &dir) {
            Ok(s) => s,
            Err(e) => return e.into(),
        };
        let Some(turn) = Busy::take(&self.installing) else {
            return Answer::error(409, "a firmware update is already in progress on this device").into();
        };
        let bundle = match firmware::receive(body, size, &dir) {
            Ok(p) => p,
            Err(e) => return e.into(),
        };
        self.install(Bundle::File(bundle), turn)
    }

    /// A bundle RAUC streams from a URL (`{"url": ...}`, at most 4 KiB):
    /// nothing is stored on the device; installed as [`Routes::firmware`]
    /// installs an upload.
    fn firmware_url(&self, size: Option<u64>, body: &mut dyn Read) -> Response {
        if self.device.firmware_dir().is_none() {
            return Answer::error(404, "this device takes no firmware updates").into();
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Request {
            url: String,
        }
        const MAX: u64 = 4096;
        let Some(size) = size.filter(|n| *n <= MAX) else {
            return Answer::error(400, format!("the body must be {{\"url\": ...}} with a length, at most {MAX} bytes"))
                .into();
        };
        // Exactly the body: nothing past it is read.
        let mut text = vec![0; usize::try_from(size).unwrap_or(0)];
        if let Err(e) = body.read_exact(&mut text) {
            return Answer::error(400, format!("reading the body: {e}")).into();
        }
        let bundle =
            match serde_json::from_slice::<Request>(&text).map_err(|e| e.to_string()).and_then(|r| match Bundle::parse(
                &r.url,
            )? {
                streamed @ (Bundle::Url(_) | Bundle::Asset(_)) => Ok(streamed),
                Bundle::File(_) => Err(format!("{:?} is neither an http:// or https:// URL nor asset:<id>", r.url)),
            }) {
                Ok(b) => b,
                Err(e) => return Answer::error(400, format!("bad firmware URL request: {e}")).into(),
            };
        let Some(turn) = Busy::take(&self.installing) else {
            return Answer::error(409, "a firmware update is already in progress on this device").into();
        };
        self.install(bundle, turn)
    }

    /// Install `bundle` with the progress streamed back, then (when it
    /// installed) the trial reboot; an uploaded file is removed afterwards.
    fn install(&self, bundle: Bundle, turn: Busy) -> Response {
        let device = Arc::clone(&self.device);
        Response::Stream(Stream {
            status: 200,
            content_type: "application/x-ndjson".into(),
            write: Box::new(move |w| {
                let _turn = turn;
                let line = |w: &mut dyn Write, reply: &Reply| -> std::io::Result<()> {
                    let mut text = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
                    text.push(b'\n');
                    w.write_all(&text)?;
                    w.flush()
                };
                // The installation goes on when the client goes away: the
                // outcome is in the device's status.
                let mut gone = false;
                let result = device.install_firmware(&bundle, &mut |p| {
                    if !gone && line(w, &Reply::Progress(p.clone())).is_err() {
                        gone = true;
                    }
                });
                if let Bundle::File(path) = &bundle
                    && let Err(e) = std::fs::remove_file(path)
                {
                    tracing::warn!("api: removing {}: {e}", path.display());
                }
                match result {
                    Ok(record) => {
                        let sent = line(w, &Reply::Installed(record));
                        let device = Arc::clone(&device);
                        std::thread::spawn(move || device.installed());
                        sent
                    }
                    Err(e) => line(w, &Reply::Error(e)),
                }
            }),
        })
    }

    fn reboot(&self) -> Response {
        let device = Arc::clone(&self.device);
        Response::Stream(Stream {
            status: 202,
            content_type: "application/json".into(),
            write: Box::new(move |w| {
                w.write_all(b"{\"rebooting\": true}\n")?;
                w.flush()?;
                std::thread::spawn(move || {
                    // The answer reaches the client first.
                    std::thread::sleep(Duration::from_millis(500));
                    if let Err(e) = device.reboot() {
                        tracing::error!("api: reboot: {e}");
                    }
                });
                Ok(())
            }),
        })
    }

    fn logs(&self, follow: bool) -> Response {
        let (recent, live) = self.device.logs();
        Response::Stream(Stream {
            status: 200,
            content_type: "text/event-stream".into(),
            write: Box::new(move |w| {
                for entry in &recent {
                    write!(w, "data: {entry}\n\n")?;
                }
                w.flush()?;
                if follow { follow_logs(w, &live) } else { Ok(()) }
            }),
        })
    }

    fn upload(&self, name: &str, size: Option<u64>, body: &mut dyn Read) -> Answer {
        let size = match admit(name, size, self.max_app_bytes, &self.device.apps_dir()) {
            Ok(s) => s,
            Err(e) => return e.into(),
        };
        let _turn = self.locks.lock(name);
        let bytes = match receive(body, size) {
            Ok(b) => b,
            Err(e) => return e.into(),
        };
        match self.device.install_app(name, &bytes) {
            Ok(done) => Answer::json(
                201,
                &serde_json::json!({ "app": name, "version": done.version, "replaced": done.replaced,
                    "state": if done.stopped { "stopped" } else { "running" } }),
            ),
            Err(e) => e.into(),
        }
    }

    /// `stop` or `start` app `name`: its status afterwards.
    fn stop_start(&self, name: &str, action: &str) -> Answer {
        if !trellis_layout::valid_name(name) {
            return UploadError::Name(name.to_owned()).into();
        }
        let _turn = self.locks.lock(name);
        let result = if action == "stop" { self.device.stop_app(name) } else { self.device.start_app(name) };
        match result {
            Ok(app) => Answer::json(200, &app),
            Err(e) => e.into(),
        }
    }

    fn remove(&self, name: &str) -> Answer {
        if !trellis_layout::valid_name(name) {
            return UploadError::Name(name.to_owned()).into();
        }
        let _turn = self.locks.lock(name);
        match self.device.remove_app(name) {
            Ok(()) => Answer { status: 204, content_type: "text/plain".into(), body: Vec::new() },
            Err(e) => e.into(),
        }
    }
}

/// New log entries as server-sent events until the client goes away (a
/// write fails) or the device stops logging.
fn follow_logs(w: &mut dyn Write, live: &Receiver<String>) -> std::io::Result<()> {
    loop {
        match live.recv_timeout(KEEPALIVE) {
            Ok(entry) => write!(w, "data: {entry}\n\n")?,
            Err(RecvTimeoutError::Timeout) => w.write_all(b": keep-alive\n\n")?,
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
        w.flush()?;
    }
}

/// Held while a firmware update runs.
struct Busy(Arc<AtomicBool>);

impl Busy {
    fn take(flag: &Arc<AtomicBool>) -> Option<Self> {
        flag.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).ok().map(|_| Self(Arc::clone(flag)))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}
