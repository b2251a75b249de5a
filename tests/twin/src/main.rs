//! `trellis-twin`: boot the twin image interactively, playing the Pi firmware
//! across reboots (autoboot.txt, tryboot). `make qemu` runs it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

/// Boots a Trellis disk image in QEMU the way a Raspberry Pi 4's firmware would.
#[derive(Debug, Parser)]
#[command(name = "trellis-twin", version)]
struct Args {
    /// The disk image (it is written to: the data partition lives there).
    #[arg(default_value_os_t = trellis_twin::default_image())]
    image: PathBuf,
    /// Host directory the guest can mount with `mount -t 9p host /mnt`.
    #[arg(long)]
    share: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let work = args.image.with_extension("run");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let share = args.share.unwrap_or_else(|| work.join("share"));
    std::fs::create_dir_all(&share).with_context(|| format!("creating {}", share.display()))?;
    eprintln!(
        "trellis-twin: {} (Ctrl-A X quits QEMU; `reboot` and `poweroff` on the console work)",
        args.image.display()
    );
    let ports = trellis_twin::guest::Ports::pick(Some(trellis_twin::guest::Ports::GUEST_API))?;
    eprintln!(
        "trellis-twin: the management API is at 127.0.0.1:{0} (trellis device add twin 127.0.0.1:{0})",
        ports.api
    );
    let mut tryboot = false;
    loop {
        let boot = trellis_twin::firmware_boot(
            &args.image,
            &work,
            &share,
            std::mem::take(&mut tryboot),
            work.join("console.log"),
            ports,
        )?;
        eprintln!("trellis-twin: firmware: booting partition {} ({})", boot.partition, boot.cmdline.trim());
        // The console on this terminal, multiplexed with QEMU's monitor (Ctrl-A C), and copied
        // to a file so the firmware's part can see how the kernel left.
        let status = trellis_twin::guest::qemu_command(&boot)
            .args(["-display", "none", "-chardev"])
            .arg(format!("stdio,id=con,mux=on,signal=off,logfile={}", boot.log.display()))
            .args(["-serial", "chardev:con", "-mon", "chardev=con"])
            .status()
            .context("starting qemu-system-aarch64 (apt-get install qemu-system-arm)")?;
        let log = std::fs::read_to_string(&boot.log).unwrap_or_default();
        if log.contains("reboot: Power down") || !log.contains("reboot: Restarting system") || !status.success() {
            eprintln!("trellis-twin: powered off");
            return Ok(());
        }
        tryboot = log.contains(trellis_twin::firmware::TRYBOOT_LINE);
        eprintln!("trellis-twin: reboot{}", if tryboot { " (tryboot)" } else { "" });
    }
}
