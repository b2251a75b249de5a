//! Receiving an app upload: the name, the announced size and the free space
//! are checked before a byte is read, then the whole file is read and handed
//! to the device ([`trellis_control::Device::install_app`]), which checks,
//! compiles and starts it and only then puts it in place; its verdict is the
//! answer.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::sync::{Condvar, Mutex, PoisonError};

/// Why an upload was refused; each maps to a status code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UploadError {
    /// Not an app name (`/`, `..`, NUL and anything but `[a-z0-9][a-z0-9_-]*`).
    #[error("{0:?} is not an app name ([a-z0-9][a-z0-9_-]*, at most 64 characters)")]
    Name(String),
    /// No `Content-Length`.
    #[error("send the size as Content-Length")]
    NoLength,
    /// Larger than the limit.
    #[error("{size} bytes is above the {limit}-byte limit for {what}")]
    TooLarge {
        /// What the client announced.
        size: u64,
        /// The limit.
        limit: u64,
        /// `an app`, `a firmware bundle`.
        what: &'static str,
    },
    /// The data partition has not enough room.
    #[error("{size} bytes do not fit: {available} bytes free on {dir}")]
    NoSpace {
        /// The upload.
        size: u64,
        /// Free bytes.
        available: u64,
        /// The apps directory.
        dir: String,
    },
    /// Fewer bytes came than announced.
    #[error("the upload ended after {got} of {size} bytes: nothing was changed")]
    Truncated {
        /// Bytes received.
        got: u64,
        /// Bytes announced.
        size: u64,
    },
    /// Writing it failed (the temporary file is removed).
    #[error("writing {path}: {reason}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl UploadError {
    /// The status code to answer with.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::Name(_) | Self::Truncated { .. } => 400,
            Self::NoLength => 411,
            Self::TooLarge { .. } => 413,
            Self::NoSpace { .. } => 507,
            Self::Write { reason, .. } if reason.contains("No space left") => 507,
            Self::Write { .. } => 500,
        }
    }
}

/// One upload of an app at a time per name: a second upload of the same app
/// waits for the first, so the file ends up as one complete version.
#[derive(Debug, Default)]
pub struct AppLocks {
    busy: Mutex<HashSet<String>>,
    freed: Condvar,
}

/// Held while an app is being replaced.
#[derive(Debug)]
pub struct AppLock<'a> {
    locks: &'a AppLocks,
    name: String,
}

impl AppLocks {
    /// Wait until no other upload of `name` runs, then hold it.
    pub fn lock(&self, name: &str) -> AppLock<'_> {
        let mut busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        while busy.contains(name) {
            busy = self.freed.wait(busy).unwrap_or_else(PoisonError::into_inner);
        }
        busy.insert(name.to_owned());
        AppLock { locks: self, name: name.to_owned() }
    }
}

impl Drop for AppLock<'_> {
    fn drop(&mut self) {
        self.locks.busy.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.name);
        self.locks.freed.notify_all();
    }
}

/// Check `name` and the announced size against the limit and the free space.
///
/// # Errors
/// A bad name, no size, too large, or no room.
pub fn admit(name: &str, size: Option<u64>, limit: u64, apps_dir: &Path) -> Result<u64, UploadError> {
    if !trellis_layout::valid_name(name) {
        return Err(UploadError::Name(name.to_owned()));
    }
    let size = within_limit(size, limit, "an app")?;
    if let Some(available) = free_bytes(apps_dir) {
        // Room for the new file while the old one still exists, and a margin
        // for the runtime's compile cache and last-good copy.
        let needed = size.saturating_mul(2);
        if available < needed {
            return Err(UploadError::NoSpace { size, available, dir: apps_dir.display().to_string() });
        }
    }
    Ok(size)
}

/// Free bytes for an unprivileged writer on the file system holding `dir`.
pub(crate) fn free_bytes(dir: &Path) -> Option<u64> {
    rustix::fs::statvfs(dir).ok().map(|s| s.f_bavail.saturating_mul(s.f_frsize))
}

/// Read exactly `size` bytes of `body`.
///
/// # Errors
/// The client sent fewer.
pub fn receive(body: &mut dyn Read, size: u64) -> Result<Vec<u8>, UploadError> {
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // A read error (a timeout, a reset) ends the upload like a close does: what
    // arrived is counted, and it is short.
    let _ = body.take(size).read_to_end(&mut bytes);
    let got = bytes.len() as u64;
    if got < size {
        return Err(UploadError::Truncated { got, size });
    }
    Ok(bytes)
}

/// The announced size, when there is one and it is within `limit`.
///
/// # Errors
/// No size, or above the limit (for `what`: `an app`, `a firmware bundle`).
pub(crate) fn within_limit(size: Option<u64>, limit: u64, what: &'static str) -> Result<u64, UploadError> {
    let size = size.ok_or(UploadError::NoLength)?;
    if size > limit {
        return Err(UploadError::TooLarge { size, limit, what });
    }
    Ok(size)
}

pub(crate) fn write_error(path: &Path, e: &std::io::Error) -> UploadError {
    UploadError::Write { path: path.display().to_string(), reason: e.to_string() }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_sizes_and_room_are_checked_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["../etc", "a/b", "a\0b", "", "..", "Blinky", "%2e%2e"] {
            assert_eq!(admit(bad, Some(10), 100, dir.path()).unwrap_err().status(), 400, "{bad:?}");
        }
        assert_eq!(admit("blinky", None, 100, dir.path()).unwrap_err(), UploadError::NoLength);
        let too_large = admit("blinky", Some(101), 100, dir.path()).unwrap_err();
        assert_eq!(
            (too_large.status(), too_large.to_string()),
            (413, "101 bytes is above the 100-byte limit for an app".into())
        );
        let huge = admit("blinky", Some(u64::MAX / 4), u64::MAX, dir.path()).unwrap_err();
        assert_eq!(huge.status(), 507, "{huge}");
        assert_eq!(admit("blinky", Some(10), 100, dir.path()).unwrap(), 10);
    }

    #[test]
    fn a_short_body_is_truncated_and_a_full_one_is_read_whole() {
        let mut short: &[u8] = b"12345";
        assert_eq!(receive(&mut short, 10).unwrap_err(), UploadError::Truncated { got: 5, size: 10 });
        let mut full: &[u8] = b"0123456789extra";
        assert_eq!(receive(&mut full, 10).unwrap(), b"0123456789");
    }

    #[test]
    fn two_uploads_of_one_app_take_turns() {
        let locks = std::sync::Arc::new(AppLocks::default());
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let first = locks.lock("blinky");
        let (l, o) = (locks.clone(), order.clone());
        let second = std::thread::spawn(move || {
            let _g = l.lock("blinky");
            o.lock().unwrap().push("second");
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        order.lock().unwrap().push("first");
        let _other = locks.lock("thermostat"); // another app does not wait
        drop(first);
        second.join().unwrap();
        assert_eq!(*order.lock().unwrap(), ["first", "second"]);
    }
}
