//! Firmware deltas for code changes.
//!
//! RAUC's adaptive install (`block-hash-index`) fetches the 4 KiB blocks of a new
//! root filesystem image that neither slot holds. A changed line of code moves the
//! compiled code after it, so a rebuilt executable shares almost no block with the
//! old one and the install fetches all of it. A binary delta of the executable
//! (bsdiff) is a few per cent of it.
//!
//! A delta here is the difference between two root filesystem *trees* (changed files
//! as bsdiff patches or whole, removed paths, metadata) plus the recipe that packed
//! the new image (mksquashfs's options, environment and sort file). The device
//! unpacks the slot it runs, applies the delta, packs the tree with the recipe and
//! gets the new image bit for bit, written into the slot RAUC is about to install
//! into. RAUC then finds every block of the bundle's image in that slot and fetches
//! none of them; each block is still checked against the bundle's signed hash index,
//! so a delta that rebuilds something else costs the blocks that differ, never a
//! wrong byte.
//!
//! - [`format`]: the delta file (header and payload), made from two trees.
//! - [`tree`]: comparing two trees and applying a delta to a tree.
//! - [`squashfs`]: unpacking and packing images with squashfs-tools, and the whole
//!   rebuild (`rebuild`) that both the maker's check and the device run.
//! - [`rauc`]: the bundle's slot hook before RAUC writes the root filesystem:
//!   which slot to rebuild from, into the slot RAUC is about to write.

pub mod error;
pub mod format;
pub mod rauc;
pub mod squashfs;
pub mod tree;

pub use error::Error;

/// The SHA-256 of a byte slice, as lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// The SHA-256 (lower-case hex) of the first `size` bytes of the file or block
/// device at `path`.
pub fn sha256_prefix(path: &std::path::Path, size: u64) -> Result<String, Error> {
    use sha2::Digest;
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = file.take(size);
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    if total < size {
        return Err(Error::Short { path: path.to_path_buf(), size, got: total });
    }
    Ok(hex::encode(hasher.finalize()))
}
