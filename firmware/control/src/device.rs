//! The device trait every client drives.

use std::path::PathBuf;
use std::sync::mpsc::Receiver;

use serde::{Deserialize, Serialize};

use crate::{AppSummary, Bundle, DeviceStatus, Progress, UpdateRecord};

/// An app the device runs now (or holds, stopped), after [`Device::install_app`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AppInstalled {
    /// The app.
    pub app: String,
    /// The version running now.
    pub version: String,
    /// The version it replaced, if one ran.
    pub replaced: Option<String>,
    /// The app is stopped ([`Device::stop_app`]): the new version was
    /// checked and its file put in place, but it runs only once started.
    #[serde(default)]
    pub stopped: bool,
}

/// The apps' answer when an update is about to be applied (a soft update
/// asks; a forced or critical one does not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "answer")]
pub enum Consent {
    /// Apply it now.
    Apply,
    /// Not now: ask again after `seconds` (a machine in use).
    Defer {
        /// The app that asked to wait.
        app: String,
        /// How long.
        seconds: u32,
    },
}

/// A release artifact read by its piece root ([`Device::fetch_by_root`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByRoot {
    /// Its bytes, every block checked against the root.
    pub bytes: Vec<u8>,
    /// Blocks that crossed the network for it (the rest were on the device).
    pub fetched: u64,
    /// Of those, the blocks LAN peers sent (the rest came from the origin).
    pub from_peers: u64,
}

impl ByRoot {
    /// Where its blocks came from, as an event reason says it:
    /// `3 of 17 blocks from LAN peers`, or `on the device already`.
    #[must_use]
    pub fn sources(&self) -> String {
        if self.fetched == 0 {
            "on the device already".into()
        } else {
            format!("{} of {} blocks from LAN peers", self.from_peers, self.fetched)
        }
    }
}

/// Why an app operation did not happen; in every case whatever ran before
/// runs on and the apps directory is as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// Not an app name.
    #[error("{0:?} is not an app name ([a-z0-9][a-z0-9_-]*, at most 64 characters)")]
    Name(String),
    /// The device refused the file (format, name, signature, interface,
    /// permissions, compilation or start failed): the device's reason.
    #[error("refused, the old version runs on: {0}")]
    Refused(String),
    /// The device's configuration does not run this app.
    #[error("this device does not run app {app}: {reason}")]
    NotRun {
        /// The app.
        app: String,
        /// Which setting excludes it.
        reason: String,
    },
    /// There is no such app.
    #[error("no app {0}")]
    NotFound(String),
    /// The device could not do it (a file system error, the runtime stopped).
    #[error("{0}")]
    Failed(String),
}

impl AppError {
    /// The HTTP status code that says this.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::Name(_) => 400,
            Self::NotFound(_) => 404,
            Self::NotRun { .. } => 409,
            Self::Refused(_) => 422,
            Self::Failed(why) if why.contains("No space left") => 507,
            Self::Failed(_) => 500,
        }
    }
}

/// A Trellis device, as every client sees it: the runtime implements it; the
/// control socket, the HTTPS API and the fleet agent serve or drive it. None
/// of them writes into the apps directory or calls RAUC behind its back.
pub trait Device: Send + Sync {
    /// The device's state: firmware, slots, last update, apps.
    fn status(&self) -> DeviceStatus;

    /// Time since the kernel started, in milliseconds, without the rest of
    /// [`Device::status`] (which asks RAUC for the slots).
    fn uptime_ms(&self) -> u64 {
        self.status().uptime_ms
    }

    /// The apps.
    fn apps(&self) -> Vec<AppSummary> {
        self.status().apps
    }

    /// Metrics in Prometheus' text format.
    fn metrics(&self) -> String {
        String::new()
    }

    /// The directory app files live in (for the free-space check before an
    /// upload is read).
    fn apps_dir(&self) -> PathBuf;

    /// Install `bytes` as app `name`: checked, compiled and started as a
    /// transaction; only once the new version runs is its file put in place.
    ///
    /// # Errors
    /// Why it was not installed; the old version (if any) runs on.
    fn install_app(&self, name: &str, bytes: &[u8]) -> Result<AppInstalled, AppError>;

