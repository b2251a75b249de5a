//! `make compare`: the two update paths side by side on one device, in one run.
//!
//! The partial path copies a new `.wasm` onto the data partition; the full path
//! installs a RAUC bundle and trial-boots it, from a file on the device or
//! streamed from an HTTP origin (RAUC's adaptive mode fetching only the blocks
//! no slot holds; [`streamed`]). For each: bytes transferred,
//! bytes written to storage (the kernel's own counter for the disk), time to
//! apply, time to healthy, the longest silence of a periodic app, and what it
//! costs when the update is bad and is undone by the device itself.
//!
//! Everything the measurement does to the device goes through [`Target`]: the
//! twin implements it with QEMU, its console and a shared directory; a real
//! Pi 4 implements the same five operations over the network (copy a file,
//! run a command, read the log stream, wait for a restart).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{BOOT_TIMEOUT, Error, Guest, Line, Twin};

/// A device the comparison runs on.
pub trait Target {
    /// Make `file` available on the device; returns its path there and the bytes sent.
    ///
    /// # Errors
    /// The file cannot be sent.
    fn send(&mut self, file: &Path) -> Result<(String, u64), Error>;
    /// Run a shell command on the device and return its output.
    ///
    /// # Errors
    /// It fails or times out.
    fn sh(&mut self, command: &str, timeout: Duration) -> Result<String, Error>;
    /// Wait for a log line containing `needle` in the log of the device's
    /// current boot (earlier lines of it included).
    ///
    /// # Errors
    /// None within `timeout`.
    fn wait_log(&mut self, needle: &str, timeout: Duration) -> Result<Line, Error>;
    /// Every log line so far, across restarts, with the host's time of arrival.
    fn log(&self) -> Vec<Line>;
    /// The device restarts by itself (it asked for a reboot): wait for it to come back.
    ///
    /// # Errors
    /// It does not go down or come back within `timeout`.
    fn await_restart(&mut self, timeout: Duration) -> Result<(), Error>;
}

/// The twin as a [`Target`].
#[derive(Debug)]
pub struct TwinTarget {
    twin: Twin,
    device: Option<Guest>,
    earlier: Vec<Line>,
}

impl TwinTarget {
    /// Boot `twin` and wait for its apps and console.
    ///
    /// # Errors
    /// It does not come up.
    pub fn boot(mut twin: Twin, apps: &[&str]) -> Result<Self, Error> {
        let mut device = twin.boot()?;
        device.wait_apps_running(apps)?;
        device.wait_console()?;
        device.sh(crate::MOUNT_SHARE)?;
        Ok(Self { twin, device: Some(device), earlier: Vec::new() })
    }

    fn device(&mut self) -> Result<&mut Guest, Error> {
        self.device.as_mut().ok_or_else(|| Error::Firmware("the twin is not running".into()))
    }
}

impl Target for TwinTarget {
    fn send(&mut self, file: &Path) -> Result<(String, u64), Error> {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let to = self.twin.share().join(name);
        let bytes = std::fs::copy(file, &to).map_err(|e| Error::io(&to, e))?;
        Ok((format!("/mnt/{name}"), bytes))
    }

    fn sh(&mut self, command: &str, timeout: Duration) -> Result<String, Error> {
        self.device()?.sh_timeout(command, timeout)
    }

    fn wait_log(&mut self, needle: &str, timeout: Duration) -> Result<Line, Error> {
        self.device()?.seen(needle, timeout)
    }

    fn log(&self) -> Vec<Line> {
        let mut all = self.earlier.clone();
        if let Some(d) = &self.device {
            all.extend(d.lines());
        }
        all
    }

    fn await_restart(&mut self, timeout: Duration) -> Result<(), Error> {
        let device = self.device.take().ok_or_else(|| Error::Firmware("the twin is not running".into()))?;
        self.earlier.extend(device.lines());
        let mut device = self.twin.restarted(device, timeout)?;
        device.wait_console()?;
        device.sh(crate::MOUNT_SHARE)?;
        self.device = Some(device);
        Ok(())
    }
}

