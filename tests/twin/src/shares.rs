//! Per-app CPU shares in the twin, after Paradrop (Liu et al., SEC 2016): two
//! CPU-bound apps with weights 512 and 1024 on one core end up with ⅓ and ⅔ of
//! it. The apps are copies of the `spin` fixture (`wasm-apps/fixtures/spin`)
//! whose manifests set `limits.cpu-weight`; the runtime puts each app's thread
//! in its own cgroup (`/sys/fs/cgroup/trellis/apps/NAME`, docs/runtime.md), and
//! the kernel's `cpu.stat` of those cgroups says how much CPU each got.
//!
//! One core: the twin has two CPUs (QEMU `-smp 2`, as every twin), so the
//! apps' parent cgroup is confined to CPU 0 with a cpuset for the measurement
//! ([`confine_to_one_cpu`]), as one would on a Pi with four cores. The rest of
//! the system (the runtime's other threads, the console) keeps both CPUs.
//!
//! [`experiment`] is what `tests/shares.rs` asserts on and what `make
//! bench-twin` prints ([`table`]).

use std::time::Duration;

use crate::{BOOT_TIMEOUT, Error, Guest, MOUNT_SHARE, Twin};

/// The apps' cgroups (the runtime's `[cgroups] path` in the twin, plus `apps`).
pub const APPS_CGROUP: &str = "/sys/fs/cgroup/trellis/apps";

/// Paradrop's two chutes: weights 512 and 1024.
pub const PARADROP: [(&str, u32); 2] = [("spin-a", 512), ("spin-b", 1024)];

/// How long each measurement samples the apps' CPU time.
pub const WINDOW: Duration = Duration::from_secs(20);

/// Time for the apps to settle on the confined core before a window starts.
const SETTLE: Duration = Duration::from_secs(3);

fn failed(command: &str, output: String) -> Error {
    Error::Command { command: command.into(), code: -1, output }
}

/// The `spin` fixture (built by `make apps`) packed as app `name`, `version`,
/// with `limits.cpu-weight = weight`.
///
/// # Panics
/// The fixture is not built (`make apps`).
#[must_use]
pub fn spin_app(name: &str, version: &str, weight: u32) -> Vec<u8> {
    crate::fixture("spin", |manifest| {
        name.clone_into(&mut manifest.name);
        version.clone_into(&mut manifest.version);
        manifest.limits.cpu_weight = weight;
    })
}

/// Copy `bytes` into `/data/apps/NAME.wasm` (through the share, renamed into
/// place) and wait for the runtime to run that version.
///
/// # Errors
/// The copy fails or the app does not start.
pub fn install(twin: &Twin, device: &mut Guest, name: &str, version: &str, bytes: &[u8]) -> Result<(), Error> {
    let file = twin.share().join(format!("{name}.wasm"));
    std::fs::write(&file, bytes).map_err(|e| Error::io(&file, e))?;
    device.sh(MOUNT_SHARE)?;
    device.sh(&format!(
        "cp /mnt/{name}.wasm /data/apps/.{name}.tmp && mv /data/apps/.{name}.tmp /data/apps/{name}.wasm"
    ))?;
    device.wait_for(&format!("app running app=\"{name}\" version={version}"), BOOT_TIMEOUT).map(drop)
}

/// Confine the apps' cgroup to CPU 0: enable the cpuset controller from the
/// root down to the runtime's cgroup and set `apps/cpuset.cpus`.
///
/// # Errors
/// A write is refused (the kernel lacks `CONFIG_CPUSETS`, or the runtime did not set up its cgroups).
pub fn confine_to_one_cpu(device: &mut Guest) -> Result<(), Error> {
    device
        .sh(&format!(
            "echo +cpuset > /sys/fs/cgroup/cgroup.subtree_control && \
             echo +cpuset > /sys/fs/cgroup/trellis/cgroup.subtree_control && \
             echo 0 > {APPS_CGROUP}/cpuset.cpus && cat {APPS_CGROUP}/cpuset.cpus.effective"
        ))
        .map(drop)
}

/// Undo [`confine_to_one_cpu`]: apps may use every CPU again.
///
/// # Errors
/// A write is refused.
pub fn release_cpus(device: &mut Guest) -> Result<(), Error> {
    device
        .sh("echo -cpuset > /sys/fs/cgroup/trellis/cgroup.subtree_control && \
             echo -cpuset > /sys/fs/cgroup/cgroup.subtree_control")
        .map(drop)
}

/// The guest's uptime and each app's `usage_usec`, read in one command.
fn sample(device: &mut Guest, apps: &[&str]) -> Result<(f64, Vec<u64>), Error> {
    let files: Vec<String> = apps.iter().map(|a| format!("{APPS_CGROUP}/{a}/cpu.stat")).collect();
    let command = format!("cat /proc/uptime && grep -h '^usage_usec ' {}", files.join(" "));
    let out = device.sh(&command)?;
    let mut lines = out.lines();
    let uptime = lines.next().and_then(|l| l.split_whitespace().next()).and_then(|s| s.parse::<f64>().ok());
    let usage: Vec<u64> =
        lines.filter_map(|l| l.strip_prefix("usage_usec ")).filter_map(|v| v.trim().parse().ok()).collect();
    match uptime {
        Some(up) if usage.len() == apps.len() => Ok((up, usage)),
        _ => Err(failed(&command, out)),
    }
}

