//! The one way a file on the device is replaced.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a file could not be replaced; the old file (if any) is untouched and
/// no temporary file is left behind.
#[derive(Debug, thiserror::Error)]
pub enum AtomicWriteError<E: std::error::Error + 'static = std::io::Error> {
    /// Creating, writing, syncing or renaming a file failed.
    #[error("{step} {path}: {source}")]
    Io {
        /// What was being done: `creating`, `syncing`, `renaming into place`, ...
        step: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The caller's writer failed.
    #[error(transparent)]
    Fill(E),
}

impl AtomicWriteError<std::io::Error> {
    /// The underlying I/O error (for callers that speak `std::io`).
    #[must_use]
    pub fn into_io(self) -> std::io::Error {
        match self {
            Self::Io { step, path, source } => {
                std::io::Error::new(source.kind(), format!("{step} {}: {source}", path.display()))
            }
            Self::Fill(e) => e,
        }
    }
}

/// The temporary file [`write_atomic_with`] writes before it renames it to
/// `path`: next to it and hidden (the runtime's watcher ignores names
/// starting with a dot). One writer per path at a time; a temporary left by a
/// power cut is overwritten by the next write.
#[must_use]
pub fn temporary_path(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    path.with_file_name(format!(".{name}.tmp"))
}

fn io<E: std::error::Error + 'static>(
    step: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> AtomicWriteError<E> {
    let path = path.to_owned();
    move |source| AtomicWriteError::Io { step, path, source }
}

fn parent(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Replace `path` with `bytes`: see [`write_atomic_with`].
///
/// # Errors
/// Creating, writing, syncing or renaming failed; `path` is as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AtomicWriteError> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Replace `path` with what `fill` writes: a temporary file in the same
/// directory is written by `fill`, synced, renamed over `path`, and the
/// directory is synced, so after a power cut `path` is either the old file or
/// the whole new one, and the new name survives. On any failure the temporary
/// file is removed and `path` is untouched.
///
/// # Errors
/// `fill`'s error, or creating, syncing or renaming failed.
pub fn write_atomic_with<E: std::error::Error + 'static>(
    path: &Path,
    fill: impl FnOnce(&mut File) -> Result<(), E>,
) -> Result<(), AtomicWriteError<E>> {
    let tmp = temporary_path(path);
    let written = File::create(&tmp).map_err(io("creating", &tmp)).and_then(|mut f| {
        fill(&mut f).map_err(AtomicWriteError::Fill)?;
        f.sync_all().map_err(io("syncing", &tmp))
    });
    let renamed = written.and_then(|()| std::fs::rename(&tmp, path).map_err(io("renaming into place", path)));
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let dir = parent(path);
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("syncing the directory", dir))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        std::fs::write(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["a.json"]);
    }

    #[test]
    fn a_failing_writer_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wasm");
        std::fs::write(&path, b"old").unwrap();
        let err = write_atomic_with(&path, |f| {
            f.write_all(b"half")?;
            Err(std::io::Error::other("the client went away"))
        })
        .unwrap_err();
        assert!(matches!(err, AtomicWriteError::Fill(_)), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["a.wasm"]);
    }

    #[test]
    fn a_failed_rename_names_the_path_and_removes_the_temporary() {
        let dir = tempfile::tempdir().unwrap();
        // A directory in the way: the rename fails.
        let path = dir.path().join("sub.wasm");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), b"x").unwrap();
        let err = write_atomic(&path, b"new").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("renaming into place") && text.contains("sub.wasm"), "{text}");
        assert_eq!(names(dir.path()), ["sub.wasm"]);
    }

    #[test]
    fn a_missing_directory_names_the_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_atomic(&dir.path().join("no/such/file"), b"x").unwrap_err();
        assert!(err.to_string().starts_with("creating "), "{err}");
        assert!(err.to_string().contains("no/such"), "{err}");
    }
}
