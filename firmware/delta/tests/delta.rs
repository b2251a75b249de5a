//! Firmware deltas with the real squashfs-tools: made from two images, checked to
//! rebuild the new one bit for bit, refused when they would not, and applied by
//! the bundle's slot hook to slots (regular files standing in for partitions).

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use trellis_delta::format::{Content, Delta, Entry, Header, ImageId, Meta, Node, Payload, Recipe};
use trellis_delta::rauc::{self, HookEnv, Outcome, Slot, SystemConf};
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

/// A delta of the test's own with the root and one file at `path`.
fn one_entry_delta(dir: &Path, base: &Path, path: &str) -> PathBuf {
    let mut payload = Payload::default();
    let data = b"written where it must not be".to_vec();
    let (at, len) = payload.push(&data);
    let meta = Meta { mode: 0o644, uid: 0, gid: 0, mtime: 0 };
    let header = Header {
        base: squashfs::image_id(base).unwrap(),
        image: ImageId { sha256: "0".repeat(64), size: 4096 },
        recipe: recipe("131072"),
        removed: vec![],
        entries: vec![
            Entry { path: String::new(), node: Node::Dir, meta },
            Entry {
                path: path.into(),
                node: Node::File {
                    sha256: sha256_hex(&data),
                    size: data.len() as u64,
                    content: Content::Data { at, len },
                },
                meta,
            },
        ],
    };
    let out = dir.join(format!("e{}.delta", path.len()));
    payload.write(&header, &out).unwrap();
    out
}

#[test]
fn an_entry_that_leads_out_of_the_tree_is_refused() {
    let im = images(&recipe("131072"));
    // `etc/resolv.conf` is a link to /run/resolv.conf in the base: writing
    // through it would leave the tree. Each is refused when the delta is
    // opened: its directory is not one the delta makes or finds.
    for path in ["../escaped", "/etc/escaped", "etc/resolv.conf/x", "etc/./x"] {
        let err = Delta::open(&one_entry_delta(im.dir.path(), &im.base, path)).expect_err(path);
        assert!(matches!(err, Error::Format { .. }), "{path}: {err}");
        assert!(err.to_string().contains(path), "names the entry: {err}");
    }
    // A file taken from a link of the base: refused when applied (reading it
    // would follow the link out of the tree).
    let meta = Meta { mode: 0o644, uid: 0, gid: 0, mtime: 0 };
    let header = Header {
        base: squashfs::image_id(&im.base).unwrap(),
        image: ImageId { sha256: "0".repeat(64), size: 4096 },
        recipe: recipe("131072"),
        removed: vec![],
        entries: vec![
            Entry { path: String::new(), node: Node::Dir, meta },
            Entry { path: "etc".into(), node: Node::Dir, meta },
            Entry {
                path: "etc/copy".into(),
                node: Node::File {
                    sha256: "0".repeat(64),
                    size: 1,
                    content: Content::Base { path: "etc/resolv.conf".into() },
                },
                meta,
            },
        ],
    };
    let out = im.dir.path().join("through-link.delta");
    Payload::default().write(&header, &out).unwrap();
    let delta = Delta::open(&out).unwrap();
    let target = im.dir.path().join("target.img");
    let err = squashfs::rebuild(&Tools::default(), &im.base, &delta, &work(im.dir.path(), "w"), &target)
        .expect_err("a file read through a link");
    assert!(err.to_string().contains("etc/resolv.conf") && err.to_string().contains("not a regular file"), "{err}");
    assert!(!target.exists());
    assert!(!im.dir.path().join("escaped").exists() && !Path::new("/etc/escaped").exists());
}

/// A delta of the test's own: `entries` (paths and nodes, a file's content
/// taken whole), and `recipe`.
fn crafted(dir: &Path, base: &Path, name: &str, entries: &[(&str, Node)], recipe: Recipe) -> PathBuf {
    let meta = Meta { mode: 0o755, uid: 0, gid: 0, mtime: 0 };
    let header = Header {
        base: squashfs::image_id(base).unwrap(),
        image: ImageId { sha256: "0".repeat(64), size: 4096 },
        recipe,
        removed: vec![],
        entries: entries.iter().map(|(p, n)| Entry { path: (*p).to_string(), node: n.clone(), meta }).collect(),
    };
    let out = dir.join(name);
    Payload::default().write(&header, &out).unwrap();
    out
}

/// A crafted delta: its name, entries, recipe, and what the refusal says.
type Case<'a> = (&'a str, Vec<(&'a str, Node)>, Recipe, &'a str);