/// One path's figures.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Bytes sent to the device.
    pub transferred: u64,
    /// Bytes the device wrote to its storage.
    pub written: u64,
    /// From the start until the update is on the device.
    pub apply: Duration,
    /// From the start until the new version runs healthy.
    pub healthy: Duration,
    /// The longest gap between two outputs of the periodic app.
    pub downtime: Duration,
    /// A bad update: from the start until the old version runs again by itself.
    pub rollback: Duration,
    /// ... and the longest gap of the periodic app meanwhile.
    pub rollback_downtime: Duration,
}

/// What the comparison needs from the build.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The periodic app's name (its output lines contain `tick`).
    pub app: &'a str,
    /// The new version of it and its version string.
    pub new_app: (&'a Path, &'a str),
    /// A broken file under the same name.
    pub broken_app: &'a Path,
    /// Substring of the periodic app's output lines.
    pub tick: &'a str,
    /// Its period.
    pub period: Duration,
    /// A good bundle, and one that never becomes healthy.
    pub bundle: &'a Path,
    /// The bad bundle.
    pub bad_bundle: &'a Path,
}

/// The disk's I/O counters: the twin's virtio disk, or the Pi's SD card.
const DISK_STAT: &str = "cat /sys/block/vda/stat 2>/dev/null || cat /sys/block/mmcblk0/stat";

/// Bytes written, from the last line of `out`: the disk's `/sys/block/*/stat`
/// (field 7, in sectors).
fn stat_written(out: &str) -> Result<u64, Error> {
    let sectors = out.lines().last().and_then(|l| l.split_whitespace().nth(6)).and_then(|s| s.parse::<u64>().ok());
    sectors.map(|s| s * 512).ok_or_else(|| Error::Firmware(format!("no sector count in {out:?}")))
}

/// Bytes written to the disk in this boot, after `sync`.
fn written(t: &mut dyn Target) -> Result<u64, Error> {
    stat_written(&t.sh(&format!("sync; {DISK_STAT}"), Duration::from_secs(60))?)
}

/// The longest gap between the periodic app's output lines from `from` to `to`
/// (counting the edges, so silence at either end is included).
fn longest_gap(t: &dyn Target, tick: &str, from: Instant, to: Instant) -> Duration {
    let mut last = from;
    let mut gap = Duration::ZERO;
    for l in t.log().iter().filter(|l| l.at >= from && l.at <= to && l.text.contains(tick)) {
        gap = gap.max(l.at - last);
        last = l.at;
    }
    gap.max(to.saturating_duration_since(last))
}

const SETTLE: Duration = Duration::from_secs(3);

/// The partial path: copy the app's new version onto the data partition; then a broken one.
///
/// # Errors
/// A step fails or times out.
pub fn partial(t: &mut dyn Target, i: &Inputs<'_>) -> Result<Figures, Error> {
    let apps = "/data/apps";
    let mut f = Figures::default();
    let w0 = written(t)?;
    let start = Instant::now();
    let (remote, sent) = t.send(i.new_app.0)?;
    t.sh(&format!("cp {remote} {apps}/{}.wasm", i.app), Duration::from_secs(60))?;
    f.apply = start.elapsed();
    let running = t.wait_log(&format!("app running app=\"{}\" version={}", i.app, i.new_app.1), BOOT_TIMEOUT)?;
    f.healthy = running.at - start;
    std::thread::sleep(SETTLE);
    f.written = written(t)?.saturating_sub(w0);
    f.transferred = sent;
    f.downtime = longest_gap(t, i.tick, start, Instant::now());

    let start = Instant::now();
    let (remote, _) = t.send(i.broken_app)?;
    t.sh(&format!("cp {remote} {apps}/{}.wasm", i.app), Duration::from_secs(60))?;
    let refused = t.wait_log(&format!("refused: /data/apps/{}.wasm", i.app), BOOT_TIMEOUT)?;
    f.rollback = refused.at - start;
    std::thread::sleep(SETTLE);
    f.rollback_downtime = longest_gap(t, i.tick, start, Instant::now());
    // Leave the good version in place.
    let (remote, _) = t.send(i.new_app.0)?;
    t.sh(&format!("cp {remote} {apps}/{}.wasm", i.app), Duration::from_secs(60))?;
    Ok(f)
}

