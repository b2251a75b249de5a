//! The boot disk and what is on its data partition.

/// Partitions of the boot disk init links (`/dev/<alias>p1` … `p16`).
pub const MAX_PARTITIONS: u32 = 16;

/// The kernel's name of partition `n` of `disk`: `mmcblk0p7`, `vda7`, `sda7`.
#[must_use]
pub fn partition_name(disk: &str, n: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) { format!("{disk}p{n}") } else { format!("{disk}{n}") }
}

/// What the start of a partition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// An ext2/3/4 superblock.
    Ext4,
    /// An F2FS superblock.
    F2fs,
    /// Blank: never formatted, or wiped (all 0xff, as the image leaves it, or all zeros).
    Nothing,
    /// Something else: a damaged superblock, or garbage.
    Unknown,
}

/// Bytes of a partition's start that [`detect`] needs.
pub const PROBE_LEN: usize = 2048;

/// Look for a file system superblock in the first [`PROBE_LEN`] bytes.
#[must_use]
pub fn detect(head: &[u8]) -> Content {
    // ext4: superblock at 1024, s_magic 0xEF53 (LE) at offset 56 within it.
    if head.get(1080..1082) == Some(&[0x53, 0xEF]) {
        return Content::Ext4;
    }
    // F2FS: superblock at 1024, magic 0xF2F52010 (LE).
    if head.get(1024..1028) == Some(&[0x10, 0x20, 0xF5, 0xF2]) {
        return Content::F2fs;
    }
    if head.iter().all(|&b| b == 0xff) || head.iter().all(|&b| b == 0) { Content::Nothing } else { Content::Unknown }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

    use super::*;

    #[test]
    fn names() {
        assert_eq!(partition_name("mmcblk0", 7), "mmcblk0p7");
        assert_eq!(partition_name("vda", 7), "vda7");
    }

    #[test]
    fn magic() {
        let mut head = vec![0xffu8; PROBE_LEN];
        assert_eq!(detect(&head), Content::Nothing);
        head[1080] = 0x53;
        head[1081] = 0xEF;
        assert_eq!(detect(&head), Content::Ext4);
        let mut f2 = vec![0u8; PROBE_LEN];
        f2[1024..1028].copy_from_slice(&0xF2F5_2010u32.to_le_bytes());
        assert_eq!(detect(&f2), Content::F2fs);
        assert_eq!(detect(&[]), Content::Nothing);
        assert_eq!(detect(&[0u8; PROBE_LEN]), Content::Nothing);
        let garbage: Vec<u8> = (0..PROBE_LEN).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(detect(&garbage), Content::Unknown);
    }
}
