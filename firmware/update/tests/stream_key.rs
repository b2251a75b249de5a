//! The device's key handed to RAUC's sandboxed HTTP side for one HTTPS
//! install: a copy its group can read and not change, gone when the install
//! is over.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

use trellis_update::UpdateError;
use trellis_update::stream_key::HandedKey;

#[test]
fn the_copy_is_read_only_for_its_group_and_removed_after_the_install() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("device.key");
    std::fs::write(&key, b"-----BEGIN PRIVATE KEY-----\n").unwrap();
    let me = std::fs::metadata(dir.path()).unwrap();
    let base = dir.path().join("run/stream.key");
    let (one, two) = (HandedKey::path_for(&base), HandedKey::path_for(&base));
    assert_ne!(one, two, "each install names its own copy");
    {
        let handed = HandedKey::new(&key, &one, me.gid()).unwrap();
        assert_eq!(handed.path(), one);
        let meta = std::fs::metadata(&one).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o440, "read-only, for its owner and group");
        assert_eq!(meta.gid(), me.gid());
        assert_eq!(std::fs::read(&one).unwrap(), std::fs::read(&key).unwrap());
    }
    assert!(!one.exists(), "removed once the install is over");
}

#[test]
fn a_name_taken_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("device.key");
    std::fs::write(&key, b"secret").unwrap();
    // A link put where the copy goes is not followed, and not removed.
    let (victim, to) = (dir.path().join("victim"), dir.path().join("stream.key.1.0"));
    std::fs::write(&victim, b"kept").unwrap();
    std::os::unix::fs::symlink(&victim, &to).unwrap();
    let err = HandedKey::new(&key, &to, 0).unwrap_err();
    assert!(err.to_string().contains("stream.key.1.0"), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"kept");
    assert!(std::fs::symlink_metadata(&to).unwrap().file_type().is_symlink());
}

#[test]
fn a_missing_key_is_an_error_naming_it_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("stream.key");
    let err = HandedKey::new(&dir.path().join("device.key"), &to, 0).unwrap_err();
    assert!(matches!(err, UpdateError::StreamKey { .. }), "{err}");
    assert!(err.to_string().contains("device.key"), "{err}");
    assert!(!to.exists());
}
