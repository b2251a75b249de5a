//! Images in and out of trees with squashfs-tools, making a delta ([`make`]) and
//! rebuilding an image from its base and a delta ([`rebuild`]).
//!
//! The rebuild runs the same `mksquashfs` (version and options) that packed the
//! new image: on the build machine to check the delta before it is shipped, on the
//! device in the bundle's slot hook. squashfs-tools packs a tree to the same
//! bytes whatever the machine (amd64 and aarch64 give the same image), given the
//! same options, times (`SOURCE_DATE_EPOCH`) and sort file.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;
use crate::format::{Delta, Header, ImageId, Payload, Recipe};
use crate::tree::{self, DiffStats};

/// Where `unsquashfs` and `mksquashfs` are.
#[derive(Clone, Debug)]
pub struct Tools {
    pub unsquashfs: PathBuf,
    pub mksquashfs: PathBuf,
}

impl Default for Tools {
    /// The ones on `PATH`.
    fn default() -> Self {
        Tools { unsquashfs: "unsquashfs".into(), mksquashfs: "mksquashfs".into() }
    }
}

fn run(mut cmd: Command, tool: &Path, what: &str) -> Result<(), Error> {
    let out = cmd.output().map_err(|e| Error::Tool {
        tool: tool.display().to_string(),
        what: what.to_string(),
        reason: format!("cannot run it: {e}"),
    })?;
    if out.status.success() {
        return Ok(());
    }
    let mut said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if said.is_empty() {
        said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    Err(Error::Tool {
        tool: tool.display().to_string(),
        what: what.to_string(),
        reason: format!("{}: {said}", out.status),
    })
}

/// Unpacks the squashfs image (file or block device) `image` into `dest`, which
/// must not exist.
pub fn unpack(tools: &Tools, image: &Path, dest: &Path) -> Result<(), Error> {
    let mut cmd = Command::new(&tools.unsquashfs);
    cmd.args(["-q", "-no-progress", "-d"]).arg(dest).arg(image);
    run(cmd, &tools.unsquashfs, &format!("of {}", image.display()))
}

/// Packs `tree` into `out` (a file, or a block device written from its start) the
/// way `recipe` says. The sort file, if any, is written to `sort_file` first.
pub fn pack(tools: &Tools, tree: &Path, out: &Path, recipe: &Recipe, sort_file: &Path) -> Result<(), Error> {
    let mut cmd = Command::new(&tools.mksquashfs);
    cmd.arg(tree).arg(out).args(&recipe.args);
    cmd.env_remove("SOURCE_DATE_EPOCH");
    cmd.envs(&recipe.env);
    if let Some(sort) = &recipe.sort {
        std::fs::write(sort_file, sort).map_err(|e| Error::io(sort_file, e))?;
        cmd.arg("-sort").arg(sort_file);
    }
    run(cmd, &tools.mksquashfs, &format!("of {} into {}", tree.display(), out.display()))
}

/// The id of the squashfs image at `path`: the SHA-256 and size of the file, or for
/// a block device holding an image, of the bytes its superblock says it uses
/// (rounded up to 4 KiB, as mksquashfs pads it).
pub fn image_id(path: &Path) -> Result<ImageId, Error> {
    let mut sb = [0u8; 96];
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        return Ok(ImageId { sha256: crate::sha256_prefix(path, meta.len())?, size: meta.len() });
    }
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut sb, 0).map_err(|e| Error::io(path, e))?;
    if &sb[..4] != b"hsqs" {
        return Err(Error::Unsupported { path: path.to_path_buf(), reason: "no squashfs superblock".into() });
    }
    let used = u64::from_le_bytes(sb[40..48].try_into().expect("8 bytes"));
    let size = used.div_ceil(4096) * 4096;
    Ok(ImageId { sha256: crate::sha256_prefix(path, size)?, size })
}

/// What [`make`] made.
#[derive(Debug)]
pub struct Made {
    pub header: Header,
    pub stats: DiffStats,
    /// The delta file's size in bytes.
    pub bytes: u64,
}

/// Makes the delta that turns image `base` into image `new`, packed by `recipe`,
/// at `out`; `work` is an empty directory for the trees. Before it returns, the
/// delta is checked: `base` with the delta applied, packed by the recipe, must be
/// `new` bit for bit.
pub fn make(tools: &Tools, base: &Path, new: &Path, recipe: &Recipe, work: &Path, out: &Path) -> Result<Made, Error> {
    let base_id = image_id(base)?;
    let new_id = image_id(new)?;
    let (base_tree, new_tree) = (work.join("base"), work.join("new"));
    unpack(tools, base, &base_tree)?;
    unpack(tools, new, &new_tree)?;
    recipe.check().map_err(|reason| Error::Format { path: out.to_path_buf(), reason: format!("recipe: {reason}") })?;
    let mut payload = Payload::default();
    let (removed, entries, stats) = tree::diff(&base_tree, &new_tree, &mut payload)?;
    let header = Header { base: base_id, image: new_id, recipe: recipe.clone(), removed, entries };
    payload.write(&header, out)?;
    // From here on a delta that was not checked is not kept.
    let checked = (|| {
        for t in [&base_tree, &new_tree] {
            std::fs::remove_dir_all(t).map_err(|e| Error::io(t, e))?;
        }
        let check = work.join("check.squashfs");
        let got = rebuild(tools, base, &Delta::open(out)?, work, &check)?;
        std::fs::remove_file(&check).map_err(|e| Error::io(&check, e))?;
        Ok(got)
    })();
    let got = match checked {
        Ok(got) => got,
        Err(e) => {
            let _ = std::fs::remove_file(out);
            return Err(e);
        }
    };
    if got != header.image {
        std::fs::remove_file(out).map_err(|e| Error::io(out, e))?;
        return Err(Error::NotReproduced {
            want: header.image.sha256,
            want_size: header.image.size,
            got: got.sha256,
            got_size: got.size,
            hint: "the recipe is not the one that packed the new image (mksquashfs's options, SOURCE_DATE_EPOCH, sort file)",
        });
    }
    let bytes = std::fs::metadata(out).map_err(|e| Error::io(out, e))?.len();
    Ok(Made { header, stats, bytes })
}

/// Rebuilds the delta's image from `base` (a file or block device holding the
/// delta's base image, checked first) into `out` (a file or a block device), with
/// `work` as scratch space (emptied). Returns the id of what was written; the
/// caller compares it with `delta.header.image`.
pub fn rebuild(tools: &Tools, base: &Path, delta: &Delta, work: &Path, out: &Path) -> Result<ImageId, Error> {
    let want = &delta.header.base;
    let got = crate::sha256_prefix(base, want.size)?;
    if got != want.sha256 {
        return Err(Error::WrongBase { path: base.to_path_buf(), want: want.sha256.clone(), got });
    }
    let root = work.join("tree");
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(|e| Error::io(&root, e))?;
    }
    unpack(tools, base, &root)?;
    let result = tree::apply(&root, delta)
        .and_then(|()| pack(tools, &root, out, &delta.header.recipe, &work.join("sort")))
        .and_then(|()| {
            // On the disk before anyone relies on it (RAUC syncs the slot too).
            std::fs::OpenOptions::new()
                .write(true)
                .open(out)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(out, e))?;
            // What mksquashfs wrote: for a block device, the image's size from
            // the delta (the device is larger).
            let size = delta.header.image.size;
            Ok(ImageId { sha256: crate::sha256_prefix(out, size)?, size })
        });
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_file(work.join("sort"));
    result
}
