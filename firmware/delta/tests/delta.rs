//! Firmware deltas with the real squashfs-tools: made from two images, checked to
//! rebuild the new one bit for bit, refused when they would not, and applied by
//! RAUC's pre-install handler to slots (regular files standing in for partitions).

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use trellis_delta::format::{Content, Delta, Entry, Header, ImageId, Meta, Node, Payload, Recipe};
use trellis_delta::rauc::{self, HandlerEnv, Outcome, Slot, Target};
use trellis_delta::squashfs::{self, Tools};
use trellis_delta::{Error, sha256_hex, sha256_prefix};

fn recipe(block: &str) -> Recipe {
    Recipe {
        args: ["-comp", "zstd", "-b", block, "-all-root", "-noappend", "-quiet", "-no-progress"]
            .map(String::from)
            .to_vec(),
        env: BTreeMap::from([("SOURCE_DATE_EPOCH".to_string(), "1796519891".to_string())]),
        sort: Some("usr/bin/app 10\n".into()),
    }
}

/// Pseudo-random bytes (an executable's stand-in: incompressible, so a change
/// in the middle is what a delta must carry).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The base tree: directories, files, links.
fn base_tree(root: &Path) {
    for d in ["usr/bin", "etc/trellis", "usr/share/old", "var"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("usr/bin/app"), noise(3 << 20, 7)).unwrap();
    fs::write(root.join("usr/bin/tool"), noise(100_000, 9)).unwrap();
    fs::write(root.join("etc/trellis/release"), "TRELLIS_VERSION=1\n").unwrap();
    fs::write(root.join("etc/motd"), "hello\n").unwrap();
    fs::write(root.join("usr/share/old/gone.txt"), "removed in the new tree\n").unwrap();
    fs::write(root.join("usr/share/moved.bin"), noise(50_000, 11)).unwrap();
    symlink("/run/resolv.conf", root.join("etc/resolv.conf")).unwrap();
    symlink("tool", root.join("usr/bin/alias")).unwrap();
}

/// The new tree: one changed executable (a few bytes inserted in the middle),
/// a file added, a directory removed, a file moved, a link retargeted, a mode
/// changed.
fn new_tree(root: &Path) {
    base_tree(root);
    let mut app = noise(3 << 20, 7);
    app.splice(1_500_000..1_500_000, b"one more line".iter().copied());
    fs::write(root.join("usr/bin/app"), app).unwrap();
    fs::write(root.join("etc/trellis/release"), "TRELLIS_VERSION=2\n").unwrap();
    fs::write(root.join("etc/new.conf"), "added\n").unwrap();
    fs::remove_dir_all(root.join("usr/share/old")).unwrap();
    fs::rename(root.join("usr/share/moved.bin"), root.join("var/moved.bin")).unwrap();
    fs::remove_file(root.join("usr/bin/alias")).unwrap();
    symlink("app", root.join("usr/bin/alias")).unwrap();
    fs::set_permissions(root.join("etc/motd"), fs::Permissions::from_mode(0o600)).unwrap();
}

struct Images {
    dir: tempfile::TempDir,
    base: PathBuf,
    new: PathBuf,
}

fn images(recipe_new: &Recipe) -> Images {
    let dir = tempfile::tempdir().unwrap();
    let (bt, nt) = (dir.path().join("bt"), dir.path().join("nt"));
    base_tree(&bt);
    new_tree(&nt);
    let tools = Tools::default();
    let (base, new) = (dir.path().join("base.squashfs"), dir.path().join("new.squashfs"));
    squashfs::pack(&tools, &bt, &base, &recipe("131072"), &dir.path().join("sort")).expect("mksquashfs packs the base");
    squashfs::pack(&tools, &nt, &new, recipe_new, &dir.path().join("sort")).expect("mksquashfs packs the new tree");
    Images { dir, base, new }
}

fn work(dir: &Path, name: &str) -> PathBuf {
    let w = dir.join(name);
    fs::create_dir_all(&w).unwrap();
    w
}

