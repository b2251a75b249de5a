//! The device twin's harness. It plays the Raspberry Pi firmware (design
//! decision 2): reads `autoboot.txt` from the first partition, picks the boot
//! partition (the `[tryboot]` one when the last reboot asked for a trial boot),
//! takes the kernel and `cmdline.txt` from it and boots QEMU `virt`
//! (cortex-a72) with `-no-reboot`, so every reboot comes back here and the
//! firmware's choice is made again. Everything after the firmware is real.
//!
//! Tests read like the user's story:
//!
//! ```no_run
//! # fn main() -> Result<(), trellis_twin::Error> {
//! let mut twin = trellis_twin::Twin::new("story")?;
//! let mut device = twin.boot()?;
//! device.wait_app_running("blinky")?;
//! let device = twin.reboot(device)?;
//! # Ok(()) }
//! ```

pub mod bandwidth;
pub mod compare;
pub mod disk;
pub mod firmware;
pub mod fleet;
pub mod guest;
pub mod lifecycle;
pub mod ntp;
pub mod operator;
pub mod origin;
pub mod shares;
pub mod timing;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use guest::{Exit, Guest, Line};

/// Everything the harness can fail at, naming the file, partition or command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The disk image is not what the firmware expects.
    #[error("disk: {0}")]
    Disk(String),
    /// `autoboot.txt` or `config.txt` is not usable.
    #[error("firmware: {0}")]
    Firmware(String),
    /// QEMU could not be started or driven.
    #[error("qemu: {0}")]
    Qemu(String),
    /// Something did not show up on the console in time.
    #[error("{what} (console: {log}); last lines:\n{tail}\n(timed out waiting for: {what})")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The console log of this boot.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
    /// A shell command on the device failed.
    #[error("`{command}` exited with {code}:\n{output}")]
    Command {
        /// The command.
        command: String,
        /// Its exit status.
        code: i32,
        /// What it printed.
        output: String,
    },
}

/// A test's result that prints the harness's error readably (a test
/// returning `Err` shows it with `Debug`).
pub type Outcome = Result<(), Failure>;

/// An [`Error`] whose `Debug` is its message (with the console's last lines).
pub struct Failure(Error);

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_owned(), source }
    }
}

/// How long a boot may take to reach a running app under TCG.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// The host's port the twin's `[assets] origin` names (`10.0.2.2:8470`,
/// board/qemu-aarch64/runtime.toml): the site's asset origin.
pub const SITE_ORIGIN_PORT: u16 = 8470;
/// The host's port the twin's `[assets] peers` names: the site's LAN peer.
pub const SITE_PEER_PORT: u16 = 8471;

/// `limits.call-ms` for the Python apps in the twin: the interpreter runs each
/// call some ten times slower under emulation than on a Pi 4, and a loaded
/// host inflates the guest's CPU time further, so their calls get 1 s instead
/// of the manifests' 50 ms.
pub const EMULATED_CALL_MS: u32 = 1000;

/// The image `make twin-image` builds.
#[must_use]
pub fn default_image() -> PathBuf {
    std::env::var_os("TRELLIS_TWIN_IMAGE")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../build/twin/trellis.img"), PathBuf::from)
}

/// Play the firmware: read `autoboot.txt` from partition 1 of `image`, choose
/// the boot partition (`tryboot`: the trial one), and take the kernel named by
/// its `config.txt` and its `cmdline.txt` (copied into `work`).
///
/// # Errors
/// The image's boot files are missing or malformed (named).
pub fn firmware_boot(
    image: &Path,
    work: &Path,
    share: &Path,
    tryboot: bool,
    log: PathBuf,
    ports: guest::Ports,
) -> Result<guest::Boot, Error> {
    let scratch = work.join("firmware");
    std::fs::create_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
    let autoboot = disk::fat_read(image, &disk::partition(image, 1)?, "autoboot.txt", &scratch)?;
    let autoboot = firmware::Autoboot::parse(&autoboot)?;
    if !autoboot.tryboot_a_b {
        return Err(Error::Firmware("autoboot.txt does not set tryboot_a_b=1".into()));
    }
    let number = autoboot.choose(tryboot);
    let part = disk::partition(image, number)?;
    let config = disk::fat_read(image, &part, "config.txt", &scratch).unwrap_or_default();
    let kernel_name = firmware::kernel_name(&config);
    let kernel = scratch.join(format!("p{number}-{kernel_name}"));
    disk::fat_copy(image, &part, &kernel_name, &kernel)?;
    let cmdline = disk::fat_read(image, &part, "cmdline.txt", &scratch)?;
    Ok(guest::Boot { kernel, cmdline, image: image.to_owned(), share: share.to_owned(), log, partition: number, ports })
}

