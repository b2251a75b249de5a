//! The bundle's slot hook before RAUC writes the root filesystem
//! (`[image.rootfs] hooks=pre-install`, the bundle's `hook.sh`:
//! `trellis-delta rauc-slot-pre-install`).
//!
//! RAUC runs it once it has checked the bundle (signature, compatible, version),
//! marked the target slot non-bootable and its status pending, and before it
//! writes the slot; for a streamed bundle, through the network block device, so
//! only what is read is fetched. When the bundle has a delta (a `*.delta` file at
//! its root) whose new image is the one RAUC is about to write, and another slot
//! of the class holds the delta's base, the hook rebuilds the image into the
//! target slot and removes the slot's stored block hash index, so RAUC's adaptive
//! install hashes the slot afresh, finds the image's blocks there and fetches
//! none of them. Whatever happens, the install goes on (the hook's caller never
//! fails it): RAUC checks every block it takes from a slot against the bundle's
//! signed hash index and fetches the ones that differ.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::Error;
use crate::format::Delta;
use crate::squashfs::{self, Tools};

/// A slot of RAUC's `system.conf`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub name: String,
    pub class: String,
    pub device: PathBuf,
}

/// What RAUC tells the slot hook: the bundle's mount point, the slot it is about
/// to write and the image it writes there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookEnv {
    pub bundle: PathBuf,
    pub slot: Slot,
    pub image: String,
    /// The image's SHA-256 from the bundle's manifest.
    pub digest: String,
}

impl HookEnv {
    /// From RAUC's slot hook variables (`RAUC_BUNDLE_MOUNT_POINT`,
    /// `RAUC_SLOT_{NAME,CLASS,DEVICE}`, `RAUC_IMAGE_{NAME,DIGEST}`), read through
    /// `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<HookEnv, Error> {
        let need =
            |name: &str| var(name).filter(|v| !v.is_empty()).ok_or_else(|| Error::Env(format!("{name} is not set")));
        Ok(HookEnv {
            bundle: PathBuf::from(need("RAUC_BUNDLE_MOUNT_POINT")?),
            slot: Slot {
                name: need("RAUC_SLOT_NAME")?,
                class: need("RAUC_SLOT_CLASS")?,
                device: PathBuf::from(need("RAUC_SLOT_DEVICE")?),
            },
            image: need("RAUC_IMAGE_NAME")?,
            digest: need("RAUC_IMAGE_DIGEST")?,
        })
    }
}

/// What the hook needs of `system.conf`: every slot, and `[system]`'s
/// `data-directory`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SystemConf {
    pub slots: Vec<Slot>,
    pub data_directory: Option<PathBuf>,
}

impl SystemConf {
    /// From the text of `system.conf` (an INI file; `[slot.CLASS.N]` sections
    /// with `device=`).
    pub fn parse(text: &str) -> SystemConf {
        let mut conf = SystemConf::default();
        let mut section = String::new();
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_string();
                continue;
            }
            let Some((key, value)) = line.split_once('=') else { continue };
            let (key, value) = (key.trim(), value.trim());
            if section == "system" && key == "data-directory" {
                conf.data_directory = Some(PathBuf::from(value));
            } else if key == "device"
                && let Some(name) = section.strip_prefix("slot.")
                && let Some((class, _)) = name.rsplit_once('.')
            {
                conf.slots.push(Slot {
                    name: name.to_string(),
                    class: class.to_string(),
                    device: PathBuf::from(value),
                });
            }
        }
        conf
    }
}

/// What the hook did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The bundle has no delta to this image.
    NoDelta { slot: String },
    /// No other slot of the class holds the delta's base.
    NoBase { slot: String, delta: PathBuf },
    /// The image was rebuilt into the slot from another; `identical` when it is
    /// the bundle's image bit for bit.
    Rebuilt { slot: String, from: String, delta: PathBuf, identical: bool, millis: u128 },
}

/// The deltas at the bundle's root whose new image has SHA-256 `digest`.
fn deltas_to(bundle: &Path, digest: &str) -> Result<Vec<Delta>, Error> {
    let mut out = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(bundle)
        .map_err(|e| Error::io(bundle, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "delta"))
        .collect();
    names.sort();
    for path in names {
        match Delta::open(&path) {
            Ok(d) if d.header.image.sha256 == digest => out.push(d),
            Ok(_) => {}
            Err(e) => tracing::warn!("{e}"),
        }
    }
    Ok(out)
}

