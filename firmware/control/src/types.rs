//! What a device reports: its apps, its firmware slots, its last update.

use serde::{Deserialize, Serialize};

/// One app, as the status reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AppSummary {
    /// Name (the file name without `.wasm`).
    pub name: String,
    /// Running version.
    pub version: String,
    /// `running`, `restarting` or `failed: why`.
    pub state: String,
    /// Restarts after crashes.
    pub restarts: u32,
    /// The most recent refusal or fault.
    pub last_error: Option<String>,
    /// Its linear memory now, in bytes.
    #[serde(default)]
    pub memory_bytes: u64,
    /// Time spent in calls into it since it was started, in milliseconds.
    #[serde(default)]
    pub cpu_ms: u64,
    /// Calls into it (events handled, timers, start).
    #[serde(default)]
    pub calls: u64,
    /// The `trellis:app` interface version it was built for (`0.1.2`); absent
    /// when it imports nothing of the interface. The fleet agent checks it
    /// against the interface a new firmware provides before installing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

/// The device's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DeviceStatus {
    /// Time since the kernel started, in milliseconds.
    pub uptime_ms: u64,
    /// Slots and updates.
    pub firmware: FirmwareStatus,
    /// Apps.
    pub apps: Vec<AppSummary>,
}

/// RAUC's progress report: a percentage and what it is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// 0–100.
    pub percent: i32,
    /// RAUC's message ("Checking bundle", "Copying image to rootfs.1", ...).
    pub message: String,
}

/// A slot as RAUC reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SlotInfo {
    /// RAUC's slot name (`rootfs.1`).
    pub name: String,
    /// Boot name (`B`).
    pub bootname: String,
    /// `booted`, `active` or `inactive`.
    pub state: String,
    /// `good` or `bad` (from the boot backend).
    pub boot_status: Option<String>,
    /// The version of the bundle last installed into it.
    pub version: Option<String>,
}

/// The slots of the system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Slots {
    /// Boot name of the slot running now.
    pub booted: String,
    /// Boot name of the slot the next normal boot starts.
    pub primary: Option<String>,
    /// The system's compatible string.
    pub compatible: String,
    /// The bootable slots (those with a boot name).
    pub slots: Vec<SlotInfo>,
}

impl Slots {
    /// The bootable slot that is not running: where an update goes.
    #[must_use]
    pub fn other(&self) -> Option<&SlotInfo> {
        self.slots.iter().find(|s| s.bootname != self.booted)
    }

    /// The slot with boot name `bootname`.
    #[must_use]
    pub fn by_bootname(&self, bootname: &str) -> Option<&SlotInfo> {
        self.slots.iter().find(|s| s.bootname == bootname)
    }
}

/// Where a firmware update is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// RAUC is writing the other slot.
    Installing,
    /// Installed; the trial boot of the new slot is requested or running.
    Trial,
    /// The trial boot was healthy; the new slot is the primary.
    Committed,
    /// The trial boot was not healthy (or never came up); the old slot runs.
    RolledBack,
    /// The installation failed; nothing changed.
    Failed,
}

impl Phase {
    /// Whether the update is over.
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(self, Self::Committed | Self::RolledBack | Self::Failed)
    }
}

/// Where RAUC reads a firmware bundle from: a file on the device, an
/// `http://` or `https://` URL it streams the bundle from with range requests
/// (RAUC's streaming mode: nothing is stored on the data partition first), or
/// `asset:<id>`, a bundle named by its piece root (the SHA-256 of its block
/// index, as a signed release names it) that streams from the device's asset
/// sources: its peers on the LAN and the origin, every block verified.
/// As text, JSON included: the path, the URL or `asset:<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Bundle {
    /// A bundle file on the device.
    File(std::path::PathBuf),
    /// A bundle on an HTTP(S) server that answers range requests.
    Url(String),
    /// A bundle named by its piece root (64 hex digits, lower case).
    Asset(String),
}

