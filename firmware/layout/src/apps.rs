//! The apps directory: one `NAME.wasm` per app.

use std::path::{Path, PathBuf};

/// The extension of an app file.
pub const APP_EXTENSION: &str = "wasm";

/// Whether `name` is an app name: `[a-z0-9][a-z0-9_-]*`, at most 64
/// characters (so never `/`, `..`, NUL or a hidden name).
#[must_use]
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}

/// A directory of apps, each `NAME.wasm`: the apps directory, the seed apps
/// in an image, the last-good copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppsDir(PathBuf);

impl AppsDir {
    /// The apps in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self(dir.into())
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// Where app `name`'s file is (`DIR/NAME.wasm`).
    #[must_use]
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(format!("{name}.{APP_EXTENSION}"))
    }

    /// The app a file at `path` is (in any directory): `NAME` of `NAME.wasm`
    /// for a valid name; `None` for anything else (hidden and temporary files
    /// among them).
    #[must_use]
    pub fn name(path: &Path) -> Option<String> {
        let file = path.file_name()?.to_str()?;
        let stem = file.strip_suffix(APP_EXTENSION)?.strip_suffix('.')?;
        valid_name(stem).then(|| stem.to_owned())
    }

    /// The apps here, `(name, path)` sorted by name.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn list(&self) -> std::io::Result<Vec<(String, PathBuf)>> {
        let mut apps = Vec::new();
        for entry in std::fs::read_dir(&self.0)? {
            let path = entry?.path();
            if let Some(name) = Self::name(&path)
                && path.is_file()
            {
                apps.push((name, path));
            }
        }
        apps.sort();
        Ok(apps)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_and_paths_map_both_ways() {
        let apps = AppsDir::new("/data/apps");
        assert_eq!(apps.path("blinky"), Path::new("/data/apps/blinky.wasm"));
        assert_eq!(AppsDir::name(&apps.path("blinky")).as_deref(), Some("blinky"));
        for not_an_app in [
            ".blinky.wasm",
            ".blinky.wasm.tmp",
            "blinky.wasm.tmp",
            "Blinky.wasm",
            "blinky",
            "a b.wasm",
            ".wasm",
            "blinkywasm",
        ] {
            assert_eq!(AppsDir::name(Path::new(not_an_app)), None, "{not_an_app}");
        }
    }

    #[test]
    fn valid_names() {
        for good in ["a", "blinky", "my-app_2", "0"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "..", "a/b", "a\0b", "Blinky", "-a", "_a", "%2e%2e", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn lists_only_app_files_sorted() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["b.wasm", "a.wasm", ".a.wasm.tmp", "notes.txt"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub.wasm")).unwrap();
        let apps = AppsDir::new(dir.path());
        let names: Vec<String> = apps.list().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(AppsDir::new(dir.path().join("missing")).list().is_err());
    }
}
