//! The device's key for RAUC's sandboxed HTTP side.
//!
//! RAUC streams a bundle through a helper process that drops to its sandbox
//! user before curl opens the key, so a key readable by root alone cannot be
//! used. Rather than make the device's key readable by another user for good,
//! each HTTPS install gets a copy of its own: owned by root, readable by the
//! sandbox user's group alone (mode 0440), on tmpfs, removed when the
//! install is over.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::UpdateError;

/// A user's ids in `/etc/passwd`'s text: `(uid, gid)`.
#[must_use]
pub fn user_ids(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != user {
            return None;
        }
        let _password = fields.next()?;
        Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
    })
}

/// A copy of a key for one install, removed when dropped.
#[derive(Debug)]
pub struct HandedKey(PathBuf);

impl HandedKey {
    /// Copy `key` to `to`, owned by root and readable by the group `gid`
    /// alone (mode 0440: its reader cannot make it anyone's). `to` must not
    /// exist (`O_EXCL`: a link put there is not followed); each install
    /// names its own ([`HandedKey::path_for`]).
    ///
    /// # Errors
    /// The key cannot be read, or the copy cannot be written or given away;
    /// the error names the file.
    pub fn new(key: &Path, to: &Path, gid: u32) -> Result<Self, UpdateError> {
        let err =
            |path: &Path, e: std::io::Error| UpdateError::StreamKey { path: path.to_owned(), reason: e.to_string() };
        let bytes = std::fs::read(key).map_err(|e| err(key, e))?;
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
        }
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o440).open(to).map_err(|e| err(to, e))?;
        // Ours from here: removed when dropped, also if what follows fails.
        let handed = Self(to.to_owned());
        std::os::unix::fs::fchown(&file, None, Some(gid)).map_err(|e| err(to, e))?;
        file.write_all(&bytes).map_err(|e| err(to, e))?;
        Ok(handed)
    }

    /// A name of its own for the copy of one install: `base` with the
    /// process and a counter appended.
    #[must_use]
    pub fn path_for(base: &Path) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut name = base.as_os_str().to_owned();
        name.push(format!(".{}.{n}", std::process::id()));
        PathBuf::from(name)
    }

    /// Where the copy is.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for HandedKey {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            tracing::warn!("streaming key {}: not removed: {e}", self.0.display());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_users_ids_come_from_its_own_line() {
        let passwd =
            "root:x:0:0:root:/root:/bin/sh\nrauc-fetch:x:990:991:RAUC:/nonexistent:/bin/false\nbad:x:y:1::/:/\n";
        assert_eq!(user_ids(passwd, "rauc-fetch"), Some((990, 991)));
        assert_eq!(user_ids(passwd, "rauc"), None, "a prefix is not the user");
        assert_eq!(user_ids(passwd, "bad"), None, "a field that is not a number");
        assert_eq!(user_ids(passwd, "nobody"), None);
    }
}