#[test]
fn a_delta_that_could_lead_out_of_the_tree_or_run_anything_is_refused_when_opened() {
    let im = images(&recipe("131072"));
    let d = im.dir.path();
    let link = |t: &str| Node::Symlink { target: t.into() };
    let cases: Vec<Case> = vec![
        ("root-link", vec![("", link("/data")), ("x", Node::Dir)], recipe("131072"), "root entry is not a directory"),
        ("twice", vec![("", Node::Dir), ("a", Node::Dir), ("a", link("/etc"))], recipe("131072"), "there twice"),
        ("orphan", vec![("", Node::Dir), ("a/b", Node::Dir)], recipe("131072"), "before its directory"),
        (
            "destination",
            vec![("", Node::Dir)],
            Recipe { args: vec!["/dev/mmcblk0".into(), "-noappend".into()], ..recipe("131072") },
            "not one a recipe may hold",
        ),
        (
            "pseudo",
            vec![("", Node::Dir)],
            Recipe { args: vec!["-noappend".into(), "-p".into(), "x f 644 0 0 id".into()], ..recipe("131072") },
            "not one a recipe may hold",
        ),
        (
            "preload",
            vec![("", Node::Dir)],
            Recipe { env: BTreeMap::from([("LD_PRELOAD".into(), "/x.so".into())]), ..recipe("131072") },
            "only SOURCE_DATE_EPOCH",
        ),
        (
            "append",
            vec![("", Node::Dir)],
            Recipe { args: vec!["-comp".into(), "zstd".into()], ..recipe("131072") },
            "no -noappend",
        ),
        (
            "comp",
            vec![("", Node::Dir)],
            Recipe { args: vec!["-noappend".into(), "-comp".into(), "$(id)".into()], ..recipe("131072") },
            "not a valid value",
        ),
    ];
    for (name, entries, r, says) in cases {
        let path = crafted(d, &im.base, &format!("{name}.delta"), &entries, r);
        let err = Delta::open(&path).expect_err(name);
        assert!(err.to_string().contains(says), "{name}: {err}");
        assert!(err.to_string().contains(&format!("{name}.delta")), "names the file: {err}");
    }
    // The twin's own recipe is one a recipe may hold.
    assert_eq!(recipe("131072").check(), Ok(()));
}

/// Slots as files: `rootfs.0` holds the base image (then zeros, as a partition
/// larger than its image), `rootfs.1` something else; the bundle directory holds
/// the delta; RAUC's data directory a stored index for each slot.
struct Site {
    im: Images,
    env: HookEnv,
    conf: SystemConf,
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
    let text = format!(
        "[system]\ncompatible=x\ndata-directory={}\n\n[slot.rootfs.0]\ndevice={}\n\n[slot.boot.0]\ndevice=/dev/null\n\n[slot.rootfs.1]\ndevice={}\n",
        data.display(),
        d.join("slot-a").display(),
        d.join("slot-b").display()
    );
    let conf = SystemConf::parse(&text);
    let digest = digest.unwrap_or_else(|| squashfs::image_id(&im.new).unwrap().sha256);
    let env = HookEnv {
        bundle,
        slot: Slot { name: "rootfs.1".into(), class: "rootfs".into(), device: d.join("slot-b") },
        image: "rootfs.squashfs".into(),
        digest,
    };
    Site { im, env, conf, data }
}

#[test]
fn the_slot_hook_rebuilds_the_image_into_the_target_slot_and_drops_its_stored_index() {
    let s = site(true, None);
    assert_eq!(s.conf.slots.len(), 3);
    let work = s.im.dir.path().join("run-delta");
    let outcome = rauc::slot_pre_install(&s.env, &s.conf, &Tools::default(), &work, "");
    let Ok(Outcome::Rebuilt { slot, from, identical, .. }) = &outcome else { panic!("{outcome:?}") };
    assert_eq!((slot.as_str(), from.as_str(), *identical), ("rootfs.1", "rootfs.0", true));
    let new = fs::read(&s.im.new).unwrap();
    assert_eq!(sha256_prefix(&s.im.dir.path().join("slot-b"), new.len() as u64).unwrap(), sha256_hex(&new));
    assert!(!s.data.join("slot.rootfs.1/hash-abc/block-hash-index").exists(), "the target's stale index is kept");
    assert!(s.data.join("slot.rootfs.0/hash-abc/block-hash-index").exists(), "the running slot's index was removed");
    assert!(!work.exists(), "the scratch tree outlived the hook");
}

