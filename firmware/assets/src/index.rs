//! An asset's block index and the hash that names it.
//!
//! An asset (model weights, a lookup table) is cut into blocks of
//! [`BLOCK_SIZE`] bytes; its index lists the SHA-256 of every block, and the
//! SHA-256 of the encoded index is the asset's [`AssetId`], the name a
//! manifest gives it. A device that knows the id can check the index it is
//! sent, and then every block on its own, in any order, from any source:
//! nothing enters the device's store unless it hashes to what the publisher
//! named.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::AssetError;

/// The block size assets are cut into (64 KiB).
pub const BLOCK_SIZE: u32 = 64 * 1024;
/// The first bytes of an encoded index (format version 1).
const MAGIC: &[u8; 16] = b"trellis-asset-1\n";
const HEADER: usize = MAGIC.len() + 8 + 4;
/// Largest asset (4 GiB): the index of one is 2 MiB.
pub const MAX_SIZE: u64 = 4 << 30;

/// The SHA-256 of an asset's encoded index, written as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AssetId(pub [u8; 32]);

impl fmt::Display for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AssetId({self})")
    }
}

impl FromStr for AssetId {
    type Err = AssetError;
    fn from_str(s: &str) -> Result<Self, AssetError> {
        let bad = || AssetError::BadId(s.to_owned());
        let bytes = hex::decode(s).map_err(|_| bad())?;
        Ok(Self(bytes.try_into().map_err(|_| bad())?))
    }
}

/// The block index of one asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// The asset's size in bytes.
    pub size: u64,
    /// Bytes per block (the last block may be shorter).
    pub block_size: u32,
    /// The SHA-256 of each block, in order.
    pub blocks: Vec<[u8; 32]>,
}

impl Index {
    /// The index of `data`, cut into [`BLOCK_SIZE`] blocks.
    #[must_use]
    pub fn of(data: &[u8]) -> Self {
        Self::with_block_size(data, BLOCK_SIZE)
    }

    /// The index of `data` with another block size (a power of two, 4 KiB to 4 MiB).
    ///
    /// # Panics
    /// When `block_size` is zero.
    #[must_use]
    pub fn with_block_size(data: &[u8], block_size: u32) -> Self {
        let blocks = data.chunks(block_size as usize).map(|b| Sha256::digest(b).into()).collect();
        Self { size: data.len() as u64, block_size, blocks }
    }