    /// Stop app `name` and remove its file.
    ///
    /// # Errors
    /// No such app, or its file cannot be removed.
    fn remove_app(&self, name: &str) -> Result<(), AppError>;

    /// Stop app `name` and keep it stopped (across restarts of the runtime
    /// and reboots) until [`Device::start_app`]: its file, key-value store and
    /// last good copy stay; crash handling does not restart it. A new version
    /// installed meanwhile is checked and put in place, and stays stopped.
    /// Stopping a stopped app changes nothing.
    ///
    /// # Errors
    /// No such app, or the stop cannot be recorded (the app runs on).
    fn stop_app(&self, name: &str) -> Result<AppSummary, AppError> {
        Err(AppError::Failed(format!("this device cannot stop app {name}")))
    }

    /// Run app `name` again after [`Device::stop_app`], from its file (the
    /// normal load); an app that runs already runs on, one given up on after
    /// a crash loop is loaded again.
    ///
    /// # Errors
    /// No such app, or it was refused (then it stays stopped, with the
    /// reason as its last error).
    fn start_app(&self, name: &str) -> Result<AppSummary, AppError> {
        Err(AppError::Failed(format!("this device cannot start app {name}")))
    }

    /// Where an uploaded firmware bundle is kept while RAUC installs it (on
    /// the data partition); `None`: this device takes no firmware updates.
    fn firmware_dir(&self) -> Option<PathBuf> {
        None
    }

    /// Whether a firmware bundle named by its piece root
    /// ([`Bundle::Asset`]) streams from this device's asset sources (its
    /// peers on the LAN, the asset origin): a fleet agent then gives the
    /// device the root its signed release names instead of fetching the
    /// bundle first.
    fn streams_firmware(&self) -> bool {
        false
    }

    /// Read the release artifact whose piece root is `root` (`size` bytes,
    /// as the signed release names both) from this device's asset sources:
    /// its peers on the LAN, then the site's asset origin, every block
    /// checked against the root as it arrives. `None`: this device has no
    /// asset sources (a fleet agent then fetches the artifact whole).
    ///
    /// # Errors
    /// (Inside the `Some`.) No source holds it or could be reached, or its
    /// size is not `size`.
    fn fetch_by_root(&self, root: &str, size: u64) -> Option<Result<ByRoot, String>> {
        let _ = (root, size);
        None
    }

    /// The attempt that fetched artifacts by their root
    /// ([`Device::fetch_by_root`]) has ended, installed or not: what it
    /// fetched is kept only as far as the device runs it (until then it is
    /// kept whatever else is installed).
    fn fetches_done(&self) {}

    /// Install the firmware bundle `bundle` (a file on the device, a URL
    /// RAUC streams it from, or a piece root the device streams from its
    /// asset sources) through RAUC, reporting progress.
    ///
    /// # Errors
    /// Why the installation failed (RAUC's reason); the booted slot is untouched.
    fn install_firmware(&self, bundle: &Bundle, progress: &mut dyn FnMut(&Progress)) -> Result<UpdateRecord, String> {
        let _ = (bundle, progress);
        Err("this device takes no firmware updates".into())
    }

    /// After a successful installation was reported: reboot into the trial.
    fn installed(&self) {}

    /// Reboot now (into the primary slot).
    ///
    /// # Errors
    /// Why it cannot.
    fn reboot(&self) -> Result<(), String> {
        Err("this device cannot reboot on request".into())
    }

    /// Whether the apps agree to `release` being applied now (each app's
    /// consent hook, if it has one; the first that defers wins).
    fn update_consent(&self, release: &str) -> Consent {
        let _ = release;
        Consent::Apply
    }

    /// The recent log entries (JSON objects, oldest first) and a channel with
    /// each new one.
    fn logs(&self) -> (Vec<String>, Receiver<String>) {
        (Vec::new(), std::sync::mpsc::channel().1)
    }
}
