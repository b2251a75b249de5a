//! RAUC's pre-install handler (`[handlers] pre-install=` in `system.conf`).
//!
//! RAUC runs it after it has checked and mounted the bundle (for a streamed
//! bundle: through the network block device, so only what is read is fetched)
//! and before it writes any slot. For each target slot whose image has a delta in
//! the bundle (a `*.delta` file at the bundle's root whose new image is the one
//! RAUC is about to install), and another slot of the same class holding the
//! delta's base, the handler rebuilds the image into the target slot and removes
//! the slot's stored block hash index, so RAUC's adaptive install hashes the slot
//! afresh, finds the image's blocks there and fetches none of them. Whatever
//! happens, the install goes on: RAUC checks every block it takes from a slot
//! against the bundle's signed hash index and fetches the ones that differ.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::Error;
use crate::format::Delta;
use crate::squashfs::{self, Tools};

/// A slot as RAUC's handler environment describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub name: String,
    pub class: String,
    pub device: PathBuf,
}

/// A slot RAUC is about to write, and the image it writes there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub slot: Slot,
    pub image: String,
    /// The image's SHA-256 from the bundle's manifest.
    pub digest: String,
}

/// What RAUC tells a handler: the bundle's mount point, every slot, the targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerEnv {
    pub bundle: PathBuf,
    pub slots: Vec<Slot>,
    pub targets: Vec<Target>,
}

impl HandlerEnv {
    /// From RAUC's variables (`RAUC_BUNDLE_MOUNT_POINT`, `RAUC_SLOTS`,
    /// `RAUC_TARGET_SLOTS`, `RAUC_SLOT_{NAME,CLASS,DEVICE}_N`,
    /// `RAUC_IMAGE_{NAME,DIGEST}_N`), read through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<HandlerEnv, Error> {
        let need = |name: &str| var(name).ok_or_else(|| Error::Env(format!("{name} is not set")));
        let bundle = PathBuf::from(need("RAUC_BUNDLE_MOUNT_POINT")?);
        let slot = |n: &str| -> Result<Slot, Error> {
            Ok(Slot {
                name: need(&format!("RAUC_SLOT_NAME_{n}"))?,
                class: need(&format!("RAUC_SLOT_CLASS_{n}"))?,
                device: PathBuf::from(need(&format!("RAUC_SLOT_DEVICE_{n}"))?),
            })
        };
        let slots = need("RAUC_SLOTS")?.split_whitespace().map(slot).collect::<Result<Vec<_>, _>>()?;
        let mut targets = Vec::new();
        for n in need("RAUC_TARGET_SLOTS")?.split_whitespace() {
            // A target slot of a class the bundle has no image for has no name.
            let (Some(image), Some(digest)) =
                (var(&format!("RAUC_IMAGE_NAME_{n}")), var(&format!("RAUC_IMAGE_DIGEST_{n}")))
            else {
                continue;
            };
            if image.is_empty() || digest.is_empty() {
                continue;
            }
            targets.push(Target { slot: slot(n)?, image, digest });
        }
        Ok(HandlerEnv { bundle, slots, targets })
    }
}

/// `data-directory` of RAUC's `[system]` section, from the text of `system.conf`.
pub fn data_directory(system_conf: &str) -> Option<PathBuf> {
    let mut in_system = false;
    for line in system_conf.lines().map(str::trim) {
        if line.starts_with('[') {
            in_system = line == "[system]";
        } else if in_system
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == "data-directory"
        {
            return Some(PathBuf::from(v.trim()));
        }
    }
    None
}

/// What the handler did for one target slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The bundle has no delta to this target's image.
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

/// Runs the handler for every target: rebuilds what it can (see the module's
/// documentation). `data_dir` is RAUC's data directory, `work` scratch space on a
/// file system with room for the unpacked tree (it is removed at the end).
pub fn pre_install(
    env: &HandlerEnv,
    data_dir: Option<&Path>,
    tools: &Tools,
    work: &Path,
) -> Vec<Result<Outcome, Error>> {
    let mut out = Vec::new();
    for target in &env.targets {
        out.push(one(env, target, data_dir, tools, work));
    }
    let _ = std::fs::remove_dir_all(work);
    out
}

fn one(
    env: &HandlerEnv,
    target: &Target,
    data_dir: Option<&Path>,
    tools: &Tools,
    work: &Path,
) -> Result<Outcome, Error> {
    let slot = target.slot.name.clone();
    let deltas = deltas_to(&env.bundle, &target.digest)?;
    if deltas.is_empty() {
        return Ok(Outcome::NoDelta { slot });
    }
    let others: Vec<&Slot> =
        env.slots.iter().filter(|s| s.class == target.slot.class && s.device != target.slot.device).collect();
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
        target.image,
        target.digest,
        base.name,
        delta.path().display()
    );
    // The slot's stored index describes what it holds now; from here on it will not.
    if let Some(dir) = data_dir {
        remove_stored_indexes(dir, &target.slot.name)?;
    }
    std::fs::create_dir_all(work).map_err(|e| Error::io(work, e))?;
    // The device node itself, not a link to it (init's stable names are links):
    // mksquashfs writes into a block device, but would replace a link by a file.
    let device = std::fs::canonicalize(&target.slot.device).map_err(|e| Error::io(&target.slot.device, e))?;
    let started = Instant::now();
    let got = squashfs::rebuild(tools, &base.device, delta, work, &device)?;
    Ok(Outcome::Rebuilt {
        slot,
        from: base.name.clone(),
        delta: delta.path().to_path_buf(),
        identical: got == delta.header.image,
        millis: started.elapsed().as_millis(),
    })
}
