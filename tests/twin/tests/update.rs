//! Full firmware updates in the twin: RAUC installs a signed bundle into the
//! other slot through trellis-boot, the firmware trial-boots it, and marking
//! it good makes it permanent; bad bundles and power cuts leave the running
//! system as it was. Needs `make bundle` (make test-twin builds it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use trellis_twin::{BOOT_TIMEOUT, Device, EXAMPLES, Error, Outcome, Twin};

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

fn untouched(device: &mut Device) -> Result<(), Error> {
    assert_eq!(device.sh("trellis-boot get-primary")?.trim(), "A");
    assert_eq!(device.sh("trellis-boot get-state B")?.trim(), "good", "slot B was not touched");
    Ok(())
}

#[test]
fn bad_bundles_are_refused_and_a_good_one_installs_trial_boots_and_commits() -> Outcome {
    let mut twin = Twin::new("update")?;
    let share = twin.share().to_owned();
    let good = bundle(&share.join("update.raucb"), &[("VERSION", "2.0.0-twin")]);
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
    device.sh("mount -t 9p -o trans=virtio host /mnt")?;

    for (file, reason) in [
        ("unknown-key.raucb", "signature verification failed"),
        ("truncated.raucb", "raucb"),
        ("other-board.raucb", "Compatible mismatch"),
    ] {
        match device.sh_timeout(&format!("rauc install /mnt/{file}"), Duration::from_secs(120)) {
            Err(Error::Command { output, .. }) => assert!(output.contains(reason), "{file}: {output}"),
            other => panic!("{file} was not refused: {other:?}"),
        }
        untouched(&mut device)?;
    }

    // The good bundle goes into slot B; the next power cycle would still boot A.
    let out = device.sh_timeout("rauc install /mnt/update.raucb", Duration::from_secs(300))?;
    assert!(out.contains("succeeded"), "{out}");
    assert_eq!(device.sh("trellis-boot get-primary")?.trim(), "A");
    // The trial boot: B runs, with the same data partition and apps.
    device.sh("mkdir -p /run/trellis && echo '0 tryboot' > /run/trellis/reboot-param")?;
    let mut device = twin.reboot(device)?;
    assert_eq!(device.partition, 3);
    device.wait_apps_running(&EXAMPLES)?;
    device.wait_console()?;
    assert!(device.sh("cat /proc/cmdline")?.contains("root=/dev/vda6 "), "the slot hook fixed cmdline.txt");
    device.sh("rauc status mark-good")?;
    assert!(device.sh("rauc status --detailed")?.contains("2.0.0-twin"));
    let mut device = twin.reboot(device)?;
    assert_eq!(device.partition, 3, "committed: B is the primary");
    device.wait_app_running("counter")?;
    Ok(())
}

#[test]
fn a_power_cut_during_installation_leaves_the_old_slot_booting() -> Outcome {
    let mut twin = Twin::new("update-power-cut")?;
    bundle(&twin.share().join("update.raucb"), &[("VERSION", "2.0.1-twin")]);
    let mut device = twin.boot()?;
    device.wait_apps_running(&EXAMPLES)?;
    device.wait_console()?;
    device.sh("mount -t 9p -o trans=virtio host /mnt")?;
    device.type_line("rauc install /mnt/update.raucb")?;
    // Cut while RAUC writes the root filesystem image into slot B.
    device.wait_for("writing data to device /dev/rootdisk0p6", BOOT_TIMEOUT)?;
    std::thread::sleep(Duration::from_secs(2));
    let mut device = twin.power_cycle(device)?;
    assert_eq!(device.partition, 2, "the old slot boots");
    device.wait_apps_running(&EXAMPLES)?;
    let log: String = device.lines().iter().map(|l| l.text.clone()).collect::<Vec<_>>().join("\n");
    assert!(!log.contains("formatting") && !log.contains("corrupted"), "{log}");
    device.wait_console()?;
    assert_eq!(device.sh("trellis-boot get-primary")?.trim(), "A");
    Ok(())
}