#[test]
fn without_a_matching_delta_or_base_the_slot_hook_leaves_the_slot_to_rauc() {
    // A bundle whose image the delta does not make: nothing done.
    let s = site(true, Some("f".repeat(64)));
    let outcome = rauc::slot_pre_install(&s.env, &s.conf, &Tools::default(), &s.im.dir.path().join("w9"), "");
    assert!(matches!(&outcome, Ok(Outcome::NoDelta { .. })), "{outcome:?}");

    // No slot holds the delta's base: the target and its index are left alone.
    let mut s = site(true, None);
    let before = fs::read(s.im.dir.path().join("slot-b")).unwrap();
    fs::write(s.im.dir.path().join("slot-c"), noise(1 << 20, 5)).unwrap();
    s.conf.slots[0].device = s.im.dir.path().join("slot-c");
    let outcome = rauc::slot_pre_install(&s.env, &s.conf, &Tools::default(), &s.im.dir.path().join("w8"), "");
    assert!(matches!(&outcome, Ok(Outcome::NoBase { .. })), "{outcome:?}");
    assert_eq!(fs::read(s.im.dir.path().join("slot-b")).unwrap(), before);
    assert!(s.data.join("slot.rootfs.1/hash-abc/block-hash-index").exists());
}

#[test]
fn the_slot_hook_reads_what_rauc_tells_it() {
    let vars = BTreeMap::from([
        ("RAUC_BUNDLE_MOUNT_POINT", "/run/rauc/bundle"),
        ("RAUC_SLOT_NAME", "rootfs.1"),
        ("RAUC_SLOT_CLASS", "rootfs"),
        ("RAUC_SLOT_DEVICE", "/dev/rootdisk0p6"),
        ("RAUC_IMAGE_NAME", "rootfs.squashfs"),
        ("RAUC_IMAGE_DIGEST", "ab12"),
    ]);
    let env = HookEnv::from_vars(|k| vars.get(k).map(|v| (*v).to_string())).unwrap();
    assert_eq!(env.slot.device, Path::new("/dev/rootdisk0p6"));
    assert_eq!(env.digest, "ab12");
    let err =
        HookEnv::from_vars(|k| (k != "RAUC_IMAGE_DIGEST").then(|| vars.get(k).map(|v| (*v).to_string())).flatten())
            .unwrap_err();
    assert!(err.to_string().contains("RAUC_IMAGE_DIGEST"), "{err}");

    let conf = SystemConf::parse(
        "[system]\ncompatible=x\ndata-directory=/data/trellis/rauc\n\n[slot.rootfs.0]\ndevice=/dev/rootdisk0p5\nbootname=A\n\n[slot.boot.0]\ndevice=/dev/rootdisk0p2\n",
    );
    assert_eq!(conf.data_directory, Some(PathBuf::from("/data/trellis/rauc")));
    assert_eq!(
        conf.slots,
        vec![
            Slot { name: "rootfs.0".into(), class: "rootfs".into(), device: "/dev/rootdisk0p5".into() },
            Slot { name: "boot.0".into(), class: "boot".into(), device: "/dev/rootdisk0p2".into() },
        ]
    );
    assert_eq!(SystemConf::parse("[system]\ncompatible=x\n").data_directory, None);
}

/// Buildroot's `.config` for the root filesystem as our defconfigs make it (zstd,
/// the default 128K blocks, padded, no extreme compression; the device's squashfs
/// with zstd), with `edit` applied.
fn br_config(dir: &Path, edit: impl FnOnce(String) -> String) -> PathBuf {
    let text = "BR2_PACKAGE_SQUASHFS=y\nBR2_PACKAGE_SQUASHFS_GZIP=y\n# BR2_PACKAGE_SQUASHFS_XZ is not set\n\
        BR2_PACKAGE_SQUASHFS_ZSTD=y\nBR2_TARGET_ROOTFS_SQUASHFS=y\nBR2_TARGET_ROOTFS_SQUASHFS_BS_128K=y\n\
        BR2_TARGET_ROOTFS_SQUASHFS_BS=\"128K\"\nBR2_TARGET_ROOTFS_SQUASHFS_PAD=y\n\
        BR2_TARGET_ROOTFS_SQUASHFS4_ZSTD=y\n# BR2_TARGET_ROOTFS_SQUASHFS_EXTREME_COMP is not set\n";
    let path = dir.join(".config");
    fs::write(&path, edit(text.to_string())).unwrap();
    path
}

