//! The runtime's typed configuration (`/etc/trellis/runtime.toml` on a device).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use trellis_appfmt::I2cGrant;

use crate::paths;

/// Which hardware apps may be granted at all. `None` means anything the board has.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HardwarePolicy {
    /// GPIO lines apps may be granted.
    pub gpio_lines: Option<Vec<u32>>,
    /// I2C devices apps may be granted.
    pub i2c: Option<Vec<I2cGrant>>,
    /// SPI devices apps may be granted.
    pub spi: Option<Vec<String>>,
}

/// Where the board's hardware is (`[board]`, for `--board linux`): apps name
/// GPIO lines by number on one chip and I2C buses by number; this says which
/// chip and which adapters those are on this board.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BoardConfig {
    /// The GPIO chip: a path (`/dev/gpiochip0`), a chip name (`gpiochip0`)
    /// or its label (`pinctrl-bcm2711`; a gpio-sim bank's label in the twin).
    #[serde(default = "BoardConfig::default_gpio_chip")]
    pub gpio_chip: String,
    /// An app's I2C bus number to an adapter: a path (`/dev/i2c-3`) or the
    /// adapter's name (`SMBus stub driver`). Numbers not listed are `/dev/i2c-N`.
    #[serde(default)]
    pub i2c_buses: BTreeMap<String, String>,
}

impl BoardConfig {
    fn default_gpio_chip() -> String {
        "/dev/gpiochip0".into()
    }

    /// The I2C bus map with numeric keys.
    ///
    /// # Errors
    /// A key that is not a bus number, named.
    pub fn i2c_bus_map(&self) -> Result<BTreeMap<u32, String>, String> {
        self.i2c_buses
            .iter()
            .map(|(k, v)| {
                k.parse::<u32>()
                    .map(|bus| (bus, v.clone()))
                    .map_err(|_| format!("board.i2c-buses: {k:?} is not a bus number"))
            })
            .collect()
    }
}

impl Default for BoardConfig {
    fn default() -> Self {
        Self { gpio_chip: Self::default_gpio_chip(), i2c_buses: BTreeMap::new() }
    }
}

/// When a crashing app is restarted, and when it is given up on.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CrashPolicy {
    /// Crashes within `window-ms` that make a crash loop.
    #[serde(default = "CrashPolicy::default_max_crashes")]
    pub max_crashes: u32,
    /// The crash-loop window.
    #[serde(default = "CrashPolicy::default_window_ms")]
    pub window_ms: u64,
    /// Delay before the first restart; doubles per crash in the window.
    #[serde(default = "CrashPolicy::default_backoff_ms")]
    pub backoff_ms: u64,
    /// How long a version must run without crashing to become the last good one.
    #[serde(default = "CrashPolicy::default_good_after_ms")]
    pub good_after_ms: u64,
}

impl CrashPolicy {
    const fn default_max_crashes() -> u32 {
        3
    }
    const fn default_window_ms() -> u64 {
        60_000
    }
    const fn default_backoff_ms() -> u64 {
        100
    }
    const fn default_good_after_ms() -> u64 {
        10_000
    }

    /// The crash-loop window.
    #[must_use]
    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }

    /// Time before the restart after the `n`th crash in the window (n >= 1).
    #[must_use]
    pub fn backoff(&self, n: u32) -> Duration {
        Duration::from_millis(self.backoff_ms.saturating_mul(1 << n.saturating_sub(1).min(10)))
    }
}

impl Default for CrashPolicy {
    fn default() -> Self {
        Self {
            max_crashes: Self::default_max_crashes(),
            window_ms: Self::default_window_ms(),
            backoff_ms: Self::default_backoff_ms(),
            good_after_ms: Self::default_good_after_ms(),
        }
    }
}

/// How many lines an app may log (`[app-log]`), as journald's
/// `RateLimitBurst`: a bucket of `burst` lines that refills at `per-second`.
/// Lines over it are dropped, and one line then says how many were.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LogPolicy {
    /// Lines an app may log at once.
    #[serde(default = "LogPolicy::default_burst")]
    pub burst: u32,
    /// Lines per second an app may log in the long run.
    #[serde(default = "LogPolicy::default_per_second")]
    pub per_second: u32,
    /// Longest line kept; the rest is cut and counted.
    #[serde(default = "LogPolicy::default_max_line_bytes")]
    pub max_line_bytes: usize,
}

impl LogPolicy {
    const fn default_burst() -> u32 {
        200
    }
    const fn default_per_second() -> u32 {
        50
    }
    const fn default_max_line_bytes() -> usize {
        2048
    }
}

impl Default for LogPolicy {
    fn default() -> Self {
        Self {
            burst: Self::default_burst(),
            per_second: Self::default_per_second(),
            max_line_bytes: Self::default_max_line_bytes(),
        }
    }
}

