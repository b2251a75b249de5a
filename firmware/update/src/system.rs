//! The device platform: init, the kernel's boot id and clocks.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::process::{Pid, Signal, kill_process};
use trellis_layout::paths;

use crate::{Platform, Reboot, UpdateError};

/// The platform of a Trellis device: reboots are asked of init (PID 1) with
/// SIGTERM, after writing the restart command init hands to the kernel
/// (`/run/trellis/reboot-param`, docs/init.md).
#[derive(Debug, Clone)]
pub struct LinuxPlatform {
    /// Where init looks for the restart command.
    pub reboot_param: PathBuf,
}

impl Platform for LinuxPlatform {
    fn boot_id(&self) -> String {
        std::fs::read_to_string(paths::BOOT_ID).map(|s| s.trim().to_owned()).unwrap_or_default()
    }

    fn booted_slot(&self) -> Option<String> {
        let cmdline = std::fs::read_to_string(paths::KERNEL_CMDLINE).ok()?;
        trellis_layout::booted_slot(&cmdline).map(str::to_owned)
    }

    fn uptime(&self) -> Duration {
        let uptime = std::fs::read_to_string(paths::UPTIME).unwrap_or_default();
        let secs = uptime.split_whitespace().next().and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
        Duration::from_secs_f64(secs)
    }

    fn now(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }

    fn reboot(&self, how: Reboot) -> Result<(), UpdateError> {
        let param = &self.reboot_param;
        let err = |e: std::io::Error| UpdateError::Reboot(format!("{}: {e}", param.display()));
        match how {
            Reboot::Trial => {
                if let Some(dir) = param.parent() {
                    std::fs::create_dir_all(dir).map_err(err)?;
                }
                trellis_layout::write_atomic(param, b"0 tryboot\n").map_err(|e| err(e.into_io()))?;
            }
            Reboot::Normal => match std::fs::remove_file(param) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(err(e)),
            },
        }
        let init = Pid::from_raw(1).ok_or_else(|| UpdateError::Reboot("no PID 1".into()))?;
        kill_process(init, Signal::TERM).map_err(|e| UpdateError::Reboot(format!("signalling init: {e}")))
    }
}