/// A twin: its own copy of the disk image, a host directory shared with the
/// guest, and the firmware's one piece of memory across reboots, the tryboot flag.
#[derive(Debug)]
pub struct Twin {
    dir: PathBuf,
    image: PathBuf,
    share: PathBuf,
    tryboot: bool,
    boots: u32,
    ports: guest::Ports,
}

impl Twin {
    /// A fresh twin named `name`, flashed with [`default_image`], working in
    /// `build/twin/runs/NAME` (kept after the test for its console logs).
    ///
    /// # Errors
    /// No image (run `make twin-image`), or it cannot be copied.
    pub fn new(name: &str) -> Result<Self, Error> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../build/twin/runs").join(name);
        Self::flash(&default_image(), &dir)
    }

    /// A fresh twin flashed with `image`, working in `dir` (emptied first).
    ///
    /// # Errors
    /// As [`Twin::new`].
    pub fn flash(image: &Path, dir: &Path) -> Result<Self, Error> {
        if !image.exists() {
            return Err(Error::Disk(format!("{} does not exist: build it with `make twin-image`", image.display())));
        }
        let _ = std::fs::remove_dir_all(dir);
        let share = dir.join("share");
        std::fs::create_dir_all(&share).map_err(|e| Error::io(&share, e))?;
        let copy = disk::copy_image(image, &dir.join("disk.img"))?;
        let ports = guest::Ports::pick(None)?;
        Ok(Self { dir: dir.to_owned(), image: copy, share, tryboot: false, boots: 0, ports })
    }

    /// Make this twin the site's LAN peer: the blocks it shares (guest port
    /// 8471) are forwarded from the host's [`SITE_PEER_PORT`], which every
    /// twin's `[assets] peers` names (`10.0.2.2:8471`). So the other twins
    /// read what this one holds, as devices on one LAN do. Before it boots.
    ///
    /// # Errors
    /// The port is taken on the host.
    pub fn serve_as_site_peer(&mut self) -> Result<(), Error> {
        std::net::TcpListener::bind(("127.0.0.1", SITE_PEER_PORT))
            .map_err(|e| Error::Qemu(format!("the site's peer port 127.0.0.1:{SITE_PEER_PORT}: {e}")))?;
        self.ports.share = SITE_PEER_PORT;
        Ok(())
    }

    /// The twin's disk (only touch it while the device is off).
    #[must_use]
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// The host ports forwarded into the twin (the same across its reboots).
    #[must_use]
    pub const fn ports(&self) -> guest::Ports {
        self.ports
    }

    /// Its management API from the host: `127.0.0.1:PORT`.
    #[must_use]
    pub fn api_address(&self) -> String {
        format!("127.0.0.1:{}", self.ports.api)
    }

    /// The host directory the guest mounts with `mount -t 9p host /mnt`.
    #[must_use]
    pub fn share(&self) -> &Path {
        &self.share
    }

    /// What the firmware does at power-on, with this twin's tryboot flag (then cleared).
    ///
    /// # Errors
    /// As [`firmware_boot`].
    pub fn firmware(&mut self) -> Result<guest::Boot, Error> {
        self.boots += 1;
        // The flag is one-shot: the firmware clears it whatever happens next.
        firmware_boot(
            &self.image,
            &self.dir,
            &self.share,
            std::mem::take(&mut self.tryboot),
            self.dir.join(format!("console-{}.log", self.boots)),
            self.ports,
        )
    }

    /// Power on.
    ///
    /// # Errors
    /// As [`Twin::firmware`], or QEMU does not start.
    pub fn boot(&mut self) -> Result<Guest, Error> {
        let boot = self.firmware()?;
        Guest::start(&boot)
    }

    /// Note how the last boot ended: a `0 tryboot` restart sets the flag.
    pub const fn stopped(&mut self, exit: Exit) {
        self.tryboot = exit.tryboot;
    }

    /// Reboot from the console (`reboot`, which asks init) and boot again as the firmware would.
    ///
    /// # Errors
    /// The device does not stop within a minute, or the next boot cannot start.
    pub fn reboot(&mut self, mut device: Guest) -> Result<Guest, Error> {
        device.type_line("reboot")?;
        let exit = device.wait_exit(Duration::from_secs(60))?;
        self.stopped(exit);
        self.boot()
    }

    /// Wait for the device to restart by itself (the runtime asked init for a
    /// trial boot, or the health gate went back) and boot again as the firmware would.
    ///
    /// # Errors
    /// The device does not stop within `timeout`, or the next boot cannot start.
    pub fn restarted(&mut self, device: Guest, timeout: Duration) -> Result<Guest, Error> {
        let exit = device.wait_exit(timeout)?;
        self.stopped(exit);
        self.boot()
    }

    /// After an install of firmware `version`: the device restarts into the
    /// trial by itself (within `wait`), the example apps run, the health gate
    /// commits, and `trellis device status` says so. Returns the new boot.
    ///
    /// # Errors
    /// The device does not restart, the apps or the commit do not come in time.
    ///
    /// # Panics
    /// The status does not name `version` as committed.
    pub fn trial_committed(&mut self, device: Guest, wait: Duration, version: &str) -> Result<Guest, Error> {
        let mut device = self.restarted(device, wait)?;
        device.wait_apps_running(&EXAMPLES)?;
        device.seen("phase=Committed", BOOT_TIMEOUT)?;
        device.wait_console()?;
        let s = device.sh("trellis device status")?;
        assert!(s.contains(&format!("last update: committed: {version}")), "{s}");
        Ok(device)
    }

    /// A boot whose kernel never gets going: when no kernel line comes within
    /// `wait`, the power is cycled, as a person or an external watchdog would;
    /// the firmware then boots the primary slot. Returns the new boot.
    ///
    /// # Errors
    /// The kernel did start (its banner is on the console), or the next boot cannot start.
    pub fn hung_kernel(&mut self, mut device: Guest, wait: Duration) -> Result<Guest, Error> {
        if let Ok(line) = device.seen("Linux version", wait) {
            return Err(Error::Firmware(format!("the kernel was expected not to boot, but printed {:?}", line.text)));
        }
        self.power_cycle(device)
    }

    /// Cut the power and turn it back on.
    ///
    /// # Errors
    /// The next boot cannot start.
    pub fn power_cycle(&mut self, device: Guest) -> Result<Guest, Error> {
        device.power_cut();
        self.tryboot = false;
        self.boot()
    }
}