/// Whether compiled app code is announced to a system profiler (`profiler`
/// in `runtime.toml`, `trellis run --profile`): wasmtime's own strategies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profiler {
    /// Nothing announced (the default).
    #[default]
    None,
    /// `/tmp/perf-PID.map`: `perf report` names each app function it samples.
    Perfmap,
    /// `jit-PID.dump` in the runtime's working directory: with `perf record -k mono`
    /// and `perf inject --jit`, `perf annotate` shows the compiled instructions too.
    Jitdump,
}

/// `trellis run --profile NAME`: the names `runtime.toml` takes, and its
/// error, which lists them.
impl std::str::FromStr for Profiler {
    type Err = serde::de::value::Error;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::deserialize(serde::de::IntoDeserializer::into_deserializer(name))
    }
}

impl Profiler {
    /// Its name and the file it writes, for messages.
    #[must_use]
    pub fn describe(self) -> String {
        let pid = std::process::id();
        match self {
            Self::None => "none".into(),
            Self::Perfmap => format!("perfmap (/tmp/perf-{pid}.map)"),
            Self::Jitdump => {
                let dir = std::env::current_dir().map_or_else(|_| ".".into(), |d| d.display().to_string());
                format!("jitdump ({dir}/jit-{pid}.dump)")
            }
        }
    }
}

/// Per-app CPU shares through cgroup v2 (`[cgroups]`; absent: apps are not
/// put in cgroups). See `cgroup.rs` and docs/runtime.md.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CgroupConfig {
    /// The runtime's own cgroup, created under the cgroup2 mount; the `cpu`
    /// controller is enabled in its parent, and each app gets `PATH/apps/NAME`.
    #[serde(default = "CgroupConfig::default_path")]
    pub path: PathBuf,
}

impl CgroupConfig {
    fn default_path() -> PathBuf {
        PathBuf::from(paths::RUNTIME_CGROUP)
    }
}

impl Default for CgroupConfig {
    fn default() -> Self {
        Self { path: Self::default_path() }
    }
}

/// Per-app outgoing rate limits (`[network]`; absent: `limits.net-kbit` is
/// not enforced). See `shaping.rs` and docs/runtime.md.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetworkConfig {
    /// The interface whose outgoing traffic is shaped (`eth0`): the runtime
    /// puts an HTB queueing discipline on it with one class per limited app.
    pub shape: String,
}

/// Where apps' assets come from (`[assets]`; absent: apps read only the
/// asset blocks already on the device). See docs/runtime.md, "Assets on demand".
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AssetsConfig {
    /// The origin that serves asset blocks, `host:port` (`trellis asset
    /// serve`); absent: only the device and its peers.
    #[serde(default)]
    pub origin: Option<String>,
    /// Peers' asset servers (`host:port`), asked for a missing block before
    /// the origin.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Serve the blocks this device holds to its peers on this address
    /// (`0.0.0.0:8471`).
    #[serde(default)]
    pub share: Option<std::net::SocketAddr>,
    /// Announce `share` on the LAN (mDNS, `_trellis-pieces._tcp`, as the
    /// hostname) and ask the peers announced there too, as they appear.
    #[serde(default)]
    pub lan: bool,
}

impl AssetsConfig {
    /// Whether it names a source that can hold a firmware bundle: an origin
    /// or a peer. Peers found on the LAN are asked too once bundles stream,
    /// but `lan` alone is none: a bundle no peer holds yet would have
    /// nowhere to come from.
    #[must_use]
    pub fn names_bundle_sources(&self) -> bool {
        self.origin.is_some() || !self.peers.is_empty()
    }
}

