//! The app manifest: identity, permissions and limits.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Why a manifest is not acceptable. Every message names the field.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not valid TOML or an unknown/mistyped field.
    #[error("manifest is not valid: {0}")]
    Parse(String),
    /// A field has a value outside what is allowed.
    #[error("manifest field `{field}`: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// An I2C device an app may talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct I2cGrant {
    /// Bus number (`/dev/i2c-N`).
    pub bus: u32,
    /// 7-bit address.
    pub address: u8,
}

/// What an app asks to use. Anything not listed is denied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Permissions {
    /// GPIO lines the app may drive.
    #[serde(default)]
    pub gpio_outputs: Vec<u32>,
    /// GPIO lines the app may read and watch.
    #[serde(default)]
    pub gpio_inputs: Vec<u32>,
    /// I2C devices.
    #[serde(default)]
    pub i2c: Vec<I2cGrant>,
    /// SPI devices (`spidev0.0`).
    #[serde(default)]
    pub spi: Vec<String>,
    /// Hardware PWM channels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pwm: Vec<u32>,
    /// Topic patterns the app may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Topic patterns the app may subscribe to.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Topics the app may use on the fleet bus (`[permissions.fleet]`).
    #[serde(default, skip_serializing_if = "FleetGrants::is_empty")]
    pub fleet: FleetGrants,
    /// Hot-plug subsystems the app may follow (`usb`, `gpio`, `i2c`, `tty`).
    #[serde(default)]
    pub hotplug: Vec<String>,
    /// Hosts the app may send HTTP requests to (`wasi:http`): `name` (any
    /// port), `name:port`, or `*.domain` (any name under it). Everything
    /// else is refused, naming the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<String>,
}

/// What an app may do on the fleet bus (`[permissions.fleet]`): the topics
/// after `fleet/` in its `pubsub` calls. `publish` patterns name this
/// device's own topics (`readings/#`); `subscribe` patterns start with the
/// device they come from, or `+` for any (`+/readings/#`). Same `+`/`#`
/// syntax as local topics; a level may not contain `.`, `*` or `>` (each
/// level is one NATS subject token).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FleetGrants {
    /// Topic patterns the app may publish to the fleet, as this device.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Patterns `<device or +>/<topic pattern>` the app may subscribe to.
    #[serde(default)]
    pub subscribe: Vec<String>,
}

impl FleetGrants {
    /// No fleet grant at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.publish.is_empty() && self.subscribe.is_empty()
    }
}

/// Resource limits; the runtime enforces them per app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Limits {
    /// Linear memory, in KiB.
    #[serde(default = "Limits::default_memory_kib")]
    pub memory_kib: u32,
    /// Time one call into the app (start, an event) may take, in milliseconds.
    #[serde(default = "Limits::default_call_ms")]
    pub call_ms: u32,
    /// Rate limit of the app's outgoing network traffic, in kbit/s (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub net_kbit: u32,
    /// Longest an outgoing HTTP request may take, connection to last byte, in milliseconds.
    #[serde(default = "Limits::default_request_ms")]
    pub request_ms: u32,
    /// Storage quota, in KiB: everything the app writes to the data partition
    /// (its key-value store's file, as stored). `kv-kib`, its earlier name, is
    /// still read.
    #[serde(default = "Limits::default_storage_kib", alias = "kv-kib")]
    pub storage_kib: u32,
    /// Relative CPU share: the app's cgroup v2 `cpu.weight` (1..=10000, the
    /// kernel's default 100), enforced by the kernel when the device runs
    /// apps in cgroups (`[cgroups]` in the runtime's configuration).
    #[serde(default = "Limits::default_cpu_weight")]
    pub cpu_weight: u32,
}