    /// The encoded index: magic, size (u64 LE), block size (u32 LE), one hash per block.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + 32 * self.blocks.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.block_size.to_le_bytes());
        for b in &self.blocks {
            out.extend_from_slice(b);
        }
        out
    }

    /// The id that names this index (the SHA-256 of [`Index::encode`]).
    #[must_use]
    pub fn id(&self) -> AssetId {
        AssetId(Sha256::digest(self.encode()).into())
    }

    /// Decode an index, which must hash to `id`.
    ///
    /// # Errors
    /// [`AssetError::BadIndex`] naming what is wrong.
    pub fn decode(bytes: &[u8], id: &AssetId) -> Result<Self, AssetError> {
        let bad = |why: &str| AssetError::BadIndex { id: *id, reason: why.to_owned() };
        if Sha256::digest(bytes).as_slice() != id.0 {
            return Err(bad("its SHA-256 is not the asset's id"));
        }
        if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
            return Err(bad("not a trellis-asset-1 index"));
        }
        let size = u64::from_le_bytes(bytes[16..24].try_into().map_err(|_| bad("short header"))?);
        let block_size = u32::from_le_bytes(bytes[24..28].try_into().map_err(|_| bad("short header"))?);
        if !block_size.is_power_of_two() || !(4096..=4 << 20).contains(&block_size) {
            return Err(bad(&format!("block size {block_size} is not a power of two from 4 KiB to 4 MiB")));
        }
        if size > MAX_SIZE {
            return Err(bad(&format!("size {size} is above {MAX_SIZE}")));
        }
        let count = size.div_ceil(u64::from(block_size));
        let hashes = &bytes[HEADER..];
        if hashes.len() as u64 != count * 32 {
            return Err(bad(&format!("{} bytes of hashes for {count} blocks", hashes.len())));
        }
        let blocks = hashes.chunks_exact(32).map(|h| h.try_into().unwrap_or([0; 32])).collect();
        Ok(Self { size, block_size, blocks })
    }

    /// How many blocks.
    #[must_use]
    pub fn count(&self) -> u32 {
        u32::try_from(self.blocks.len()).unwrap_or(u32::MAX)
    }

    /// Where block `n` starts and how long it is, or `None` past the last block.
    #[must_use]
    pub fn span(&self, n: u32) -> Option<(u64, usize)> {
        if n >= self.count() {
            return None;
        }
        let start = u64::from(n) * u64::from(self.block_size);
        let len = (self.size - start).min(u64::from(self.block_size));
        Some((start, usize::try_from(len).unwrap_or(usize::MAX)))
    }

    /// Whether `data` is block `n` as the publisher made it.
    #[must_use]
    pub fn verify(&self, n: u32, data: &[u8]) -> bool {
        self.span(n).is_some_and(|(_, len)| len == data.len())
            && self.blocks.get(n as usize).is_some_and(|h| Sha256::digest(data).as_slice() == h)
    }

    /// The blocks that hold `len` bytes from `offset` (empty when `len` is 0).
    #[must_use]
    pub fn blocks_for(&self, offset: u64, len: u64) -> Range<u32> {
        if len == 0 {
            return 0..0;
        }
        let bs = u64::from(self.block_size);
        let first = u32::try_from(offset / bs).unwrap_or(u32::MAX);
        let last = u32::try_from((offset + len - 1) / bs).unwrap_or(u32::MAX);
        first..last.saturating_add(1).min(self.count())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn encode_decode_and_the_id_names_the_index() {
        let index = Index::with_block_size(&data(10_000), 4096);
        assert_eq!(index.count(), 3);
        assert_eq!(index.span(2), Some((8192, 10_000 - 8192)));
        assert_eq!(index.span(3), None);
        let id = index.id();
        assert_eq!(Index::decode(&index.encode(), &id).unwrap(), index);
        assert_eq!(id.to_string().parse::<AssetId>().unwrap(), id);

        // Any change to the index changes what its id accepts.
        let mut other = index.encode();
        other[30] ^= 1;
        let e = Index::decode(&other, &id).unwrap_err().to_string();
        assert!(e.contains("not the asset's id") && e.contains(&id.to_string()), "{e}");
    }

    #[test]
    fn blocks_are_verified_one_by_one() {
        let bytes = data(10_000);
        let index = Index::with_block_size(&bytes, 4096);
        assert!(index.verify(1, &bytes[4096..8192]));
        assert!(!index.verify(1, &bytes[0..4096]), "block 0's bytes are not block 1");
        let mut bad = bytes[8192..].to_vec();
        bad[0] ^= 0x80;
        assert!(!index.verify(2, &bad));
        assert!(!index.verify(2, &bytes[8192..9000]), "a short block");
        assert!(!index.verify(3, &[]), "past the end");
    }

    #[test]
    fn ranges_map_to_blocks() {
        let index = Index::with_block_size(&data(10_000), 4096);
        assert_eq!(index.blocks_for(0, 1), 0..1);
        assert_eq!(index.blocks_for(4095, 2), 0..2);
        assert_eq!(index.blocks_for(4096, 5904), 1..3);
        assert_eq!(index.blocks_for(5, 0), 0..0);
    }

    #[test]
    fn malformed_ids_and_indexes_are_named() {
        assert!("xyz".parse::<AssetId>().unwrap_err().to_string().contains("\"xyz\""));
        let index = Index { size: 5000, block_size: 4096, blocks: vec![[0; 32]] };
        let e = Index::decode(&index.encode(), &index.id()).unwrap_err().to_string();
        assert!(e.contains("32 bytes of hashes for 2 blocks"), "{e}");
        let index = Index { size: 1, block_size: 1000, blocks: vec![[0; 32]] };
        let e = Index::decode(&index.encode(), &index.id()).unwrap_err().to_string();
        assert!(e.contains("block size 1000"), "{e}");
    }
}
