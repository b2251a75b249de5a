//! The side effects PID 1 has, behind one trait.

use crate::config::StopSignal;
use std::io;
use std::time::{Duration, SystemTime};

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited with a code.
    Code(i32),
    /// Killed by a signal.
    Signal(i32),
}

/// What someone asked PID 1 to do (`reboot`, `poweroff`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Restart the machine.
    Reboot,
    /// Turn it off.
    Poweroff,
}

/// Everything PID 1 does to the world.
pub trait System {
    /// Install the handlers for the signals that ask PID 1 to reboot or power
    /// off (`SIGTERM`, `SIGINT`, `SIGUSR1`, `SIGUSR2`); afterwards
    /// [`request`](Self::request) reports them. The kernel drops a signal sent
    /// to PID 1 that has no handler, so without them every request is lost.
    ///
    /// # Errors
    /// As the kernel reports; init treats it as fatal.
    fn install_signal_handlers(&mut self) -> io::Result<()>;
    /// `mount(2)`; `flags` are `MS_*` bits.
    ///
    /// # Errors
    /// As the kernel reports.
    fn mount(&mut self, source: &str, target: &str, fstype: &str, flags: u64, data: &str) -> io::Result<()>;
    /// `umount(2)`.
    ///
    /// # Errors
    /// As the kernel reports.
    fn umount(&mut self, target: &str) -> io::Result<()>;
    /// `mkdir -p`.
    ///
    /// # Errors
    /// As the file system reports.
    fn mkdir(&mut self, path: &str) -> io::Result<()>;
    /// A symbolic link at `link` pointing to `target` (replacing one).
    ///
    /// # Errors
    /// As the file system reports.
    fn symlink(&mut self, target: &str, link: &str) -> io::Result<()>;
    /// Names in a directory.
    ///
    /// # Errors
    /// As the file system reports.
    fn list_dir(&mut self, path: &str) -> io::Result<Vec<String>>;
    /// `len` bytes at `offset` of a file or device.
    ///
    /// # Errors
    /// As the file system reports.
    fn read_at(&mut self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// A whole (small) file as text.
    ///
    /// # Errors
    /// As the file system reports.
    fn read_to_string(&mut self, path: &str) -> io::Result<String>;
    /// Write a whole file.
    ///
    /// # Errors
    /// As the file system reports.
    fn write(&mut self, path: &str, data: &[u8]) -> io::Result<()>;
    /// Run a command to completion (mkfs, fsck).
    ///
    /// # Errors
    /// The command cannot be started.
    fn run(&mut self, argv: &[String]) -> io::Result<ExitStatus>;
    /// Start a long-running service; returns its pid.
    ///
    /// # Errors
    /// The command cannot be started.
    fn spawn(&mut self, argv: &[String]) -> io::Result<u32>;
    /// Reap one exited child, if any (`waitpid(-1, WNOHANG)`), including orphans.
    fn reap(&mut self) -> Option<(u32, ExitStatus)>;
    /// Send a process `signal`.
    fn kill(&mut self, pid: u32, signal: StopSignal);
    /// Wall-clock time.
    fn now(&mut self) -> SystemTime;
    /// Set the wall clock.
    ///
    /// # Errors
    /// As the kernel reports.
    fn set_time(&mut self, t: SystemTime) -> io::Result<()>;
    /// Monotonic time since an arbitrary point.
    fn monotonic(&mut self) -> Duration;
    /// Sleep (or, in tests, advance the clock).
    fn sleep(&mut self, d: Duration);
    /// Open the hardware watchdog.
    ///
    /// # Errors
    /// No watchdog, or it cannot be opened.
    fn watchdog_open(&mut self, path: &str) -> io::Result<()>;
    /// Pet the watchdog.
    fn watchdog_pet(&mut self);
    /// A pending reboot or poweroff request.
    fn request(&mut self) -> Option<Request>;
    /// `sync(2)`.
    fn sync(&mut self);
    /// Reboot with a command (`"0 tryboot"`), power off, or plain restart.
    /// Returns only if the kernel refused (or in tests).
    fn reboot(&mut self, request: Request, command: Option<&str>);
    /// A line for the kernel log / console.
    fn log(&mut self, message: &str);
}
