//! The boot sequence, from an empty `/dev` to a mounted data partition.

use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::disk::{self, Content};
use crate::system::{ExitStatus, System};
use trellis_layout::paths::CGROUP_ROOT;

const MS_NOSUID: u64 = 2;
const MS_NODEV: u64 = 4;
const MS_NOEXEC: u64 = 8;
const MS_NOATIME: u64 = 1024;

/// A failure init cannot boot past; it syncs, unmounts and reboots.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    /// A pseudo file system could not be mounted.
    #[error("cannot mount {fstype} on {target}: {source}")]
    Mount {
        /// The file system type.
        fstype: String,
        /// Where.
        target: String,
        /// Why.
        source: std::io::Error,
    },
    /// No boot disk was found.
    #[error("no boot disk: none of {0:?} is in /sys/block")]
    NoDisk(Vec<String>),
    /// The data partition could not be made usable.
    #[error("data partition {device}: {reason}")]
    Data {
        /// The device.
        device: String,
        /// Why.
        reason: String,
    },
    /// An essential service keeps crashing.
    #[error("service {0} keeps crashing")]
    CrashLoop(String),
    /// init's configuration file is malformed or unreadable.
    #[error("{path}: {reason} (the image build checks it: trellis-init --check {path})")]
    Config {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The handlers for the reboot and poweroff signals could not be
    /// installed: the kernel drops signals sent to PID 1 without a handler, so
    /// every `reboot` and `poweroff` would be lost.
    #[error("cannot install the signal handlers (reboot and poweroff requests would be lost): {0}")]
    Signals(std::io::Error),
}

/// What boot found and did, for the log and the tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booted {
    /// The boot disk (`vda`, `mmcblk0`).
    pub disk: String,
    /// The data partition's device path.
    pub data_device: String,
    /// Whether the data partition was formatted this boot.
    pub formatted: bool,
    /// Where a corrupted data partition's first MiB was kept, if it was.
    pub kept_aside: Option<String>,
    /// Whether the clock was stepped forward.
    pub clock_stepped: bool,
}

/// Bytes of a corrupted data partition saved before reformatting.
const KEEP_ASIDE_LEN: usize = 1 << 20;

/// Mount everything and prepare the data partition.
///
/// # Errors
/// What makes booting impossible; the caller reboots.
pub fn boot(sys: &mut impl System, cfg: &Config) -> Result<Booted, Fatal> {
    for (fstype, target, flags) in [
        ("proc", "/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC),
        ("sysfs", "/sys", MS_NOSUID | MS_NODEV | MS_NOEXEC),
        ("devtmpfs", "/dev", MS_NOSUID),
        ("tmpfs", "/run", MS_NOSUID | MS_NODEV),
        ("tmpfs", "/tmp", MS_NOSUID | MS_NODEV),
    ] {
        let _ = sys.mkdir(target);
        match sys.mount(fstype, target, fstype, flags, if fstype == "tmpfs" { "mode=0755" } else { "" }) {
            // The kernel may have mounted devtmpfs already (CONFIG_DEVTMPFS_MOUNT).
            Err(e) if e.raw_os_error() == Some(16) => {}
            Err(source) => return Err(Fatal::Mount { fstype: fstype.into(), target: target.into(), source }),
            Ok(()) => {}
        }
    }
    // cgroup v2, for the runtime's per-app CPU shares (it enables the `cpu`
    // controller itself, when its `[cgroups]` says so). Not essential: on a
    // kernel without it the device boots and the runtime runs apps unconfined.
    match sys.mount("cgroup2", CGROUP_ROOT, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, "") {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(16) => {}
        Err(e) => sys.log(&format!("cannot mount cgroup2 on {CGROUP_ROOT}: {e} (apps run without CPU shares)")),
    }
    let clock_stepped = step_clock(sys, cfg);
    let disk = find_disk(sys, cfg)?;
    let data_device = format!("/dev/{}", disk::partition_name(&cfg.disk_alias, cfg.data_partition));
    let (formatted, kept_aside) = mount_data(sys, cfg, &data_device)?;
    Ok(Booted { disk, data_device, formatted, kept_aside, clock_stepped })
}

/// The Pi has no real-time clock: never run earlier than the build.
fn step_clock(sys: &mut impl System, cfg: &Config) -> bool {
    let Some(build) = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(cfg.build_time)) else {
        sys.log(&format!("build-time {} is not a time: the clock is left alone", cfg.build_time));
        return false;
    };
    if sys.now() >= build {
        return false;
    }
    match sys.set_time(build) {
        Ok(()) => {
            sys.log(&format!("clock stepped forward to the build time ({}s)", cfg.build_time));
            true
        }
        Err(e) => {
            sys.log(&format!("cannot set the clock: {e}"));
            false
        }
    }
}