impl Limits {
    /// Largest memory an app may ask for (256 MiB).
    pub const MAX_MEMORY_KIB: u32 = 256 * 1024;
    /// Longest call deadline (60 s).
    pub const MAX_CALL_MS: u32 = 60_000;
    /// Longest outgoing request (5 min).
    pub const MAX_REQUEST_MS: u32 = 300_000;
    /// Highest outgoing rate limit (10 Gbit/s).
    pub const MAX_NET_KBIT: u32 = 10_000_000;
    /// Largest key-value quota (64 MiB).
    pub const MAX_STORAGE_KIB: u32 = 64 * 1024;
    /// Smallest and largest `cpu-weight` (the kernel's `cpu.weight` range).
    pub const CPU_WEIGHT_RANGE: std::ops::RangeInclusive<u32> = 1..=10_000;

    const fn default_memory_kib() -> u32 {
        16 * 1024
    }
    const fn default_call_ms() -> u32 {
        100
    }
    const fn default_request_ms() -> u32 {
        10_000
    }
    const fn default_storage_kib() -> u32 {
        64
    }
    const fn default_cpu_weight() -> u32 {
        100
    }

    /// Linear memory limit in bytes.
    #[must_use]
    pub fn memory_bytes(&self) -> usize {
        self.memory_kib as usize * 1024
    }

    /// Storage quota in bytes.
    #[must_use]
    pub fn storage_bytes(&self) -> u64 {
        u64::from(self.storage_kib) * 1024
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_kib: Self::default_memory_kib(),
            call_ms: Self::default_call_ms(),
            net_kbit: 0,
            request_ms: Self::default_request_ms(),
            storage_kib: Self::default_storage_kib(),
            cpu_weight: Self::default_cpu_weight(),
        }
    }
}

/// A GPIO line's pull resistor (`[gpio.N] bias`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LineBias {
    /// Leave it as the board has it.
    #[default]
    AsIs,
    /// Pull up.
    PullUp,
    /// Pull down.
    PullDown,
    /// No pull.
    Disable,
}

/// How a granted GPIO line is wired (`[gpio.N]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GpioLine {
    /// The internal pull resistor.
    #[serde(default)]
    pub bias: LineBias,
    /// Active when physically low: the app reads and writes logical levels.
    #[serde(default)]
    pub active_low: bool,
}

/// How a granted SPI device is clocked (`[spi."spidev0.0"]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SpiDevice {
    /// SPI mode 0-3.
    #[serde(default)]
    pub mode: u8,
    /// Clock rate (default: the device's own setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_hz: Option<u32>,
    /// Bits per word.
    #[serde(default = "SpiDevice::default_bits")]
    pub bits_per_word: u8,
}

impl SpiDevice {
    const fn default_bits() -> u8 {
        8
    }
}

impl Default for SpiDevice {
    fn default() -> Self {
        Self { mode: 0, speed_hz: None, bits_per_word: Self::default_bits() }
    }
}

/// An app's manifest, as written in `trellis.toml` and embedded in the app file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The app's name: `[a-z0-9][a-z0-9_-]*`, at most 64 characters; the file is `<name>.wasm`.
    pub name: String,
    /// The app's version (semantic version).
    pub version: String,
    /// One line saying what the app does.
    #[serde(default)]
    pub description: String,
    /// SHA-256 of the component's code (`sha256:<hex>`), written by
    /// `trellis app pack`: the runtime refuses a file whose code does not match.
    #[serde(default, rename = "code-digest", skip_serializing_if = "Option::is_none")]
    pub code_digest: Option<String>,
    /// What the app may use.
    #[serde(default)]
    pub permissions: Permissions,
    /// What the app may consume.
    #[serde(default)]
    pub limits: Limits,
    /// Settings handed to the app's `start`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Wiring of granted GPIO lines, by line number (`[gpio.17]`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gpio: BTreeMap<String, GpioLine>,
    /// Clocking of granted SPI devices, by name (`[spi."spidev0.0"]`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub spi: BTreeMap<String, SpiDevice>,
    /// Large read-only files the app reads through the `assets` interface,
    /// by the name it uses: `weights = "sha256:<hex>"`, the SHA-256 of the
    /// asset's block index (`trellis asset index FILE` prints it). The app
    /// can read only these.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub assets: BTreeMap<String, String>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
const fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One entry of `permissions.http`: a host name (or `*.` and a domain) and
/// an optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// The name, without `*.`; lowercase.
    pub host: String,
    /// Whether any name under `host` matches (`*.host`), but not `host` itself.
    pub subdomains: bool,
    /// The one port allowed, or any.
    pub port: Option<u16>,
}

impl HostPattern {
    /// Parse `name`, `name:port`, `*.domain[:port]` or `[v6]:port`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let (host, port) = match text.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
                (h, Some(p.parse::<u16>().ok().filter(|p| *p > 0)?))
            }
            _ => (text, None),
        };
        let (host, subdomains) = host.strip_prefix("*.").map_or((host, false), |h| (h, true));
        let valid = !host.is_empty()
            && host.len() <= 253
            && (host.starts_with('[')
                && host.ends_with(']')
                && host[1..host.len() - 1].parse::<std::net::Ipv6Addr>().is_ok()
                || host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && !label.starts_with('-')
                        && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                }));
        valid.then(|| Self { host: host.to_owned(), subdomains, port })
    }

    /// Whether a request to `host` (a name or an address, as in the URL) on `port` is allowed.
    #[must_use]
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        let name_ok = if self.subdomains {
            host.strip_suffix(&self.host).is_some_and(|rest| rest.ends_with('.') && rest.len() > 1)
        } else {
            host == self.host
        };
        name_ok && self.port.is_none_or(|p| p == port)
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ManifestError {
    ManifestError::Invalid { field, reason: reason.into() }
}

/// Whether `name` is an app name (owned by `trellis-layout`, with the apps directory).
pub use trellis_layout::valid_name;

/// Whether `pattern` is a valid topic pattern: non-empty `/`-separated levels of
/// printable ASCII, where `+` stands alone for one level and `#` only as the last.
#[must_use]
pub fn valid_topic_pattern(pattern: &str) -> bool {
    if pattern.is_empty() || pattern.len() > 256 {
        return false;
    }
    let levels: Vec<&str> = pattern.split('/').collect();
    levels.iter().enumerate().all(|(i, level)| {
        let wild_ok = match *level {
            "#" => i + 1 == levels.len(),
            "+" => true,
            l => !l.contains(['+', '#']),
        };
        wild_ok && !level.is_empty() && level.bytes().all(|c| c.is_ascii_graphic())
    })
}

/// The first topic level that is the fleet bus: an app's `fleet/<topic>`
/// goes over the fleet, never to the device's own apps.
pub const FLEET_PREFIX: &str = "fleet";

/// Whether `pattern` is valid on the fleet bus: a topic pattern whose levels
/// are also NATS subject tokens (no `.`, `*` or `>`).
#[must_use]
pub fn valid_fleet_pattern(pattern: &str) -> bool {
    valid_topic_pattern(pattern) && !pattern.contains(['.', '*', '>'])
}

/// Whether a topic pattern names the fleet bus's `fleet/` level (local
/// grants may not: the fleet has `[permissions.fleet]`).
fn names_fleet(pattern: &str) -> bool {
    pattern.split('/').next() == Some(FLEET_PREFIX)
}

