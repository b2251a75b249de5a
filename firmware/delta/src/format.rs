//! The delta file.
//!
//! ```text
//! "TRDELTA1"            8 bytes
//! header length         u32, little endian
//! header                JSON (`Header`)
//! payload               zstd frames the header's entries point into (`at`, `len`)
//! ```
//!
//! The header is read alone ([`Delta::open`]); a blob of the payload is read only
//! when an entry needs it, so a device streaming the delta out of a bundle fetches
//! the header and the blobs it applies, nothing else.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

pub const MAGIC: &[u8; 8] = b"TRDELTA1";
/// A header larger than this is refused (a tree of a few thousand entries is tens
/// of KiB).
pub const MAX_HEADER: u32 = 16 << 20;
/// zstd level of the payload's blobs (made once on the build machine).
pub const LEVEL: i32 = 19;

/// An image by content: its SHA-256 and size in bytes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ImageId {
    pub sha256: String,
    pub size: u64,
}

/// How the new image was packed from its tree: mksquashfs's options (without the
/// source and destination), the environment it ran in (SOURCE_DATE_EPOCH), and the
/// content of its `-sort` file, if any.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Recipe {
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub sort: Option<String>,
}

/// mksquashfs options a recipe may hold without a value, and with one (and what
/// the value may be). Nothing else: the recipe runs as root on the device, and
/// mksquashfs would take a stray path for a source, or run a pseudo file's command.
const RECIPE_FLAGS: &[&str] = &[
    "-noappend",
    "-all-root",
    "-quiet",
    "-no-progress",
    "-nopad",
    "-no-xattrs",
    "-xattrs",
    "-no-fragments",
    "-always-use-fragments",
    "-no-duplicates",
    "-exports",
    "-no-exports",
    "-no-sparse",
];
const RECIPE_OPTIONS: &[&str] = &["-comp", "-b", "-mkfs-time", "-all-time", "-processors", "-Xcompression-level"];
const COMPRESSORS: &[&str] = &["gzip", "lzo", "lz4", "xz", "zstd", "lzma"];

impl Recipe {
    /// Refuses a recipe with an option not in the lists above, a value that is
    /// not a compressor's name or a number (a block size may end in K or M), an
    /// environment variable other than `SOURCE_DATE_EPOCH` (a number), or no
    /// `-noappend` (a slot holding an image would be appended to).
    pub fn check(&self) -> Result<(), String> {
        let number = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
        let mut args = self.args.iter();
        let mut noappend = false;
        while let Some(a) = args.next() {
            if RECIPE_FLAGS.contains(&a.as_str()) {
                noappend |= a == "-noappend";
                continue;
            }
            if !RECIPE_OPTIONS.contains(&a.as_str()) {
                return Err(format!("mksquashfs option {a:?} is not one a recipe may hold"));
            }
            let v = args.next().ok_or_else(|| format!("mksquashfs option {a} has no value"))?;
            let ok = match a.as_str() {
                "-comp" => COMPRESSORS.contains(&v.as_str()),
                "-b" => number(v.trim_end_matches(['K', 'M', 'k', 'm'])),
                _ => number(v),
            };
            if !ok {
                return Err(format!("mksquashfs option {a} {v:?}: not a valid value"));
            }
        }
        if !noappend {
            return Err("the recipe has no -noappend".into());
        }
        for (k, v) in &self.env {
            if k != "SOURCE_DATE_EPOCH" || !number(v) {
                return Err(format!("environment {k}={v:?}: only SOURCE_DATE_EPOCH, a number"));
            }
        }
        Ok(())
    }
}

/// A file of a delta larger than this is refused (it is held in memory).
pub const MAX_FILE: u64 = 1 << 30;

/// What a tree entry carries besides its content: permission bits, owner, time.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
}

/// Where a file's new content comes from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "from", rename_all = "kebab-case")]
pub enum Content {
    /// The bytes of a file of the base tree (the same path when only the metadata
    /// changed, another when a file was moved or copied).
    Base { path: String },
    /// A bsdiff patch (zstd-compressed, in the payload) of a file of the base tree.
    Patch { path: String, at: u64, len: u64 },
    /// The whole content (zstd-compressed, in the payload).
    Data { at: u64, len: u64 },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Node {
    Dir,
    Symlink {
        target: String,
    },
    /// A regular file: its content's SHA-256 and size, checked when it is made.
    File {
        sha256: String,
        size: u64,
        content: Content,
    },
}

/// One path of the new tree that differs from the base tree, or a directory (every
/// directory is listed, so its time is set after what changed in it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the tree's root, `/`-separated; "" is the root itself.
    pub path: String,
    #[serde(flatten)]
    pub node: Node,
    pub meta: Meta,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The image the delta applies to.
    pub base: ImageId,
    /// The image it rebuilds.
    pub image: ImageId,
    pub recipe: Recipe,
    /// Paths of the base tree the new one does not have (or has as another kind),
    /// children before their directory.
    pub removed: Vec<String>,
    /// Paths in the order they are made: a directory before what is in it.
    pub entries: Vec<Entry>,
}