/// The full path: install a bundle, trial-boot it, commit; then a bundle that
/// never becomes healthy and is rolled back.
///
/// # Errors
/// A step fails or times out.
pub fn full(t: &mut dyn Target, i: &Inputs<'_>) -> Result<Figures, Error> {
    let mut f = Figures::default();
    let w0 = written(t)?;
    let start = Instant::now();
    let (remote, sent) = t.send(i.bundle)?;
    // The status of the disk is read right after the install, before the reboot takes the console.
    let out = t.sh(&format!("trellis device update {remote} && {{ {DISK_STAT}; }}"), Duration::from_secs(600))?;
    f.apply = start.elapsed();
    let install_written = stat_written(&out)?.saturating_sub(w0);
    t.await_restart(Duration::from_secs(300))?;
    let committed = t.wait_log("phase=Committed", BOOT_TIMEOUT)?;
    f.healthy = committed.at - start;
    std::thread::sleep(SETTLE);
    f.written = install_written + written(t)?;
    f.transferred = sent;
    f.downtime = longest_gap(t, i.tick, start, Instant::now());

    let start = Instant::now();
    let (remote, _) = t.send(i.bad_bundle)?;
    t.sh(&format!("trellis device update {remote}"), Duration::from_secs(600))?;
    t.await_restart(Duration::from_secs(300))?;
    t.wait_log("phase=RolledBack", BOOT_TIMEOUT)?;
    t.await_restart(Duration::from_secs(300))?;
    let back = t.wait_log(i.tick, BOOT_TIMEOUT)?;
    f.rollback = back.at - start;
    std::thread::sleep(SETTLE);
    f.rollback_downtime = longest_gap(t, i.tick, start, Instant::now());
    Ok(f)
}

/// The full path streamed: `trellis device update URL`, RAUC reading the
/// bundle from an origin with range requests; `served` says how many bytes
/// the origin has sent so far. No bad bundle (its rollback is the file path's).
///
/// # Errors
/// A step fails or times out.
pub fn streamed(t: &mut dyn Target, url: &str, served: &dyn Fn() -> u64, tick: &str) -> Result<Figures, Error> {
    let mut f = Figures::default();
    let w0 = written(t)?;
    let s0 = served();
    let start = Instant::now();
    let out = t.sh(&format!("trellis device update {url} && {{ {DISK_STAT}; }}"), Duration::from_secs(900))?;
    f.apply = start.elapsed();
    let install_written = stat_written(&out)?.saturating_sub(w0);
    f.transferred = served() - s0;
    t.await_restart(Duration::from_secs(300))?;
    let committed = t.wait_log("phase=Committed", BOOT_TIMEOUT)?;
    f.healthy = committed.at - start;
    std::thread::sleep(SETTLE);
    f.written = install_written + written(t)?;
    f.downtime = longest_gap(t, tick, start, Instant::now());
    Ok(f)
}

fn bytes(n: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let n = n as f64;
    if n >= 1024.0 * 1024.0 { format!("{:.1} MiB", n / 1024.0 / 1024.0) } else { format!("{:.1} KiB", n / 1024.0) }
}

fn secs(d: Duration) -> String {
    if d < Duration::from_secs(10) { format!("{} ms", d.as_millis()) } else { format!("{:.1} s", d.as_secs_f64()) }
}

