//! Comparing two trees ([`diff`]) and applying a delta to a tree ([`apply`]).
//!
//! Regular files, directories and symbolic links are carried; a changed file with
//! more than one link, and device nodes, pipes and sockets anywhere in what
//! changed, are refused by name (a root filesystem built for the device has none).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::Error;
use crate::format::{Content, Delta, Entry, Meta, Node, Payload};

/// What the walk keeps of a path.
#[derive(Clone, Debug)]
struct Stat {
    kind: Kind,
    meta: Meta,
    size: u64,
    nlink: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

fn stat(path: &Path) -> Result<Stat, Error> {
    let m = fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
    let ft = m.file_type();
    let kind = if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else {
        Kind::Other
    };
    let meta = Meta { mode: m.mode() & 0o7777, uid: m.uid(), gid: m.gid(), mtime: m.mtime() };
    Ok(Stat { kind, meta, size: m.len(), nlink: m.nlink() })
}

/// Every path under `root` (relative, `/`-separated; "" is the root), sorted.
fn walk(root: &Path) -> Result<BTreeMap<String, Stat>, Error> {
    let mut out = BTreeMap::new();
    out.insert(String::new(), stat(root)?);
    let mut dirs = vec![String::new()];
    while let Some(rel) = dirs.pop() {
        let dir = join(root, &rel);
        for item in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let item = item.map_err(|e| Error::io(&dir, e))?;
            let name = item.file_name();
            let name = name.to_str().ok_or_else(|| Error::Unsupported {
                path: item.path(),
                reason: "a file name that is not UTF-8".into(),
            })?;
            let child = if rel.is_empty() { name.to_string() } else { format!("{rel}/{name}") };
            let s = stat(&item.path())?;
            if s.kind == Kind::Dir {
                dirs.push(child.clone());
            }
            out.insert(child, s);
        }
    }
    Ok(out)
}

fn join(root: &Path, rel: &str) -> PathBuf {
    if rel.is_empty() { root.to_path_buf() } else { root.join(rel) }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    fs::read(path).map_err(|e| Error::io(path, e))
}

fn link_target(path: &Path) -> Result<String, Error> {
    let t = fs::read_link(path).map_err(|e| Error::io(path, e))?;
    t.into_os_string()
        .into_string()
        .map_err(|_| Error::Unsupported { path: path.to_path_buf(), reason: "a link target that is not UTF-8".into() })
}

/// What [`diff`] found, beside the entries.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DiffStats {
    /// Files whose bytes changed, sent as patches.
    pub patched: usize,
    /// Files sent whole (new, or a patch would be larger).
    pub whole: usize,
    /// Files taken from another path of the base tree.
    pub moved: usize,
    /// Paths that changed only their metadata.
    pub meta_only: usize,
}

