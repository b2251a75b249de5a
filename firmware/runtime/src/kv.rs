//! Each app's persistent key-value store: one file per app on the data
//! partition, replaced atomically (write, fsync, rename, fsync the directory)
//! so a power cut leaves either the old or the new contents, never a mix.
//!
//! File format: `TKV1`, entry count (u32 LE), entries (u32 LE key length, key,
//! u32 LE value length, value), then the SHA-256 of everything before it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 4] = b"TKV1";
/// Longest key, in bytes.
pub(crate) const MAX_KEY: usize = 256;

#[derive(Debug, thiserror::Error)]
pub(crate) enum KvError {
    #[error("key-value store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("key-value store {path} is corrupt ({reason}); moved aside to {aside}")]
    Corrupt { path: PathBuf, reason: &'static str, aside: PathBuf },
    #[error("storage quota exceeded: the store would take {needed} bytes, {quota} allowed (limits.storage-kib)")]
    Quota { needed: u64, quota: u64 },
    #[error("invalid key {0:?}: 1-{MAX_KEY} bytes, no NUL")]
    Key(String),
}

#[derive(Debug)]
pub(crate) struct KvStore {
    path: PathBuf,
    quota: u64,
    map: BTreeMap<String, Vec<u8>>,
}

/// Magic, entry count and checksum.
const HEADER: u64 = 4 + 4 + 32;

/// What one entry takes in the file: two lengths, the key, the value.
fn entry_size(key: &str, value: &[u8]) -> u64 {
    (8 + key.len() + value.len()) as u64
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KvError + '_ {
    move |source| KvError::Io { path: path.to_owned(), source }
}

fn decode(bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, &'static str> {
    if bytes.len() < 8 + 32 || &bytes[..4] != MAGIC {
        return Err("bad header");
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != sum {
        return Err("checksum mismatch");
    }
    let mut pos = 4;
    let mut take = |n: usize| -> Result<&[u8], &'static str> {
        let s = body.get(pos..pos + n).ok_or("truncated entry")?;
        pos += n;
        Ok(s)
    };
    let u32_at = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize;
    let count = u32_at(take(4)?);
    let mut map = BTreeMap::new();
    for _ in 0..count {
        let klen = u32_at(take(4)?);
        let key = std::str::from_utf8(take(klen)?).map_err(|_| "key not UTF-8")?.to_owned();
        let vlen = u32_at(take(4)?);
        map.insert(key, take(vlen)?.to_vec());
    }
    Ok(map)
}

fn encode(map: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    let len32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    out.extend(len32(map.len()));
    for (k, v) in map {
        out.extend(len32(k.len()));
        out.extend(k.as_bytes());
        out.extend(len32(v.len()));
        out.extend(v);
    }
    let sum = Sha256::digest(&out);
    out.extend(sum);
    out
}

impl KvStore {
    /// Open (or create) the store at `path`. A corrupt file is moved aside and
    /// the store starts empty; the error is returned alongside for the log.
    pub fn open(path: PathBuf, quota: u64) -> Result<(Self, Option<KvError>), KvError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let (map, warning) = match std::fs::read(&path) {
            Ok(bytes) => match decode(&bytes) {
                Ok(map) => (map, None),
                Err(reason) => {
                    let aside = path.with_extension("corrupt");
                    std::fs::rename(&path, &aside).map_err(io(&path))?;
                    (BTreeMap::new(), Some(KvError::Corrupt { path: path.clone(), reason, aside }))
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (BTreeMap::new(), None),
            Err(e) => return Err(KvError::Io { path, source: e }),
        };
        Ok((Self { path, quota, map }, warning))
    }

    /// Bytes the store takes on the data partition: its file as encoded
    /// (header, each entry with its lengths, checksum).
    pub fn used(&self) -> u64 {
        HEADER + self.map.iter().map(|(k, v)| entry_size(k, v)).sum::<u64>()
    }

    /// Change the quota (a new version's manifest may differ).
    pub fn set_quota(&mut self, quota: u64) {
        self.quota = quota;
    }

    fn check_key(key: &str) -> Result<(), KvError> {
        if key.is_empty() || key.len() > MAX_KEY || key.contains('\0') {
            return Err(KvError::Key(key.chars().take(64).collect()));
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.map.get(key).cloned()
    }

    pub fn keys(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    pub fn set(&mut self, key: &str, value: &[u8]) -> Result<(), KvError> {
        Self::check_key(key)?;
        let old = self.map.get(key).map_or(0, |v| entry_size(key, v));
        let needed = self.used() - old + entry_size(key, value);
        if needed > self.quota {
            return Err(KvError::Quota { needed, quota: self.quota });
        }
        let previous = self.map.insert(key.to_owned(), value.to_vec());
        if let Err(e) = self.persist() {
            match previous {
                Some(v) => self.map.insert(key.to_owned(), v),
                None => self.map.remove(key),
            };
            return Err(e);
        }
        Ok(())
    }

    pub fn delete(&mut self, key: &str) -> Result<bool, KvError> {
        let Some(previous) = self.map.remove(key) else { return Ok(false) };
        if let Err(e) = self.persist() {
            self.map.insert(key.to_owned(), previous);
            return Err(e);
        }
        Ok(true)
    }

    fn persist(&self) -> Result<(), KvError> {
        trellis_layout::write_atomic(&self.path, &encode(&self.map)).map_err(|e| io(&self.path)(e.into_io()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn survives_reopen_and_enforces_quota() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv/app.db");
        let (mut kv, warn) = KvStore::open(path.clone(), 64).unwrap();
        assert!(warn.is_none());
        kv.set("count", b"12345").unwrap();
        // The quota is what the file takes: 40 bytes of header and checksum, 8 + 5 + 5 for the entry.
        assert_eq!(kv.used(), 58);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), kv.used(), "used() is the file's size");
        let err = kv.set("big", &[0; 20]).unwrap_err();
        assert!(matches!(err, KvError::Quota { needed: 89, quota: 64 }), "{err}");
        assert!(err.to_string().contains("limits.storage-kib"), "{err}");
        assert!(kv.get("big").is_none(), "a refused set leaves nothing behind");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 58, "nor on disk");
        assert!(matches!(kv.set("", b"x"), Err(KvError::Key(_))));
        let (kv2, _) = KvStore::open(path, 64).unwrap();
        assert_eq!(kv2.get("count").unwrap(), b"12345");
        assert_eq!(kv2.keys(), vec!["count".to_owned()]);
    }

    #[test]
    fn corrupt_file_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let (mut kv, _) = KvStore::open(path.clone(), 1024).unwrap();
        kv.set("a", b"1").unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let (kv, warn) = KvStore::open(path.clone(), 1024).unwrap();
        assert!(kv.keys().is_empty());
        let warn = warn.unwrap().to_string();
        assert!(warn.contains("checksum mismatch") && warn.contains("app.corrupt"), "{warn}");
        assert!(path.with_extension("corrupt").exists());
    }
}