/// The table (Markdown): the app path, the firmware from a file, then each
/// streamed firmware column (`streamed`: its heading and figures; a zero
/// rollback is shown as not measured), and the ratio of the file firmware to
/// the app.
#[must_use]
pub fn table(app: &Figures, fw: &Figures, streamed: &[(&str, Figures)], i: &Inputs<'_>) -> String {
    let mut out = String::new();
    let period = secs(i.period);
    type Row = (String, fn(&Figures) -> String);
    let rows: [Row; 7] = [
        ("bytes transferred".into(), |f| bytes(f.transferred)),
        ("bytes written to storage".into(), |f| bytes(f.written)),
        ("time to apply (on the device)".into(), |f| secs(f.apply)),
        ("time to healthy (new version running)".into(), |f| secs(f.healthy)),
        (format!("downtime: longest gap of a {period} periodic app"), |f| secs(f.downtime)),
        ("rollback of a bad update: old version running again".into(), |f| secs(f.rollback)),
        ("rollback: longest gap of the periodic app".into(), |f| secs(f.rollback_downtime)),
    ];
    let mut head = "| | app (`.wasm` to /data/apps) | firmware (RAUC bundle, trial boot) |".to_owned();
    for (name, _) in streamed {
        let _ = write!(head, " {name} |");
    }
    let _ = writeln!(out, "{head} ratio |");
    let _ = writeln!(out, "|---|---|---|{}---|", "---|".repeat(streamed.len()));
    let ratio = |a: &str, b: &str| -> String {
        let v = |s: &str| {
            let (n, unit) = s.split_once(' ')?;
            let n: f64 = n.parse().ok()?;
            Some(match unit {
                "KiB" => n * 1024.0,
                "MiB" => n * 1024.0 * 1024.0,
                "ms" => n / 1000.0,
                _ => n,
            })
        };
        match (v(a), v(b)) {
            (Some(a), Some(b)) if a > 0.0 => format!("{:.0}×", b / a),
            _ => "-".into(),
        }
    };
    for (n, (what, cell)) in rows.iter().enumerate() {
        let (a, b) = (cell(app), cell(fw));
        let mut line = format!("| {what} | {a} | {b} |");
        for (_, f) in streamed {
            // The rollback rows (the last two) are not measured on a streamed column.
            let measured = n < 5 || !f.rollback.is_zero();
            let _ = write!(line, " {} |", if measured { cell(f) } else { "-".to_owned() });
        }
        let r = ratio(&a, &b);
        let _ = writeln!(out, "{line} {r} |");
    }
    let _ = writeln!(
        out,
        "\nA bad app is refused before it replaces the running one; a bad firmware is found \
         only in its trial boot (here: the health gate's deadline), then the old slot boots."
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_every_figure_and_the_ratios() {
        let app = Figures {
            transferred: 40 * 1024,
            written: 200 * 1024,
            apply: Duration::from_millis(150),
            healthy: Duration::from_millis(700),
            downtime: Duration::from_millis(180),
            rollback: Duration::from_millis(60),
            rollback_downtime: Duration::from_millis(110),
        };
        let fw = Figures {
            transferred: 20 * 1024 * 1024,
            written: 40 * 1024 * 1024,
            apply: Duration::from_secs(4),
            healthy: Duration::from_secs(14),
            downtime: Duration::from_secs(12),
            rollback: Duration::from_secs(45),
            rollback_downtime: Duration::from_secs(40),
        };
        let p = Path::new("x");
        let i = Inputs {
            app: "publisher",
            new_app: (p, "2"),
            broken_app: p,
            tick: "t",
            period: Duration::from_millis(100),
            bundle: p,
            bad_bundle: p,
        };
        let t = table(&app, &fw, &[], &i);
        assert!(t.contains("| bytes transferred | 40.0 KiB | 20.0 MiB | 512× |"), "{t}");
        assert!(t.contains("| time to healthy (new version running) | 700 ms | 14.0 s | 20× |"), "{t}");
        assert!(t.contains("longest gap of a 100 ms periodic app | 180 ms | 12.0 s"), "{t}");
        assert_eq!(t.lines().filter(|l| l.starts_with("| ")).count(), 8, "{t}");
        let small = Figures { transferred: 5 * 1024 * 1024, healthy: Duration::from_secs(15), ..Figures::default() };
        let t = table(&app, &fw, &[("streamed, small change", small)], &i);
        assert!(t.contains("| firmware (RAUC bundle, trial boot) | streamed, small change | ratio |"), "{t}");
        assert!(t.contains("| bytes transferred | 40.0 KiB | 20.0 MiB | 5.0 MiB | 512× |"), "{t}");
        assert!(
            t.contains("| rollback of a bad update: old version running again | 60 ms | 45.0 s | - | 750× |"),
            "{t}"
        );
    }
}
