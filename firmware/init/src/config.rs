//! init's typed configuration: `/etc/trellis/init.toml`, every field optional.
//!
//! The file is on the read-only root filesystem, so it changes only with a new
//! firmware image: the image build rejects a malformed one (`trellis-init
//! --check`, run by `board/rpi4/post-build.sh`), and on the device a malformed
//! one is fatal (see [`load`] and `docs/init.md`).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use trellis_layout::paths;

use crate::system::System;

/// A service init starts and restarts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Service {
    /// Name for the log.
    pub name: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Whether the system cannot run without it: a crash loop of an essential
    /// service is fatal (reboot).
    #[serde(default)]
    pub essential: bool,
    /// The signal that asks it to stop at shutdown.
    #[serde(default)]
    pub stop_signal: StopSignal,
    /// How long shutdown waits for it to exit before SIGKILL (5000). 0: do not
    /// wait for it at all (a console shell, whose exit can hang in the serial
    /// port's close for longer than any useful wait).
    #[serde(default = "Service::default_stop_timeout_ms")]
    pub stop_timeout_ms: u64,
}

impl Service {
    const fn default_stop_timeout_ms() -> u64 {
        5000
    }
}

/// How a service is asked to stop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopSignal {
    /// SIGTERM.
    #[default]
    Term,
    /// SIGHUP.
    Hup,
    /// SIGKILL.
    Kill,
}

/// The file system of the data partition: what init formats it with, checks
/// it with, and mounts it as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFs {
    /// F2FS (`mkfs.f2fs`, `fsck.f2fs`): made for flash, the default.
    #[default]
    F2fs,
    /// ext4 (`mkfs.ext4`, `fsck.ext4`).
    Ext4,
}

impl DataFs {
    /// The type `mount(2)` takes.
    #[must_use]
    pub const fn fstype(self) -> &'static str {
        match self {
            Self::F2fs => "f2fs",
            Self::Ext4 => "ext4",
        }
    }

    /// The command that makes a new, empty file system labelled `data` on `device`.
    #[must_use]
    pub fn mkfs(self, device: &str) -> Vec<String> {
        let args: [&str; 5] = match self {
            Self::F2fs => ["mkfs.f2fs", "-q", "-f", "-l", "data"],
            Self::Ext4 => ["mkfs.ext4", "-q", "-F", "-L", "data"],
        };
        args.into_iter().chain([device]).map(String::from).collect()
    }

    /// The command that checks and repairs the file system on `device` without asking.
    #[must_use]
    pub fn fsck(self, device: &str) -> Vec<String> {
        let args: [&str; 2] = match self {
            Self::F2fs => ["fsck.f2fs", "-a"],
            Self::Ext4 => ["fsck.ext4", "-p"],
        };
        args.into_iter().chain([device]).map(String::from).collect()
    }
}

impl fmt::Display for DataFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.fstype())
    }
}

/// init's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Candidate boot disks, first present wins (`/sys/block/NAME`).
    #[serde(default = "Config::default_disks")]
    pub disks: Vec<String>,
    /// Stable name for the boot disk: `/dev/<alias>` and `/dev/<alias>pN`.
    #[serde(default = "Config::default_alias")]
    pub disk_alias: String,
    /// Partition number of the data partition.
    #[serde(default = "Config::default_data_partition")]
    pub data_partition: u32,
    /// File system of the data partition: `f2fs` (the default) or `ext4`;
    /// anything else is a configuration error, never a format.
    #[serde(default)]
    pub data_fs: DataFs,
    /// Where the data partition is mounted.
    #[serde(default = "Config::default_data_dir")]
    pub data_dir: String,
    /// Seconds since the epoch when the firmware was built; the clock is never earlier.
    #[serde(default)]
    pub build_time: u64,
    /// The watchdog device (empty: none).
    #[serde(default = "Config::default_watchdog")]
    pub watchdog: String,
    /// Milliseconds between watchdog pets.
    #[serde(default = "Config::default_pet_ms")]
    pub watchdog_pet_ms: u64,
    /// Services, started in order.
    #[serde(default = "Config::default_services")]
    pub services: Vec<Service>,
    /// First restart delay; doubles per crash within a minute, up to 30 s.
    #[serde(default = "Config::default_backoff_ms")]
    pub restart_backoff_ms: u64,
    /// Crashes within a minute that make an essential service's failure fatal.
    #[serde(default = "Config::default_max_crashes")]
    pub max_crashes: u32,
    /// A reboot passes this file's first line to the kernel as the restart
    /// command (`reboot(RESTART2, …)`), like systemd's `/run/systemd/reboot-param`:
    /// `0 tryboot` asks the Pi firmware for a trial boot of the other slot.
    #[serde(default = "Config::default_reboot_param")]
    pub reboot_param: String,
}

