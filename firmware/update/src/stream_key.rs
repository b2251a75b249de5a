//! The device's key for RAUC's sandboxed HTTP side.
//!
//! RAUC streams a bundle through a helper process that drops to its sandbox
//! user before curl opens the key, so a key readable by root alone cannot be
//! used. Rather than make the device's key readable by another user for good,
//! each HTTPS install gets a copy: owned by the sandbox user, mode 0400, on
//! tmpfs, removed when the install is over.

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
    /// Copy `key` to `to`, readable only by `owner` (`(uid, gid)`). A copy
    /// left by an install cut short is replaced.
    ///
    /// # Errors
    /// The key cannot be read, or the copy cannot be written or given away;
    /// the error names the file.
    pub fn new(key: &Path, to: &Path, owner: (u32, u32)) -> Result<Self, UpdateError> {
        let err =
            |path: &Path, e: std::io::Error| UpdateError::StreamKey { path: path.to_owned(), reason: e.to_string() };
        let bytes = std::fs::read(key).map_err(|e| err(key, e))?;
        match std::fs::remove_file(to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(to, e)),
        }
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
        }
        let handed = Self(to.to_owned());
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o400).open(to).map_err(|e| err(to, e))?;
        std::os::unix::fs::fchown(&file, Some(owner.0), Some(owner.1)).map_err(|e| err(to, e))?;
        file.write_all(&bytes).map_err(|e| err(to, e))?;
        Ok(handed)
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
