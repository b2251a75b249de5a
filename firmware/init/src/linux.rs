//! The real [`System`]: Linux system calls through `rustix`.

use crate::config::StopSignal;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rustix::mount::{MountFlags, UnmountFlags};
use rustix::process::{Pid, Signal, WaitOptions};

use crate::system::{ExitStatus, Request, System};

/// PID 1 on Linux.
#[derive(Debug)]
pub struct Linux {
    start: Instant,
    watchdog: Option<File>,
    reboot: Arc<AtomicBool>,
    poweroff: Arc<AtomicBool>,
}

impl Linux {
    /// PID 1's system. Nothing is installed yet: the signal handlers come with
    /// [`System::install_signal_handlers`], whose failure the boot treats as fatal.
    #[must_use]
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            watchdog: None,
            reboot: Arc::new(AtomicBool::new(false)),
            poweroff: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Default for Linux {
    fn default() -> Self {
        Self::new()
    }
}

/// `reboot(LINUX_REBOOT_CMD_RESTART2, command)`: restart passing `command` to
/// the firmware (the kernel prints `Restarting system with command '…'`).
/// rustix and libc wrap `reboot(2)` without the argument, so this is the raw call.
#[allow(unsafe_code)]
fn restart2(command: &str) -> io::Result<()> {
    let c = std::ffi::CString::new(command).map_err(io::Error::other)?;
    // SAFETY: reboot(2) with the two magic numbers, RESTART2 and a pointer to a
    // NUL-terminated string that outlives the call; it only returns on failure.
    let r = unsafe {
        libc::syscall(
            libc::SYS_reboot,
            libc::LINUX_REBOOT_MAGIC1,
            libc::LINUX_REBOOT_MAGIC2,
            libc::LINUX_REBOOT_CMD_RESTART2,
            c.as_ptr(),
        )
    };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Children need a search path; the kernel starts PID 1 without `PATH`.
const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

fn command(program: &str, args: &[String]) -> std::process::Command {
    let mut c = std::process::Command::new(program);
    c.args(args).stdin(std::process::Stdio::null());
    if std::env::var_os("PATH").is_none() {
        c.env("PATH", PATH);
    }
    c
}

fn status(s: rustix::process::WaitStatus) -> ExitStatus {
    match (s.exit_status(), s.terminating_signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(sig)) => ExitStatus::Signal(sig),
        (None, None) => ExitStatus::Code(-1),
    }
}

/// The kernel log; its lines reach the console too.
const KMSG: &str = "/dev/kmsg";

/// A line for the kernel log at `kmsg`, or on the console when it cannot be
/// written (before `/dev` exists, or in a container); never panics.
fn log_to(kmsg: &str, message: &str) {
    let line = format!("<6>trellis-init: {message}\n");
    if std::fs::OpenOptions::new().write(true).open(kmsg).and_then(|mut k| k.write_all(line.as_bytes())).is_err() {
        crate::console(message);
    }
}

impl System for Linux {
    /// `SIGTERM` and `SIGINT` (Ctrl-Alt-Del) ask for a reboot, `SIGUSR1` and
    /// `SIGUSR2` for a poweroff (busybox's `halt` and `poweroff` send those to PID 1).
    fn install_signal_handlers(&mut self) -> io::Result<()> {
        for (signal, flag) in [
            (signal_hook::consts::SIGTERM, &self.reboot),
            (signal_hook::consts::SIGINT, &self.reboot),
            (signal_hook::consts::SIGUSR1, &self.poweroff),
            (signal_hook::consts::SIGUSR2, &self.poweroff),
        ] {
            signal_hook::flag::register(signal, Arc::clone(flag))?;
        }
        Ok(())
    }

    fn mount(&mut self, source: &str, target: &str, fstype: &str, flags: u64, data: &str) -> io::Result<()> {
        let flags = MountFlags::from_bits_retain(u32::try_from(flags).unwrap_or(0));
        let data = std::ffi::CString::new(data).map_err(io::Error::other)?;
        Ok(rustix::mount::mount(source, target, fstype, flags, Some(data.as_c_str()))?)
    }

    fn umount(&mut self, target: &str) -> io::Result<()> {
        Ok(rustix::mount::unmount(target, UnmountFlags::empty())?)
    }

    fn mkdir(&mut self, path: &str) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn symlink(&mut self, target: &str, link: &str) -> io::Result<()> {
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(target, link)
    }

    fn list_dir(&mut self, path: &str) -> io::Result<Vec<String>> {
        Ok(std::fs::read_dir(path)?.filter_map(Result::ok).filter_map(|e| e.file_name().into_string().ok()).collect())
    }

