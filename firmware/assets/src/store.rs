//! The device's copy of an asset: the blocks verified so far.
//!
//! `<root>/<id>/index` is the asset's index (checked against the id when
//! opened), `data` is a file of the asset's size with the verified blocks at
//! their offsets, and `have` a bitmap of which blocks those are. A block is
//! written and flushed before its bit is set and flushed, so after a power
//! cut a set bit always means a complete block; a block whose bit did not
//! reach the disk is fetched again. Opening the store checks every block the
//! bitmap claims against the index and forgets those that do not match.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::{AssetError, AssetId, Index};

const INDEX: &str = "index";
const DATA: &str = "data";
const HAVE: &str = "have";

/// The verified blocks of one asset on the device.
#[derive(Debug)]
pub struct BlockStore {
    dir: PathBuf,
    id: AssetId,
    index: Index,
    data: File,
    have_file: File,
    have: Vec<u8>,
    /// Blocks written but not yet flushed and marked.
    pending: Vec<u32>,
    /// The block being fetched from the origin, if any (not kept on disk).
    from_origin: Option<u32>,
}

fn store_err(path: &Path) -> impl FnOnce(std::io::Error) -> AssetError + '_ {
    move |source| AssetError::Store { path: path.to_owned(), source }
}

impl BlockStore {
    /// The index kept for `id` under `root`, if there is a valid one.
    #[must_use]
    pub fn cached_index(root: &Path, id: &AssetId) -> Option<Index> {
        let bytes = std::fs::read(root.join(id.to_string()).join(INDEX)).ok()?;
        Index::decode(&bytes, id).ok()
    }

