//! The device twin's stories: the real image (`make twin-image`) booted in
//! QEMU by a harness that plays the Pi firmware. Run with `make test-twin`.

use std::time::Duration;

use trellis_twin::{BOOT_TIMEOUT, EXAMPLES, Error, Guest, MOUNT_SHARE, Outcome, Twin};

fn running(app: &str) -> String {
    format!("app running app=\"{app}\"")
}

/// An example app as packed by `make apps`, with another version number.
fn example_version(app: &str, version: &str) -> Vec<u8> {
    trellis_twin::repack(app, |m| m.version = version.into())
}

fn counted_from(device: &mut Guest) -> Result<u64, Error> {
    let line = device.seen("counting from ", BOOT_TIMEOUT)?;
    let n = line.text.split("counting from ").nth(1).and_then(|t| t.split_whitespace().next());
    Ok(n.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no count in {:?}", line.text)))
}

fn booted_lines(device: &Guest) -> String {
    device.lines().iter().map(|l| l.text.as_str()).collect::<Vec<_>>().join("\n")
}

#[test]
fn first_boot_swap_fault_reboot_and_trial_boot() -> Outcome {
    let mut twin = Twin::new("first-boot")?;
    let mut device = twin.boot()?;
    assert_eq!(device.partition, 2, "the firmware boots slot A");

    // First boot: the data partition holds 0xff, so init formats it; the apps come from the image.
    device.seen("holds no file system: formatting it as f2fs (first boot)", BOOT_TIMEOUT)?;
    device.seen("first boot: seeded the apps directory", BOOT_TIMEOUT)?;
    device.wait_apps_running(&EXAMPLES)?;
    device.wait_console()?;
    assert!(device.sh("grep ' /data ' /proc/mounts")?.contains("f2fs"));
    let first_count = counted_from(&mut device)?;
    assert_eq!(first_count, 0);

    // Partial update: a new blinky copied onto the data partition while the device runs.
    std::fs::write(twin.share().join("blinky.wasm"), example_version("blinky", "2.0.0")).expect("share");
    device.sh(MOUNT_SHARE)?;
    device.sh("cp /mnt/blinky.wasm /data/apps/blinky.wasm")?;
    let swapped = device.wait_for(&running("blinky"), BOOT_TIMEOUT)?;
    assert!(swapped.text.contains("version=2.0.0") && swapped.text.contains("replaced=\"1.0.0\""), "{}", swapped.text);

    // The runtime dies of a fault (SIGABRT, as an abort or a failed assertion does; wasmtime
    // catches SIGSEGV for its own traps, so a kill -SEGV from outside does not end it):
    // init restarts it and the apps come back.
    device.sh("kill -ABRT $(pidof trellis-runtime)")?;
    device.wait_for("runtime (pid", BOOT_TIMEOUT)?;
    device.wait_for("started runtime", BOOT_TIMEOUT)?;
    device.wait_apps_running(&EXAMPLES)?;
    device.sh("sleep 3")?;

    // Second boot: the data partition is kept, with the new blinky and the counter's count.
    let mut device = twin.reboot(device)?;
    assert_eq!(device.partition, 2);
    device.wait_apps_running(&EXAMPLES)?;
    let log = booted_lines(&device);
    assert!(!log.contains("formatting"), "the second boot formatted the data partition:\n{log}");
    assert!(log.contains("app running app=\"blinky\" version=2.0.0"), "blinky went back:\n{log}");
    let count = counted_from(&mut device)?;
    assert!(count > first_count, "the count restarted at {count}");

    // A reboot with "0 tryboot": the firmware boots the [tryboot] partition once (slot B)...
    device.wait_console()?;
    device.sh("mkdir -p /run/trellis && echo '0 tryboot' > /run/trellis/reboot-param")?;
    let mut device = twin.reboot(device)?;
    assert_eq!(device.partition, 3, "the trial boot uses autoboot.txt's [tryboot] partition");
    device.wait_apps_running(&EXAMPLES)?;
    device.wait_console()?;
    assert!(device.sh("cat /proc/cmdline")?.contains("root=/dev/vda6"));

    // ...and the next plain reboot is back on slot A: nothing made B permanent.
    let mut device = twin.reboot(device)?;
    assert_eq!(device.partition, 2);
    device.wait_app_running("counter")?;

    // The boot backend RAUC calls (trellis-boot), on the real AUTOBOOT partition:
    // B becomes the trial slot, a power cycle still boots A...
    device.wait_console()?;
    assert_eq!(device.sh("trellis-boot get-current")?.trim(), "A");
    device.sh("trellis-boot set-primary B")?;
    assert_eq!(device.sh("trellis-boot get-primary")?.trim(), "A");
    let mut device = twin.power_cycle(device)?;
    assert_eq!(device.partition, 2, "a power cut before the trial boots the old slot");
    device.wait_apps_running(&EXAMPLES)?;
    // ...the trial boot runs B, and marking it good makes it permanent.
    device.wait_console()?;
    device.sh("mkdir -p /run/trellis && echo '0 tryboot' > /run/trellis/reboot-param")?;
    let mut device = twin.reboot(device)?;
    assert_eq!(device.partition, 3);
    device.wait_console()?;
    assert_eq!(device.sh("trellis-boot get-current")?.trim(), "B");
    device.sh("trellis-boot set-state B good")?;
    assert_eq!(device.sh("trellis-boot get-primary")?.trim(), "B");
    let mut device = twin.reboot(device)?;
    assert_eq!(device.partition, 3, "B is the primary now");
    device.wait_apps_running(&EXAMPLES)?;
    Ok(())
}

#[test]
fn power_cut_while_copying_an_app_keeps_the_old_one() -> Outcome {
    let mut twin = Twin::new("power-cut")?;
    let mut device = twin.boot()?;
    device.wait_apps_running(&EXAMPLES)?;
    // The version that ran healthy is kept as the last good copy.
    device.wait_for("marked as the last good version app=\"thermostat\"", BOOT_TIMEOUT)?;
    device.wait_console()?;

    // Half of a new thermostat reaches the disk, then the power goes.
    let new = example_version("thermostat", "2.0.0");
    std::fs::write(twin.share().join("thermostat.wasm"), &new).expect("share");
    device.sh(MOUNT_SHARE)?;
    device.sh(&format!("head -c {} /mnt/thermostat.wasm > /data/apps/thermostat.wasm && sync", new.len() / 2))?;
    let mut device = twin.power_cycle(device)?;

    device.wait_apps_running(&EXAMPLES)?;
    let log = booted_lines(&device);
    assert!(log.contains("app running app=\"thermostat\" version=1.0.0"), "{log}");
    for bad in ["formatting", "corrupted", "does not mount"] {
        assert!(!log.contains(bad), "the data partition after the power cut: {bad}\n{log}");
    }
    device.wait_console()?;
    assert!(device.sh("grep ' /data ' /proc/mounts")?.contains("rw"));
    Ok(())
}

#[test]
fn a_corrupted_data_partition_is_kept_aside_and_reformatted() -> Outcome {
    let mut twin = Twin::new("corrupted")?;
    let mut device = twin.boot()?;
    device.wait_apps_running(&EXAMPLES)?;
    device.wait_console()?;
    device.type_line("poweroff")?;
    let exit = device.wait_exit(Duration::from_secs(60))?;
    assert!(exit.poweroff, "poweroff powers off");

    // Garbage over both f2fs superblocks (and more) while the device is off.
    let data = trellis_twin::disk::partition(twin.image(), 7)?;
    let mut x: u32 = 0x1234_5678;
    let garbage: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect();
    trellis_twin::disk::write_at(twin.image(), &data, 0, &garbage)?;

    let mut device = twin.boot()?;
    device.wait_for("is corrupted: keeping its start aside and reformatting", BOOT_TIMEOUT)?;
    device.wait_apps_running(&EXAMPLES)?;
    device.wait_console()?;
    let kept = device.sh("ls -l /data/lost+found/")?;
    assert!(kept.contains("corrupted-data-partition-"), "{kept}");
    assert!(kept.contains("1048576"), "the first MiB is kept: {kept}");
    Ok(())
}
