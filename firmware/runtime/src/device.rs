//! The runtime as a device: the one implementation of the device interface
//! ([`trellis_control::Device`]) that the control socket, the management API
//! and the fleet agent serve, and the health the update gate waits for
//! (docs/update.md).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use trellis_control::{
    AppError, AppInstalled, AppSummary, Bundle, ByRoot, Consent, Device, DeviceStatus, FirmwareStatus, Progress,
    UpdateRecord,
};
use trellis_update::{Platform, Rauc, Reboot, Updater};

use crate::api::LogBook;
use crate::{AppState, LoadError, Runtime, RuntimeConfig, paths};

/// Between answering a successful install and rebooting into the trial.
pub const REBOOT_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether every app in the apps directory that the configuration runs is
/// running; otherwise which ones are not, and why.
///
/// # Errors
/// The apps that are not running (or the apps directory that cannot be read).
pub fn health(runtime: &Runtime, config: &RuntimeConfig) -> Result<(), String> {
    let dir = trellis_layout::AppsDir::new(&config.apps_dir);
    let listed = dir.list().map_err(|e| format!("{}: {e}", dir.dir().display()))?;
    let names: Vec<String> = listed.into_iter().map(|(name, _)| name).filter(|n| config.runs(n)).collect();
    let sick: Vec<String> = names
        .iter()
        .filter_map(|name| match runtime.app_status(name) {
            // Stopped on request is what the operator asked for, not a fault.
            Some(s) if s.state == AppState::Running || s.state == AppState::Stopped => None,
            Some(s) => Some(format!("{name}: {}", describe(&s.state, s.last_error.as_deref()))),
            None => Some(format!("{name}: not loaded")),
        })
        .collect();
    if sick.is_empty() { Ok(()) } else { Err(sick.join("; ")) }
}

fn describe(state: &AppState, last_error: Option<&str>) -> String {
    let state = match state {
        AppState::Running => "running".to_owned(),
        AppState::Restarting => "restarting".to_owned(),
        AppState::Failed(why) => format!("failed: {why}"),
        AppState::Stopped => "stopped".to_owned(),
    };
    match last_error {
        Some(e) if !state.contains(e) => format!("{state} ({e})"),
        _ => state,
    }
}

/// The apps as `trellis device status` shows them.
#[must_use]
pub fn apps(runtime: &Runtime) -> Vec<AppSummary> {
    runtime
        .status()
        .into_iter()
        .map(|s| AppSummary {
            memory_bytes: s.usage.memory_bytes(),
            cpu_ms: u64::try_from(s.usage.cpu_time().as_millis()).unwrap_or(u64::MAX),
            calls: s.usage.calls(),
            state: describe(&s.state, None),
            name: s.name,
            version: s.version,
            restarts: s.restarts,
            last_error: s.last_error,
            interface: s.interface,
        })
        .collect()
}

/// The firmware side of a device: the update lifecycle
/// ([`trellis_update::Updater`] on a device with RAUC).
pub trait Firmware: Send + Sync {
    /// Slots, the update running, the last update.
    fn status(&self) -> FirmwareStatus;
    /// Time since the kernel started.
    fn uptime(&self) -> Duration;
    /// Install `bundle` (a file, or a URL RAUC streams from) through RAUC,
    /// reporting progress.
    ///
    /// # Errors
    /// Why the installation failed.
    fn install(&self, bundle: &Bundle, progress: &mut dyn FnMut(&Progress)) -> Result<UpdateRecord, String>;
    /// Reboot into the trial boot of what was installed.
    ///
    /// # Errors
    /// Init cannot be asked.
    fn reboot_into_trial(&self) -> Result<(), String>;
    /// Reboot into the primary slot.
    ///
    /// # Errors
    /// Init cannot be asked.
    fn reboot(&self) -> Result<(), String>;
}

