//! The twin's disk image from the outside: its MBR partition table, files on
//! its FAT boot partitions (through mtools, as the firmware reads them), and
//! raw writes for the tests that damage it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

const SECTOR: u64 = 512;

/// One partition of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// The number Linux gives it (1–4 primary, 5… logical).
    pub number: u32,
    /// MBR partition type.
    pub kind: u8,
    /// Offset in bytes.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Read the MBR partition table, following the extended partition's chain.
///
/// # Errors
/// The file cannot be read or has no valid MBR (both named).
pub fn partitions(image: &Path) -> Result<Vec<Partition>, Error> {
    let mut f = File::open(image).map_err(|e| Error::io(image, e))?;
    let mut read = |at: u64| -> Result<[u8; 512], Error> {
        let mut b = [0u8; 512];
        f.seek(SeekFrom::Start(at)).and_then(|_| f.read_exact(&mut b)).map_err(|e| Error::io(image, e))?;
        if b[510..512] != [0x55, 0xaa] {
            return Err(Error::Disk(format!("{}: no partition table at byte {at}", image.display())));
        }
        Ok(b)
    };
    let entry = |b: &[u8; 512], i: usize| {
        let e = &b[446 + 16 * i..446 + 16 * (i + 1)];
        let lba = u64::from(u32::from_le_bytes([e[8], e[9], e[10], e[11]]));
        let len = u64::from(u32::from_le_bytes([e[12], e[13], e[14], e[15]]));
        (e[4], lba, len)
    };
    let mbr = read(0)?;
    let mut out = Vec::new();
    let mut extended = None;
    for i in 0..4 {
        let (kind, lba, len) = entry(&mbr, i);
        match kind {
            0 => {}
            0x05 | 0x0f => extended = Some(lba),
            _ => out.push(Partition {
                number: u32::try_from(i + 1).unwrap_or(0),
                kind,
                start: lba * SECTOR,
                size: len * SECTOR,
            }),
        }
    }
    if let Some(ext) = extended {
        let mut ebr = ext;
        for number in 5..64 {
            let b = read(ebr * SECTOR)?;
            let (kind, lba, len) = entry(&b, 0);
            out.push(Partition { number, kind, start: (ebr + lba) * SECTOR, size: len * SECTOR });
            let (next_kind, next, _) = entry(&b, 1);
            if next_kind == 0 {
                break;
            }
            ebr = ext + next;
        }
    }
    Ok(out)
}

/// Partition `number` of `image`.
///
/// # Errors
/// The image has no such partition.
pub fn partition(image: &Path, number: u32) -> Result<Partition, Error> {
    partitions(image)?
        .into_iter()
        .find(|p| p.number == number)
        .ok_or_else(|| Error::Disk(format!("{} has no partition {number}", image.display())))
}