    fn read_at(&mut self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut f = File::open(path)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(len);
        f.take(len as u64).read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn read_to_string(&mut self, path: &str) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn write(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        std::fs::write(path, data)
    }

    fn run(&mut self, argv: &[String]) -> io::Result<ExitStatus> {
        let (program, args) = argv.split_first().ok_or_else(|| io::Error::other("empty command"))?;
        let s = command(program, args).status()?;
        use std::os::unix::process::ExitStatusExt as _;
        Ok(s.code().map_or_else(|| ExitStatus::Signal(s.signal().unwrap_or(0)), ExitStatus::Code))
    }

    fn spawn(&mut self, argv: &[String]) -> io::Result<u32> {
        let (program, args) = argv.split_first().ok_or_else(|| io::Error::other("empty command"))?;
        // Never waited on through `Child`: `reap` collects every child with waitpid(-1).
        let child = command(program, args).spawn()?;
        Ok(child.id())
    }

    fn reap(&mut self) -> Option<(u32, ExitStatus)> {
        match rustix::process::waitpid(None, WaitOptions::NOHANG) {
            Ok(Some((pid, s))) => Some((pid.as_raw_nonzero().get().unsigned_abs(), status(s))),
            _ => None,
        }
    }

    fn kill(&mut self, pid: u32, signal: StopSignal) {
        let signal = match signal {
            StopSignal::Term => Signal::TERM,
            StopSignal::Hup => Signal::HUP,
            StopSignal::Kill => Signal::KILL,
        };
        if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    fn now(&mut self) -> SystemTime {
        SystemTime::now()
    }

    fn set_time(&mut self, t: SystemTime) -> io::Result<()> {
        let d = t.duration_since(SystemTime::UNIX_EPOCH).map_err(io::Error::other)?;
        let ts = rustix::time::Timespec {
            tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(d.subsec_nanos()),
        };
        Ok(rustix::time::clock_settime(rustix::time::ClockId::Realtime, ts)?)
    }

    fn monotonic(&mut self) -> Duration {
        self.start.elapsed()
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }

    fn watchdog_open(&mut self, path: &str) -> io::Result<()> {
        self.watchdog = Some(std::fs::OpenOptions::new().write(true).open(path)?);
        Ok(())
    }

    fn watchdog_pet(&mut self) {
        if let Some(w) = &mut self.watchdog {
            let _ = w.write_all(b"\0");
        }
    }

    fn request(&mut self) -> Option<Request> {
        if self.poweroff.swap(false, Ordering::Relaxed) {
            Some(Request::Poweroff)
        } else if self.reboot.swap(false, Ordering::Relaxed) {
            Some(Request::Reboot)
        } else {
            None
        }
    }

    fn sync(&mut self) {
        rustix::fs::sync();
    }

    fn reboot(&mut self, request: Request, command: Option<&str>) {
        if let (Request::Reboot, Some(c)) = (request, command) {
            match restart2(c) {
                Ok(()) => return,
                Err(e) => self.log(&format!("restart with command {c:?} failed: {e}; plain restart")),
            }
        }
        let cmd = match request {
            Request::Reboot => rustix::system::RebootCommand::Restart,
            Request::Poweroff => rustix::system::RebootCommand::PowerOff,
        };
        if let Err(e) = rustix::system::reboot(cmd) {
            self.log(&format!("reboot failed: {e}"));
        }
    }

    fn log(&mut self, message: &str) {
        log_to(KMSG, message);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::process::{Command, Stdio};

    const CHILD: &str = "TRELLIS_INIT_TEST_LOG_CHILD";

    /// Without a kernel log, a line goes to the console; when that write fails
    /// too (no console: the kernel found no `/dev/console` for PID 1), the line
    /// is lost and init carries on. `eprintln!` panicked there. Runs in a child
    /// of this test binary whose standard error is `/dev/full`.
    #[test]
    fn a_log_line_without_kernel_log_or_console_does_not_panic() {
        if std::env::var_os(CHILD).is_some() {
            super::log_to("/nonexistent/kmsg", "a line nobody reads");
            return;
        }
        let me = std::env::current_exe().unwrap();
        // This binary may not be runnable as a child (its tests run under qemu-user).
        if !Command::new(&me).arg("--list").stdout(Stdio::null()).status().is_ok_and(|s| s.success()) {
            return;
        }
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
        let out = Command::new(&me)
            .args(["--exact", "linux::tests::a_log_line_without_kernel_log_or_console_does_not_panic"])
            .args(["--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .stdout(Stdio::piped())
            .stderr(full)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.contains("1 passed"), "{:?}\n{stdout}", out.status);
    }
}
