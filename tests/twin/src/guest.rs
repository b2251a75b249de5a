//! One power-on of the twin: QEMU running, its serial console read line by
//! line, and a shell on that console the tests type into.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::Error;
use crate::firmware::TRYBOOT_LINE;

/// A console line and when the host read it.
#[derive(Debug, Clone)]
pub struct Line {
    /// When the harness read it.
    pub at: Instant,
    /// The text, without the line end.
    pub text: String,
}

#[derive(Debug, Default)]
struct Lines {
    lines: Vec<Line>,
    closed: bool,
}

#[derive(Debug, Default)]
struct Console {
    state: Mutex<Lines>,
    changed: Condvar,
}

impl Console {
    fn lock(&self) -> std::sync::MutexGuard<'_, Lines> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How QEMU stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The kernel restarted with `0 tryboot`: the firmware boots the trial partition next.
    pub tryboot: bool,
    /// The kernel powered off (nothing boots until the power comes back).
    pub poweroff: bool,
}

/// What the harness needs to start QEMU.
#[derive(Debug, Clone)]
pub struct Boot {
    /// The kernel taken from the boot partition.
    pub kernel: PathBuf,
    /// `cmdline.txt` of the boot partition.
    pub cmdline: String,
    /// The whole disk.
    pub image: PathBuf,
    /// A host directory the guest can mount (9p, tag `host`).
    pub share: PathBuf,
    /// Where the console is copied.
    pub log: PathBuf,
    /// The boot partition the firmware chose.
    pub partition: u32,
    /// Host ports forwarded to the guest (QEMU's user network).
    pub ports: Ports,
}

/// The twin's network: QEMU's user network (its DHCP server gives the guest
/// 10.0.2.15), with host ports on loopback forwarded into the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// Forwarded to the management API (guest port 8443).
    pub api: u16,
    /// Forwarded to guest port 9000, for a plain copy with `nc` (benchmarks).
    pub copy: u16,
    /// Forwarded to the blocks the device shares with its peers (guest
    /// port 8471, `[assets] share`).
    pub share: u16,
}

impl Ports {
    /// The API's port in the guest.
    pub const GUEST_API: u16 = 8443;
    /// The plain copy's port in the guest.
    pub const GUEST_COPY: u16 = 9000;
    /// Where the device shares its blocks in the guest.
    pub const GUEST_SHARE: u16 = 8471;

    /// Three free loopback ports; `api` first when given and free.
    ///
    /// # Errors
    /// No free port.
    pub fn pick(api: Option<u16>) -> Result<Self, Error> {
        let free = |port: u16| {
            std::net::TcpListener::bind(("127.0.0.1", port))
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|e| Error::Qemu(format!("no free loopback port for the twin's network: {e}")))
        };
        let api = match api.map(free) {
            Some(Ok(p)) => p,
            _ => free(0)?,
        };
        let mut copy = free(0)?;
        while copy == api {
            copy = free(0)?;
        }
        let mut share = free(0)?;
        while share == api || share == copy {
            share = free(0)?;
        }
        Ok(Self { api, copy, share })
    }
}

/// The QEMU command line for the `virt` machine standing in for a Pi 4.
#[must_use]
pub fn qemu_command(boot: &Boot) -> Command {
    let mut c = Command::new("qemu-system-aarch64");
    c.args(["-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024", "-no-reboot"])
        .arg("-kernel")
        .arg(&boot.kernel)
        .arg("-append")
        .arg(boot.cmdline.trim())
        .arg("-drive")
        .arg(format!("file={},if=none,format=raw,id=disk,cache=writeback", boot.image.display()))
        .args(["-device", "virtio-blk-device,drive=disk", "-device", "virtio-rng-device", "-device", "i6300esb"])
        .arg("-fsdev")
        .arg(format!("local,id=host,path={},security_model=none", boot.share.display()))
        .args(["-device", "virtio-9p-device,fsdev=host,mount_tag=host"])
        .arg("-netdev")
        .arg(format!(
            "user,id=net,hostfwd=tcp:127.0.0.1:{}-:{},hostfwd=tcp:127.0.0.1:{}-:{},hostfwd=tcp:127.0.0.1:{}-:{}",
            boot.ports.api,
            Ports::GUEST_API,
            boot.ports.copy,
            Ports::GUEST_COPY,
            boot.ports.share,
            Ports::GUEST_SHARE
        ))
        .args(["-device", "virtio-net-device,netdev=net"]);
    c
}

/// A booted twin: QEMU running the image, with its console.
#[derive(Debug)]
pub struct Guest {
    child: Child,
    stdin: Option<ChildStdin>,
    console: Arc<Console>,
    cursor: usize,
    seq: u32,
    /// The boot partition the firmware chose (2 = slot A, 3 = slot B).
    pub partition: u32,
    /// When QEMU was started.
    pub powered_on: Instant,
    log: PathBuf,
}

