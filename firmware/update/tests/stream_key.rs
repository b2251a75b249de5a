//! The device's key handed to RAUC's sandboxed HTTP side for one HTTPS
//! install: a copy only its owner can read, gone when the install is over.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

use trellis_update::UpdateError;
use trellis_update::stream_key::HandedKey;

#[test]
fn the_copy_is_the_owners_alone_and_removed_after_the_install() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("device.key");
    std::fs::write(&key, b"-----BEGIN PRIVATE KEY-----\n").unwrap();
    let me = std::fs::metadata(dir.path()).unwrap();
    let to = dir.path().join("run/stream.key");
    // A copy left by an install cut short (a runtime killed mid-install) is replaced.
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::write(&to, b"stale").unwrap();
    {
        let handed = HandedKey::new(&key, &to, (me.uid(), me.gid())).unwrap();
        assert_eq!(handed.path(), to);
        let meta = std::fs::metadata(&to).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o400, "read-only, for its owner alone");
        assert_eq!((meta.uid(), meta.gid()), (me.uid(), me.gid()));
        assert_eq!(std::fs::read(&to).unwrap(), std::fs::read(&key).unwrap());
    }
    assert!(!to.exists(), "removed once the install is over");
}

#[test]
fn a_missing_key_is_an_error_naming_it_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("stream.key");
    let err = HandedKey::new(&dir.path().join("device.key"), &to, (0, 0)).unwrap_err();
    assert!(matches!(err, UpdateError::StreamKey { .. }), "{err}");
    assert!(err.to_string().contains("device.key"), "{err}");
    assert!(!to.exists());
}