/// Append a custom section `name` holding `payload` to a component: a new
/// code hash (the runtime must compile it again) or a larger app, still valid.
pub fn add_custom_section(code: &mut Vec<u8>, name: &[u8], payload: &[u8]) {
    let leb128 = |code: &mut Vec<u8>, mut n: usize| loop {
        let byte = u8::try_from(n & 0x7f).unwrap_or(0);
        n >>= 7;
        code.push(if n == 0 { byte } else { byte | 0x80 });
        if n == 0 {
            break;
        }
    };
    code.push(0);
    leb128(code, name.len() + 1 + payload.len());
    leb128(code, name.len());
    code.extend_from_slice(name);
    code.extend_from_slice(payload);
}

/// Example app `app` as `make apps` packed it (`build/apps`), with its
/// manifest changed by `edit` (a new version, name, grant or setting).
///
/// # Panics
/// The app is not built or not a packed component (run `make apps`).
#[must_use]
pub fn repack(app: &str, edit: impl FnOnce(&mut trellis_appfmt::Manifest)) -> Vec<u8> {
    repack_from("apps", app, edit)
}

/// `build/DIR/APP.wasm` with its manifest changed by `edit`.
fn repack_from(dir: &str, app: &str, edit: impl FnOnce(&mut trellis_appfmt::Manifest)) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../build/{dir}/{app}.wasm"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (make apps, make lang-apps)", path.display()));
    let mut manifest = trellis_appfmt::AppFile::parse(&bytes).expect("a packed app").manifest;
    edit(&mut manifest);
    // Packing keeps precompiled code (it is for this code) and drops the signature.
    trellis_appfmt::pack(&bytes, &manifest).expect("packs")
}

