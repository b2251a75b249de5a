//! `trellis-boot`: RAUC's custom boot backend (`[handlers]
//! bootloader-custom-backend=/usr/bin/trellis-boot`) and the slot hook that
//! fixes a freshly written boot slot's `cmdline.txt`.

use std::process::ExitCode;

use anyhow::{Context, Result};
use trellis_boot::{Request, Slot, cmdline};

use trellis_layout::paths::{AUTOBOOT_DEVICE, AUTOBOOT_MOUNT, KERNEL_CMDLINE as CMDLINE, SLOT_MOUNT};

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
/// fsync, rename, directory fsync: the slot is not bootable until RAUC makes it primary, so a
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
        trellis_layout::write_atomic(std::path::Path::new(&path), new.as_bytes())
            .with_context(|| format!("rewriting {path}"))
    })();
    rustix::mount::unmount(SLOT_MOUNT, UnmountFlags::empty()).with_context(|| format!("unmounting {SLOT_MOUNT}"))?;
    result
}