/// Copy `name` from the FAT file system on partition `part` to `dest`.
///
/// # Errors
/// mtools is missing or the file is not there (named).
pub fn fat_copy(image: &Path, part: &Partition, name: &str, dest: &Path) -> Result<(), Error> {
    let out = Command::new("mcopy")
        .arg("-o")
        .arg("-n")
        .arg("-i")
        .arg(format!("{}@@{}", image.display(), part.start))
        .arg(format!("::{name}"))
        .arg(dest)
        .output()
        .map_err(|e| Error::Disk(format!("cannot run mcopy (apt-get install mtools): {e}")))?;
    if !out.status.success() {
        return Err(Error::Disk(format!(
            "{name} on partition {} of {}: {}",
            part.number,
            image.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Read a text file from the FAT file system on partition `part`.
///
/// # Errors
/// As [`fat_copy`], or the file is not UTF-8.
pub fn fat_read(image: &Path, part: &Partition, name: &str, scratch: &Path) -> Result<String, Error> {
    let dest = scratch.join(format!("p{}-{name}", part.number));
    fat_copy(image, part, name, &dest)?;
    std::fs::read_to_string(&dest).map_err(|e| Error::io(&dest, e))
}

/// Overwrite `bytes` at `offset` of partition `part` (the device must be off).
///
/// # Errors
/// The write falls outside the partition or fails.
pub fn write_at(image: &Path, part: &Partition, offset: u64, bytes: &[u8]) -> Result<(), Error> {
    if offset + bytes.len() as u64 > part.size {
        return Err(Error::Disk(format!("write past the end of partition {}", part.number)));
    }
    let mut f = std::fs::OpenOptions::new().write(true).open(image).map_err(|e| Error::io(image, e))?;
    f.seek(SeekFrom::Start(part.start + offset))
        .and_then(|_| f.write_all(bytes))
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(image, e))
}

/// Read `len` bytes at `offset` of partition `part` (while the twin runs too:
/// what its disk has written through to the image file).
///
/// # Errors
/// The read falls outside the partition or fails.
pub fn read_at(image: &Path, part: &Partition, offset: u64, len: usize) -> Result<Vec<u8>, Error> {
    if offset + len as u64 > part.size {
        return Err(Error::Disk(format!("read past the end of partition {}", part.number)));
    }
    let mut f = std::fs::File::open(image).map_err(|e| Error::io(image, e))?;
    let mut bytes = vec![0; len];
    f.seek(SeekFrom::Start(part.start + offset))
        .and_then(|_| f.read_exact(&mut bytes))
        .map_err(|e| Error::io(image, e))?;
    Ok(bytes)
}

/// Copy an image, keeping it sparse.
///
/// # Errors
/// `cp` fails.
pub fn copy_image(from: &Path, to: &Path) -> Result<PathBuf, Error> {
    let status = Command::new("cp").arg("--sparse=always").arg(from).arg(to).status().map_err(|e| Error::io(to, e))?;
    if !status.success() {
        return Err(Error::Disk(format!("cannot copy {} to {}", from.display(), to.display())));
    }
    Ok(to.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn put(b: &mut [u8], at: usize, i: usize, kind: u8, lba: u32, len: u32) {
        let e = &mut b[at + 446 + 16 * i..at + 446 + 16 * (i + 1)];
        e[4] = kind;
        e[8..12].copy_from_slice(&lba.to_le_bytes());
        e[12..16].copy_from_slice(&len.to_le_bytes());
    }

    #[test]
    fn primary_and_logical_partitions() {
        // p1..p3 primary, p4 extended holding p5 and p6, like the Trellis layout.
        let mut disk = vec![0u8; 1100 * 512];
        put(&mut disk, 0, 0, 0x0c, 8, 8);
        put(&mut disk, 0, 1, 0x0c, 16, 8);
        put(&mut disk, 0, 2, 0x0c, 24, 8);
        put(&mut disk, 0, 3, 0x0f, 1000, 100);
        disk[510] = 0x55;
        disk[511] = 0xaa;
        let e1 = 1000 * 512;
        put(&mut disk, e1, 0, 0x83, 2, 10);
        put(&mut disk, e1, 1, 0x05, 50, 20);
        disk[e1 + 510] = 0x55;
        disk[e1 + 511] = 0xaa;
        let e2 = 1050 * 512;
        put(&mut disk, e2, 0, 0x83, 2, 18);
        disk[e2 + 510] = 0x55;
        disk[e2 + 511] = 0xaa;
        let dir = std::env::temp_dir().join(format!("trellis-twin-mbr-{}", std::process::id()));
        std::fs::write(&dir, &disk).unwrap();
        let p = partitions(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        let numbers: Vec<_> = p.iter().map(|p| (p.number, p.start / 512, p.size / 512)).collect();
        assert_eq!(numbers, [(1, 8, 8), (2, 16, 8), (3, 24, 8), (5, 1002, 10), (6, 1052, 18)]);
    }

    #[test]
    fn no_partition_table_is_an_error() {
        let path = std::env::temp_dir().join(format!("trellis-twin-nombr-{}", std::process::id()));
        std::fs::write(&path, vec![0u8; 1024]).unwrap();
        let e = partitions(&path).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(e.contains("no partition table"), "{e}");
    }
}