impl Bundle {
    /// `text` as a bundle: an `http://` or `https://` URL, else a path.
    ///
    /// # Errors
    /// Empty, or a URL with no host, with white space or control
    /// characters in it, or with a login (`user:password@`, which would be
    /// recorded and shown in the device's status).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("no bundle given".into());
        }
        if let Some(id) = text.strip_prefix(ASSET) {
            if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("{text:?}: an asset bundle is {ASSET}<64 hex digits> (its piece root)"));
            }
            return Ok(Self::Asset(id.to_ascii_lowercase()));
        }
        let lower = text.to_ascii_lowercase();
        let Some(rest) = ["http://", "https://"].iter().find_map(|s| lower.strip_prefix(s)) else {
            return Ok(Self::File(text.into()));
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{text:?} is not a bundle URL (http://host[:port]/path)"));
        }
        if authority.contains('@') {
            return Err(format!("{text:?}: a bundle URL cannot carry a login (it would be recorded and shown)"));
        }
        Ok(Self::Url(text.to_owned()))
    }

    /// Streamed over the network rather than read from a file.
    #[must_use]
    pub const fn is_streamed(&self) -> bool {
        matches!(self, Self::Url(_) | Self::Asset(_))
    }
}

impl std::fmt::Display for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Url(u) => f.write_str(u),
            Self::Asset(id) => write!(f, "{ASSET}{id}"),
        }
    }
}

/// Whether RAUC's reason for a failed streamed install is a refusal (of the
/// bundle: signature, compatible, format; by the origin: 4xx, no such
/// bundle or not for this device; of a TLS certificate, either way; by the
/// device: no space, another installation running). Anything else is the
/// network's, and worth another attempt. A read
/// that fails on the network reaches RAUC as an I/O error of the block
/// device, whatever it was writing (`tar: read error`, a failed copy), so
/// its message does not say so; a bundle whose signature held cannot be at
/// fault for it, as dm-verity checks every block read.
#[must_use]
pub fn is_refusal(why: &str) -> bool {
    const REFUSED: [&str; 15] = [
        "http error code 4",
        // TLS: the origin's certificate refused by the device, or the
        // device's by the origin (curl's reasons, through RAUC).
        "certificate",
        "fatal alert",
        "no space left",
        "already processing",
        "read-only file system",
        "signature",
        "compatible",
        "not supported",
        "unsupported",
        "invalid",
        "not found",
        "unauthorized",
        "forbidden",
        "no such",
    ];
    let why = why.to_ascii_lowercase();
    REFUSED.iter().any(|r| why.contains(r))
}

/// How a bundle named by its piece root is written.
const ASSET: &str = "asset:";

impl From<Bundle> for String {
    fn from(b: Bundle) -> Self {
        b.to_string()
    }
}

impl TryFrom<String> for Bundle {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<&std::path::Path> for Bundle {
    fn from(p: &std::path::Path) -> Self {
        Self::File(p.to_owned())
    }
}

impl From<std::path::PathBuf> for Bundle {
    fn from(p: std::path::PathBuf) -> Self {
        Self::File(p)
    }
}

/// The last firmware update: what, where to, how it ended and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct UpdateRecord {
    /// The bundle as given.
    pub bundle: String,
    /// The bundle's version (known once installed).
    pub version: Option<String>,
    /// The slot that was running (boot name, `A` or `B`).
    pub from: String,
    /// The slot written (known once installed).
    pub to: Option<String>,
    /// Where it is.
    pub phase: Phase,
    /// Why it failed or was rolled back.
    pub reason: Option<String>,
    /// The boot (kernel `boot_id`) the installation ran in.
    pub boot_id: String,
    /// Seconds since the epoch when it started.
    pub started: u64,
    /// Seconds since the epoch when the phase last changed.
    pub changed: u64,
    /// How many times a streamed installation cut by a reboot or power cut
    /// was started again in a later boot.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resumed: u32,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
const fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What the device reports about its firmware.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FirmwareStatus {
    /// The slots as RAUC sees them (none when RAUC cannot be reached).
    pub slots: Option<Slots>,
    /// Why the slots are missing.
    pub slots_error: Option<String>,
    /// `idle`, `installing` or `trial`.
    pub operation: String,
    /// The installation's progress, while installing.
    pub progress: Option<Progress>,
    /// The last update and how it ended.
    pub last_update: Option<UpdateRecord>,
}

impl FirmwareStatus {
    /// No update running and none on record, slots unknown (a device
    /// without RAUC; tests).
    #[must_use]
    pub fn idle() -> Self {
        Self { slots: None, slots_error: None, operation: "idle".into(), progress: None, last_update: None }
    }
}
