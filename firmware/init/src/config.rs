//! init's typed configuration: `/etc/trellis/init.toml`, every field optional.

use std::time::Duration;

use serde::Deserialize;
use trellis_layout::paths;

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
    /// File system of the data partition: `f2fs` or `ext4`.
    #[serde(default = "Config::default_data_fs")]
    pub data_fs: String,
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
    fn default_data_fs() -> String {
        "f2fs".into()
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

    /// Parse the configuration.
    ///
    /// # Errors
    /// Not valid TOML or an unknown field (named in the message).
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The restart delay after the `n`th crash within a minute.
    #[must_use]
    pub fn backoff(&self, n: u32) -> Duration {
        let ms = self.restart_backoff_ms.saturating_mul(1 << n.saturating_sub(1).min(16));
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
            data_fs: Self::default_data_fs(),
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