impl<R: Rauc, P: Platform> Firmware for Updater<R, P> {
    fn status(&self) -> FirmwareStatus {
        Updater::status(self)
    }
    fn uptime(&self) -> Duration {
        self.platform().uptime()
    }
    fn install(&self, bundle: &Bundle, progress: &mut dyn FnMut(&Progress)) -> Result<UpdateRecord, String> {
        Updater::install(self, bundle, progress).map_err(|e| e.to_string())
    }
    fn reboot_into_trial(&self) -> Result<(), String> {
        Updater::reboot_into_trial(self).map_err(|e| e.to_string())
    }
    fn reboot(&self) -> Result<(), String> {
        self.platform().reboot(Reboot::Normal).map_err(|e| e.to_string())
    }
}

/// The runtime as a device: what the control socket, the management API and
/// the fleet agent all drive ([`trellis_control::Device`]). Apps go through
/// the runtime itself ([`Runtime::install`]); firmware through the update
/// lifecycle, when the device has one.
pub struct RuntimeDevice {
    runtime: Arc<Runtime>,
    config: RuntimeConfig,
    firmware: Option<Arc<dyn Firmware>>,
    streams_firmware: bool,
    /// A release's apps fetched by their piece root (with asset sources).
    artifacts: Option<Arc<Artifacts>>,
    logs: Arc<LogBook>,
    started: Instant,
}

/// The apps' pieces a device fetches by their root, and what it keeps.
struct Artifacts {
    fetcher: trellis_assets::Fetcher,
    /// Roots fetched by an attempt that has not ended: never removed.
    fetching: std::sync::Mutex<std::collections::HashSet<trellis_assets::AssetId>>,
    /// One keep pass at a time.
    pass: std::sync::Mutex<()>,
    /// One fetch by root at a time.
    reading: std::sync::Mutex<()>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl std::fmt::Debug for RuntimeDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeDevice").field("apps_dir", &self.config.apps_dir).finish_non_exhaustive()
    }
}

impl RuntimeDevice {
    /// The device made of `runtime` (configured by `config`), without
    /// firmware updates. With asset sources (`[assets]` names an origin or
    /// peers) it fetches a release's apps by their piece root
    /// ([`Device::fetch_by_root`]); what it keeps of them it serves to its
    /// peers again; without, what an earlier configuration kept is removed.
    /// What it keeps follows the apps directory: an app file copied in,
    /// replaced or removed there by hand runs the same pass as an install
    /// through the device.
    pub fn new(runtime: Arc<Runtime>, config: RuntimeConfig) -> Self {
        let logs = LogBook::start(runtime.events());
        let artifacts = runtime.artifact_fetcher(&config).map(|fetcher| {
            Arc::new(Artifacts {
                fetcher,
                fetching: std::sync::Mutex::default(),
                pass: std::sync::Mutex::default(),
                reading: std::sync::Mutex::default(),
            })
        });
        if let Some(a) = &artifacts {
            let (changes, kept, dir) = (runtime.apps_changed(), Arc::downgrade(a), config.apps_dir.clone());
            let follow = std::thread::Builder::new()
                .name("artifacts".into())
                .spawn(move || follow_apps_dir(&changes, &kept, &dir));
            if let Err(e) = follow {
                tracing::warn!("apps' pieces follow the device's installs only: {e}");
            }
        }
        let device =
            Self { runtime, config, firmware: None, streams_firmware: false, artifacts, logs, started: Instant::now() };
        device.keep_artifacts();
        device
    }

    /// Keep (and serve to the peers) the apps' pieces this device fetched
    /// whose file an app on it is now, when it shares its blocks; remove
    /// the rest (a version replaced or refused, an app removed), except
    /// what an attempt still running fetched ([`Device::fetch_by_root`] until
    /// [`Device::fetches_done`]). Only app files the size of a kept asset
    /// are hashed. When the apps directory or one of those files cannot be
    /// read, nothing is removed (logged).
    fn keep_artifacts(&self) {
        if let Some(a) = &self.artifacts {
            a.keep(&self.config.apps_dir);
        }
    }

    /// App `name` as the status shows it.
    fn summary(&self, name: &str) -> Result<AppSummary, AppError> {
        apps(&self.runtime).into_iter().find(|a| a.name == name).ok_or_else(|| AppError::NotFound(name.to_owned()))
    }

