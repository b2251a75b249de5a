//! Every on-device path, in one place. Init, the runtime, the boot backend,
//! the update lifecycle and the CLI all name them from here.

/// Mount point of the writable data partition.
pub const DATA_DIR: &str = "/data";
/// Where apps live; a new or replaced `NAME.wasm` here is swapped in.
pub const APPS_DIR: &str = "/data/apps";
/// The runtime's own state: compile cache, key-value stores, last-good apps.
pub const STATE_DIR: &str = "/data/trellis";
/// The runtime's configuration file (in the read-only root filesystem).
pub const RUNTIME_CONFIG: &str = "/etc/trellis/runtime.toml";
/// Init's configuration file (in the read-only root filesystem).
pub const INIT_CONFIG: &str = "/etc/trellis/init.toml";
/// The runtime's control socket (`trellis device ...`).
pub const CONTROL_SOCKET: &str = "/run/trellis/control.sock";
/// Where init looks for the restart command of the next reboot (`0 tryboot`),
/// like systemd's `/run/systemd/reboot-param`.
pub const REBOOT_PARAM: &str = "/run/trellis/reboot-param";
/// Public keys trusted to sign apps (`*.pub`).
pub const TRUST_DIR: &str = "/etc/trellis/trust";
/// Public keys whose signatures on fleet releases the device accepts.
pub const FLEET_TRUST_DIR: &str = "/etc/trellis/fleet/trust";
/// The image's release file (`TRELLIS_VERSION=`, `TRELLIS_BOARD=`).
pub const RELEASE_FILE: &str = "/etc/trellis/release";
/// The hostname (set by the network service from the serial number).
pub const HOSTNAME: &str = "/proc/sys/kernel/hostname";
/// The kernel command line (`rauc.slot=` names the booted slot).
pub const KERNEL_CMDLINE: &str = "/proc/cmdline";
/// This boot's identity.
pub const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
/// Seconds since the kernel started.
pub const UPTIME: &str = "/proc/uptime";
/// Where init mounts the cgroup v2 hierarchy; the runtime's own cgroup and
/// its apps' cgroups are under it (`[cgroups]` in the runtime's configuration).
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The runtime's cgroup (a threaded domain): every thread of the runtime, and
/// the threaded cgroup `apps/` with one cgroup per app (`apps/NAME`).
pub const RUNTIME_CGROUP: &str = "/sys/fs/cgroup/trellis";
/// iproute2's `tc`: the runtime sets per-app outgoing rate limits with it (`[network]`).
pub const TC: &str = "/sbin/tc";
/// The AUTOBOOT partition (p1: `autoboot.txt`), through init's stable link.
pub const AUTOBOOT_DEVICE: &str = "/dev/rootdisk0p1";
/// Where the boot backend mounts the AUTOBOOT partition while it writes it.
pub const AUTOBOOT_MOUNT: &str = "/run/trellis/autoboot";
/// Where the slot hook mounts a boot slot to rewrite its `cmdline.txt`.
pub const SLOT_MOUNT: &str = "/run/trellis/boot-slot";

/// RAUC's system configuration (its `data-directory` holds each slot's stored
/// block hash index).
pub const RAUC_SYSTEM_CONF: &str = "/etc/rauc/system.conf";
/// Where the bundle's slot hook (`trellis-delta rauc-slot-pre-install`) unpacks
/// the running root filesystem to rebuild the new one from a delta: tmpfs, removed
/// after each install.
pub const DELTA_WORK: &str = "/run/trellis/delta";

/// The user database (the streaming sandbox user's ids are read from it).
pub const PASSWD: &str = "/etc/passwd";
/// RAUC's streaming sandbox user (`[streaming] sandbox-user` in its
/// system.conf): its HTTP side runs as this user.
pub const STREAM_USER: &str = "rauc-fetch";
/// The device's key handed to RAUC's HTTP side for one HTTPS install: a copy
/// named this plus `.PID.N`, owned by root and [`STREAM_USER`]'s group, mode
/// 0440, on tmpfs, removed after the install.
pub const STREAM_KEY: &str = "/run/trellis/stream.key";

/// Sub-directories and files of the state directory ([`STATE_DIR`]).
pub mod state {
    /// Precompiled components, named by content and engine hash.
    pub const CACHE: &str = "cache";
    /// The key that authenticates the compile cache's entries (mode 0600,
    /// made on first use; outside every directory an app or API request writes).
    pub const CACHE_KEY: &str = "cache.key";
    /// One key-value file per app.
    pub const KV: &str = "kv";
    /// The last version of each app that ran healthy.
    pub const LAST_GOOD: &str = "last-good";
    /// The apps stopped on request (`trellis app stop`), one name a line:
    /// not run at boot until they are started again.
    pub const STOPPED: &str = "stopped";
    /// The last firmware update and how it ended.
    pub const UPDATE: &str = "update.json";
    /// A firmware bundle uploaded through the API, while RAUC installs it.
    pub const FIRMWARE: &str = "firmware";
    /// The fleet agent's state: the desired state it follows, the release
    /// it applied, the reports and events not yet delivered.
    pub const FLEET: &str = "fleet";
    /// The device's fleet provisioning (`[fleet]`'s fields: its id, group,
    /// certificate, servers), written once per device; used when the
    /// image's configuration has no `[fleet]`.
    pub const FLEET_PROVISION: &str = "fleet.toml";
    /// Assets apps read on demand (`[assets]` in a manifest): one directory
    /// per asset, named by its content hash, holding its block index, its
    /// blocks as verified so far and a bitmap of which those are.
    pub const ASSETS: &str = "assets";
    /// Firmware bundles streamed by their piece root (`asset:<id>`): the
    /// blocks RAUC read so far, verified, kept like an asset's until the
    /// install has written the slot, so a retried or resumed install does
    /// not fetch them again.
    pub const BUNDLES: &str = "bundles";
    /// Apps of a release fetched by their piece root from the site's
    /// peers and asset origin, kept (and served to the peers) while the
    /// device runs that very file.
    pub const ARTIFACTS: &str = "artifacts";
}