#[test]
fn a_delta_rebuilds_the_new_image_bit_for_bit_and_carries_only_what_changed() {
    let im = images(&recipe("131072"));
    let out = im.dir.path().join("rootfs.delta");
    let made = squashfs::make(&Tools::default(), &im.base, &im.new, &recipe("131072"), &work(im.dir.path(), "w"), &out)
        .expect("the delta is made and checked");
    let s = &made.stats;
    assert_eq!((s.patched, s.moved, s.meta_only), (1, 1, 1), "{s:?}");
    // The release file and the new file: whole (smaller than a patch).
    assert_eq!(s.whole, 2, "{s:?}");
    assert!(made.header.removed.contains(&"usr/share/old".to_string()), "{:?}", made.header.removed);
    assert!(made.header.removed.contains(&"usr/share/moved.bin".to_string()), "{:?}", made.header.removed);
    // A 3 MiB executable with 13 bytes inserted: a few KiB of delta.
    assert!(made.bytes < 64 << 10, "the delta is {} bytes", made.bytes);

    // Rebuilt again from the base (as the device does), into another file.
    let again = im.dir.path().join("again.squashfs");
    let delta = Delta::open(&out).unwrap();
    let got = squashfs::rebuild(&Tools::default(), &im.base, &delta, &work(im.dir.path(), "w2"), &again).unwrap();
    assert_eq!(got, delta.header.image);
    assert_eq!(fs::read(&again).unwrap(), fs::read(&im.new).unwrap());
}

#[test]
fn a_recipe_that_does_not_rebuild_the_new_image_is_refused_and_no_delta_kept() {
    // The new image packed with 64 KiB blocks; the delta's recipe says 128 KiB.
    let im = images(&recipe("65536"));
    let out = im.dir.path().join("rootfs.delta");
    let err = squashfs::make(&Tools::default(), &im.base, &im.new, &recipe("131072"), &work(im.dir.path(), "w"), &out)
        .expect_err("a recipe that packs something else");
    assert!(matches!(err, Error::NotReproduced { .. }), "{err}");
    assert!(err.to_string().contains("mksquashfs's options"), "{err}");
    assert!(!out.exists(), "a delta that does not rebuild its image was kept");
}

#[test]
fn a_delta_applied_to_another_base_or_corrupted_writes_nothing() {
    let im = images(&recipe("131072"));
    let out = im.dir.path().join("rootfs.delta");
    squashfs::make(&Tools::default(), &im.base, &im.new, &recipe("131072"), &work(im.dir.path(), "w"), &out).unwrap();
    let target = im.dir.path().join("target.img");

    // Another base: the new image itself.
    let delta = Delta::open(&out).unwrap();
    let err = squashfs::rebuild(&Tools::default(), &im.new, &delta, &work(im.dir.path(), "w2"), &target).unwrap_err();
    assert!(matches!(err, Error::WrongBase { .. }), "{err}");
    assert!(err.to_string().contains("new.squashfs"), "names the image: {err}");
    assert!(!target.exists());

    // A byte of the payload flipped: the blob does not decompress, or the
    // file it makes is not the one the header names; the tree is never packed.
    let mut bytes = fs::read(&out).unwrap();
    let last = bytes.len() - 100;
    bytes[last] ^= 0x55;
    let bad = im.dir.path().join("bad.delta");
    fs::write(&bad, &bytes).unwrap();
    let delta = Delta::open(&bad).unwrap();
    let err = squashfs::rebuild(&Tools::default(), &im.base, &delta, &work(im.dir.path(), "w3"), &target).unwrap_err();
    assert!(matches!(err, Error::Format { .. } | Error::Entry { .. }), "{err}");
    assert!(!target.exists(), "a corrupt delta packed an image");

    // Not a delta at all.
    let err = Delta::open(&im.base).unwrap_err();
    assert!(err.to_string().contains("wrong magic"), "{err}");
}