/// Removes the stored block hash indexes of slot `name` under RAUC's data
/// directory (`slot.NAME/hash-*/block-hash-index`); returns how many.
pub fn remove_stored_indexes(data_dir: &Path, name: &str) -> Result<usize, Error> {
    let dir = data_dir.join(format!("slot.{name}"));
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let mut removed = 0;
    for e in entries.filter_map(Result::ok) {
        let index = e.path().join("block-hash-index");
        match std::fs::remove_file(&index) {
            Ok(()) => removed += 1,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(Error::io(&index, err)),
        }
    }
    Ok(removed)
}

/// Whether the block device (or file) `device` is mounted, from the text of
/// `/proc/self/mountinfo` (its major:minor, or its path for a file).
fn mounted(device: &Path, mountinfo: &str) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(meta) = std::fs::metadata(device) else { return false };
    if !meta.file_type().is_block_device() {
        return false;
    }
    let rdev = meta.rdev();
    let id = format!("{}:{}", rustix::fs::major(rdev), rustix::fs::minor(rdev));
    mountinfo.lines().any(|l| l.split_whitespace().nth(2) == Some(id.as_str()))
}

/// Runs the hook (see the module's documentation). `work` is scratch space on a
/// file system with room for the unpacked tree (removed at the end), `mountinfo`
/// the text of `/proc/self/mountinfo`.
pub fn slot_pre_install(
    env: &HookEnv,
    conf: &SystemConf,
    tools: &Tools,
    work: &Path,
    mountinfo: &str,
) -> Result<Outcome, Error> {
    let result = rebuild_slot(env, conf, tools, work, mountinfo);
    let _ = std::fs::remove_dir_all(work);
    result
}

fn rebuild_slot(
    env: &HookEnv,
    conf: &SystemConf,
    tools: &Tools,
    work: &Path,
    mountinfo: &str,
) -> Result<Outcome, Error> {
    let slot = env.slot.name.clone();
    let deltas = deltas_to(&env.bundle, &env.digest)?;
    if deltas.is_empty() {
        return Ok(Outcome::NoDelta { slot });
    }
    // The device node itself, not a link to it (init's stable names are links):
    // mksquashfs writes into a block device, but would replace a link by a file.
    let target = std::fs::canonicalize(&env.slot.device).map_err(|e| Error::io(&env.slot.device, e))?;
    if mounted(&target, mountinfo) {
        return Err(Error::Unsupported { path: target, reason: "the target slot is mounted".into() });
    }
    let others: Vec<&Slot> = conf
        .slots
        .iter()
        .filter(|s| {
            s.class == env.slot.class
                && s.name != env.slot.name
                && std::fs::canonicalize(&s.device).is_ok_and(|d| d != target)
        })
        .collect();
    // The first delta whose base another slot holds.
    let mut found = None;
    'deltas: for delta in &deltas {
        for other in &others {
            match crate::sha256_prefix(&other.device, delta.header.base.size) {
                Ok(sha) if sha == delta.header.base.sha256 => {
                    found = Some((delta, *other));
                    break 'deltas;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }
    let Some((delta, base)) = found else {
        return Ok(Outcome::NoBase { slot, delta: deltas[0].path().to_path_buf() });
    };
    tracing::info!(
        "rebuilding {} ({}) in slot {slot} from slot {} and {}",
        env.image,
        env.digest,
        base.name,
        delta.path().display()
    );
    // The slot's stored index describes what it holds now; from here on it will not.
    if let Some(dir) = &conf.data_directory {
        remove_stored_indexes(dir, &env.slot.name)?;
    }
    std::fs::create_dir_all(work).map_err(|e| Error::io(work, e))?;
    let started = Instant::now();
    let got = squashfs::rebuild(tools, &base.device, delta, work, &target)?;
    Ok(Outcome::Rebuilt {
        slot,
        from: base.name.clone(),
        delta: delta.path().to_path_buf(),
        identical: got == delta.header.image,
        millis: started.elapsed().as_millis(),
    })
}
