//! The runtime's local control socket (`/run/trellis/control.sock`) and its
//! protocol: one JSON request per connection, answered by JSON lines. It
//! serves a [`Device`]; the `trellis device` commands are its client.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{AppSummary, Bundle, Device, DeviceStatus, Progress, UpdateRecord};

/// A request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// The device's state.
    Status,
    /// Install a firmware bundle (a path on the device, or a URL RAUC
    /// streams it from) and trial-boot it.
    Install {
        /// The bundle.
        bundle: Bundle,
    },
    /// Stop an app and keep it stopped until it is started ([`Device::stop_app`]).
    StopApp {
        /// The app.
        app: String,
    },
    /// Run a stopped app again ([`Device::start_app`]).
    StartApp {
        /// The app.
        app: String,
    },
    /// Stop an app and remove its file ([`Device::remove_app`]).
    RemoveApp {
        /// The app.
        app: String,
    },
}

/// An answer line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reply {
    /// The state.
    Status(Box<DeviceStatus>),
    /// Installation progress.
    Progress(Progress),
    /// Installed; the device reboots into the trial boot now.
    Installed(UpdateRecord),
    /// An app stopped or started: its status now.
    App(AppSummary),
    /// An app removed.
    Removed(String),
    /// The request failed.
    Error(String),
}

/// Errors of the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket cannot be created or reached.
    #[error("control socket {path}: {source}")]
    Socket {
        /// The socket.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The other side sent something that is not a reply.
    #[error("control socket {path}: bad reply {line:?}: {reason}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What came.
        line: String,
        /// Why it is wrong.
        reason: String,
    },
}

/// Listen on `path` (replacing a stale socket; mode 0600: root only) and serve
/// `device`, each connection on its own thread.
///
/// # Errors
/// The socket cannot be created.
pub fn serve(path: &Path, device: Arc<dyn Device>) -> Result<std::thread::JoinHandle<()>, ControlError> {
    let err = |source| ControlError::Socket { path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let device = Arc::clone(&device);
                let _ = std::thread::Builder::new().name("control-conn".into()).spawn(move || answer(stream, &*device));
            }
        })
        .map_err(err)
}

fn send(out: &mut UnixStream, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)
}

fn answer(stream: UnixStream, device: &dyn Device) {
    let Ok(mut out) = stream.try_clone() else { return };
    let mut line = String::new();
    if BufReader::new(stream).read_line(&mut line).is_err() {
        return;
    }
    let request: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            let _ = send(&mut out, &Reply::Error(format!("bad request {:?}: {e}", line.trim_end())));
            return;
        }
    };
    match request {
        Request::Status => {
            let _ = send(&mut out, &Reply::Status(Box::new(device.status())));
        }
        Request::StopApp { app } => {
            let reply = device.stop_app(&app).map_or_else(|e| Reply::Error(e.to_string()), Reply::App);
            let _ = send(&mut out, &reply);
        }
        Request::StartApp { app } => {
            let reply = device.start_app(&app).map_or_else(|e| Reply::Error(e.to_string()), Reply::App);
            let _ = send(&mut out, &reply);
        }
        Request::RemoveApp { app } => {
            let reply = device.remove_app(&app).map_or_else(|e| Reply::Error(e.to_string()), |()| Reply::Removed(app));
            let _ = send(&mut out, &reply);
        }
        Request::Install { bundle } => {
            let result = device.install_firmware(&bundle, &mut |p| {
                // The client may have gone; the installation goes on.
                let _ = send(&mut out, &Reply::Progress(p.clone()));
            });
            match result {
                Ok(record) => {
                    let _ = send(&mut out, &Reply::Installed(record));
                    let _ = out.shutdown(std::net::Shutdown::Write);
                    // Let the client read the answer and go (it closes its end)
                    // before the reboot takes the system down, at most 5 s.
                    let _ = out.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                    let _ = std::io::Read::read(&mut out, &mut [0u8; 64]);
                    device.installed();
                }
                Err(e) => {
                    let _ = send(&mut out, &Reply::Error(e));
                }
            }
        }
    }
}

/// Send `request` to the socket at `path` and pass every reply line to `on_reply`.
///
/// # Errors
/// The socket cannot be reached or answers something that is not a reply.
pub fn request(path: &Path, request: &Request, mut on_reply: impl FnMut(Reply)) -> Result<(), ControlError> {
    let err = |source| ControlError::Socket { path: path.to_owned(), source };
    let mut stream = UnixStream::connect(path).map_err(err)?;
    let mut line = serde_json::to_vec(request).map_err(|e| err(std::io::Error::other(e)))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(err)?;
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(err)?;
        let reply = serde_json::from_str(&line).map_err(|e| ControlError::Protocol {
            path: path.to_owned(),
            line: line.clone(),
            reason: e.to_string(),
        })?;
        on_reply(reply);
    }
    Ok(())
}