/// Find the boot disk and link `/dev/<alias>` and `/dev/<alias>pN` to it, so
/// configurations serve `vda` in the twin and `mmcblk0` on the Pi alike.
fn find_disk(sys: &mut impl System, cfg: &Config) -> Result<String, Fatal> {
    let present = sys.list_dir("/sys/block").unwrap_or_default();
    let disk =
        cfg.disks.iter().find(|d| present.contains(d)).cloned().ok_or_else(|| Fatal::NoDisk(cfg.disks.clone()))?;
    let mut links = vec![(disk.clone(), format!("/dev/{}", cfg.disk_alias))];
    // Partitions appear as /sys/block/<disk>/<disk>[p]N.
    let entries = sys.list_dir(&format!("/sys/block/{disk}")).unwrap_or_default();
    for n in 1..=disk::MAX_PARTITIONS {
        let name = disk::partition_name(&disk, n);
        if entries.contains(&name) {
            links.push((name, format!("/dev/{}", disk::partition_name(&cfg.disk_alias, n))));
        }
    }
    for (target, alias) in links {
        if let Err(e) = sys.symlink(&target, &alias) {
            sys.log(&format!("cannot link {alias} -> {target}: {e}"));
        }
    }
    Ok(disk)
}

/// Mount the data partition. No file system: format (first boot). A file
/// system that does not mount: repair, and if that fails keep its first MiB
/// aside and reformat, so the device still comes up.
fn mount_data(sys: &mut impl System, cfg: &Config, device: &str) -> Result<(bool, Option<String>), Fatal> {
    let fail = |reason: String| Fatal::Data { device: device.into(), reason };
    let _ = sys.mkdir(&cfg.data_dir);
    let fs = cfg.data_fs;
    let mount = |sys: &mut dyn System| sys.mount(device, &cfg.data_dir, fs.fstype(), MS_NOATIME | MS_NODEV, "");
    let head = sys.read_at(device, 0, disk::PROBE_LEN).map_err(|e| fail(format!("cannot read: {e}")))?;
    let content = disk::detect(&head);
    if content != Content::Nothing {
        if mount(sys).is_ok() {
            return Ok((false, None));
        }
        sys.log(&format!("{device} does not mount; checking it"));
        if let Ok(ExitStatus::Code(0 | 1)) = sys.run(&fs.fsck(device))
            && mount(sys).is_ok()
        {
            sys.log(&format!("{device} repaired"));
            return Ok((false, None));
        }
    }
    let saved = if content == Content::Nothing {
        sys.log(&format!("{device} holds no file system: formatting it as {} (first boot)", cfg.data_fs));
        None
    } else {
        sys.log(&format!("{device} is corrupted: keeping its start aside and reformatting"));
        sys.read_at(device, 0, KEEP_ASIDE_LEN).ok()
    };
    let mkfs = fs.mkfs(device);
    let program = mkfs.first().map_or("mkfs", String::as_str);
    match sys.run(&mkfs) {
        Ok(ExitStatus::Code(0)) => {}
        Ok(status) => return Err(fail(format!("{program} failed: {status:?}"))),
        Err(e) => return Err(fail(format!("cannot run {program}: {e}"))),
    }
    mount(sys).map_err(|e| fail(format!("does not mount even after formatting: {e}")))?;
    let kept = saved.and_then(|bytes| {
        let dir = format!("{}/lost+found", cfg.data_dir);
        let path = format!(
            "{dir}/corrupted-data-partition-{}.img",
            sys.now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
        );
        let _ = sys.mkdir(&dir);
        sys.write(&path, &bytes).ok().map(|()| path)
    });
    Ok((true, kept))
}