    /// The same, with firmware updates through `firmware`.
    #[must_use]
    pub fn with_firmware(mut self, firmware: Arc<dyn Firmware>) -> Self {
        self.firmware = Some(firmware);
        self
    }

    /// Bundles named by their piece root stream from the device's asset
    /// sources ([`Runtime::bundle_stream`] runs).
    #[must_use]
    pub const fn streaming_firmware(mut self, streams: bool) -> Self {
        self.streams_firmware = streams;
        self
    }
}

impl Artifacts {
    /// [`RuntimeDevice::keep_artifacts`] for the apps in `apps_dir`.
    fn keep(&self, apps_dir: &std::path::Path) {
        let _one_pass = lock(&self.pass);
        let held = self.fetcher.held();
        if held.is_empty() {
            return;
        }
        let mut running = std::collections::HashSet::new();
        if self.fetcher.shared_on().is_some() {
            let dir = trellis_layout::AppsDir::new(apps_dir);
            let listed = match dir.list() {
                Ok(listed) => listed,
                Err(e) => return tracing::warn!(dir = %dir.dir().display(), "apps' pieces kept as they are: {e}"),
            };
            for (_, path) in listed {
                let len = match std::fs::metadata(&path) {
                    Ok(m) => m.len(),
                    Err(e) => return tracing::warn!(path = %path.display(), "apps' pieces kept as they are: {e}"),
                };
                if !held.iter().any(|(_, size)| *size == len) {
                    continue;
                }
                let bytes = match std::fs::read(&path) {
                    Ok(bytes) => bytes,
                    Err(e) => return tracing::warn!(path = %path.display(), "apps' pieces kept as they are: {e}"),
                };
                let id = trellis_assets::Index::of(&bytes).id();
                if held.iter().any(|(h, _)| *h == id) {
                    running.insert(id);
                }
            }
        }
        let mut keep = running.clone();
        // Held until the rest is removed: a fetch that begins meanwhile waits.
        let fetching = lock(&self.fetching);
        keep.extend(fetching.iter().copied());
        let retained = self.fetcher.retain(&keep);
        drop(fetching);
        match retained {
            Ok(removed) => {
                for r in removed {
                    tracing::info!(asset = %r.id, kib = r.bytes / 1024, "no app runs these pieces: removed");
                }
            }
            Err(e) => tracing::warn!("{e}"),
        }
        for id in running {
            if let Err(e) = self.fetcher.share_asset(id) {
                tracing::warn!("not shared: {e}");
            }
        }
    }
}

/// Run a keep pass after each change of the apps directory the runtime has
/// handled (the device's own installs run one too; this one sees what it
/// does not: files copied in, replaced or removed by hand), several at once
/// as one, until the device or the runtime is gone.
fn follow_apps_dir(
    changes: &crossbeam_channel::Receiver<()>,
    kept: &std::sync::Weak<Artifacts>,
    apps_dir: &std::path::Path,
) {
    while changes.recv().is_ok() {
        while changes.try_recv().is_ok() {}
        let Some(artifacts) = kept.upgrade() else { return };
        artifacts.keep(apps_dir);
    }
}

impl Device for RuntimeDevice {
    fn status(&self) -> DeviceStatus {
        let firmware = self.firmware.as_ref().map_or_else(FirmwareStatus::idle, |f| f.status());
        DeviceStatus { uptime_ms: self.uptime_ms(), firmware, apps: apps(&self.runtime) }
    }