/// An app in another language as `make lang-apps` packed it
/// (`build/lang-apps`), with its manifest changed by `edit`.
///
/// # Panics
/// The app is not built or not a packed component (run `make apps`).
#[must_use]
pub fn lang_app(app: &str, edit: impl FnOnce(&mut trellis_appfmt::Manifest)) -> Vec<u8> {
    repack_from("lang-apps", app, edit)
}

/// An app compiled ahead of time for the Pi as `make lang-apps` made it
/// (`build/pi-apps`: the Python apps, the classifier), with its manifest changed by `edit`,
/// signed again with the development app key the image trusts
/// (`build/keys/apps.key`): the runtime loads its precompiled code.
///
/// # Panics
/// The app or the key is not built (run `make lang-apps`).
#[must_use]
pub fn pi_app(app: &str, edit: impl FnOnce(&mut trellis_appfmt::Manifest)) -> Vec<u8> {
    let bytes = repack_from("pi-apps", app, edit);
    let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../build/keys/apps.key");
    let key =
        trellis_appfmt::load_signing_key(&key).unwrap_or_else(|e| panic!("{}: {e} (make lang-apps)", key.display()));
    trellis_appfmt::sign(&bytes, &key).expect("signs")
}

/// Put `bytes` in place as `/data/apps/NAME.wasm` the careful way (through
/// the share, a temporary name, then a rename).
///
/// # Errors
/// A command on the device fails.
///
/// # Panics
/// The share cannot be written.
pub fn install(twin: &Twin, device: &mut Guest, name: &str, bytes: &[u8]) -> Result<(), Error> {
    std::fs::write(twin.share().join(format!("{name}.wasm")), bytes).expect("share");
    device.sh(MOUNT_SHARE)?;
    device.sh(&format!(
        "cp /mnt/{name}.wasm /data/apps/.{name}.tmp && mv /data/apps/.{name}.tmp /data/apps/{name}.wasm"
    ))?;
    Ok(())
}

/// Test fixture app `app` (`wasm-apps/fixtures/APP`, built by `make apps`)
/// packed with its manifest changed by `edit`.
///
/// # Panics
/// The fixture is not built (run `make apps`) or its manifest is invalid.
#[must_use]
pub fn fixture(app: &str, edit: impl FnOnce(&mut trellis_appfmt::Manifest)) -> Vec<u8> {
    let apps = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wasm-apps");
    let code_path = apps.join(format!("target/wasm32-wasip2/release/{app}.wasm"));
    let code = std::fs::read(&code_path).unwrap_or_else(|e| panic!("{}: {e} (make apps)", code_path.display()));
    let toml_path = apps.join(format!("fixtures/{app}/trellis.toml"));
    let text = std::fs::read_to_string(&toml_path).unwrap_or_else(|e| panic!("{}: {e}", toml_path.display()));
    let mut manifest = trellis_appfmt::Manifest::from_toml(&text).expect("a valid fixture manifest");
    edit(&mut manifest);
    trellis_appfmt::pack(&code, &manifest).expect("packs")
}

/// A healthy signed bundle of `scripts/twin-variant-bundle.sh` at `out`, its
/// root filesystem differing from the image's by one line (`small`) or in
/// every block (`rebuilt`), with `version`; returns its size.
///
/// # Panics
/// The script fails (its output is in the message).
#[must_use]
pub fn variant_bundle(kind: &str, out: &Path, version: &str) -> u64 {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let o = std::process::Command::new(root.join("scripts/twin-variant-bundle.sh"))
        .arg(root.join("build"))
        .arg(kind)
        .arg(out)
        .env("VERSION", version)
        .output()
        .expect("twin-variant-bundle.sh");
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    std::fs::metadata(out).expect("the bundle").len()
}

/// The size of `file` inside the bundle `bundle` (a squashfs), from its listing.
///
/// # Panics
/// `unsquashfs` cannot list the bundle, or `file` is not in it.
#[must_use]
pub fn size_in_bundle(bundle: &Path, file: &str) -> u64 {
    let o = std::process::Command::new("unsquashfs").arg("-lls").arg(bundle).output().expect("unsquashfs");
    let text = String::from_utf8_lossy(&o.stdout);
    text.lines()
        .find(|l| l.ends_with(&format!("/{file}")))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{file} is not in {}: {text}", bundle.display()))
}