/// A delta of the test's own with one entry at `path`.
fn one_entry_delta(dir: &Path, base: &Path, path: &str) -> PathBuf {
    let mut payload = Payload::default();
    let data = b"written where it must not be".to_vec();
    let (at, len) = payload.push(&data);
    let header = Header {
        base: squashfs::image_id(base).unwrap(),
        image: ImageId { sha256: "0".repeat(64), size: 4096 },
        recipe: recipe("131072"),
        removed: vec![],
        entries: vec![Entry {
            path: path.into(),
            node: Node::File { sha256: sha256_hex(&data), size: data.len() as u64, content: Content::Data { at, len } },
            meta: Meta { mode: 0o644, uid: 0, gid: 0, mtime: 0 },
        }],
    };
    let out = dir.join(format!("e{}.delta", path.len()));
    payload.write(&header, &out).unwrap();
    out
}

#[test]
fn an_entry_that_leads_out_of_the_tree_is_refused() {
    let im = images(&recipe("131072"));
    // `etc/resolv.conf` is a link to /run/resolv.conf in the base: writing
    // through it would leave the tree.
    for path in ["../escaped", "/etc/escaped", "etc/resolv.conf/x", "etc/./x"] {
        let delta = Delta::open(&one_entry_delta(im.dir.path(), &im.base, path)).unwrap();
        let target = im.dir.path().join("target.img");
        let err = squashfs::rebuild(&Tools::default(), &im.base, &delta, &work(im.dir.path(), "w"), &target)
            .expect_err("a path out of the tree");
        assert!(matches!(err, Error::Entry { .. }), "{path}: {err}");
        assert!(err.to_string().contains(path), "names the entry: {err}");
        assert!(!target.exists());
    }
    assert!(!im.dir.path().join("escaped").exists() && !Path::new("/etc/escaped").exists());
}

/// Slots as files: `rootfs.0` holds the base image (then zeros, as a partition
/// larger than its image), `rootfs.1` something else; the bundle directory holds
/// the delta; RAUC's data directory a stored index for each slot.
struct Site {
    im: Images,
    env: HandlerEnv,
    data: PathBuf,
}

fn site(with_delta: bool, digest: Option<String>) -> Site {
    let im = images(&recipe("131072"));
    let d = im.dir.path();
    let bundle = work(d, "bundle");
    if with_delta {
        squashfs::make(
            &Tools::default(),
            &im.base,
            &im.new,
            &recipe("131072"),
            &work(d, "w"),
            &bundle.join("rootfs.delta"),
        )
        .unwrap();
    }
    let mut a = fs::read(&im.base).unwrap();
    a.resize(a.len() * 2, 0);
    fs::write(d.join("slot-a"), a).unwrap();
    fs::write(d.join("slot-b"), noise(1 << 20, 3)).unwrap();
    let data = work(d, "rauc");
    for slot in ["rootfs.0", "rootfs.1"] {
        let dir = work(&data, &format!("slot.{slot}/hash-abc"));
        fs::write(dir.join("block-hash-index"), [1u8; 64]).unwrap();
    }
    let slot = |name: &str, dev: &str| Slot { name: name.into(), class: "rootfs".into(), device: d.join(dev) };
    let digest = digest.unwrap_or_else(|| squashfs::image_id(&im.new).unwrap().sha256);
    let env = HandlerEnv {
        bundle,
        slots: vec![slot("rootfs.0", "slot-a"), slot("rootfs.1", "slot-b")],
        targets: vec![Target { slot: slot("rootfs.1", "slot-b"), image: "rootfs.squashfs".into(), digest }],
    };
    Site { im, env, data }
}

#[test]
fn the_pre_install_handler_rebuilds_the_image_into_the_target_slot_and_drops_its_stored_index() {
    let s = site(true, None);
    let work = s.im.dir.path().join("run-delta");
    let outcomes = rauc::pre_install(&s.env, Some(&s.data), &Tools::default(), &work);
    let [Ok(Outcome::Rebuilt { slot, from, identical, .. })] = &outcomes[..] else { panic!("{outcomes:?}") };
    assert_eq!((slot.as_str(), from.as_str(), *identical), ("rootfs.1", "rootfs.0", true));
    let new = fs::read(&s.im.new).unwrap();
    assert_eq!(sha256_prefix(&s.im.dir.path().join("slot-b"), new.len() as u64).unwrap(), sha256_hex(&new));
    assert!(!s.data.join("slot.rootfs.1/hash-abc/block-hash-index").exists(), "the target's stale index is kept");
    assert!(s.data.join("slot.rootfs.0/hash-abc/block-hash-index").exists(), "the running slot's index was removed");
    assert!(!work.exists(), "the scratch tree outlived the handler");
}

