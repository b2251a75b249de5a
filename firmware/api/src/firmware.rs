//! Receiving a firmware bundle: its size checked against the limit and the
//! free space on the data partition before a byte is read, then streamed to
//! a temporary file there, synced and renamed, so RAUC only ever sees a whole
//! bundle. RAUC then checks its signature and compatible before it writes a
//! slot.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use trellis_layout::AtomicWriteError;

use crate::apps::{UploadError, free_bytes, within_limit, write_error};

/// The bundle's name in the firmware directory while RAUC installs it.
pub const BUNDLE: &str = "upload.raucb";
/// Default limit on a bundle's size.
pub const DEFAULT_MAX_BUNDLE_BYTES: u64 = 512 << 20;
/// Left free on the data partition after the bundle is in: the apps, their
/// state and the runtime's compile cache go on living there.
pub const RESERVE_BYTES: u64 = 8 << 20;

/// Check the announced size against `limit` and the free space in `dir`.
///
/// # Errors
/// No size, too large, or no room.
pub fn admit(size: Option<u64>, limit: u64, dir: &Path) -> Result<u64, UploadError> {
    let size = within_limit(size, limit, "a firmware bundle")?;
    std::fs::create_dir_all(dir).map_err(|e| write_error(dir, &e))?;
    // A bundle left by an upload that was cut off is not counted as used.
    let stale = std::fs::metadata(trellis_layout::temporary_path(&dir.join(BUNDLE))).map_or(0, |m| m.len());
    if let Some(available) = free_bytes(dir).map(|a| a + stale)
        && available < size.saturating_add(RESERVE_BYTES)
    {
        return Err(UploadError::NoSpace { size, available, dir: dir.display().to_string() });
    }
    Ok(size)
}

/// Stream exactly `size` bytes of `body` into `dir/upload.raucb`.
///
/// # Errors
/// Fewer bytes came (nothing is left behind), or writing failed.
pub fn receive(body: &mut dyn Read, size: u64, dir: &Path) -> Result<PathBuf, UploadError> {
    let path = dir.join(BUNDLE);
    let tmp = trellis_layout::temporary_path(&path);
    trellis_layout::write_atomic_with(&path, |file| {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0u64;
        let mut body = body.take(size);
        loop {
            // A read error (a timeout, a reset) ends the upload like a close does.
            let n = match body.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            file.write_all(&buf[..n]).map_err(|e| write_error(&tmp, &e))?;
            got += n as u64;
        }
        if got < size { Err(UploadError::Truncated { got, size }) } else { Ok(()) }
    })
    .map_err(|e| match e {
        AtomicWriteError::Fill(e) => e,
        AtomicWriteError::Io { path, source, .. } => write_error(&path, &source),
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sizes_are_checked_before_anything_is_read() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(admit(None, 100, dir.path()).unwrap_err(), UploadError::NoLength);
        let e = admit(Some(101), 100, dir.path()).unwrap_err();
        assert_eq!(
            (e.status(), e.to_string()),
            (413, "101 bytes is above the 100-byte limit for a firmware bundle".into())
        );
        let e = admit(Some(u64::MAX / 4), u64::MAX, dir.path()).unwrap_err();
        assert_eq!(e.status(), 507, "{e}");
        assert_eq!(admit(Some(10), 100, dir.path()).unwrap(), 10);
    }

    #[test]
    fn a_short_bundle_leaves_nothing_and_a_whole_one_lands() {
        let dir = tempfile::tempdir().unwrap();
        let mut short: &[u8] = b"12345";
        assert_eq!(receive(&mut short, 10, dir.path()).unwrap_err(), UploadError::Truncated { got: 5, size: 10 });
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing left behind");
        let mut full: &[u8] = b"0123456789extra";
        let path = receive(&mut full, 10, dir.path()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"0123456789");
        assert_eq!(path, dir.path().join(BUNDLE));
    }
}
