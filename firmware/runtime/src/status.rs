//! What the runtime reports and is told: each app's state and status, the
//! outcome of a swap, and the hot-plug events it hands to apps. A leaf: it
//! depends on nothing of the runtime's machinery.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::CompileSource;
use crate::cgroup::AppCgroup;
use crate::host::Usage;

/// Whether an app is running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppState {
    /// Handling events.
    Running,
    /// Crashed; restarts at the back-off.
    Restarting,
    /// Given up on (crash loop with no good version to go back to).
    Failed(String),
    /// Stopped on request (`stop_app`): not run, not restarted, until started.
    Stopped,
}

/// What `status` reports per app.
#[derive(Debug, Clone)]
pub struct AppStatus {
    /// Name.
    pub name: String,
    /// Running version.
    pub version: String,
    /// State.
    pub state: AppState,
    /// Restarts after crashes since the version was loaded.
    pub restarts: u32,
    /// SHA-256 of the app file.
    pub sha256: String,
    /// The most recent refusal or fault.
    pub last_error: Option<String>,
    /// Events dropped because the app's mailbox was full.
    pub dropped_events: u64,
    /// Memory and CPU time, read live.
    pub usage: Arc<Usage>,
    /// The app's cgroup (`[cgroups]`), when it runs in one.
    pub(crate) cgroup: Option<AppCgroup>,
    /// The `trellis:app` version it was built for (`None`: it imports none).
    pub interface: Option<String>,
}

impl AppStatus {
    /// CPU time the app's threads used as the kernel counts it (`usage_usec`
    /// of its cgroup's `cpu.stat`, read live); `None` when it runs unconfined.
    #[must_use]
    pub fn kernel_cpu_time(&self) -> Option<Duration> {
        self.cgroup.as_ref().and_then(|c| c.cpu_usage().ok())
    }

    /// The app's cgroup directory, when it runs in one.
    #[must_use]
    pub fn cgroup(&self) -> Option<&std::path::Path> {
        self.cgroup.as_ref().map(AppCgroup::path)
    }
}

/// The result of a successful load.
#[derive(Debug, Clone)]
pub struct SwapOutcome {
    /// App name.
    pub app: String,
    /// Version now running.
    pub version: String,
    /// Version it replaced.
    pub replaced: Option<String>,
    /// Where the compiled code came from.
    pub compile: CompileSource,
    /// Whether state was handed over from the old version.
    pub state_handed_over: bool,
    /// File read to new version running.
    pub elapsed: Duration,
    /// The app is stopped on request: the version was checked and its file
    /// put in place, but it does not run until the app is started.
    pub stopped: bool,
}

/// A hot-plug change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HotplugAction {
    /// A device appeared.
    Add,
    /// A device went away.
    Remove,
}

/// A device appearing or going away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotplugEvent {
    /// Add or remove.
    pub action: HotplugAction,
    /// Subsystem (`usb`, `gpio`, `i2c`, `tty`).
    pub subsystem: String,
    /// Device name (`ttyUSB0`, `gpiochip1`).
    pub device: String,
}