/// Everything the runtime needs to know.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RuntimeConfig {
    /// Where apps live.
    #[serde(default = "RuntimeConfig::default_apps_dir")]
    pub apps_dir: PathBuf,
    /// Compile cache, key-value stores, last-good copies.
    #[serde(default = "RuntimeConfig::default_state_dir")]
    pub state_dir: PathBuf,
    /// Refuse apps that are not signed by a trusted key.
    #[serde(default)]
    pub require_signatures: bool,
    /// `.pub` files or directories of them.
    #[serde(default = "RuntimeConfig::default_trust")]
    pub trust: Vec<PathBuf>,
    /// Watch `apps_dir` and swap apps when files change.
    #[serde(default = "RuntimeConfig::default_true")]
    pub watch: bool,
    /// Epoch tick: the granularity of call deadlines.
    #[serde(default = "RuntimeConfig::default_epoch_tick_ms")]
    pub epoch_tick_ms: u64,
    /// How many apps may run at once (sizes the pooling allocator).
    #[serde(default = "RuntimeConfig::default_max_apps")]
    pub max_apps: u32,
    /// Crash handling.
    #[serde(default)]
    pub crash: CrashPolicy,
    /// How much each app may log.
    #[serde(default)]
    pub app_log: LogPolicy,
    /// Hardware apps may be granted.
    #[serde(default)]
    pub hardware: HardwarePolicy,
    /// Run only these apps of the directory (default: every `NAME.wasm`).
    #[serde(default)]
    pub only: Option<Vec<String>>,
    /// Apps shipped in the image (`/usr/share/trellis/apps`), copied into the
    /// apps directory when that does not exist (first boot, or after the data
    /// partition was reformatted). An apps directory that exists is never touched.
    #[serde(default)]
    pub seed_dir: Option<PathBuf>,
    /// Firmware updates through RAUC and the trial-boot health gate (devices
    /// only; absent: no update lifecycle). Fields: docs/update.md.
    #[serde(default)]
    pub update: Option<trellis_update::Policy>,
    /// Where the board's GPIO chip and I2C buses are.
    #[serde(default)]
    pub board: BoardConfig,
    /// The management API (devices only; absent: none). Fields: docs/api.md.
    #[serde(default)]
    pub api: Option<trellis_api::ApiConfig>,
    /// The fleet agent (absent: off). Fields: docs/fleet.md.
    #[serde(default)]
    pub fleet: Option<crate::fleet::FleetConfig>,
    /// Apps in cgroups, with the manifests' `cpu-weight` (absent: off).
    #[serde(default)]
    pub cgroups: Option<CgroupConfig>,
    /// Apps' outgoing rate limits (absent: off).
    #[serde(default)]
    pub network: Option<NetworkConfig>,
    /// Where missing asset blocks are fetched from (absent: nowhere).
    #[serde(default)]
    pub assets: Option<AssetsConfig>,
    /// Announce compiled app code to `perf` (default: none).
    #[serde(default)]
    pub profiler: Profiler,
}

impl RuntimeConfig {
    fn default_apps_dir() -> PathBuf {
        PathBuf::from(paths::APPS_DIR)
    }
    fn default_state_dir() -> PathBuf {
        PathBuf::from(paths::STATE_DIR)
    }
    fn default_trust() -> Vec<PathBuf> {
        vec![PathBuf::from(paths::TRUST_DIR)]
    }
    const fn default_true() -> bool {
        true
    }
    const fn default_epoch_tick_ms() -> u64 {
        5
    }
    const fn default_max_apps() -> u32 {
        32
    }

