//! The apps stopped on request (`Runtime::stop_app`), kept on the data
//! partition (`STATE_DIR/stopped`, one app name a line, written atomically)
//! so that a stopped app stays stopped across restarts of the runtime and
//! reboots until it is started again.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::{LoadError, paths};

/// The set, and where it is kept.
#[derive(Debug)]
pub(crate) struct StoppedApps {
    path: PathBuf,
    names: BTreeSet<String>,
}

impl StoppedApps {
    /// The set kept under `state_dir` (empty when there is none yet). A file
    /// that cannot be read is logged and read as empty: the apps run.
    pub(crate) fn load(state_dir: &Path) -> Self {
        let path = state_dir.join(paths::state::STOPPED);
        let names = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .filter(|l| {
                    let valid = trellis_layout::valid_name(l);
                    if !valid {
                        tracing::warn!(path = %path.display(), "ignoring {l:?}: not an app name");
                    }
                    valid
                })
                .map(str::to_owned)
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => {
                tracing::error!(path = %path.display(), "cannot read the stopped apps, running them all: {e}");
                BTreeSet::new()
            }
        };
        Self { path, names }
    }

    /// Whether `app` is stopped.
    pub(crate) fn contains(&self, app: &str) -> bool {
        self.names.contains(app)
    }

    /// Mark `app` stopped and record it; whether it was not stopped before.
    /// When it cannot be recorded, nothing changes.
    pub(crate) fn insert(&mut self, app: &str) -> Result<bool, LoadError> {
        if self.names.contains(app) {
            return Ok(false);
        }
        let mut names = self.names.clone();
        names.insert(app.to_owned());
        self.save(names)?;
        Ok(true)
    }

    /// Clear `app`'s mark and record it; whether it was stopped. When it
    /// cannot be recorded, nothing changes.
    pub(crate) fn remove(&mut self, app: &str) -> Result<bool, LoadError> {
        if !self.names.contains(app) {
            return Ok(false);
        }
        let mut names = self.names.clone();
        names.remove(app);
        self.save(names)?;
        Ok(true)
    }

    fn save(&mut self, names: BTreeSet<String>) -> Result<(), LoadError> {
        let text: String = names.iter().map(|n| format!("{n}\n")).collect();
        let written = self
            .path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| trellis_layout::write_atomic(&self.path, text.as_bytes()).map_err(|e| e.into_io()));
        match written {
            Ok(()) => {
                self.names = names;
                Ok(())
            }
            Err(source) => Err(LoadError::StoppedList { path: self.path.clone(), source }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_set_survives_a_reload_and_a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = StoppedApps::load(dir.path());
        assert!(!set.contains("blinky"));
        assert!(set.insert("blinky").unwrap());
        assert!(!set.insert("blinky").unwrap(), "stopping twice is one stop");
        assert!(set.insert("counter").unwrap());
        assert_eq!(std::fs::read_to_string(dir.path().join("stopped")).unwrap(), "blinky\ncounter\n");
        assert!(set.remove("counter").unwrap());
        assert!(!set.remove("counter").unwrap());
        let again = StoppedApps::load(dir.path());
        assert!(again.contains("blinky") && !again.contains("counter"));

        // A state directory that cannot be written: the error names the file.
        let mut broken = StoppedApps::load(&dir.path().join("stopped").join("not-a-dir"));
        let e = broken.insert("blinky").unwrap_err().to_string();
        assert!(e.contains("not-a-dir/stopped"), "{e}");
        assert!(!broken.contains("blinky"));

        // Lines that are not app names are ignored.
        std::fs::write(dir.path().join("stopped"), "blinky\n../etc\n\n").unwrap();
        let read = StoppedApps::load(dir.path());
        assert_eq!(read.names.iter().collect::<Vec<_>>(), ["blinky"]);
    }
}
