//! The runtime on a device: the health the update gate waits for, and the
//! control socket's answers (docs/update.md).

use std::path::Path;
use std::sync::Arc;

use trellis_update::control::{AppSummary, DeviceStatus, Handler};
use trellis_update::{Platform, Progress, Rauc, Reboot, UpdateRecord, Updater};

use crate::{AppState, Runtime, RuntimeConfig};

/// Between answering a successful install and rebooting into the trial.
pub const REBOOT_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether every app in the apps directory that the configuration runs is
/// running; otherwise which ones are not, and why.
///
/// # Errors
/// The apps that are not running (or the apps directory that cannot be read).
pub fn health(runtime: &Runtime, config: &RuntimeConfig) -> Result<(), String> {
    let dir = &config.apps_dir;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut names: Vec<String> =
        entries.filter_map(|e| crate::supervisor::app_name(&e.ok()?.path())).filter(|n| config.runs(n)).collect();
    names.sort();
    let sick: Vec<String> = names
        .iter()
        .filter_map(|name| match runtime.app_status(name) {
            Some(s) if s.state == AppState::Running => None,
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
        })
        .collect()
}

/// What the control socket serves: the runtime's apps and the update lifecycle.
#[derive(Debug)]
pub struct Device<R, P> {
    runtime: Arc<Runtime>,
    updater: Arc<Updater<R, P>>,
}

impl<R: Rauc, P: Platform> Device<R, P> {
    /// The device made of `runtime` and `updater`.
    pub fn new(runtime: Arc<Runtime>, updater: Arc<Updater<R, P>>) -> Self {
        Self { runtime, updater }
    }
}

impl<R: Rauc, P: Platform> Handler for Device<R, P> {
    fn status(&self) -> DeviceStatus {
        DeviceStatus { uptime_ms: self.uptime_ms(), firmware: self.updater.status(), apps: apps(&self.runtime) }
    }

    fn uptime_ms(&self) -> u64 {
        u64::try_from(self.updater.platform().uptime().as_millis()).unwrap_or(u64::MAX)
    }

    fn install(&self, bundle: &Path, progress: &mut dyn FnMut(&Progress)) -> Result<UpdateRecord, String> {
        self.updater.install(bundle, progress).map_err(|e| e.to_string())
    }

    fn installed(&self) {
        // A moment for whoever asked to finish what comes next in their script
        // (`trellis device update X && ...`) before the system goes down.
        std::thread::sleep(REBOOT_GRACE);
        if let Err(e) = self.updater.reboot_into_trial() {
            tracing::error!("{e}");
        }
    }

    fn reboot(&self) -> Result<(), String> {
        tracing::info!("rebooting on request");
        self.updater.platform().reboot(Reboot::Normal).map_err(|e| e.to_string())
    }
}