/// Whether `topic` (no wildcards) matches `pattern`.
#[must_use]
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    let mut p = pattern.split('/');
    let mut t = topic.split('/');
    loop {
        match (p.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every topic `pattern` matches is also matched by `granted`.
#[must_use]
pub fn pattern_covers(granted: &str, pattern: &str) -> bool {
    let mut g = granted.split('/');
    let mut p = pattern.split('/');
    loop {
        match (g.next(), p.next()) {
            (Some("#"), _) | (None, None) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

impl Manifest {
    /// Parse and validate a manifest.
    ///
    /// # Errors
    /// Invalid TOML, unknown fields, or a value out of range (named in the error).
    pub fn from_toml(text: &str) -> Result<Self, ManifestError> {
        let manifest: Self = toml::from_str(text).map_err(|e| ManifestError::Parse(e.to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// The manifest as TOML.
    #[must_use]
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// The content hash of the asset the app calls `name`, if the manifest names it.
    #[must_use]
    pub fn asset(&self, name: &str) -> Option<[u8; 32]> {
        self.assets.get(name).and_then(|d| parse_code_digest(d))
    }

    /// Check every field.
    ///
    /// # Errors
    /// The first field out of range, named.
    pub fn validate(&self) -> Result<(), ManifestError> {
        for (name, digest) in &self.assets {
            if !valid_name(name) {
                return Err(invalid("assets", format!("{name:?} must be 1-64 characters of a-z, 0-9, '-' or '_'")));
            }
            if parse_code_digest(digest).is_none() {
                return Err(invalid(
                    "assets",
                    format!("{name} = {digest:?} is not `sha256:` and 64 lowercase hex digits"),
                ));
            }
        }
        if !valid_name(&self.name) {
            return Err(invalid(
                "name",
                format!(
                    "{:?} must be 1-64 characters of a-z, 0-9, '-' or '_', starting with a letter or digit",
                    self.name
                ),
            ));
        }
        if !valid_version(&self.version) {
            return Err(invalid("version", format!("{:?} is not a semantic version (like 1.2.3)", self.version)));
        }
        if let Some(d) = &self.code_digest
            && parse_code_digest(d).is_none()
        {
            return Err(invalid("code-digest", format!("{d:?} is not `sha256:` and 64 lowercase hex digits")));
        }
        let l = &self.limits;
        if l.memory_kib < 64 || l.memory_kib > Limits::MAX_MEMORY_KIB {
            return Err(invalid(
                "limits.memory-kib",
                format!("{} is outside 64..={}", l.memory_kib, Limits::MAX_MEMORY_KIB),
            ));
        }
        if l.call_ms == 0 || l.call_ms > Limits::MAX_CALL_MS {
            return Err(invalid("limits.call-ms", format!("{} is outside 1..={}", l.call_ms, Limits::MAX_CALL_MS)));
        }
        if l.request_ms == 0 || l.request_ms > Limits::MAX_REQUEST_MS {
            return Err(invalid(
                "limits.request-ms",
                format!("{} is outside 1..={}", l.request_ms, Limits::MAX_REQUEST_MS),
            ));
        }
        if l.net_kbit > Limits::MAX_NET_KBIT {
            return Err(invalid("limits.net-kbit", format!("{} is above {}", l.net_kbit, Limits::MAX_NET_KBIT)));
        }
        if l.storage_kib > Limits::MAX_STORAGE_KIB {
            return Err(invalid(
                "limits.storage-kib",
                format!("{} is above {}", l.storage_kib, Limits::MAX_STORAGE_KIB),
            ));
        }
        if !Limits::CPU_WEIGHT_RANGE.contains(&l.cpu_weight) {
            let (lo, hi) = (Limits::CPU_WEIGHT_RANGE.start(), Limits::CPU_WEIGHT_RANGE.end());
            return Err(invalid("limits.cpu-weight", format!("{} is outside {lo}..={hi}", l.cpu_weight)));
        }
        let p = &self.permissions;
        if let Some(line) = p.gpio_outputs.iter().find(|l| p.gpio_inputs.contains(l)) {
            return Err(invalid("permissions", format!("GPIO line {line} is listed as both input and output")));
        }
        if let Some(g) = p.i2c.iter().find(|g| g.address > 0x7f) {
            return Err(invalid("permissions.i2c", format!("address {:#04x} is not a 7-bit address", g.address)));
        }
        if let Some(d) = p.spi.iter().find(|d| !trellis_hal::spi::valid_device_name(d)) {
            return Err(invalid("permissions.spi", format!("{d:?} is not a device name like spidev0.0")));
        }
        for (field, list) in [("permissions.publish", &p.publish), ("permissions.subscribe", &p.subscribe)] {
            if let Some(t) = list.iter().find(|t| !valid_topic_pattern(t)) {
                return Err(invalid(field, format!("{t:?} is not a valid topic pattern")));
            }
        }
        if let Some(h) = p.http.iter().find(|h| HostPattern::parse(h).is_none()) {
            return Err(invalid(
                "permissions.http",
                format!("{h:?} is not a host (`name`, `name:port` or `*.domain`, lowercase)"),
            ));
        }
        for (field, list) in [("permissions.publish", &p.publish), ("permissions.subscribe", &p.subscribe)] {
            if let Some(t) = list.iter().find(|t| names_fleet(t)) {
                return Err(invalid(
                    field,
                    format!("{t:?}: `fleet/` is the fleet bus, granted in [permissions.fleet]"),
                ));
            }
        }
        for (field, list) in
            [("permissions.fleet.publish", &p.fleet.publish), ("permissions.fleet.subscribe", &p.fleet.subscribe)]
        {
            if let Some(t) = list.iter().find(|t| !valid_fleet_pattern(t)) {
                return Err(invalid(
                    field,
                    format!("{t:?} is not a fleet topic pattern (a topic pattern without '.', '*' or '>')"),
                ));
            }
        }
        if let Some(t) = p.fleet.publish.iter().find(|t| names_fleet(t)) {
            return Err(invalid(
                "permissions.fleet.publish",
                format!("{t:?}: name the topic after `fleet/` (\"readings/#\" grants `fleet/readings/...`)"),
            ));
        }
        if let Some(t) = p.fleet.subscribe.iter().find(|t| !t.contains('/') && *t != "#") {
            return Err(invalid(
                "permissions.fleet.subscribe",
                format!("{t:?} names no topic: write <device or +>/<topic pattern>, like \"+/readings/#\""),
            ));
        }
        if let Some(s) = p.hotplug.iter().find(|s| !valid_name(s)) {
            return Err(invalid("permissions.hotplug", format!("{s:?} is not a subsystem name")));
        }
        for key in self.gpio.keys() {
            let granted = key.parse::<u32>().is_ok_and(|l| p.gpio_inputs.contains(&l) || p.gpio_outputs.contains(&l));
            if !granted {
                return Err(invalid("gpio", format!("[gpio.{key}] is not a line in gpio-inputs or gpio-outputs")));
            }
        }
        for (device, spi) in &self.spi {
            if !p.spi.contains(device) {
                return Err(invalid("spi", format!("[spi.\"{device}\"] is not a device in permissions.spi")));
            }
            if spi.mode > 3 || spi.bits_per_word == 0 || spi.speed_hz == Some(0) {
                return Err(invalid("spi", format!("[spi.\"{device}\"]: mode must be 0-3, bits and speed above 0")));
            }
        }
        Ok(())
    }

    /// How granted line `line` is wired (defaults when the manifest says nothing).
    #[must_use]
    pub fn gpio_line(&self, line: u32) -> GpioLine {
        self.gpio.get(&line.to_string()).copied().unwrap_or_default()
    }

    /// How granted SPI device `device` is clocked.
    #[must_use]
    pub fn spi_device(&self, device: &str) -> SpiDevice {
        self.spi.get(device).copied().unwrap_or_default()
    }
}

/// The 32 bytes of a `sha256:<64 hex>` code digest.
#[must_use]
pub fn parse_code_digest(text: &str) -> Option<[u8; 32]> {
    let hex_digits = text.strip_prefix("sha256:")?;
    if hex_digits.len() != 64 || hex_digits.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut out).ok()?;
    Some(out)
}

/// A code digest as the manifest writes it.
#[must_use]
pub fn format_code_digest(digest: &[u8; 32]) -> String {
    format!("sha256:{}", hex::encode(digest))
}

fn valid_version(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const FULL: &str = r#"
name = "thermostat"
version = "1.2.0"
description = "keeps it warm"
[permissions]
gpio-outputs = [22]
i2c = [{ bus = 1, address = 0x48 }]
publish = ["sensors/temperature"]
[limits]
memory-kib = 2048
call-ms = 50
[config]
setpoint = "21.0"
"#;

    #[test]
    fn parses_and_defaults() {
        let m = Manifest::from_toml(FULL).unwrap();
        assert_eq!(m.permissions.i2c, vec![I2cGrant { bus: 1, address: 0x48 }]);
        assert_eq!(m.limits.storage_kib, 64);
        assert_eq!(m.limits.cpu_weight, 100);
        assert_eq!(m.limits.memory_bytes(), 2048 * 1024);
        assert_eq!(m.config["setpoint"], "21.0");
        assert_eq!(Manifest::from_toml(&m.to_toml()).unwrap(), m);
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = Manifest::from_toml("name = \"a\"\nversion = \"1.0.0\"\n[permissions]\ngpio = [1]\n").unwrap_err();
        assert!(err.to_string().contains("gpio"), "{err}");
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            ("name = \"../x\"\nversion = \"1.0.0\"", "`name`"),
            ("name = \"a\"\nversion = \"one\"", "`version`"),
            ("name = \"a\"\nversion = \"1.0.0\"\ncode-digest = \"md5:00\"", "`code-digest`"),
            ("name = \"a\"\nversion = \"1.0.0\"\ncode-digest = \"sha256:AB\"", "`code-digest`"),
            ("name = \"a\"\nversion = \"1.0.0\"\n[limits]\nmemory-kib = 1", "`limits.memory-kib`"),
            ("name = \"a\"\nversion = \"1.0.0\"\n[assets]\nweights = \"sha256:00\"", "`assets`"),
            ("name = \"a\"\nversion = \"1.0.0\"\n[assets]\n\"../w\" = \"sha256:00\"", "`assets`"),
            ("name = \"a\"\nversion = \"1.0.0\"\n[limits]\ncall-ms = 0", "`limits.call-ms`"),
            ("name = \"a\"\nversion = \"1.0.0\"\n[limits]\ncpu-weight = 0", "`limits.cpu-weight`"),
            ("name = \"a\"\nversion = \"1.0.0\"\n[limits]\ncpu-weight = 10001", "`limits.cpu-weight`"),
            ("name = \"a\"\nversion = \"1.0.0\"\n[permissions]\nspi = [\"/dev/sda\"]", "`permissions.spi`"),
            ("name = \"a\"\nversion = \"1.0.0\"\n[permissions]\npublish = [\"a/#/b\"]", "`permissions.publish`"),
            ("name = \"a\"\nversion = \"1.0.0\"\n[permissions]\ni2c = [{bus = 1, address = 200}]", "`permissions.i2c`"),
            (
                "name = \"a\"\nversion = \"1.0.0\"\n[permissions]\ngpio-inputs = [4]\ngpio-outputs = [4]",
                "`permissions`",
            ),
        ];
        for (text, field) in cases {
            let err = Manifest::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(field), "{text:?} gave {err}");
        }
    }

    #[test]
    fn cpu_weight_bounds() {
        for w in [1, 512, 10_000] {
            let m =
                Manifest::from_toml(&format!("name = \"a\"\nversion = \"1.0.0\"\n[limits]\ncpu-weight = {w}")).unwrap();
            assert_eq!(m.limits.cpu_weight, w);
            assert_eq!(Manifest::from_toml(&m.to_toml()).unwrap(), m);
        }
        let err = Manifest::from_toml("name = \"a\"\nversion = \"1.0.0\"\n[limits]\ncpu-weight = -1").unwrap_err();
        assert!(err.to_string().contains("cpu-weight"), "{err}");
    }

    #[test]
    fn line_and_spi_wiring() {
        let text = "name = \"a\"\nversion = \"1.0.0\"\n[permissions]\ngpio-inputs = [27]\ngpio-outputs = [17]\nspi = [\"spidev0.0\"]\n\
                    [gpio.27]\nbias = \"pull-up\"\nactive-low = true\n[spi.\"spidev0.0\"]\nmode = 3\nspeed-hz = 1000000\n";
        let m = Manifest::from_toml(text).unwrap();
        assert_eq!(m.gpio_line(27), GpioLine { bias: LineBias::PullUp, active_low: true });
        assert_eq!(m.gpio_line(17), GpioLine::default());
        assert_eq!(m.spi_device("spidev0.0"), SpiDevice { mode: 3, speed_hz: Some(1_000_000), bits_per_word: 8 });
        assert_eq!(Manifest::from_toml(&m.to_toml()).unwrap(), m);
        let base = "name = \"a\"\nversion = \"1.0.0\"\n[permissions]\ngpio-inputs = [27]\nspi = [\"spidev0.0\"]\n";
        for (extra, needle) in [
            ("[gpio.4]\nbias = \"pull-up\"\n", "[gpio.4] is not a line"),
            ("[gpio.x]\nactive-low = true\n", "[gpio.x] is not a line"),
            ("[gpio.27]\nbias = \"sideways\"\n", "sideways"),
            ("[spi.\"spidev0.1\"]\nmode = 1\n", "spidev0.1"),
            ("[spi.\"spidev0.0\"]\nmode = 4\n", "mode must be 0-3"),
        ] {
            let err = Manifest::from_toml(&format!("{base}{extra}")).unwrap_err().to_string();
            assert!(err.contains(needle), "{extra:?} gave {err}");
        }
    }

    #[test]
    fn fleet_grants() {
        let text = "name = \"a\"\nversion = \"1.0.0\"\n[permissions]\npublish = [\"demo/#\"]\n\
                    [permissions.fleet]\npublish = [\"readings/#\"]\nsubscribe = [\"+/readings/#\", \"edge-1/summary/+\"]\n";
        let m = Manifest::from_toml(text).unwrap();
        assert_eq!(m.permissions.fleet.publish, ["readings/#"]);
        assert_eq!(m.permissions.fleet.subscribe, ["+/readings/#", "edge-1/summary/+"]);
        assert_eq!(Manifest::from_toml(&m.to_toml()).unwrap(), m);
        let bare = Manifest::from_toml("name = \"a\"\nversion = \"1.0.0\"\n").unwrap();
        assert!(bare.permissions.fleet.is_empty());
        assert!(!bare.to_toml().contains("fleet"));
        let base = "name = \"a\"\nversion = \"1.0.0\"\n[permissions";
        for (extra, field, needle) in [
            ("]\npublish = [\"fleet/x\"]", "`permissions.publish`", "[permissions.fleet]"),
            ("]\nsubscribe = [\"fleet/#\"]", "`permissions.subscribe`", "[permissions.fleet]"),
            (".fleet]\npublish = [\"a.b\"]", "`permissions.fleet.publish`", "\"a.b\""),
            (".fleet]\npublish = [\"a/#/b\"]", "`permissions.fleet.publish`", "not a fleet topic pattern"),
            (".fleet]\npublish = [\"fleet/a\"]", "`permissions.fleet.publish`", "after `fleet/`"),
            (".fleet]\nsubscribe = [\"+/a*\"]", "`permissions.fleet.subscribe`", "not a fleet topic pattern"),
            (".fleet]\nsubscribe = [\"+/a>\"]", "`permissions.fleet.subscribe`", "not a fleet topic pattern"),
            (".fleet]\nsubscribe = [\"readings\"]", "`permissions.fleet.subscribe`", "<device or +>"),
            (".fleet]\nsend = [\"a\"]", "send", "unknown field"),
        ] {
            let err = Manifest::from_toml(&format!("{base}{extra}")).unwrap_err().to_string();
            assert!(err.contains(field) && err.contains(needle), "{extra:?} gave {err}");
        }
        assert!(valid_fleet_pattern("+/readings/#"));
        assert!(!valid_fleet_pattern("a.b/c"));
    }

    #[test]
    fn topics() {
        assert!(topic_matches("sensors/#", "sensors/a/b"));
        assert!(topic_matches("sensors/+/t", "sensors/a/t"));
        assert!(!topic_matches("sensors/+/t", "sensors/a/b/t"));
        assert!(topic_matches("a/b", "a/b"));
        assert!(!topic_matches("a/b", "a/b/c"));
        assert!(!topic_matches("a/b/c", "a/b"));
        assert!(pattern_covers("a/#", "a/+/c"));
        assert!(pattern_covers("a/+", "a/b"));
        assert!(!pattern_covers("a/+", "a/#"));
        assert!(!pattern_covers("a/b", "a/+"));
        assert!(valid_topic_pattern("a/+/#"));
        assert!(!valid_topic_pattern("a//b"));
        assert!(!valid_topic_pattern("a/b#"));
        assert!(!valid_topic_pattern(""));
    }

    #[test]
    fn http_hosts() {
        let p = |t: &str| HostPattern::parse(t);
        let api = p("api.example.com").unwrap();
        assert!(api.allows("api.example.com", 443) && api.allows("API.example.com", 80));
        assert!(!api.allows("evil.com", 443) && !api.allows("x.api.example.com", 443));
        let any = p("*.example.com:8080").unwrap();
        assert!(any.allows("a.example.com", 8080) && any.allows("a.b.example.com", 8080));
        assert!(!any.allows("example.com", 8080) && !any.allows("a.example.com", 80));
        assert!(!any.allows("aexample.com", 8080), "a suffix is not a subdomain");
        assert!(p("10.0.2.2:8080").unwrap().allows("10.0.2.2", 8080));
        assert!(p("[::1]:80").unwrap().allows("[::1]", 80));
        for bad in ["", "Api.example.com", "a b", "host:0", "host:99999", "*.", "a..b", "-a.com", "http://x"] {
            assert!(p(bad).is_none(), "{bad:?} was accepted");
        }
        let m = |extra: &str| Manifest::from_toml(&format!("name = \"a\"\nversion = \"1.0.0\"\n{extra}"));
        let err = m("[permissions]\nhttp = [\"http://x\"]\n").unwrap_err().to_string();
        assert!(err.contains("permissions.http") && err.contains("http://x"), "{err}");
        let err = m("[limits]\nrequest-ms = 0\n").unwrap_err().to_string();
        assert!(err.contains("limits.request-ms"), "{err}");
        let ok = m("[permissions]\nhttp = [\"api.example.com\"]\n[limits]\nnet-kbit = 2000\n").unwrap();
        assert_eq!((ok.limits.net_kbit, ok.limits.request_ms), (2000, 10_000));
        assert_eq!(Manifest::from_toml(&ok.to_toml()).unwrap(), ok, "round trip");
    }

    #[test]
    fn the_storage_quota_is_read_under_its_earlier_name_too() {
        let m = |extra: &str| Manifest::from_toml(&format!("name = \"a\"\nversion = \"1.0.0\"\n[limits]\n{extra}"));
        assert_eq!(m("kv-kib = 8\n").unwrap().limits.storage_kib, 8);
        assert_eq!(m("storage-kib = 9\n").unwrap().limits.storage_kib, 9);
        assert!(m("storage-kib = 9\nkv-kib = 8\n").is_err(), "both names at once");
        let err = m("storage-kib = 70000\n").unwrap_err().to_string();
        assert!(err.contains("limits.storage-kib"), "{err}");
    }
}
