//! `trellis-boot`: RAUC's custom boot backend (`[handlers]
//! bootloader-custom-backend=/usr/bin/trellis-boot`) and the slot hook that
//! fixes a freshly written boot slot's `cmdline.txt`.

use std::process::ExitCode;

use anyhow::{Context, Result};
use trellis_boot::{Request, Slot, cmdline};

/// The AUTOBOOT partition (init links `/dev/rootdisk0*` to the boot disk).
const AUTOBOOT_DEVICE: &str = "/dev/rootdisk0p1";
/// Where it is mounted while being read or written.
const AUTOBOOT_MOUNT: &str = "/run/trellis/autoboot";
/// Where a freshly written boot slot is mounted by the slot hook.
const SLOT_MOUNT: &str = "/run/trellis/boot-slot";
const CMDLINE: &str = "/proc/cmdline";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(Some(out)) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trellis-boot: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<Option<String>> {
    if let [verb, device, slot] = args
        && verb == "fix-cmdline"
    {
        return fix_cmdline(device, Slot::parse(slot)?).map(|()| None);
    }
    if args.first().map(String::as_str) == Some("--version") {
        return Ok(Some(format!("trellis-boot {}", env!("CARGO_PKG_VERSION"))));
    }
    let request = Request::parse(args)?;
    Ok(trellis_boot::store::with_autoboot(AUTOBOOT_DEVICE, AUTOBOOT_MOUNT, CMDLINE, |store| {
        trellis_boot::handle(store, request)
    })?)
}

/// Mount boot slot `device`, rewrite its `cmdline.txt` for `slot` (new file,
/// fsync, rename: the slot is not bootable until RAUC makes it primary, so a
/// power cut here costs nothing), unmount.
fn fix_cmdline(device: &str, slot: Slot) -> Result<()> {
    use rustix::mount::{MountFlags, UnmountFlags};
    std::fs::create_dir_all(SLOT_MOUNT).with_context(|| format!("creating {SLOT_MOUNT}"))?;
    rustix::mount::mount(device, SLOT_MOUNT, "vfat", MountFlags::NOATIME, None::<&std::ffi::CStr>)
        .with_context(|| format!("mounting {device} on {SLOT_MOUNT}"))?;
    let result = (|| -> Result<()> {
        let path = format!("{SLOT_MOUNT}/cmdline.txt");
        let old = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let new = cmdline::for_slot(&old, slot);
        let tmp = format!("{SLOT_MOUNT}/cmdline.new");
        std::fs::write(&tmp, &new).with_context(|| format!("writing {tmp}"))?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).with_context(|| format!("syncing {tmp}"))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming {tmp} to {path}"))?;
        Ok(())
    })();
    rustix::mount::unmount(SLOT_MOUNT, UnmountFlags::empty()).with_context(|| format!("unmounting {SLOT_MOUNT}"))?;
    result
}