    /// A configuration for apps in `apps_dir` with state in `state_dir`, all else default.
    #[must_use]
    pub fn new(apps_dir: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            apps_dir: apps_dir.into(),
            state_dir: state_dir.into(),
            require_signatures: false,
            trust: Self::default_trust(),
            watch: true,
            epoch_tick_ms: Self::default_epoch_tick_ms(),
            max_apps: Self::default_max_apps(),
            crash: CrashPolicy::default(),
            app_log: LogPolicy::default(),
            hardware: HardwarePolicy::default(),
            only: None,
            seed_dir: None,
            update: None,
            board: BoardConfig::default(),
            api: None,
            fleet: None,
            cgroups: None,
            network: None,
            assets: None,
            profiler: Profiler::None,
        }
    }

    /// Parse a configuration file.
    ///
    /// # Errors
    /// The file cannot be read or is not a valid configuration (the error names the file).
    pub fn load(path: &Path) -> Result<Self, crate::RuntimeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| crate::RuntimeError::Config { path: path.to_owned(), reason: e.to_string() })?;
        let config: Self = toml::from_str(&text)
            .map_err(|e| crate::RuntimeError::Config { path: path.to_owned(), reason: e.to_string() })?;
        config.board.i2c_bus_map().map_err(|reason| crate::RuntimeError::Config { path: path.to_owned(), reason })?;
        if let Some(update) = &config.update {
            update.check().map_err(|reason| crate::RuntimeError::Config { path: path.to_owned(), reason })?;
        }
        Ok(config)
    }

    /// Whether the file for app `name` is to be run.
    #[must_use]
    pub fn runs(&self, name: &str) -> bool {
        self.only.as_ref().is_none_or(|only| only.iter().any(|n| n == name))
    }

    /// The epoch tick.
    #[must_use]
    pub fn epoch_tick(&self) -> Duration {
        Duration::from_millis(self.epoch_tick_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn file_defaults_are_device_paths() {
        let c: RuntimeConfig = toml::from_str("require-signatures = true\n[hardware]\ngpio-lines = [17]\n").unwrap();
        assert_eq!(c.apps_dir, Path::new(paths::APPS_DIR));
        assert!(c.require_signatures);
        assert_eq!(c.hardware.gpio_lines, Some(vec![17]));
        assert_eq!(c.crash.max_crashes, 3);
        assert!(toml::from_str::<RuntimeConfig>("apps = \"/x\"").is_err());
    }

    #[test]
    fn new_and_an_empty_file_agree_on_every_default() {
        let from_file: RuntimeConfig = toml::from_str("").unwrap();
        let new = RuntimeConfig::new(paths::APPS_DIR, paths::STATE_DIR);
        assert_eq!(format!("{new:?}"), format!("{from_file:?}"));
        assert_eq!(new.trust, [Path::new(paths::TRUST_DIR)]);
    }

    #[test]
    fn the_board_maps_chips_and_buses() {
        let c: RuntimeConfig =
            toml::from_str("[board]\ngpio-chip = \"trellis-gpio\"\n[board.i2c-buses]\n1 = \"SMBus stub driver\"\n")
                .unwrap();
        assert_eq!(c.board.gpio_chip, "trellis-gpio");
        assert_eq!(c.board.i2c_bus_map().unwrap(), BTreeMap::from([(1, "SMBus stub driver".to_owned())]));
        let d: RuntimeConfig = toml::from_str("").unwrap();
        assert_eq!(d.board.gpio_chip, "/dev/gpiochip0");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runtime.toml");
        std::fs::write(&file, "[board.i2c-buses]\none = \"/dev/i2c-1\"\n").unwrap();
        let err = RuntimeConfig::load(&file).unwrap_err().to_string();
        assert!(err.contains("runtime.toml") && err.contains("\"one\" is not a bus number"), "{err}");
    }

    #[test]
    fn both_boards_stream_over_https_with_the_devices_identity() {
        for board in ["qemu-aarch64", "rpi4"] {
            let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../board").join(board).join("runtime.toml");
            let c = RuntimeConfig::load(&file).unwrap();
            let (update, api) = (c.update.unwrap(), c.api.unwrap());
            let tls = update.stream_tls.unwrap_or_else(|| panic!("{board}: no [update.stream-tls]"));
            assert_eq!((tls.cert.as_ref(), tls.key.as_ref()), (Some(&api.cert), Some(&api.key)), "{board}");
            // The file board/rpi4/post-build.sh installs.
            assert_eq!(tls.ca, Some(PathBuf::from("/etc/trellis/update/origin-ca.pem")), "{board}");
        }
        let bad = toml::from_str::<RuntimeConfig>(
            "[update.stream-tls]
certificate = \"/x\"\n",
        );
        assert!(bad.unwrap_err().to_string().contains("certificate"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runtime.toml");
        std::fs::write(&file, "[update.stream-tls]\nkey = \"/etc/trellis/api/device.key\"\n").unwrap();
        let err = RuntimeConfig::load(&file).unwrap_err().to_string();
        assert!(err.contains("runtime.toml") && err.contains("`cert` and `key` go together"), "{err}");
    }

    #[test]
    fn cgroups_are_off_unless_asked_for() {
        let off: RuntimeConfig = toml::from_str("").unwrap();
        assert_eq!(off.cgroups, None);
        let on: RuntimeConfig = toml::from_str("[cgroups]\n").unwrap();
        assert_eq!(on.cgroups, Some(CgroupConfig { path: PathBuf::from("/sys/fs/cgroup/trellis") }));
        let elsewhere: RuntimeConfig = toml::from_str("[cgroups]\npath = \"/sys/fs/cgroup/rt\"\n").unwrap();
        assert_eq!(elsewhere.cgroups.unwrap().path, Path::new("/sys/fs/cgroup/rt"));
        assert!(toml::from_str::<RuntimeConfig>("[cgroups]\nweight = 1\n").is_err());
    }

    #[test]
    fn the_profiler_is_off_unless_named_and_an_unknown_one_is_refused_by_name() {
        let off: RuntimeConfig = toml::from_str("").unwrap();
        assert_eq!(off.profiler, Profiler::None);
        let on: RuntimeConfig = toml::from_str("profiler = \"jitdump\"\n").unwrap();
        assert_eq!(on.profiler, Profiler::Jitdump);
        let e = toml::from_str::<RuntimeConfig>("profiler = \"vtune\"\n").unwrap_err().to_string();
        assert!(e.contains("vtune") && e.contains("perfmap"), "{e}");
        assert_eq!("perfmap".parse::<Profiler>().unwrap(), Profiler::Perfmap);
        let e = "vtune".parse::<Profiler>().unwrap_err().to_string();
        assert!(e.contains("vtune") && e.contains("jitdump"), "{e}");
    }

    #[test]
    fn backoff_doubles() {
        let p = CrashPolicy { backoff_ms: 100, ..CrashPolicy::default() };
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(3), Duration::from_millis(400));
    }
}