    /// Open (or make) the store of asset `id` under `root`, with its index.
    ///
    /// # Errors
    /// The index is not the asset's, or the files cannot be made.
    pub fn open(root: &Path, id: &AssetId, index: &Index) -> Result<Self, AssetError> {
        if index.id() != *id {
            return Err(AssetError::BadIndex { id: *id, reason: "its SHA-256 is not the asset's id".into() });
        }
        let dir = root.join(id.to_string());
        std::fs::create_dir_all(&dir).map_err(store_err(&dir))?;
        let index_path = dir.join(INDEX);
        if Self::cached_index(root, id).as_ref() != Some(index) {
            trellis_layout::write_atomic(&index_path, &index.encode())
                .map_err(|e| AssetError::Store { path: index_path.clone(), source: e.into_io() })?;
        }
        let data_path = dir.join(DATA);
        let data = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&data_path)
            .map_err(store_err(&data_path))?;
        if data.metadata().map_err(store_err(&data_path))?.len() != index.size {
            data.set_len(index.size).map_err(store_err(&data_path))?;
        }
        let have_path = dir.join(HAVE);
        let have_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&have_path)
            .map_err(store_err(&have_path))?;
        let bytes = (index.count() as usize).div_ceil(8);
        let mut have = vec![0; bytes];
        let read = have_file.read_at(&mut have, 0).map_err(store_err(&have_path))?;
        have[read..].fill(0);
        let mut store =
            Self { dir, id: *id, index: index.clone(), data, have_file, have, pending: Vec::new(), from_origin: None };
        store.check()?;
        Ok(store)
    }

    /// Forget every block the bitmap claims that does not match the index.
    fn check(&mut self) -> Result<(), AssetError> {
        for n in 0..self.index.count() {
            if self.has(n) {
                let ok = self.read_block(n).map(|b| self.index.verify(n, &b)).unwrap_or(false);
                if !ok {
                    tracing::warn!(asset = %self.id, block = n, "a stored block does not match the index: fetching it again");
                    self.set_bit(n, false)?;
                }
            }
        }
        Ok(())
    }

    /// The asset's index.
    #[must_use]
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The asset's id.
    #[must_use]
    pub fn id(&self) -> AssetId {
        self.id
    }

    /// Whether block `n` is here, verified.
    #[must_use]
    pub fn has(&self, n: u32) -> bool {
        crate::wire::holds(&self.have, n)
    }

    /// How many blocks are here.
    #[must_use]
    pub fn held(&self) -> u32 {
        self.have.iter().map(|b| b.count_ones()).sum()
    }

    /// Say which block this device is fetching from the origin now (`None`:
    /// none). Not kept on disk: a device's asset server tells its peers
    /// (`/have`), so that they ask the origin for other blocks.
    pub fn fetching_from_origin(&mut self, n: Option<u32>) {
        self.from_origin = n;
    }

    /// The block being fetched from the origin, if any.
    #[must_use]
    pub fn from_origin(&self) -> Option<u32> {
        self.from_origin
    }

    /// The bitmap of blocks held, as hex (bit `n % 8` of byte `n / 8` is block `n`).
    #[must_use]
    pub fn bitmap_hex(&self) -> String {
        hex::encode(&self.have)
    }

    /// Store block `n` if it is the publisher's; returns whether it was.
    ///
    /// # Errors
    /// The files could not be written.
    pub fn put(&mut self, n: u32, block: &[u8]) -> Result<bool, AssetError> {
        let kept = self.put_unsynced(n, block)?;
        self.commit()?;
        Ok(kept)
    }

    /// Write block `n` if it is the publisher's, without marking it held
    /// yet: [`BlockStore::commit`] flushes the blocks written so far, then
    /// marks them (one flush of each file for a response of many blocks).
    ///
    /// # Errors
    /// The data file could not be written.
    pub fn put_unsynced(&mut self, n: u32, block: &[u8]) -> Result<bool, AssetError> {
        if !self.index.verify(n, block) {
            return Ok(false);
        }
        if self.has(n) || self.pending.contains(&n) {
            return Ok(true);
        }
        let (start, _) = self.index.span(n).unwrap_or((0, 0));
        let path = self.dir.join(DATA);
        self.data.write_all_at(block, start).map_err(store_err(&path))?;
        self.pending.push(n);
        Ok(true)
    }

    /// Flush the blocks written by [`BlockStore::put_unsynced`], then mark
    /// them held and flush the bitmap.
    ///
    /// # Errors
    /// A file could not be flushed or written.
    pub fn commit(&mut self) -> Result<(), AssetError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let path = self.dir.join(DATA);
        self.data.sync_data().map_err(store_err(&path))?;
        for n in std::mem::take(&mut self.pending) {
            let i = n as usize / 8;
            self.have[i] |= 1 << (n % 8);
        }
        let path = self.dir.join(HAVE);
        self.have_file.write_all_at(&self.have, 0).map_err(store_err(&path))?;
        self.have_file.sync_data().map_err(store_err(&path))
    }

    fn set_bit(&mut self, n: u32, on: bool) -> Result<(), AssetError> {
        let i = n as usize / 8;
        if on {
            self.have[i] |= 1 << (n % 8);
        } else {
            self.have[i] &= !(1 << (n % 8));
        }
        let path = self.dir.join(HAVE);
        self.have_file.write_all_at(&self.have[i..=i], i as u64).map_err(store_err(&path))?;
        self.have_file.sync_data().map_err(store_err(&path))
    }

    fn read_block(&self, n: u32) -> std::io::Result<Vec<u8>> {
        let (start, len) = self.index.span(n).ok_or_else(|| std::io::Error::other("no such block"))?;
        let mut buf = vec![0; len];
        self.data.read_exact_at(&mut buf, start)?;
        Ok(buf)
    }

    /// `len` bytes at `offset`, all of whose blocks must be here.
    ///
    /// # Errors
    /// Past the end, a block missing, or the file unreadable.
    pub fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, AssetError> {
        let size = self.index.size;
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(AssetError::PastEnd { id: self.id, offset, len, size });
        }
        let path = self.dir.join(DATA);
        if let Some(n) = self.index.blocks_for(offset, len).find(|&n| !self.has(n)) {
            return Err(AssetError::Store { path, source: std::io::Error::other(format!("block {n} is not here")) });
        }
        let mut buf = vec![0; usize::try_from(len).unwrap_or(usize::MAX)];
        self.data.read_exact_at(&mut buf, offset).map_err(store_err(&path))?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_verified_blocks_are_kept_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let index = Index::with_block_size(&bytes, 4096);
        let id = index.id();
        let mut store = BlockStore::open(dir.path(), &id, &index).unwrap();
        assert!(!store.put(0, &bytes[4096..8192]).unwrap(), "another block's bytes");
        assert!(!store.has(0));
        assert!(store.put(2, &bytes[8192..]).unwrap());
        assert!(store.read(8192, 100).is_ok());
        let e = store.read(0, 10).unwrap_err().to_string();
        assert!(e.contains("block 0 is not here"), "{e}");
        let e = store.read(9990, 11).unwrap_err().to_string();
        assert!(e.contains("past the end") && e.contains("10000 bytes"), "{e}");
        drop(store);

        let store = BlockStore::open(dir.path(), &id, &index).unwrap();
        assert_eq!(store.held(), 1);
        assert_eq!(store.read(8192, 1808).unwrap(), bytes[8192..]);
        drop(store);

        // A block damaged on disk behind the store's back is forgotten, not served.
        let data = dir.path().join(id.to_string()).join("data");
        let mut raw = std::fs::read(&data).unwrap();
        raw[9000] ^= 1;
        std::fs::write(&data, raw).unwrap();
        let store = BlockStore::open(dir.path(), &id, &index).unwrap();
        assert_eq!(store.held(), 0);
        assert_eq!(BlockStore::cached_index(dir.path(), &id), Some(index));
    }
}
