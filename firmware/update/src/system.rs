//! The device platform: init, the kernel's boot id and clocks.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::process::{Pid, Signal, kill_process};

use crate::{Platform, Reboot, UpdateError};

/// The platform of a Trellis device: reboots are asked of init (PID 1) with
/// SIGTERM, after writing the restart command init hands to the kernel
/// (`/run/trellis/reboot-param`, docs/init.md).
#[derive(Debug, Clone)]
pub struct System {
    /// Where init looks for the restart command.
    pub reboot_param: PathBuf,
}

impl Platform for System {
    fn boot_id(&self) -> String {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_owned()).unwrap_or_default()
    }

    fn booted_slot(&self) -> Option<String> {
        let cmdline = std::fs::read_to_string("/proc/cmdline").ok()?;
        slot_from_cmdline(&cmdline)
    }

    fn uptime(&self) -> Duration {
        let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
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
                std::fs::write(param, "0 tryboot\n").map_err(err)?;
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

/// `rauc.slot=X` from a kernel command line.
fn slot_from_cmdline(cmdline: &str) -> Option<String> {
    cmdline.split_whitespace().find_map(|w| w.strip_prefix("rauc.slot=")).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_booted_slot_is_on_the_command_line() {
        let c = "console=ttyAMA0 root=/dev/vda6 rootfstype=squashfs ro panic=5 rauc.slot=B\n";
        assert_eq!(super::slot_from_cmdline(c).as_deref(), Some("B"));
        assert_eq!(super::slot_from_cmdline("root=/dev/vda5"), None);
    }
}