    fn uptime_ms(&self) -> u64 {
        // Without the update lifecycle: the time since this device was made.
        let uptime = self.firmware.as_ref().map_or_else(|| self.started.elapsed(), |f| f.uptime());
        u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX)
    }

    fn apps(&self) -> Vec<AppSummary> {
        apps(&self.runtime)
    }

    fn metrics(&self) -> String {
        crate::api::metrics(&self.runtime, self.uptime_ms())
    }

    fn apps_dir(&self) -> PathBuf {
        self.config.apps_dir.clone()
    }

    fn install_app(&self, name: &str, bytes: &[u8]) -> Result<AppInstalled, AppError> {
        let installed = match self.runtime.install(name, bytes) {
            Ok(o) => Ok(AppInstalled { app: o.app, version: o.version, replaced: o.replaced, stopped: o.stopped }),
            Err(e) => Err(app_error(name, e)),
        };
        self.keep_artifacts();
        installed
    }

    fn remove_app(&self, name: &str) -> Result<(), AppError> {
        let removed = self.runtime.remove(name).map_err(|e| app_error(name, e));
        self.keep_artifacts();
        removed
    }

    fn stop_app(&self, name: &str) -> Result<AppSummary, AppError> {
        self.runtime.stop_app(name).map_err(|e| app_error(name, e))?;
        self.summary(name)
    }

    fn start_app(&self, name: &str) -> Result<AppSummary, AppError> {
        self.runtime.start_app(name).map_err(|e| app_error(name, e))?;
        self.summary(name)
    }

    fn firmware_dir(&self) -> Option<PathBuf> {
        self.firmware.as_ref().map(|_| self.config.state_dir.join(paths::state::FIRMWARE))
    }

    fn streams_firmware(&self) -> bool {
        self.firmware.is_some() && self.streams_firmware
    }

    fn fetch_by_root(&self, root: &str, size: u64) -> Option<Result<ByRoot, String>> {
        let a = self.artifacts.as_ref()?;
        let stats = &a.fetcher.stats;
        let blocks = || (stats.from_peers.load(Ordering::Relaxed), stats.from_origin.load(Ordering::Relaxed));
        let read = || {
            let id: trellis_assets::AssetId = root.parse().map_err(|e| format!("asset:{root}: {e}"))?;
            // One fetch at a time (the agent's attempt), so the counters' growth is this one's.
            let _one = lock(&a.reading);
            lock(&a.fetching).insert(id);
            let before = blocks();
            let held = a.fetcher.size(id).map_err(|e| e.to_string())?;
            if held != size {
                return Err(format!("asset:{root} is {held} bytes, the release names {size}"));
            }
            let bytes = a.fetcher.read(id, 0, size).map_err(|e| e.to_string())?;
            let (peers, origin) = blocks();
            let from_peers = peers - before.0;
            Ok(ByRoot { bytes, fetched: from_peers + (origin - before.1), from_peers })
        };
        Some(read())
    }

    fn fetches_done(&self) {
        let Some(a) = &self.artifacts else { return };
        if std::mem::take(&mut *lock(&a.fetching)).is_empty() {
            return;
        }
        self.keep_artifacts();
    }

    fn install_firmware(&self, bundle: &Bundle, progress: &mut dyn FnMut(&Progress)) -> Result<UpdateRecord, String> {
        match &self.firmware {
            Some(f) => f.install(bundle, progress),
            None => Err("this device takes no firmware updates".into()),
        }
    }

    fn installed(&self) {
        // A moment for whoever asked to finish what comes next in their script
        // (`trellis device update X && ...`) before the system goes down.
        std::thread::sleep(REBOOT_GRACE);
        if let Some(f) = &self.firmware
            && let Err(e) = f.reboot_into_trial()
        {
            tracing::error!("{e}");
        }
    }

    fn reboot(&self) -> Result<(), String> {
        let Some(f) = &self.firmware else { return Err("this device cannot reboot on request".into()) };
        tracing::info!("rebooting on request");
        f.reboot()
    }

    fn update_consent(&self, release: &str) -> Consent {
        self.runtime.update_consent(release)
    }

    fn logs(&self) -> (Vec<String>, Receiver<String>) {
        self.logs.follow()
    }
}

/// The runtime's refusal as the device interface says it.
fn app_error(name: &str, e: LoadError) -> AppError {
    match e {
        LoadError::FileName { .. } => AppError::Name(name.to_owned()),
        LoadError::NotRun { .. } => AppError::NotRun { app: name.to_owned(), reason: e.to_string() },
        LoadError::NoApp { .. } => AppError::NotFound(name.to_owned()),
        LoadError::Remove { .. } | LoadError::NotKept { .. } | LoadError::Stopped | LoadError::StoppedList { .. } => {
            AppError::Failed(e.to_string())
        }
        other => AppError::Refused(other.to_string()),
    }
}
