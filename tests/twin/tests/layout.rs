//! The Pi 4's card layout (board/rpi4/genimage.cfg), built by genimage from
//! dummy slot images as Buildroot's post-image script would, has the twin's
//! partition table (design decision 1) and the boot files the Pi firmware
//! reads. Needs genimage and mtools (make setup) and the twin image (make
//! twin-image) to compare with.

use std::path::{Path, PathBuf};
use std::process::Command;

use trellis_twin::disk::{self, Partition};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn the_pi_card_has_the_twins_partitions_and_the_firmwares_files() {
    let work = root().join("build/twin/runs/layout");
    let _ = std::fs::remove_dir_all(&work);
    let (input, out, tmp) = (work.join("input"), work.join("out"), work.join("tmp"));
    let board = root().join("board/rpi4");
    // What Buildroot leaves in BINARIES_DIR, with dummy contents.
    write(&input.join("Image"), &vec![0x5a; 4 << 20]);
    write(&input.join("bcm2711-rpi-4-b.dtb"), b"dtb");
    write(&input.join("rpi-firmware/start4.elf"), b"firmware");
    write(&input.join("rpi-firmware/fixup4.dat"), b"fixup");
    write(&input.join("rpi-firmware/overlays/disable-bt.dtbo"), b"overlay");
    write(&input.join("rootfs.squashfs"), &vec![0x73; 8 << 20]);
    write(&input.join("data-head.img"), &vec![0xff; 1 << 20]);
    for f in ["cmdline-a.txt", "cmdline-b.txt", "autoboot.txt"] {
        std::fs::copy(board.join(f), input.join(f)).expect("board file");
    }
    std::fs::copy(board.join("config.txt"), input.join("rpi-firmware/config.txt")).expect("config.txt");
    std::fs::create_dir_all(&out).expect("out");
    let rootpath = work.join("empty-root");
    std::fs::create_dir_all(&rootpath).expect("root");
    let o = Command::new("genimage")
        .arg("--rootpath")
        .arg(&rootpath)
        .arg("--tmppath")
        .arg(&tmp)
        .arg("--inputpath")
        .arg(&input)
        .arg("--outputpath")
        .arg(&out)
        .arg("--config")
        .arg(board.join("genimage.cfg"))
        .output()
        .expect("genimage (make setup)");
    assert!(o.status.success(), "genimage: {}", String::from_utf8_lossy(&o.stderr));

    let card = out.join("sdcard.img");
    let pi = disk::partitions(&card).expect("the card's partition table");
    let shape = |ps: &[Partition]| ps.iter().map(|p| (p.number, p.kind, p.start, p.size)).collect::<Vec<_>>();
    let mib = 1 << 20;
    assert_eq!(
        pi.iter().map(|p| (p.number, p.kind, p.size / mib)).collect::<Vec<_>>(),
        [(1, 0x0c, 4), (2, 0x0c, 64), (3, 0x0c, 64), (5, 0x83, 128), (6, 0x83, 128), (7, 0x83, 256)],
        "AUTOBOOT, BOOT-A, BOOT-B, rootfs A, rootfs B, data"
    );
    let twin = disk::partitions(&root().join("build/twin/trellis.img")).expect("make twin-image");
    assert_eq!(shape(&pi), shape(&twin), "the Pi's card and the twin's disk have the same partitions");

    let scratch = work.join("scratch");
    std::fs::create_dir_all(&scratch).expect("scratch");
    let autoboot = disk::fat_read(&card, &pi[0], "autoboot.txt", &scratch).expect("autoboot.txt on p1");
    assert!(autoboot.contains("tryboot_a_b=1") && autoboot.contains("boot_partition=2"), "{autoboot}");
    assert_eq!(autoboot.len(), 512, "one sector, rewritten in place by trellis-boot");
    for (part, slot, root) in [(&pi[1], "A", "/dev/mmcblk0p5"), (&pi[2], "B", "/dev/mmcblk0p6")] {
        let cmdline = disk::fat_read(&card, part, "cmdline.txt", &scratch).expect("cmdline.txt");
        assert!(
            cmdline.contains(&format!("root={root} ")) && cmdline.contains(&format!("rauc.slot={slot}")),
            "{cmdline}"
        );
        let config = disk::fat_read(&card, part, "config.txt", &scratch).expect("config.txt");
        assert!(config.contains("arm_64bit=1") && config.contains("kernel=Image"), "{config}");
        assert!(config.contains("dtparam=watchdog=on"), "{config}");
        for f in ["start4.elf", "fixup4.dat", "bcm2711-rpi-4-b.dtb", "Image", "overlays/disable-bt.dtbo"] {
            disk::fat_copy(&card, part, f, &scratch.join(format!("{slot}-{}", f.replace('/', "-"))))
                .unwrap_or_else(|e| panic!("BOOT-{slot} has no {f}: {e}"));
        }
    }
}

