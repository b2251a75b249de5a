//! A change to the runtime's code, streamed: the bundle carries the firmware
//! delta from the release the device runs (the changed executable as a bsdiff
//! patch), the bundle's slot hook (`trellis-delta rauc-slot-pre-install`)
//! rebuilds the new root filesystem into the target slot from the running one,
//! bit for bit, and RAUC's adaptive install then finds every block of the
//! bundle's image in that slot: what crosses the network is the delta and
//! RAUC's fixed reads (about 5 % of the bundle in all), where the blocks alone
//! would be about a third of it. The device then boots the new runtime and commits it.
//! Needs `make runtime-variants bundle`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use trellis_twin::origin::Origin;
use trellis_twin::{EXAMPLES, Error, Guest, Outcome, Twin, size_in_bundle, variant_bundle};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The SHA-256 of the runtime executable in a root filesystem image.
fn runtime_in(image: &std::path::Path) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!("unsquashfs -cat '{}' usr/bin/trellis-runtime | sha256sum", image.display()))
        .output()
        .expect("unsquashfs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).split_whitespace().next().expect("a digest").to_string()
}

/// `trellis device update URL` on the console, followed to the trial boot's commit.
fn install_and_commit(twin: &mut Twin, mut device: Guest, url: &str, version: &str) -> Result<Guest, Error> {
    device.type_line(&format!("trellis device update {url}"))?;
    device.wait_for(&format!("installed {version} into slot"), Duration::from_secs(900))?;
    twin.trial_committed(device, Duration::from_secs(120), version)
}

#[test]
fn a_code_change_streams_as_its_delta_and_the_new_runtime_runs() -> Outcome {
    let mut twin = Twin::new("code-delta")?;
    let dir = twin.share().join("origin");
    std::fs::create_dir_all(&dir).expect("origin directory");
    let variants = root().join("build/twin/variants");
    let base_bundle = variant_bundle("code-base", &dir.join("base.raucb"), "3.0.0-base");
    let line = variant_bundle("code-line", &dir.join("line.raucb"), "3.0.1-line");
    let origin = Origin::start(&dir).expect("the origin");

    let mut device = twin.boot()?;
    device.wait_apps_running(&EXAMPLES)?;
    device.wait_console()?;

    // The release the delta is made from: its runtime built from the same copy
    // of the source as the next one's. Nothing to rebuild from yet (the bundle
    // has no delta): RAUC fetches what the slots lack.
    let mut device = install_and_commit(&mut twin, device, &origin.url("base.raucb"), "3.0.0-base")?;
    eprintln!("the base release: {} bytes fetched of a {base_bundle}-byte bundle", origin.served());
    let base_sum = runtime_in(&variants.join("base.squashfs"));
    let running = device.sh("sha256sum /usr/bin/trellis-runtime")?;
    assert!(running.contains(&base_sum), "the base release's runtime runs: {running}");

    // One line of the runtime's code changed: the handler rebuilds the image
    // from the running slot and the delta, RAUC takes every block from it.
    let before = origin.served();
    let started = Instant::now();
    device.type_line(&format!("trellis device update {}", origin.url("line.raucb")))?;
    let rebuilt = device.wait_for("rebuilt from slot", Duration::from_secs(900))?;
    assert!(rebuilt.text.contains("the bundle's image, bit for bit"), "{}", rebuilt.text);
    let stats = device.wait_for("access stats for source_image: count=", Duration::from_secs(900))?;
    let chunks: usize = stats
        .text
        .split("count=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {:?}", stats.text));
    device.wait_for("installed 3.0.1-line into slot", Duration::from_secs(900))?;
    let fetched = origin.served() - before;
    let delta = size_in_bundle(&dir.join("line.raucb"), "rootfs.delta");
    eprintln!(
        "a line of the runtime's code changed: {fetched} bytes fetched of a {line}-byte bundle ({:.2} %; the delta \
         {delta} bytes), {chunks} chunks of the root filesystem read from the bundle, {:.0} s to installed; {}",
        100.0 * fetched as f64 / line as f64,
        started.elapsed().as_secs_f64(),
        rebuilt.text
    );
    let ranges = origin.ranges("line.raucb");
    let asked: Vec<String> = ranges.iter().map(|(a, b)| format!("{a}+{}", b + 1 - a)).collect();
    eprintln!("{} ranges, {} distinct bytes: {}", ranges.len(), origin.distinct("line.raucb"), asked.join(" "));
    let left = device.sh("ls /run/trellis/delta 2>/dev/null | wc -l")?;
    assert_eq!(left.trim(), "0", "the rebuild's tree outlived the install");
    assert_eq!(chunks, 0, "RAUC read chunks of the image from the bundle: the rebuilt slot lacked them");
    // What is fetched is the delta and RAUC's fixed reads (the manifest and
    // signature, the image's block hash index, the verity tree's blocks over
    // what was read: about 0.3 MB here; with dm-verity's default prefetch of
    // 256 KiB clusters of the tree, which the kernel command line switches off,
    // 0.6 MB), not the changed binary's blocks (about a third of the bundle).
    assert!(
        fetched < delta + (512 << 10) && fetched < line / 10,
        "the code change fetched {fetched} bytes of a {line}-byte bundle with a {delta}-byte delta"
    );

    // The new runtime boots and commits; nothing of the bundle was stored.
    let mut device = twin.trial_committed(device, Duration::from_secs(120), "3.0.1-line")?;
    let running = device.sh("sha256sum /usr/bin/trellis-runtime")?;
    let line_sum = runtime_in(&variants.join("log-line.squashfs"));
    assert_ne!(line_sum, base_sum);
    assert!(running.contains(&line_sum), "the changed runtime runs: {running}");
    let stored = device.sh("find /data -name '*.raucb*' | wc -l")?;
    assert_eq!(stored.trim(), "0", "a bundle was stored on /data");
    Ok(())
}