/// Set the temperature the twin's TMP102 reads: register 0 (12 bits, 0.0625 °C
/// each, left-justified) into i2c-stub's byte registers 0 and 1, on the stub's bus.
///
/// # Errors
/// `i2cset` fails on the device.
pub fn set_temperature(device: &mut Guest, celsius: f32) -> Result<(), Error> {
    #[allow(clippy::cast_possible_truncation)]
    let raw = ((celsius / 0.0625) as i16) << 4;
    let [msb, lsb] = raw.to_be_bytes();
    let bus = "$(grep -l 'SMBus stub driver' /sys/bus/i2c/devices/i2c-*/name | head -1 | cut -d/ -f6 | cut -d- -f2)";
    device.sh(&format!("b={bus}; i2cset -y $b 0x48 0x00 {msb:#04x} b && i2cset -y $b 0x48 0x01 {lsb:#04x} b")).map(drop)
}

/// Mount the harness's share (`Twin::share`) at `/mnt` on the device, once.
pub const MOUNT_SHARE: &str = "grep -q ' /mnt ' /proc/mounts || mount -t 9p -o trans=virtio host /mnt";

/// gpio-sim's sysfs directory of the twin's GPIO chip (`trellis-gpio`, made by
/// `board/qemu-aarch64/hardware.sh`), as a shell expression for the device:
/// `$GPIO_SIM/sim_gpioN/value` is what line N carries, `.../pull` pulls it from outside.
pub const GPIO_SIM: &str =
    "$(d=/sys/kernel/config/gpio-sim/trellis; echo /sys/devices/platform/$(cat $d/dev_name)/$(cat $d/bank0/chip_name))";

/// The example apps the image seeds the data partition with.
pub const EXAMPLES: [&str; 6] = ["blinky", "button", "thermostat", "counter", "publisher", "subscriber"];

impl Guest {
    /// Wait until the runtime reports every one of `apps` running (in any order).
    ///
    /// # Errors
    /// Not all within [`BOOT_TIMEOUT`].
    pub fn wait_apps_running(&mut self, apps: &[&str]) -> Result<(), Error> {
        let needles: Vec<String> = apps.iter().map(|a| format!("app running app=\"{a}\"")).collect();
        self.wait_all(&needles.iter().map(String::as_str).collect::<Vec<_>>(), BOOT_TIMEOUT)?;
        Ok(())
    }

    /// Wait for the runtime's `app running` line for `app`.
    ///
    /// # Errors
    /// It does not come within [`BOOT_TIMEOUT`].
    pub fn wait_app_running(&mut self, app: &str) -> Result<Line, Error> {
        self.wait_for(&format!("app running app=\"{app}\""), BOOT_TIMEOUT)
    }

    /// Wait until the console shell is there to type into.
    ///
    /// # Errors
    /// init never starts it.
    pub fn wait_console(&mut self) -> Result<(), Error> {
        // Input typed before the shell set up its terminal is flushed, so wait for init to
        // start it, give it a moment, then type a no-op until it answers.
        self.seen("trellis-init: started console", BOOT_TIMEOUT)?;
        std::thread::sleep(Duration::from_secs(1));
        let deadline = std::time::Instant::now() + BOOT_TIMEOUT;
        loop {
            match self.sh_timeout("true", Duration::from_secs(5)) {
                Ok(_) => return Ok(()),
                Err(Error::Timeout { .. }) if std::time::Instant::now() < deadline => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_sections_carry_their_sizes_in_leb128() {
        let mut code = Vec::new();
        add_custom_section(&mut code, b"bench-nonce", &[1, 2, 3, 4]);
        assert_eq!(code[..3], [0, 16, 11]);
        assert_eq!(&code[3..14], b"bench-nonce");
        let mut big = Vec::new();
        add_custom_section(&mut big, b"padding", &[0; 200]);
        // 1 + 7 + 200 = 208 = 0b1_1010000: two bytes.
        assert_eq!(big[..4], [0, 0xd0, 0x01, 7]);
        assert_eq!(big.len(), 4 + 7 + 200);
    }
}