#[test]
fn without_a_matching_delta_or_base_the_handler_leaves_the_slot_to_rauc() {
    // A bundle whose image the delta does not make: nothing done.
    let s = site(true, Some("f".repeat(64)));
    let before = fs::read(s.im.dir.path().join("slot-b")).unwrap();
    let outcomes = rauc::pre_install(&s.env, Some(&s.data), &Tools::default(), &s.im.dir.path().join("w9"));
    assert!(matches!(&outcomes[..], [Ok(Outcome::NoDelta { .. })]), "{outcomes:?}");

    // No slot holds the delta's base: the target and its index are left alone.
    let mut s = site(true, None);
    s.env.slots[0].device = s.im.dir.path().join("slot-b");
    fs::write(s.im.dir.path().join("slot-c"), noise(1 << 20, 5)).unwrap();
    s.env.slots[0].device = s.im.dir.path().join("slot-c");
    let outcomes = rauc::pre_install(&s.env, Some(&s.data), &Tools::default(), &s.im.dir.path().join("w8"));
    assert!(matches!(&outcomes[..], [Ok(Outcome::NoBase { .. })]), "{outcomes:?}");
    assert_eq!(fs::read(s.im.dir.path().join("slot-b")).unwrap(), before);
    assert!(s.data.join("slot.rootfs.1/hash-abc/block-hash-index").exists());
}

#[test]
fn the_handler_reads_what_rauc_tells_it() {
    let vars = BTreeMap::from([
        ("RAUC_BUNDLE_MOUNT_POINT", "/run/rauc/bundle"),
        ("RAUC_SLOTS", "1 2 3 4"),
        ("RAUC_TARGET_SLOTS", "2 4"),
        ("RAUC_SLOT_NAME_1", "rootfs.0"),
        ("RAUC_SLOT_CLASS_1", "rootfs"),
        ("RAUC_SLOT_DEVICE_1", "/dev/rootdisk0p5"),
        ("RAUC_SLOT_NAME_2", "rootfs.1"),
        ("RAUC_SLOT_CLASS_2", "rootfs"),
        ("RAUC_SLOT_DEVICE_2", "/dev/rootdisk0p6"),
        ("RAUC_IMAGE_NAME_2", "rootfs.squashfs"),
        ("RAUC_IMAGE_DIGEST_2", "ab12"),
        ("RAUC_SLOT_NAME_3", "boot.0"),
        ("RAUC_SLOT_CLASS_3", "boot"),
        ("RAUC_SLOT_DEVICE_3", "/dev/rootdisk0p2"),
        ("RAUC_SLOT_NAME_4", "boot.1"),
        ("RAUC_SLOT_CLASS_4", "boot"),
        ("RAUC_SLOT_DEVICE_4", "/dev/rootdisk0p3"),
        ("RAUC_IMAGE_NAME_4", "boot.tar"),
        ("RAUC_IMAGE_DIGEST_4", "cd34"),
    ]);
    let env = HandlerEnv::from_vars(|k| vars.get(k).map(|v| (*v).to_string())).unwrap();
    assert_eq!(env.slots.len(), 4);
    assert_eq!(env.targets.len(), 2);
    assert_eq!(env.targets[0].slot.device, Path::new("/dev/rootdisk0p6"));
    assert_eq!(env.targets[0].digest, "ab12");
    let err = HandlerEnv::from_vars(|k| (k != "RAUC_SLOTS").then(|| vars.get(k).map(|v| (*v).to_string())).flatten())
        .unwrap_err();
    assert!(err.to_string().contains("RAUC_SLOTS"), "{err}");

    let conf = "[system]\ncompatible=x\ndata-directory=/data/trellis/rauc\n\n[slot.rootfs.0]\ndata-directory=/nope\n";
    assert_eq!(rauc::data_directory(conf), Some(PathBuf::from("/data/trellis/rauc")));
    assert_eq!(rauc::data_directory("[system]\ncompatible=x\n"), None);
}
