//! The update record, kept on the data partition across reboots.

use std::fs;
use std::path::{Path, PathBuf};

use crate::{UpdateError, UpdateRecord};

/// The record's file (`/data/trellis/update.json`), replaced atomically.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The record kept at `path`.
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record, if there is one. A file that cannot be read or parsed is
    /// logged and treated as no record: the device keeps running the slot it
    /// booted, which is always safe.
    #[must_use]
    pub fn load(&self) -> Option<UpdateRecord> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "cannot read the update record: {e}");
                return None;
            }
        };
        match serde_json::from_str(&text) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "ignoring a damaged update record: {e}");
                None
            }
        }
    }

    /// Replace the record: write a temporary file, fsync it, rename it over the
    /// old one and fsync the directory, so a power cut leaves the old record or
    /// the new one, never a mix.
    ///
    /// # Errors
    /// The file or its directory cannot be written.
    pub fn save(&self, record: &UpdateRecord) -> Result<(), UpdateError> {
        let err = |source| UpdateError::State { path: self.path.clone(), source };
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(err)?;
        }
        let mut text = serde_json::to_vec_pretty(record).map_err(|e| err(e.into()))?;
        text.push(b'\n');
        trellis_layout::write_atomic(&self.path, &text).map_err(|e| err(e.into_io()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::Phase;

    fn record() -> UpdateRecord {
        UpdateRecord {
            bundle: "/data/update.raucb".into(),
            version: Some("2.0.0".into()),
            from: "A".into(),
            to: Some("B".into()),
            phase: Phase::Trial,
            reason: None,
            boot_id: "b1".into(),
            started: 1,
            changed: 2,
            resumed: 0,
        }
    }

    #[test]
    fn a_record_survives_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("trellis/update.json"));
        assert_eq!(file.load(), None);
        file.save(&record()).unwrap();
        assert_eq!(file.load(), Some(record()));
        assert!(!dir.path().join("trellis/update.json.tmp").exists());
        let text = fs::read_to_string(file.path()).unwrap();
        assert!(text.contains("\"phase\": \"trial\""), "{text}");
    }

    #[test]
    fn a_damaged_record_is_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("update.json"));
        fs::write(file.path(), "{\"bundle\": \"x\", \"phase\": ").unwrap();
        assert_eq!(file.load(), None);
    }
}