/// `scripts/br-squashfs.sh --delta BASE NEW OUT` with `config` as BR2_CONFIG.
fn br_delta(config: &Path, base: &Path, new: &Path, out: &Path) -> std::process::Output {
    br_squashfs(config, &[Path::new("--delta"), base, new, out])
}

fn br_squashfs(config: &Path, args: &[&Path]) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/br-squashfs.sh");
    std::process::Command::new(script)
        .args(args)
        .env("BR2_CONFIG", config)
        .env("TRELLIS_DELTA", env!("CARGO_BIN_EXE_trellis-delta"))
        .output()
        .unwrap()
}

#[test]
fn a_delta_between_images_buildroot_made_rebuilds_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let (bt, nt) = (dir.path().join("bt"), dir.path().join("nt"));
    base_tree(&bt);
    new_tree(&nt);
    // Buildroot packs under fakeroot: owners are the tree's, not all root.
    for t in [&bt, &nt] {
        std::os::unix::fs::chown(t.join("usr/bin/tool"), Some(1000), Some(1000)).unwrap();
    }
    // What fs/squashfs/squashfs.mk runs for our defconfigs: the base as a build without
    // BR2_REPRODUCIBLE (created now, the tree's times), the new one with it (Buildroot
    // exports SOURCE_DATE_EPOCH: the creation time, and later file times clamped to it).
    let (base, new) = (dir.path().join("base.squashfs"), dir.path().join("new.squashfs"));
    for (tree, image, epoch) in [(&bt, &base, None), (&nt, &new, Some("1700000000"))] {
        let mut cmd = std::process::Command::new("mksquashfs");
        cmd.arg(tree).arg(image).args([
            "-noappend",
            "-processors",
            "2",
            "-b",
            "128K",
            "-comp",
            "zstd",
            "-quiet",
            "-no-progress",
        ]);
        cmd.env_remove("SOURCE_DATE_EPOCH");
        if let Some(epoch) = epoch {
            cmd.env("SOURCE_DATE_EPOCH", epoch);
        }
        assert!(cmd.status().unwrap().success(), "mksquashfs {}", image.display());
    }

    let out = dir.path().join("rootfs.delta");
    let config = br_config(dir.path(), |c| c);
    let recipe = br_squashfs(&config, &[Path::new("--recipe")]);
    assert_eq!(String::from_utf8_lossy(&recipe.stdout), "-noappend\n-b\n128K\n-comp\nzstd\n");
    let made = br_delta(&config, &base, &new, &out);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let delta = Delta::open(&out).unwrap();
    let args = delta.header.recipe.args.join(" ");
    assert!(args.contains("-mkfs-time 1700000000") && args.contains("-b 128K -comp zstd"), "{args}");
    let again = dir.path().join("again.squashfs");
    squashfs::rebuild(&Tools::default(), &base, &delta, &work(dir.path(), "w"), &again).unwrap();
    assert_eq!(fs::read(&again).unwrap(), fs::read(&new).unwrap());

    // Settings a delta cannot follow are refused at build time, naming them, and nothing is kept.
    let unpadded = br_config(&work(dir.path(), "unpadded"), |c| {
        c.replace("BR2_TARGET_ROOTFS_SQUASHFS_PAD=y", "# BR2_TARGET_ROOTFS_SQUASHFS_PAD is not set")
    });
    let lz4 = br_config(&work(dir.path(), "lz4"), |c| {
        c.replace("SQUASHFS4_ZSTD=y", "SQUASHFS4_LZ4=y").replace(
            "# BR2_TARGET_ROOTFS_SQUASHFS_EXTREME_COMP is not set",
            "BR2_TARGET_ROOTFS_SQUASHFS_EXTREME_COMP=y",
        ) + "BR2_PACKAGE_SQUASHFS_LZ4=y\nBR2_TARGET_ROOTFS_SQUASHFS_COMP_OPTS=\"-Xhc\"\n"
    });
    // xz, which the device's mksquashfs could not pack.
    let xz = br_config(&work(dir.path(), "xz"), |c| c.replace("SQUASHFS4_ZSTD=y", "SQUASHFS4_XZ=y"));
    for (config, named) in
        [(unpadded, "BR2_TARGET_ROOTFS_SQUASHFS_PAD"), (lz4, "-Xhc"), (xz, "BR2_PACKAGE_SQUASHFS_XZ")]
    {
        fs::remove_file(&out).unwrap_or(());
        let refused = br_delta(&config, &base, &new, &out);
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success() && said.contains(named), "{named}: {said}");
        assert!(!out.exists(), "{named}: a delta was kept");
    }
}
