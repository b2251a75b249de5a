//! [`FakeDevice`]: an in-memory device for the tests of the clients (the
//! control socket, the HTTPS API, the CLI). The runtime's own tests run the
//! real thing.
//!
//! Its rules:
//! - an app file is acceptable when its text starts with `APP NAME VERSION`
//!   (NAME the app it is uploaded as; a fourth word is the `trellis:app`
//!   version it was built for), or when it is a real app file (its manifest
//!   names NAME); it is then put in place in the apps directory and "runs";
//! - a firmware bundle installs (reporting [`FakeDevice::progress`]) into slot
//!   B, unless [`FakeDevice::refuse_firmware`] is set: then RAUC's signature
//!   check fails;
//! - with [`FakeDevice::rolls_back`], the update is found rolled back after
//!   the trial reboot; without it, committed;
//! - `stop_app` and `start_app` set an app's state in the status to
//!   `stopped` or `running` (an app not in the status is not found).

#![allow(clippy::missing_panics_doc)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Mutex, MutexGuard, PoisonError};

use trellis_layout::AppsDir;

use crate::{
    AppError, AppInstalled, AppSummary, Bundle, ByRoot, Consent, Device, DeviceStatus, FirmwareStatus, Phase, Progress,
    UpdateRecord,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An in-memory device; every field is the test's to set and read.
#[derive(Debug)]
pub struct FakeDevice {
    /// What [`Device::status`] answers (the apps installed are added to it).
    pub status: Mutex<DeviceStatus>,
    /// What [`Device::metrics`] answers.
    pub metrics: String,
    /// Where app files go.
    pub apps: AppsDir,
    /// Where firmware uploads go; `None`: no firmware updates.
    pub firmware_dir: Option<PathBuf>,
    /// Bundles named by their piece root stream from the device's asset sources.
    pub streams_firmware: bool,
    /// Every bundle streamed by its piece root fails, for this reason (the
    /// site's sources do not hold it); RAUC has written nothing.
    pub stream_fails: Option<String>,
    /// The device's asset sources, by piece root (`None`: it has none):
    /// [`Device::fetch_by_root`] answers the bytes held under the root (as
    /// the real device answers them once every block matched), else that
    /// no source holds it.
    pub sources: Option<BTreeMap<String, Vec<u8>>>,
    /// Each root [`Device::fetch_by_root`] was asked for, in order.
    pub fetched_by_root: Mutex<Vec<String>>,
    /// How many times [`Device::fetches_done`] was called.
    pub fetches_done: std::sync::atomic::AtomicUsize,
    /// Another installation runs (the status's `last_update` says which):
    /// every install is refused as busy.
    pub installing: AtomicBool,
    /// What RAUC reports while it installs.
    pub progress: Vec<Progress>,
    /// RAUC refuses every bundle (bad signature).
    pub refuse_firmware: AtomicBool,
    /// After the trial reboot the update is found rolled back, for this reason.
    pub rolls_back: Option<String>,
    /// The recent log entries.
    pub recent_logs: Vec<String>,
    /// Each app file installed, in order (its text).
    pub apps_installed: Mutex<Vec<String>>,
    /// Each bundle RAUC was given (its text).
    pub bundles: Mutex<Vec<String>>,
    /// Asked to reboot into the trial.
    pub rebooted_into_trial: AtomicBool,
    /// Asked to reboot.
    pub rebooted: AtomicBool,
    /// Every app file is refused, for this reason (an app that fails to start here).
    pub refuse_apps: Mutex<Option<String>>,
    /// The apps' consent hooks answer this (none: apply).
    pub defer: Mutex<Option<(String, u32)>>,
    log: Mutex<Option<Sender<String>>>,
}

impl FakeDevice {
    /// A device with no apps and no firmware updates, its apps in `apps_dir`.
    pub fn new(apps_dir: impl Into<PathBuf>) -> Self {
        Self {
            status: Mutex::new(DeviceStatus { uptime_ms: 0, firmware: FirmwareStatus::idle(), apps: Vec::new() }),
            metrics: String::new(),
            apps: AppsDir::new(apps_dir),
            firmware_dir: None,
            streams_firmware: false,
            stream_fails: None,
            sources: None,
            fetched_by_root: Mutex::default(),
            fetches_done: std::sync::atomic::AtomicUsize::new(0),
            installing: AtomicBool::new(false),
            progress: vec![
                Progress { percent: 0, message: "Installing".into() },
                Progress { percent: 50, message: "Copying image".into() },
                Progress { percent: 100, message: "Installing done.".into() },
            ],
            refuse_firmware: AtomicBool::new(false),
            rolls_back: None,
            recent_logs: Vec::new(),
            apps_installed: Mutex::default(),
            bundles: Mutex::default(),
            rebooted_into_trial: AtomicBool::new(false),
            rebooted: AtomicBool::new(false),
            refuse_apps: Mutex::default(),
            defer: Mutex::default(),
            log: Mutex::default(),
        }
    }

    /// The same, answering `status`.
    #[must_use]
    pub fn with_status(self, status: DeviceStatus) -> Self {
        *lock(&self.status) = status;
        self
    }

    /// The same, taking firmware uploads into `dir`.
    #[must_use]
    pub fn with_firmware(mut self, dir: impl Into<PathBuf>) -> Self {
        self.firmware_dir = Some(dir.into());
        self
    }

    /// Send `entry` to whoever follows the log.
    pub fn log(&self, entry: &str) {
        if let Some(tx) = &*lock(&self.log) {
            let _ = tx.send(entry.to_owned());
        }
    }

    /// End the log: followers' streams end.
    pub fn stop_logging(&self) {
        lock(&self.log).take();
    }

    /// `stop_app` and `start_app`: the app's state in the status becomes
    /// `state` (an app that is not in the status is not found).
    fn set_state(&self, name: &str, state: &str) -> Result<AppSummary, AppError> {
        if !trellis_layout::valid_name(name) {
            return Err(AppError::Name(name.to_owned()));
        }
        let mut status = lock(&self.status);
        let app = status.apps.iter_mut().find(|a| a.name == name).ok_or_else(|| AppError::NotFound(name.to_owned()))?;
        state.clone_into(&mut app.state);
        Ok(app.clone())
    }

    /// One running app, as the status shows it.
    #[must_use]
    pub fn app(name: &str, version: &str) -> AppSummary {
        AppSummary {
            name: name.into(),
            version: version.into(),
            state: "running".into(),
            restarts: 0,
            last_error: None,
            memory_bytes: 0,
            cpu_ms: 0,
            calls: 0,
            interface: None,
        }
    }
}

impl Device for FakeDevice {
    fn status(&self) -> DeviceStatus {
        let mut status = lock(&self.status).clone();
        if self.rebooted_into_trial.load(Ordering::SeqCst)
            && let Some(r) = status.firmware.last_update.as_mut()
            && r.phase == Phase::Trial
        {
            match &self.rolls_back {
                Some(reason) => {
                    r.phase = Phase::RolledBack;
                    r.reason = Some(reason.clone());
                }
                None => r.phase = Phase::Committed,
            }
        }
        status
    }

    fn metrics(&self) -> String {
        self.metrics.clone()
    }

    fn apps_dir(&self) -> PathBuf {
        self.apps.dir().to_owned()
    }

    fn install_app(&self, name: &str, bytes: &[u8]) -> Result<AppInstalled, AppError> {
        if let Some(reason) = &*lock(&self.refuse_apps) {
            return Err(AppError::Refused(reason.clone()));
        }
        let text = String::from_utf8_lossy(bytes).into_owned();
        let mut words = text.split_whitespace();
        let real = trellis_appfmt::AppFile::parse(bytes).ok().map(|f| f.manifest);
        let version = match (words.next(), words.next(), words.next()) {
            _ if real.as_ref().is_some_and(|m| m.name == name) => real.map(|m| m.version).unwrap_or_default(),
            _ if real.is_some() => {
                return Err(AppError::Refused(format!("the manifest names another app, not {name:?}")));
            }
            (Some("APP"), Some(n), Some(v)) if n == name => v.to_owned(),
            (Some("APP"), Some(n), _) => {
                return Err(AppError::Refused(format!("the manifest names the app {n:?}, not {name:?}")));
            }
            _ => return Err(AppError::Refused("not a signed app".into())),
        };
        // What it was built for: a real app's imports, or the word after the version.
        let interface = match trellis_appfmt::interface_imports(bytes) {
            Ok(imports) => trellis_appfmt::built_for(&imports),
            Err(_) => words.next().map(str::to_owned),
        };
        let path = self.apps.path(name);
        trellis_layout::write_atomic(&path, bytes).map_err(|e| AppError::Failed(e.to_string()))?;
        lock(&self.apps_installed).push(text);
        let mut status = lock(&self.status);
        let previous = status.apps.iter().position(|a| a.name == name).map(|i| status.apps.remove(i));
        // As the runtime does: a new version of a stopped app stays stopped.
        let stopped = previous.as_ref().is_some_and(|a| a.state == "stopped");
        let mut app = Self::app(name, &version);
        app.interface = interface;
        if stopped {
            "stopped".clone_into(&mut app.state);
        }
        status.apps.push(app);
        Ok(AppInstalled { app: name.to_owned(), version, replaced: previous.map(|a| a.version), stopped })
    }

    fn remove_app(&self, name: &str) -> Result<(), AppError> {
        let path = self.apps.path(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                lock(&self.status).apps.retain(|a| a.name != name);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(AppError::NotFound(name.to_owned())),
            Err(e) => Err(AppError::Failed(format!("{}: {e}", path.display()))),
        }
    }

    fn stop_app(&self, name: &str) -> Result<AppSummary, AppError> {
        self.set_state(name, "stopped")
    }

    fn start_app(&self, name: &str) -> Result<AppSummary, AppError> {
        self.set_state(name, "running")
    }

    fn firmware_dir(&self) -> Option<PathBuf> {
        self.firmware_dir.clone()
    }

    fn streams_firmware(&self) -> bool {
        self.streams_firmware
    }

    fn fetch_by_root(&self, root: &str, size: u64) -> Option<Result<ByRoot, String>> {
        let sources = self.sources.as_ref()?;
        lock(&self.fetched_by_root).push(root.to_owned());
        Some(match sources.get(root) {
            // Every 64 KiB block from the origin.
            Some(bytes) if bytes.len() as u64 == size => {
                Ok(ByRoot { bytes: bytes.clone(), fetched: size.div_ceil(65_536), from_peers: 0 })
            }
            Some(bytes) => Err(format!("asset:{root} is {} bytes, the release names {size}", bytes.len())),
            // What the runtime answers when no source holds it.
            None => Err(format!(
                "asset {root} from (no origin): no asset origin is configured, and neither the device nor a peer holds what was asked"
            )),
        })
    }

    fn fetches_done(&self) {
        self.fetches_done.fetch_add(1, Ordering::SeqCst);
    }

    fn install_firmware(&self, bundle: &Bundle, progress: &mut dyn FnMut(&Progress)) -> Result<UpdateRecord, String> {
        let text = match bundle {
            Bundle::File(path) => {
                std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
            }
            Bundle::Url(_) | Bundle::Asset(_) => bundle.to_string(),
        };
        if self.installing.load(Ordering::SeqCst) {
            return Err("busy: an installation is already running".into());
        }
        lock(&self.bundles).push(text);
        if let (Bundle::Asset(_), Some(why)) = (bundle, &self.stream_fails) {
            return Err(format!("RAUC: Failed to stream bundle {bundle}: {why}"));
        }
        for p in &self.progress {
            progress(p);
        }
        if self.refuse_firmware.load(Ordering::SeqCst) {
            return Err(format!("RAUC: {bundle}: signature verification failed"));
        }
        let record = UpdateRecord {
            bundle: bundle.to_string(),
            version: Some("2.0.0".into()),
            from: "A".into(),
            to: Some("B".into()),
            phase: Phase::Trial,
            reason: None,
            boot_id: "boot-1".into(),
            started: 100,
            changed: 101,
            resumed: 0,
        };
        lock(&self.status).firmware.last_update = Some(record.clone());
        Ok(record)
    }

    fn installed(&self) {
        self.rebooted_into_trial.store(true, Ordering::SeqCst);
    }

    fn reboot(&self) -> Result<(), String> {
        self.rebooted.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn update_consent(&self, _release: &str) -> Consent {
        match &*lock(&self.defer) {
            Some((app, seconds)) => Consent::Defer { app: app.clone(), seconds: *seconds },
            None => Consent::Apply,
        }
    }

    fn logs(&self) -> (Vec<String>, Receiver<String>) {
        let (tx, rx) = channel();
        *lock(&self.log) = Some(tx);
        (self.recent_logs.clone(), rx)
    }
}
