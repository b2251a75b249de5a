//! First boot: the image's seed apps copied into a new apps directory.

use std::path::Path;

use trellis_layout::{AppsDir, write_atomic};

use crate::RuntimeError;

/// First boot: copy the image's seed apps into a new apps directory. The copy
/// is made in a temporary directory and renamed into place, so a power cut
/// leaves either no apps directory (seeded again next boot) or a complete one.
pub(crate) fn seed_apps(seed: &Path, apps_dir: &Path) -> Result<(), RuntimeError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| RuntimeError::Io { path, source }
    };
    let tmp = apps_dir.with_extension("seeding");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let mut names = Vec::new();
    for (name, path) in AppsDir::new(seed).list().map_err(io(seed))? {
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let to = AppsDir::new(&tmp).path(&name);
        write_atomic(&to, &bytes).map_err(|e| io(&to)(e.into_io()))?;
        names.push(name);
    }
    std::fs::rename(&tmp, apps_dir).map_err(io(apps_dir))?;
    if let Some(parent) = apps_dir.parent() {
        std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(io(parent))?;
    }
    names.sort();
    tracing::info!(from = %seed.display(), apps = ?names, "first boot: seeded the apps directory");
    Ok(())
}