impl Config {
    fn default_disks() -> Vec<String> {
        ["mmcblk0", "vda", "sda"].map(String::from).to_vec()
    }
    fn default_alias() -> String {
        "rootdisk0".into()
    }
    const fn default_data_partition() -> u32 {
        7
    }
    fn default_data_dir() -> String {
        paths::DATA_DIR.into()
    }
    fn default_watchdog() -> String {
        "/dev/watchdog".into()
    }
    const fn default_pet_ms() -> u64 {
        5000
    }
    const fn default_backoff_ms() -> u64 {
        500
    }
    const fn default_max_crashes() -> u32 {
        // Reachable inside the one-minute window with the doubling back-off:
        // crashes at 0, 0.5, 1.5, 3.5 and 7.5 s (10 never fit: 0.5 … 30 s gaps).
        5
    }
    fn default_reboot_param() -> String {
        paths::REBOOT_PARAM.into()
    }
    fn default_services() -> Vec<Service> {
        vec![Service {
            name: "runtime".into(),
            argv: vec!["/usr/bin/trellis-runtime".into()],
            essential: true,
            stop_signal: StopSignal::Term,
            stop_timeout_ms: Service::default_stop_timeout_ms(),
        }]
    }

    /// Parse and check the configuration.
    ///
    /// # Errors
    /// Not valid TOML, an unknown field or value (named in the message, with
    /// the accepted ones), or a value init cannot work with (a service without
    /// a program, a data partition it does not link).
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let cfg: Self = toml::from_str(text).map_err(|e| one_line(text, &e))?;
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), String> {
        if !(1..=crate::disk::MAX_PARTITIONS).contains(&self.data_partition) {
            return Err(format!(
                "data-partition = {}: init links partitions 1 to {} of the boot disk",
                self.data_partition,
                crate::disk::MAX_PARTITIONS
            ));
        }
        if let Some(s) = self.services.iter().find(|s| s.argv.first().is_none_or(String::is_empty)) {
            return Err(format!("service {:?}: argv names no program", s.name));
        }
        Ok(())
    }

    /// The restart delay after the `n`th crash within a minute.
    #[must_use]
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u64.checked_shl(n.saturating_sub(1).min(16)).unwrap_or(1 << 16);
        let ms = self.restart_backoff_ms.saturating_mul(factor);
        Duration::from_millis(ms.min(30_000))
    }
}

impl Default for Config {
    fn default() -> Self {
        // An empty document yields every default.
        toml::from_str("").unwrap_or_else(|_| Self {
            disks: Self::default_disks(),
            disk_alias: Self::default_alias(),
            data_partition: Self::default_data_partition(),
            data_fs: DataFs::default(),
            data_dir: Self::default_data_dir(),
            build_time: 0,
            watchdog: Self::default_watchdog(),
            watchdog_pet_ms: Self::default_pet_ms(),
            services: Self::default_services(),
            restart_backoff_ms: Self::default_backoff_ms(),
            max_crashes: Self::default_max_crashes(),
            reboot_param: Self::default_reboot_param(),
        })
    }
}

/// A TOML error as one line (for the kernel log): `line L, column C: what (in `the line`)`.
fn one_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end().replace('\n', "; ");
    let Some(before) = e.span().and_then(|span| text.get(..span.start)) else { return message };
    let index = before.matches('\n').count();
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()).saturating_add(1);
    let source: String = text.lines().nth(index).unwrap_or_default().trim().chars().take(80).collect();
    let line = index.saturating_add(1);
    if source.is_empty() {
        format!("line {line}, column {column}: {message}")
    } else {
        format!("line {line}, column {column}: {message} (in `{source}`)")
    }
}

/// Read init's configuration from `path` (on the device: `/etc/trellis/init.toml`).
///
/// No file: the built-in defaults (the runtime only), said on the console.
///
/// # Errors
/// The file cannot be read, or is malformed (see [`Config::from_toml`]). The
/// caller treats this as fatal: the file is on the read-only root filesystem,
/// so it is the same on every boot of this image, and the image build should
/// have refused it (`trellis-init --check`). Rebooting makes a trial boot of a
/// new image fall back to the slot that booted before; booting on a guess
/// (defaults, or half of the file) would start a different set of services
/// than the image was built with, and could let that image commit itself.
pub fn load(sys: &mut impl System, path: &str) -> Result<Config, String> {
    match sys.read_to_string(path) {
        Ok(text) => Config::from_toml(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            sys.log(&format!("no {path}: the built-in defaults (the runtime only)"));
            Ok(Config::default())
        }
        Err(e) => Err(format!("cannot read it: {e}")),
    }
}