impl Header {
    /// Bytes of the payload the entries use.
    pub fn payload_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match &e.node {
                Node::File { content: Content::Patch { len, .. } | Content::Data { len, .. }, .. } => *len,
                _ => 0,
            })
            .sum()
    }
}

/// A delta file being written: the payload grows as entries are made.
#[derive(Default, Debug)]
pub struct Payload {
    bytes: Vec<u8>,
}

impl Payload {
    /// Compresses `data` into the payload; returns where it is (`at`, `len`).
    pub fn push(&mut self, data: &[u8]) -> (u64, u64) {
        let frame = zstd::bulk::compress(data, LEVEL).expect("zstd compresses into memory");
        let at = self.bytes.len() as u64;
        self.bytes.extend_from_slice(&frame);
        (at, frame.len() as u64)
    }

    /// The compressed size `data` would take, without keeping it.
    pub fn compressed_len(data: &[u8]) -> u64 {
        zstd::bulk::compress(data, LEVEL).map(|f| f.len() as u64).unwrap_or(u64::MAX)
    }

    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Writes the delta file: magic, header, payload.
    pub fn write(&self, header: &Header, path: &Path) -> Result<(), Error> {
        let json = serde_json::to_vec(header).expect("a header serializes");
        let mut file = File::create(path).map_err(|e| Error::io(path, e))?;
        let len = u32::try_from(json.len()).ok().filter(|l| *l <= MAX_HEADER).ok_or_else(|| Error::Format {
            path: path.to_path_buf(),
            reason: format!("a header of {} bytes is over {MAX_HEADER}", json.len()),
        })?;
        file.write_all(MAGIC)
            .and_then(|()| file.write_all(&len.to_le_bytes()))
            .and_then(|()| file.write_all(&json))
            .and_then(|()| file.write_all(&self.bytes))
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(path, e))
    }
}

/// A delta file opened for reading: its header, and the payload read blob by blob.
#[derive(Debug)]
pub struct Delta {
    pub header: Header,
    path: PathBuf,
    file: File,
    payload_at: u64,
    payload_len: u64,
}

impl Delta {
    pub fn open(path: &Path) -> Result<Delta, Error> {
        let bad = |reason: String| Error::Format { path: path.to_path_buf(), reason };
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let total = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut head = [0u8; 12];
        file.read_exact(&mut head).map_err(|_| bad(format!("{total} bytes, shorter than the magic and length")))?;
        if &head[..8] != MAGIC {
            return Err(bad("wrong magic (not TRDELTA1)".into()));
        }
        let len = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
        if len > MAX_HEADER || 12 + u64::from(len) > total {
            return Err(bad(format!("a header of {len} bytes in a file of {total}")));
        }
        let mut json = vec![0u8; len as usize];
        file.read_exact(&mut json).map_err(|e| Error::io(path, e))?;
        let header: Header = serde_json::from_slice(&json).map_err(|e| bad(format!("header: {e}")))?;
        let payload_at = 12 + u64::from(len);
        let delta = Delta { header, path: path.to_path_buf(), file, payload_at, payload_len: total - payload_at };
        delta.header.recipe.check().map_err(|e| bad(format!("recipe: {e}")))?;
        // Paths once each, the root only as a directory, every directory before
        // what is in it: applying then goes through nothing but the directories
        // it made or found.
        let mut dirs = std::collections::HashSet::from([String::new()]);
        let mut seen = std::collections::HashSet::new();
        for entry in &delta.header.entries {
            let p = &entry.path;
            if !seen.insert(p.as_str()) {
                return Err(bad(format!("entry {p:?} is there twice")));
            }
            if p.is_empty() {
                if entry.node != Node::Dir {
                    return Err(bad("the root entry is not a directory".into()));
                }
                continue;
            }
            let parent = p.rsplit_once('/').map_or("", |(d, _)| d);
            if !dirs.contains(parent) {
                return Err(bad(format!("entry {p:?} comes before its directory {parent:?}")));
            }
            match &entry.node {
                Node::Dir => {
                    dirs.insert(p.clone());
                }
                Node::File { size, content, .. } => {
                    if *size > MAX_FILE {
                        return Err(bad(format!("entry {p:?} is {size} bytes, over {MAX_FILE}")));
                    }
                    if let Content::Patch { at, len, .. } | Content::Data { at, len } = content
                        && at.checked_add(*len).is_none_or(|end| end > delta.payload_len)
                    {
                        return Err(bad(format!("entry {p:?} points past the payload's {} bytes", delta.payload_len)));
                    }
                }
                Node::Symlink { .. } => {}
            }
        }
        if delta.header.removed.iter().any(String::is_empty) {
            return Err(bad("the root cannot be removed".into()));
        }
        Ok(delta)
    }

    /// The decompressed blob at `at`, `len`, which must come to at most `limit` bytes.
    pub fn blob(&self, at: u64, len: u64, limit: u64) -> Result<Vec<u8>, Error> {
        let mut frame = vec![0u8; len as usize];
        self.file.read_exact_at(&mut frame, self.payload_at + at).map_err(|e| Error::io(&self.path, e))?;
        zstd::bulk::decompress(&frame, limit as usize)
            .map_err(|e| Error::Format { path: self.path.clone(), reason: format!("blob at {at} ({len} bytes): {e}") })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
