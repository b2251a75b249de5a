//! Where `autoboot.txt` and the running slot are read and written.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::autoboot::SECTOR;
use crate::{Autoboot, Error, Slot};

/// Side effects of the backend.
pub trait Store {
    /// Read `autoboot.txt`.
    ///
    /// # Errors
    /// It cannot be read or parsed.
    fn read(&mut self) -> Result<Autoboot, Error>;
    /// Rewrite `autoboot.txt` in place (one sector, then fsync).
    ///
    /// # Errors
    /// It cannot be written.
    fn write(&mut self, ab: &Autoboot) -> Result<(), Error>;
    /// The slot running now.
    ///
    /// # Errors
    /// The kernel command line names none.
    fn current(&mut self) -> Result<Slot, Error>;
}

/// `autoboot.txt` as a file (the AUTOBOOT partition mounted somewhere) and the
/// kernel command line as a file (`/proc/cmdline`).
#[derive(Debug, Clone)]
pub struct FileStore {
    /// `autoboot.txt`.
    pub autoboot: PathBuf,
    /// The kernel command line.
    pub cmdline: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.display().to_string(), source }
}

impl Store for FileStore {
    fn read(&mut self) -> Result<Autoboot, Error> {
        let bytes = std::fs::read(&self.autoboot).map_err(io(&self.autoboot))?;
        Autoboot::parse(&bytes).map_err(|e| Error::Invalid(format!("{}: {e}", self.autoboot.display())))
    }

    fn write(&mut self, ab: &Autoboot) -> Result<(), Error> {
        let bytes = ab.render()?;
        // Never truncate, never rename: overwrite the one sector the file occupies.
        let mut f =
            std::fs::OpenOptions::new().read(true).write(true).open(&self.autoboot).map_err(io(&self.autoboot))?;
        let mut old = Vec::new();
        f.read_to_end(&mut old).map_err(io(&self.autoboot))?;
        if old.len() != SECTOR {
            return Err(Error::Refused(format!(
                "{} is {} bytes; it must be exactly {SECTOR} (one sector) to be rewritten safely in place",
                self.autoboot.display(),
                old.len()
            )));
        }
        f.seek(SeekFrom::Start(0))
            .and_then(|_| f.write_all(&bytes))
            .and_then(|()| f.sync_all())
            .map_err(io(&self.autoboot))
    }

    fn current(&mut self) -> Result<Slot, Error> {
        let cmdline = std::fs::read_to_string(&self.cmdline).map_err(io(&self.cmdline))?;
        let slot = trellis_layout::booted_slot(&cmdline)
            .ok_or_else(|| Error::Invalid(format!("{} has no rauc.slot=", self.cmdline.display())))?;
        Slot::parse(slot)
    }
}

/// The AUTOBOOT partition, mounted read-write only while `f` runs, so a power
/// cut at any other time finds the FAT clean.
///
/// # Errors
/// It cannot be mounted, or `f` fails (it is unmounted either way).
#[cfg(target_os = "linux")]
pub fn with_autoboot<T>(
    device: &str,
    mountpoint: &str,
    cmdline: &str,
    f: impl FnOnce(&mut FileStore) -> Result<T, Error>,
) -> Result<T, Error> {
    use rustix::mount::{MountFlags, UnmountFlags};
    std::fs::create_dir_all(mountpoint).map_err(io(Path::new(mountpoint)))?;
    rustix::mount::mount(device, mountpoint, "vfat", MountFlags::NOATIME | MountFlags::NOEXEC, None::<&std::ffi::CStr>)
        .map_err(|e| Error::Io { path: device.into(), source: e.into() })?;
    let mut store = FileStore { autoboot: Path::new(mountpoint).join("autoboot.txt"), cmdline: cmdline.into() };
    let result = f(&mut store);
    let unmounted = rustix::mount::unmount(mountpoint, UnmountFlags::empty())
        .map_err(|e| Error::Io { path: mountpoint.into(), source: e.into() });
    let value = result?;
    unmounted?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Request, handle};

    fn store(dir: &Path, autoboot: &[u8]) -> FileStore {
        std::fs::write(dir.join("autoboot.txt"), autoboot).unwrap();
        std::fs::write(dir.join("cmdline"), "console=ttyAMA0 root=/dev/vda6 rauc.slot=B ro\n").unwrap();
        FileStore { autoboot: dir.join("autoboot.txt"), cmdline: dir.join("cmdline") }
    }

    #[test]
    fn rewrites_in_place_and_reads_the_slot() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), include_bytes!("../../../board/qemu-aarch64/autoboot.txt"));
        assert_eq!(s.current().unwrap(), Slot::B);
        handle(&mut s, Request::SetState(Slot::B, true)).unwrap();
        let bytes = std::fs::read(&s.autoboot).unwrap();
        assert_eq!(bytes.len(), SECTOR);
        assert_eq!(Autoboot::parse(&bytes).unwrap(), Autoboot { primary: 3, trial: 2 });
    }

    #[test]
    fn refuses_a_file_that_is_not_one_sector() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), b"[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n");
        let e = handle(&mut s, Request::SetState(Slot::B, true)).unwrap_err().to_string();
        assert!(e.contains("must be exactly 512"), "{e}");
        assert!(std::fs::read_to_string(&s.autoboot).unwrap().contains("boot_partition=3"), "untouched");
    }

    #[test]
    fn names_the_missing_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileStore { autoboot: dir.path().join("nope.txt"), cmdline: dir.path().join("cmdline") };
        assert!(s.read().unwrap_err().to_string().contains("nope.txt"));
        std::fs::write(dir.path().join("cmdline"), "root=/dev/vda5\n").unwrap();
        assert!(s.current().unwrap_err().to_string().contains("no rauc.slot="));
    }
}