/// One app's share of a measurement window.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    /// The app.
    pub app: String,
    /// Its `cpu.weight`, as the kernel has it.
    pub weight: u32,
    /// CPU time its cgroup used in the window (`cpu.stat` usage), seconds.
    pub cpu_s: f64,
    /// Its part of what all the measured apps used together.
    pub of_apps: f64,
    /// Its part of one core over the window (CPU time / wall time).
    pub of_core: f64,
    /// What the weights predict for `of_apps`.
    pub expected: f64,
}

/// One measurement window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Wall time of the window on the guest's clock, seconds.
    pub seconds: f64,
    /// Each app's share.
    pub shares: Vec<Share>,
}

/// Sample `apps`' CPU time over `window` (after a short settle) and split it.
///
/// # Errors
/// The cgroup files are missing (the runtime runs the apps unconfined) or unreadable.
pub fn measure(device: &mut Guest, apps: &[&str], window: Duration) -> Result<Window, Error> {
    let mut weights = Vec::new();
    for app in apps {
        let command = format!("cat {APPS_CGROUP}/{app}/cpu.weight");
        let out = device.sh(&command)?;
        weights.push(out.trim().parse::<u32>().map_err(|_| failed(&command, out.clone()))?);
    }
    device.sh(&format!("sleep {}", SETTLE.as_secs()))?;
    let (t0, u0) = sample(device, apps)?;
    device.sh_timeout(&format!("sleep {}", window.as_secs()), window + Duration::from_secs(60))?;
    let (t1, u1) = sample(device, apps)?;
    Ok(split(apps, &weights, &u0, &u1, t1 - t0))
}

/// Split the CPU time `apps` used between samples `u0` and `u1`
/// (`usage_usec`), `seconds` apart, by app.
#[must_use]
pub fn split(apps: &[&str], weights: &[u32], u0: &[u64], u1: &[u64], seconds: f64) -> Window {
    #[allow(clippy::cast_precision_loss)]
    let used: Vec<f64> = u0.iter().zip(u1).map(|(a, b)| b.saturating_sub(*a) as f64 / 1e6).collect();
    let total: f64 = used.iter().sum();
    let weight_sum: f64 = weights.iter().map(|w| f64::from(*w)).sum();
    let shares = apps
        .iter()
        .zip(weights.iter().zip(&used))
        .map(|(app, (weight, cpu_s))| Share {
            app: (*app).to_owned(),
            weight: *weight,
            cpu_s: *cpu_s,
            of_apps: cpu_s / total,
            of_core: cpu_s / seconds,
            expected: f64::from(*weight) / weight_sum,
        })
        .collect();
    Window { seconds, shares }
}

/// Paradrop's experiment: the two spin apps with weights 512 and 1024,
/// installed, confined to one CPU, measured over `window`, then removed and
/// the CPUs released (the example apps carry on as before).
///
/// # Errors
/// As [`install`], [`confine_to_one_cpu`] and [`measure`].
pub fn experiment(twin: &Twin, device: &mut Guest, window: Duration) -> Result<Window, Error> {
    for (app, weight) in PARADROP {
        install(twin, device, app, "1.0.0", &spin_app(app, "1.0.0", weight))?;
    }
    confine_to_one_cpu(device)?;
    let names: Vec<&str> = PARADROP.iter().map(|(a, _)| *a).collect();
    let measured = measure(device, &names, window)?;
    for (app, _) in PARADROP {
        device.sh(&format!("rm /data/apps/{app}.wasm"))?;
        device.wait_for(&format!("app file removed: stopped app=\"{app}\""), BOOT_TIMEOUT)?;
    }
    release_cpus(device)?;
    Ok(measured)
}

/// The measurement as a Markdown table, beside Paradrop's figures.
#[must_use]
pub fn table(window: &Window) -> String {
    let mut out = String::from(
        "| app | cpu.weight | CPU time | share of the two apps | expected | share of CPU 0 | Paradrop (SEC 2016) |\n\
         |---|---|---|---|---|---|---|\n",
    );
    // Paradrop's figures are for its weights, 512 and 1024.
    let weights: Vec<u32> = window.shares.iter().map(|s| s.weight).collect();
    let paradrop = weights == PARADROP.map(|(_, w)| w);
    for (i, s) in window.shares.iter().enumerate() {
        let paradrop = match (paradrop, i) {
            (true, 0) => "≈ 33 %",
            (true, 1) => "≈ 66 %",
            _ => "—",
        };
        out.push_str(&format!(
            "| {} | {} | {:.2} s | {:.1} % | {:.1} % | {:.1} % | {paradrop} |\n",
            s.app,
            s.weight,
            s.cpu_s,
            s.of_apps * 100.0,
            s.expected * 100.0,
            s.of_core * 100.0
        ));
    }
    out.push_str(&format!("\nwindow: {:.1} s of the guest's clock\n", window.seconds));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_split_by_cpu_time_and_predicted_by_weight() {
        let w = split(&["a", "b"], &[512, 1024], &[1_000_000, 0], &[7_000_000, 12_000_000], 20.0);
        assert!((w.shares[0].of_apps - 1.0 / 3.0).abs() < 1e-9 && (w.shares[1].of_apps - 2.0 / 3.0).abs() < 1e-9);
        assert!((w.shares[0].expected - 1.0 / 3.0).abs() < 1e-9);
        assert!((w.shares[1].of_core - 0.6).abs() < 1e-9);
        let t = table(&w);
        assert!(t.contains("| a | 512 | 6.00 s | 33.3 % | 33.3 % | 30.0 % | ≈ 33 % |"), "{t}");
        let swapped = split(&["a", "b"], &[2048, 1024], &[0, 0], &[2, 1], 1.0);
        assert!(!table(&swapped).contains('≈'), "Paradrop's figures are for 512/1024 only");
    }
}