/// Buildroot's two hooks for the Pi, run as Buildroot runs them (with the
/// host's genimage and rauc standing in for Buildroot's host tools): the
/// configuration lands in the root filesystem, and the post-image script makes
/// the card image and a bundle for the Pi's compatible, signed by the dev CA.
#[test]
fn the_pi_board_hooks_make_the_root_filesystem_card_and_bundle() {
    let work = root().join("build/twin/runs/hooks");
    let _ = std::fs::remove_dir_all(&work);
    let (target, images) = (work.join("target"), work.join("images"));
    std::fs::create_dir_all(&target).expect("target");
    // BINARIES_DIR as Buildroot leaves it before its post-build hook: the
    // kernel, the device tree, the firmware and its overlays.
    write(&images.join("Image"), &vec![0x5a; 4 << 20]);
    write(&images.join("bcm2711-rpi-4-b.dtb"), b"dtb");
    write(&images.join("rpi-firmware/start4.elf"), b"firmware");
    write(&images.join("rpi-firmware/fixup4.dat"), b"fixup");
    write(&images.join("rpi-firmware/overlays/disable-bt.dtbo"), b"overlay");
    write(&images.join("rpi-firmware/overlays/README"), b"the overlays");
    std::fs::copy(root().join("board/rpi4/config.txt"), images.join("rpi-firmware/config.txt")).expect("config");
    // Buildroot's post-build hook on `target`, with `env` set.
    let post_build = |env: &[(&str, &str)]| {
        let o = Command::new(root().join("board/rpi4/post-build.sh"))
            .arg(&target)
            .arg("rpi4")
            .env("BINARIES_DIR", &images)
            .envs(env.iter().copied())
            .output()
            .expect("post-build");
        assert!(o.status.success(), "post-build: {}", String::from_utf8_lossy(&o.stderr));
    };
    post_build(&[]);
    let init = std::fs::read_to_string(target.join("etc/trellis/init.toml")).expect("init.toml");
    assert!(init.starts_with("# The build time") && init.contains("disks = [\"mmcblk0\"]"), "{init}");
    let system = std::fs::read_to_string(target.join("etc/rauc/system.conf")).expect("system.conf");
    assert!(system.contains("compatible=trellis-rpi4") && system.contains("bootloader=custom"), "{system}");
    assert_eq!(
        std::fs::read(target.join("etc/rauc/keyring.pem")).expect("keyring"),
        std::fs::read(root().join("build/keys/ca.cert.pem")).expect("dev CA"),
    );
    let release = std::fs::read_to_string(target.join("etc/trellis/release")).expect("release");
    assert!(release.contains("TRELLIS_BOARD=rpi4"), "{release}");
    // The runtime trusts the development app key (precompiled apps signed with it load as they are).
    assert_eq!(
        std::fs::read(target.join("etc/trellis/trust/apps.pub")).expect("app trust key"),
        std::fs::read(root().join("build/keys/apps.pub")).expect("dev app key"),
    );
    // APP_TRUST_KEY=none: an image that trusts no app key (no precompiled code runs).
    post_build(&[("APP_TRUST_KEY", "none")]);
    assert!(!target.join("etc/trellis/trust/apps.pub").exists(), "APP_TRUST_KEY=none left a trusted key");

    std::fs::copy(root().join("build/twin/rootfs.squashfs"), images.join("rootfs.squashfs")).expect("make twin-image");
    let o = Command::new(root().join("board/rpi4/post-image.sh"))
        .arg(&images)
        .arg("rpi4")
        .env("HOST_DIR", "/usr")
        .output()
        .expect("post-image");
    assert!(
        o.status.success(),
        "post-image: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let card = disk::partitions(&images.join("sdcard.img")).expect("sdcard.img");
    assert_eq!(card.len(), 6, "{card:?}");
    let info = Command::new("rauc")
        .args(["info", "--output-format=json", "--keyring"])
        .arg(root().join("build/keys/ca.cert.pem"))
        .arg(images.join("update.raucb"))
        .output()
        .expect("rauc");
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success(), "rauc info: {}", String::from_utf8_lossy(&info.stderr));
    assert!(text.contains("\"compatible\":\"trellis-rpi4\""), "{text}");

    // The root filesystem's list for RAUC's status at first boot
    // (rauc-seed.sh) names the boot.tar this build's bundle carries and,
    // for each boot slot, exactly the files genimage put in it.
    let seed = std::fs::read_to_string(target.join("usr/share/trellis/boot-slots")).expect("boot-slots");
    let parsed: serde_json::Value = serde_json::from_str(&text).expect("rauc info JSON");
    let boot_tar = parsed["images"]
        .as_array()
        .expect("images")
        .iter()
        .find_map(|i| i.get("boot"))
        .unwrap_or_else(|| panic!("no boot image in {text}"));
    assert_eq!(
        seed.lines().next(),
        Some(format!("tar {} {}", boot_tar["checksum"].as_str().expect("checksum"), boot_tar["size"]).as_str()),
        "{seed}"
    );
    for (slot, image) in [("boot.0", "boot-a.vfat"), ("boot.1", "boot-b.vfat")] {
        let listed: Vec<&str> = seed.lines().filter_map(|l| l.strip_prefix(slot).map(str::trim)).collect();
        assert_eq!(listed, files_in_fat(&images.join(image), &work.join(image)), "{slot} in {seed}");
    }
    // A directory genimage copies (the firmware's overlays) is listed file by file.
    assert!(seed.lines().any(|l| l.starts_with("boot.1 ") && l.ends_with(" overlays/README")), "{seed}");
}

/// "SHA256 NAME" for every file in a FAT image, sorted by name.
fn files_in_fat(image: &Path, dir: &Path) -> Vec<String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("mkdir");
    let o = Command::new("mcopy").args(["-s", "-n", "-i"]).arg(image).arg("::*").arg(dir).output().expect("mcopy");
    assert!(o.status.success(), "mcopy {}: {}", image.display(), String::from_utf8_lossy(&o.stderr));
    let o = Command::new("sh")
        .arg("-c")
        .arg("find . -type f | sed 's|^\\./||' | LC_ALL=C sort | while IFS= read -r f; do echo \"$(sha256sum <\"$f\" | cut -d' ' -f1) $f\"; done")
        .current_dir(dir)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&o.stdout).lines().map(str::to_owned).collect()
}
