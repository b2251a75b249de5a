//! The apps directory's watcher: which app files were written or renamed
//! into place, and which went away (inotify, through `notify`).

use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use trellis_layout::AppsDir;

use crate::RuntimeError;

/// A change to an app file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AppFileEvent {
    /// A writer finished (cp, a direct write) or the file was renamed into place.
    Written(PathBuf),
    /// The file was removed or renamed away.
    Gone(PathBuf),
}

/// Watch `dir` for the files of the apps `runs` accepts, handing each change
/// to `sink`, for as long as the returned watcher lives. Hidden files and
/// names that are not `NAME.wasm` are ignored.
///
/// # Errors
/// The directory cannot be watched.
pub(crate) fn watch(
    dir: &Path,
    runs: impl Fn(&str) -> bool + Send + 'static,
    sink: impl Fn(AppFileEvent) + Send + 'static,
) -> Result<notify::RecommendedWatcher, RuntimeError> {
    let err = |e: notify::Error| RuntimeError::Watch { path: dir.to_owned(), reason: e.to_string() };
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        let app = |p: &&PathBuf| AppsDir::name(p).is_some_and(|name| runs(&name));
        let change: fn(PathBuf) -> AppFileEvent = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => AppFileEvent::Written,
            // (A rename inside the directory also arrives as `Both`; the `From`
            // and `To` halves already cover it.)
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) | EventKind::Remove(_) => AppFileEvent::Gone,
            _ => return,
        };
        for path in event.paths.iter().filter(app) {
            sink(change(path.clone()));
        }
    })
    .map_err(err)?;
    watcher.watch(dir, RecursiveMode::NonRecursive).map_err(err)?;
    Ok(watcher)
}