/// The entries and removals that turn tree `base` into tree `new`, blobs into
/// `payload`.
pub fn diff(base: &Path, new: &Path, payload: &mut Payload) -> Result<(Vec<String>, Vec<Entry>, DiffStats), Error> {
    let old = walk(base)?;
    let now = walk(new)?;
    let mut stats = DiffStats::default();
    for (tree, map) in [(base, &old), (new, &now)] {
        if let Some((p, _)) = map.iter().find(|(_, s)| s.kind == Kind::Other) {
            return Err(Error::Unsupported {
                path: join(tree, p),
                reason: "a device node, pipe or socket (deltas carry files, directories and links)".into(),
            });
        }
    }
    // Base files by content, for a file that moved.
    let mut by_hash: Option<HashMap<String, String>> = None;
    let mut removed: Vec<String> =
        old.iter().filter(|(p, s)| now.get(*p).is_none_or(|n| n.kind != s.kind)).map(|(p, _)| p.clone()).collect();
    removed.sort_by(|a, b| b.cmp(a));
    let mut entries = Vec::new();
    for (path, s) in &now {
        let before = old.get(path).filter(|b| b.kind == s.kind);
        let same_meta = before.is_some_and(|b| b.meta == s.meta);
        let node = match s.kind {
            Kind::Dir => Node::Dir,
            Kind::Symlink => {
                let target = link_target(&join(new, path))?;
                if same_meta && link_target(&join(base, path))? == target {
                    continue;
                }
                Node::Symlink { target }
            }
            Kind::File => {
                let data = read(&join(new, path))?;
                let sha256 = crate::sha256_hex(&data);
                let old_data = before.map(|_| read(&join(base, path))).transpose()?;
                if old_data.as_deref() == Some(&data[..]) {
                    if same_meta {
                        continue;
                    }
                    refuse_links(base, new, path, before, s)?;
                    stats.meta_only += 1;
                    Node::File { sha256, size: s.size, content: Content::Base { path: path.clone() } }
                } else {
                    refuse_links(base, new, path, before, s)?;
                    let index = by_hash.get_or_insert_with(|| hash_files(base, &old));
                    let content = if let Some(from) = index.get(&sha256) {
                        stats.moved += 1;
                        Content::Base { path: from.clone() }
                    } else {
                        let whole = Payload::compressed_len(&data);
                        let patch = old_data.as_ref().map(|o| {
                            let mut p = Vec::new();
                            bsdiff::diff(o, &data, &mut p).expect("bsdiff into memory");
                            p
                        });
                        match patch {
                            Some(p) if Payload::compressed_len(&p) < whole => {
                                stats.patched += 1;
                                let (at, len) = payload.push(&p);
                                Content::Patch { path: path.clone(), at, len }
                            }
                            _ => {
                                stats.whole += 1;
                                let (at, len) = payload.push(&data);
                                Content::Data { at, len }
                            }
                        }
                    };
                    Node::File { sha256, size: s.size, content }
                }
            }
            Kind::Other => unreachable!("refused above"),
        };
        entries.push(Entry { path: path.clone(), node, meta: s.meta });
    }
    Ok((removed, entries, stats))
}

/// A changed file with more than one link in either tree is refused: applying
/// writes a new file, which would part it from its other names.
fn refuse_links(base: &Path, new: &Path, path: &str, before: Option<&Stat>, now: &Stat) -> Result<(), Error> {
    for (tree, st) in [(new, Some(now)), (base, before)] {
        if let Some(st) = st
            && st.nlink > 1
        {
            return Err(Error::Unsupported {
                path: join(tree, path),
                reason: format!("a changed file with {} hard links", st.nlink),
            });
        }
    }
    Ok(())
}

/// SHA-256 of every regular file of a tree (files that cannot be read are left out).
fn hash_files(root: &Path, map: &BTreeMap<String, Stat>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (p, s) in map {
        if s.kind == Kind::File
            && let Ok(data) = fs::read(join(root, p))
        {
            out.entry(crate::sha256_hex(&data)).or_insert_with(|| p.clone());
        }
    }
    out
}

/// A path of the delta as a path under `root`: relative, plain components only,
/// and no existing ancestor that is anything but a directory (a link there would
/// lead the write out of the tree).
fn under(root: &Path, rel: &str) -> Result<PathBuf, Error> {
    if rel.is_empty() {
        return Ok(root.to_path_buf());
    }
    let parts: Vec<&str> = rel.split('/').collect();
    if parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
        return Err(Error::entry(rel, "not a plain relative path"));
    }
    let mut at = root.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        if i + 1 < parts.len() {
            match fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(Error::entry(rel, format!("{} is not a directory", at.display()))),
                Err(e) => return Err(Error::io(&at, e)),
            }
        }
    }
    Ok(at)
}

fn remove(path: &Path) -> Result<(), Error> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(|e| Error::io(path, e)),
        Ok(_) => fs::remove_file(path).map_err(|e| Error::io(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn set_meta(path: &Path, meta: &Meta, is_link: bool) -> Result<(), Error> {
    let current = fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
    if current.uid() != meta.uid || current.gid() != meta.gid {
        std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid)).map_err(|e| Error::io(path, e))?;
    }
    if !is_link {
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode)).map_err(|e| Error::io(path, e))?;
    }
    let t = rustix::fs::Timespec { tv_sec: meta.mtime, tv_nsec: 0 };
    let times = rustix::fs::Timestamps { last_access: t, last_modification: t };
    rustix::fs::utimensat(rustix::fs::CWD, path, &times, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| Error::io(path, e.into()))
}