impl Guest {
    /// Power on: start QEMU with its serial console on a pipe.
    ///
    /// # Errors
    /// QEMU cannot be started (named).
    pub fn start(boot: &Boot) -> Result<Self, Error> {
        let mut cmd = qemu_command(boot);
        cmd.args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let powered_on = Instant::now();
        let mut child = cmd.spawn().map_err(|e| {
            Error::Qemu(format!("cannot start qemu-system-aarch64 (apt-get install qemu-system-arm): {e}"))
        })?;
        let stdout = child.stdout.take().ok_or_else(|| Error::Qemu("no stdout".into()))?;
        let console = Arc::new(Console::default());
        let mut log = std::fs::File::create(&boot.log).map_err(|e| Error::io(&boot.log, e))?;
        let reader = console.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let _ = log.write_all(&buf);
                        let text = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_owned();
                        reader.lock().lines.push(Line { at: Instant::now(), text });
                        reader.changed.notify_all();
                    }
                }
            }
            reader.lock().closed = true;
            reader.changed.notify_all();
        });
        Ok(Self {
            stdin: child.stdin.take(),
            child,
            console,
            cursor: 0,
            seq: 0,
            partition: boot.partition,
            powered_on,
            log: boot.log.clone(),
        })
    }

    /// Where the console of this boot is copied.
    #[must_use]
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Every console line so far.
    #[must_use]
    pub fn lines(&self) -> Vec<Line> {
        self.console.lock().lines.clone()
    }

    fn timeout(&self, what: &str) -> Error {
        let lines = self.console.lock();
        let tail: Vec<&str> = lines.lines.iter().rev().take(25).rev().map(|l| l.text.as_str()).collect();
        Error::Timeout { what: what.into(), log: self.log.clone(), tail: tail.join("\n") }
    }

    /// Wait for a console line containing `needle` after the last line waited for.
    ///
    /// # Errors
    /// Timeout, or QEMU stopped first; the error carries the console's last lines.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<Line, Error> {
        let found = self.wait_all(&[needle], timeout)?;
        found.into_iter().next().ok_or_else(|| self.timeout(needle))
    }

    /// Wait for a line containing `needle` anywhere in this boot's console,
    /// earlier lines included; does not move the point `wait_for` continues from.
    ///
    /// # Errors
    /// As [`Guest::wait_for`].
    pub fn seen(&mut self, needle: &str, timeout: Duration) -> Result<Line, Error> {
        let cursor = std::mem::take(&mut self.cursor);
        let found = self.scan(&[needle], timeout, 0);
        self.cursor = cursor;
        found?.into_iter().next().ok_or_else(|| self.timeout(needle))
    }

    /// Wait until each of `needles` appeared on a line after the last line
    /// waited for, in any order; the lines found, in the order of `needles`.
    ///
    /// # Errors
    /// As [`Guest::wait_for`].
    pub fn wait_all(&mut self, needles: &[&str], timeout: Duration) -> Result<Vec<Line>, Error> {
        let found = self.scan(needles, timeout, self.cursor)?;
        Ok(found)
    }

    fn scan(&mut self, needles: &[&str], timeout: Duration, from: usize) -> Result<Vec<Line>, Error> {
        let deadline = Instant::now() + timeout;
        let mut found: Vec<Option<(usize, Line)>> = vec![None; needles.len()];
        let mut scanned = from;
        let mut state = self.console.lock();
        loop {
            for (i, line) in state.lines.iter().enumerate().skip(scanned) {
                for (n, needle) in needles.iter().enumerate() {
                    if found[n].is_none() && line.text.contains(needle) {
                        found[n] = Some((i, line.clone()));
                    }
                }
            }
            scanned = state.lines.len();
            if found.iter().all(Option::is_some) {
                let found: Vec<(usize, Line)> = found.into_iter().flatten().collect();
                self.cursor = found.iter().map(|(i, _)| i + 1).max().unwrap_or(self.cursor);
                return Ok(found.into_iter().map(|(_, l)| l).collect());
            }
            let now = Instant::now();
            if state.closed || now >= deadline {
                let missing: Vec<&str> =
                    needles.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|(n, _)| *n).collect();
                let why = if state.closed { "the device stopped before" } else { "timed out waiting for" };
                drop(state);
                return Err(self.timeout(&format!("{why} {missing:?}")));
            }
            state = self.console.changed.wait_timeout(state, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Type a line into the console.
    ///
    /// # Errors
    /// QEMU's stdin is closed.
    pub fn type_line(&mut self, text: &str) -> Result<(), Error> {
        let stdin = self.stdin.as_mut().ok_or_else(|| Error::Qemu("console input closed".into()))?;
        stdin
            .write_all(format!("{text}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| Error::Qemu(format!("cannot type into the console: {e}")))
    }

    /// Run a shell command on the console and return its output; an exit
    /// status other than 0 is an error carrying the output. Does not move the
    /// point `wait_for` continues from.
    ///
    /// # Errors
    /// The command failed or did not finish within `timeout`.
    pub fn sh_timeout(&mut self, command: &str, timeout: Duration) -> Result<String, Error> {
        self.seq += 1;
        let from = self.console.lock().lines.len();
        self.type_line(&typed_command(command, self.seq))?;
        let deadline = Instant::now() + timeout;
        let mut state = self.console.lock();
        loop {
            let lines = &state.lines[from.min(state.lines.len())..];
            if let Some((output, code)) = command_output(lines.iter().map(|l| l.text.as_str()), self.seq) {
                return if code == 0 {
                    Ok(output)
                } else {
                    Err(Error::Command { command: command.into(), code, output })
                };
            }
            let now = Instant::now();
            if state.closed || now >= deadline {
                drop(state);
                return Err(self.timeout(&format!("the command {command:?} to finish")));
            }
            state = self.console.changed.wait_timeout(state, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// [`Guest::sh_timeout`] with 60 s.
    ///
    /// # Errors
    /// As [`Guest::sh_timeout`].
    pub fn sh(&mut self, command: &str) -> Result<String, Error> {
        self.sh_timeout(command, Duration::from_secs(60))
    }

    /// Wait for QEMU to stop by itself (reboot, poweroff, watchdog reset) and say how.
    ///
    /// # Errors
    /// It is still running after `timeout` (then it is killed).
    pub fn wait_exit(mut self, timeout: Duration) -> Result<Exit, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    let e = self.timeout("the device to stop");
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(e);
                }
            }
        }
        // The reader thread sees the end of the pipe right after QEMU exits.
        let mut state = self.console.lock();
        while !state.closed {
            state = self
                .console
                .changed
                .wait_timeout(state, Duration::from_secs(5))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let tryboot = state.lines.iter().any(|l| l.text.contains(TRYBOOT_LINE));
        let poweroff = state.lines.iter().any(|l| l.text.contains("reboot: Power down"));
        Ok(Exit { tryboot, poweroff })
    }

    /// Cut the power: QEMU is killed wherever the guest is.
    pub fn power_cut(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The line [`Guest::sh_timeout`] types for command number `n`: the command runs in a
/// subshell, each line of its output is printed tagged `@@O<n> ` and its exit status as
/// `@@E<n>.<status>`, so log lines the kernel, init and the runtime print on the same console
/// meanwhile are told apart. The tags are spelled split by quotes (`@@O'7' `), so the
/// terminal's echo of the typed line, however it wraps it, never holds them.
fn typed_command(command: &str, n: u32) -> String {
    format!("( {command} ) >/tmp/.sh.out 2>&1; r=$?; sed 's/^/@@O'{n}' /' /tmp/.sh.out; echo @@E''{n}.$r")
}

/// What command number `n` printed and its exit status, once its status line is among
/// `lines` (the console's lines since it was typed).
fn command_output<'a>(lines: impl Iterator<Item = &'a str>, n: u32) -> Option<(String, i32)> {
    let (tag, end) = (format!("@@O{n} "), format!("@@E{n}."));
    let mut output = Vec::new();
    for line in lines {
        if let Some(code) = line.trim_end().rsplit_once(&end).and_then(|(_, c)| c.parse().ok()) {
            return Some((output.join("\n"), code));
        }
        if let Some((_, rest)) = line.split_once(&tag) {
            output.push(rest);
        }
    }
    None
}

impl Drop for Guest {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The console as it looks after `sh_timeout` typed command 7, whose output is `B`: the
    /// shell's echo of the typed line, wrapped by the terminal at `width` columns, then the
    /// output and the status.
    fn console(width: usize, status: &str) -> Vec<String> {
        let echo: Vec<char> = format!("~ # {}", typed_command("trellis-boot get-current", 7)).chars().collect();
        let mut lines: Vec<String> = echo.chunks(width).map(|c| c.iter().collect()).collect();
        lines.extend(["[   12.345678] random: crng init done".into(), "@@O7 B".into(), status.into()]);
        lines
    }

    #[test]
    fn a_commands_output_is_its_tagged_lines_however_the_terminal_wraps_the_echo() {
        for width in 1..120 {
            let lines = console(width, "@@E7.0");
            let got = command_output(lines.iter().map(String::as_str), 7);
            assert_eq!(got, Some(("B".into(), 0)), "echo wrapped at {width} columns:\n{}", lines.join("\n"));
        }
    }

    #[test]
    fn a_command_is_not_done_before_its_status_and_its_status_is_its_own() {
        let lines = console(30, "@@E7.3");
        assert_eq!(command_output(lines.iter().map(String::as_str), 7), Some(("B".into(), 3)));
        assert_eq!(command_output(lines[..lines.len() - 1].iter().map(String::as_str), 7), None);
        assert_eq!(command_output(lines.iter().map(String::as_str), 6), None, "another command's tags");
    }
}
