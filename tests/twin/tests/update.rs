//! Full firmware updates in the twin: RAUC installs a signed bundle into the
//! other slot through trellis-boot, the firmware trial-boots it, and marking
//! it good makes it permanent; bad bundles and power cuts leave the running
//! system as it was. Needs `make bundle` (make test-twin builds it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use trellis_twin::{BOOT_TIMEOUT, EXAMPLES, Error, Guest, MOUNT_SHARE, Outcome, Twin, disk, variant_bundle};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A bundle made by scripts/twin-bundle.sh with `env` (VERSION, RAUC_KEY, ...).
fn bundle(out: &Path, env: &[(&str, &str)]) -> PathBuf {
    let mut cmd = Command::new(root().join("scripts/twin-bundle.sh"));
    cmd.arg(root().join("build")).arg(out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("twin-bundle.sh");
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    out.to_owned()
}

fn untouched(device: &mut Guest) -> Result<(), Error> {
    assert_eq!(device.sh("trellis-boot get-primary")?.trim(), "A");
    assert_eq!(device.sh("trellis-boot get-state B")?.trim(), "good", "slot B was not touched");
    Ok(())
}

/// `trellis device status` on the device.
fn status(device: &mut Guest) -> Result<String, Error> {
    device.sh("trellis device status")
}

/// Something only the data partition remembers, checked after every update.
const MARKER: &str = "/data/marker";

fn data_survived(device: &mut Guest) -> Result<(), Error> {
    assert_eq!(device.sh(&format!("cat {MARKER}"))?.trim(), "kept", "the data partition was kept");
    assert_eq!(device.sh("ls /data/apps")?.split_whitespace().count(), EXAMPLES.len(), "the apps were kept");
    Ok(())
}

#[test]
fn bad_bundles_are_refused_and_a_good_one_installs_trial_boots_and_commits() -> Outcome {
    let mut twin = Twin::new("update")?;
    let share = twin.share().to_owned();
    // Boot files of its own (one file more than the image's, as a new kernel
    // would bring): the boot slot is written, not skipped.
    let _ = variant_bundle("bootfile", &share.join("update.raucb"), "2.0.0-twin");
    let good = share.join("update.raucb");
    // Signed by a CA the device does not trust.
    let other = root().join("build/twin/runs/update-other-keys");
    let keys = Command::new(root().join("scripts/dev-keys.sh")).arg(&other).output().expect("dev-keys");
    assert!(keys.status.success());
    let (k, c) = (other.join("signing.key.pem"), other.join("signing.cert.pem"));
    bundle(
        &share.join("unknown-key.raucb"),
        &[
            ("RAUC_KEY", k.to_str().unwrap_or("")),
            ("RAUC_CERT", c.to_str().unwrap_or("")),
            ("RAUC_KEYRING", other.join("ca.cert.pem").to_str().unwrap_or("")),
        ],
    );
    bundle(&share.join("other-board.raucb"), &[("COMPATIBLE", "trellis-rpi4")]);
    let bytes = std::fs::read(&good).expect("bundle");
    std::fs::write(share.join("truncated.raucb"), &bytes[..bytes.len() / 2]).expect("share");

    let mut device = twin.boot()?;
    device.wait_apps_running(&EXAMPLES)?;
    device.wait_console()?;
    device.sh(&format!("{MOUNT_SHARE} && echo kept > {MARKER} && sync"))?;
    let before = status(&mut device)?;
    assert!(before.contains("booted:      slot A") && before.contains("last update: none"), "{before}");

    for (file, reason) in [
        ("unknown-key.raucb", "signature verification failed"),
        ("truncated.raucb", "truncated.raucb"),
        ("other-board.raucb", "Compatible mismatch"),
    ] {
        match device.sh_timeout(&format!("trellis device update /mnt/{file}"), Duration::from_secs(120)) {
            Err(Error::Command { output, .. }) => assert!(output.contains(reason), "{file}: {output}"),
            other => panic!("{file} was not refused: {other:?}"),
        }
        let s = status(&mut device)?;
        assert!(s.contains("last update: failed") && s.contains(reason), "{file}: {s}");
        untouched(&mut device)?;
    }

    // The good bundle goes into slot B; the runtime reboots into the trial by
    // itself (typed, not `sh`: the reboot may take the shell before it reports).
    // Right after the install, before the reboot resets them, the kernel's
    // count of sectors written to slot B's boot partition (the quotes keep the
    // typed line's echo from matching).
    device.type_line(
        r#"trellis device update /mnt/update.raucb && echo boot-slot-B-sectors"" $(awk '{print $7}' /sys/class/block/vda3/stat)"#,
    )?;
    device.wait_for("100% Installing done.", Duration::from_secs(300))?;
    device.wait_for("installed 2.0.0-twin into slot B", Duration::from_secs(60))?;
    let sectors = device.wait_for("boot-slot-B-sectors ", Duration::from_secs(30))?;
    let written =
        sectors.text.rsplit(' ').next().and_then(|n| n.trim().parse::<u64>().ok()).expect("a sector count") * 512;
    // The boot slot is written as its files (the bundle's boot.tar): the
    // kernel and two small files, not the slot's whole 64 MiB FAT image.
    let kernel = std::fs::metadata(root().join("build/twin/Image")).expect("build/twin/Image").len();
    assert!(
        written >= kernel && written < kernel + 4 * 1024 * 1024,
        "{written} bytes written to the boot slot for a {kernel}-byte kernel"
    );
    let mut device = twin.restarted(device, Duration::from_secs(120))?;
    assert_eq!(device.partition, 3, "the trial boot runs slot B");
    device.wait_apps_running(&EXAMPLES)?;
    device.seen("phase=Committed", BOOT_TIMEOUT)?;
    device.wait_console()?;
    assert!(device.sh("cat /proc/cmdline")?.contains("root=/dev/vda6 "), "the slot hook fixed cmdline.txt");
    let s = status(&mut device)?;
    assert!(s.contains("booted:      slot B (2.0.0-twin)") && s.contains("primary:     slot B"), "{s}");
    assert!(s.contains("last update: committed: 2.0.0-twin A -> B"), "{s}");
    data_survived(&mut device)?;
    let mut device = twin.reboot(device)?;
    assert_eq!(device.partition, 3, "committed: B is the primary");
    device.wait_app_running("counter")?;
    Ok(())
}

#[test]
fn updates_that_do_not_come_up_healthy_roll_back_by_themselves() -> Outcome {
    let mut twin = Twin::new("update-rollback")?;
    let share = twin.share().to_owned();
    for (kind, file) in [("unhealthy", "unhealthy.raucb"), ("crash", "crash.raucb"), ("kernel", "no-kernel.raucb")] {
        let o = Command::new(root().join("scripts/twin-broken-bundle.sh"))
            .args([root().join("build"), kind.into(), share.join(file)])
            .output()
            .expect("twin-broken-bundle.sh");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let mut device = twin.boot()?;
    device.wait_apps_running(&EXAMPLES)?;
    device.wait_console()?;
    device.sh(&format!("{MOUNT_SHARE} && echo kept > {MARKER} && sync"))?;

    // A firmware whose runtime refuses every app: the health gate gives up
    // at its deadline, marks the slot bad and reboots into A.
    device.type_line("trellis device update /mnt/unhealthy.raucb")?;
    device.wait_for("installed unhealthy into slot B", Duration::from_secs(300))?;
    let mut device = twin.restarted(device, Duration::from_secs(120))?;
    assert_eq!(device.partition, 3, "the trial boot runs slot B");
    device.seen("phase=RolledBack", BOOT_TIMEOUT)?;
    let mut device = twin.restarted(device, Duration::from_secs(120))?;
    assert_eq!(device.partition, 2, "slot A again");
    device.wait_apps_running(&EXAMPLES)?;
    device.wait_console()?;
    let s = status(&mut device)?;
    assert!(s.contains("last update: rolled back: unhealthy A -> B"), "{s}");
    assert!(s.contains("not healthy within 20 s of boot") && s.contains("blinky"), "{s}");
    assert!(s.contains("primary:     slot A"), "{s}");
    data_survived(&mut device)?;
    device.sh(MOUNT_SHARE)?;

    // A firmware whose runtime cannot start at all: init gives up on its
    // essential service and reboots, and the firmware boots A.
    device.type_line("trellis device update /mnt/crash.raucb")?;
    device.wait_for("installed crash into slot B", Duration::from_secs(300))?;
    let mut device = twin.restarted(device, Duration::from_secs(120))?;
    assert_eq!(device.partition, 3, "the trial boot runs slot B");
    device.wait_for("runtime keeps crashing", BOOT_TIMEOUT)?;
    let mut device = twin.restarted(device, Duration::from_secs(120))?;
    assert_eq!(device.partition, 2, "slot A again");
    device.wait_apps_running(&EXAMPLES)?;
    device.seen("phase=RolledBack", BOOT_TIMEOUT)?;
    device.wait_console()?;
    let s = status(&mut device)?;
    assert!(s.contains("last update: rolled back: crash A -> B"), "{s}");
    assert!(s.contains("trial boot of slot B did not come up"), "{s}");
    data_survived(&mut device)?;
    device.sh(MOUNT_SHARE)?;

    // A firmware whose kernel does not start: nothing on the device can
    // decide; the power is cycled and the firmware boots the primary, A.
    device.type_line("trellis device update /mnt/no-kernel.raucb")?;
    device.wait_for("installed no-kernel into slot B", Duration::from_secs(300))?;
    let device = twin.restarted(device, Duration::from_secs(120))?;
    assert_eq!(device.partition, 3, "the trial boot tries slot B");
    let mut device = twin.hung_kernel(device, Duration::from_secs(20))?;
    assert_eq!(device.partition, 2, "slot A again");
    device.wait_apps_running(&EXAMPLES)?;
    device.seen("phase=RolledBack", BOOT_TIMEOUT)?;
    device.wait_console()?;
    let s = status(&mut device)?;
    assert!(s.contains("last update: rolled back: no-kernel A -> B"), "{s}");
    assert!(s.contains("trial boot of slot B did not come up"), "{s}");
    data_survived(&mut device)?;
    untouched_b_bad(&mut device)?;
    Ok(())
}

/// After a rollback: A is the primary and B is not booted again.
fn untouched_b_bad(device: &mut Guest) -> Result<(), Error> {
    assert_eq!(device.sh("trellis-boot get-primary")?.trim(), "A");
    assert_eq!(device.sh("trellis-boot get-state B")?.trim(), "bad");
    Ok(())
}

#[test]
fn a_power_cut_during_installation_leaves_the_old_slot_booting() -> Outcome {
    let mut twin = Twin::new("update-power-cut")?;
    // A root filesystem that shares no block with the slots, so RAUC's adaptive
    // mode writes every block (one the slot already held it would skip).
    let _ = variant_bundle("rebuilt", &twin.share().join("update.raucb"), "2.0.1-twin");
    let mut device = twin.boot()?;
    device.wait_apps_running(&EXAMPLES)?;
    device.wait_console()?;
    device.sh(&format!("{MOUNT_SHARE} && echo kept > {MARKER} && sync"))?;
    // The kernel writes dirty pages back at once, so what RAUC writes reaches the
    // disk image as it goes.
    device.sh("echo 65536 > /proc/sys/vm/dirty_background_bytes")?;
    let slot_b = disk::partition(twin.image(), 6)?;
    let factory = disk::read_at(twin.image(), &slot_b, 0, 4096)?;
    device.type_line("trellis device update /mnt/update.raucb")?;
    // Cut while RAUC writes the root filesystem image into slot B: once its first
    // block, which RAUC writes first, has reached the disk (after RAUC has
    // hashed both slots; the whole write takes several seconds here).
    device.wait_for("Updating /dev/rootdisk0p6 with", BOOT_TIMEOUT)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while disk::read_at(twin.image(), &slot_b, 0, 4096)? == factory {
        assert!(std::time::Instant::now() < deadline, "RAUC never wrote slot B");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut device = twin.power_cycle(device)?;
    assert_eq!(device.partition, 2, "the old slot boots");
    device.wait_apps_running(&EXAMPLES)?;
    let log: String = device.lines().iter().map(|l| l.text.clone()).collect::<Vec<_>>().join("\n");
    assert!(!log.contains("formatting") && !log.contains("corrupted"), "{log}");
    device.wait_console()?;
    assert_eq!(device.sh("trellis-boot get-primary")?.trim(), "A");
    let s = status(&mut device)?;
    assert!(s.contains("last update: failed") && s.contains("interrupted"), "{s}");
    // The cut came while RAUC was writing B: its first block (written first) is
    // the new image's, where the factory put the same image in A and B.
    let same = device.sh("cmp -s -n 4096 /dev/vda5 /dev/vda6 && echo same || echo written")?;
    assert_eq!(same.trim(), "written", "the power was cut before RAUC wrote slot B");
    data_survived(&mut device)?;
    Ok(())
}