/// Applies `delta` to the tree at `root` (a copy of the base tree): every file's
/// new content is made and checked against its SHA-256 before anything in the tree
/// changes, then the removals, the entries in order, and last the directories'
/// metadata, deepest first.
pub fn apply(root: &Path, delta: &Delta) -> Result<(), Error> {
    let header = &delta.header;
    let mut contents: HashMap<&str, Vec<u8>> = HashMap::new();
    let blob = |entry: &Entry, at: u64, len: u64, limit: u64| {
        delta.blob(at, len, limit).map_err(|e| Error::entry(&entry.path, e.to_string()))
    };
    for entry in &header.entries {
        let Node::File { sha256, size, content } = &entry.node else { continue };
        let data = match content {
            Content::Base { path } => read_file(root, path)?,
            Content::Data { at, len } => blob(entry, *at, *len, *size)?,
            Content::Patch { path, at, len } => {
                let old = read_file(root, path)?;
                let patch =
                    blob(entry, *at, *len, size.saturating_mul(4).saturating_add(old.len() as u64 + (1 << 20)))?;
                let mut out = Vec::with_capacity(*size as usize);
                bsdiff::patch(&old, &mut &patch[..], &mut out)
                    .map_err(|e| Error::entry(&entry.path, format!("the patch of {path} does not apply: {e}")))?;
                out
            }
        };
        if data.len() as u64 != *size || crate::sha256_hex(&data) != *sha256 {
            return Err(Error::entry(
                &entry.path,
                format!(
                    "made {} bytes with SHA-256 {}, not {size} bytes with {sha256}",
                    data.len(),
                    crate::sha256_hex(&data)
                ),
            ));
        }
        contents.insert(&entry.path, data);
    }
    for path in &header.removed {
        if path.is_empty() {
            return Err(Error::entry(path, "the root cannot be removed"));
        }
        remove(&under(root, path)?)?;
    }
    let mut dirs = Vec::new();
    for entry in &header.entries {
        let at = under(root, &entry.path)?;
        match &entry.node {
            Node::Dir => {
                match fs::symlink_metadata(&at) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove(&at)?;
                        fs::create_dir(&at).map_err(|e| Error::io(&at, e))?;
                    }
                    Err(_) => fs::create_dir(&at).map_err(|e| Error::io(&at, e))?,
                }
                dirs.push(entry);
            }
            Node::Symlink { target } => {
                remove(&at)?;
                std::os::unix::fs::symlink(target, &at).map_err(|e| Error::io(&at, e))?;
                set_meta(&at, &entry.meta, true)?;
            }
            Node::File { .. } => {
                let data = contents.remove(entry.path.as_str()).expect("made above");
                if fs::symlink_metadata(&at).is_ok_and(|m| !m.is_file()) {
                    remove(&at)?;
                }
                fs::write(&at, &data).map_err(|e| Error::io(&at, e))?;
                set_meta(&at, &entry.meta, false)?;
            }
        }
    }
    dirs.sort_by(|a, b| b.path.cmp(&a.path));
    for entry in dirs {
        let at = under(root, &entry.path)?;
        if !fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir()) {
            return Err(Error::entry(&entry.path, "is no longer a directory"));
        }
        set_meta(&at, &entry.meta, false)?;
    }
    Ok(())
}

/// The bytes of the base tree's regular file at `rel` (a link there is refused:
/// it could lead out of the tree).
fn read_file(root: &Path, rel: &str) -> Result<Vec<u8>, Error> {
    let at = under(root, rel)?;
    match fs::symlink_metadata(&at) {
        Ok(m) if m.is_file() => read(&at),
        Ok(_) => Err(Error::entry(rel, "the base's file to take is not a regular file")),
        Err(e) => Err(Error::io(&at, e)),
    }
}
