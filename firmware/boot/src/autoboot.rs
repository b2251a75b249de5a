//! `autoboot.txt` as the boot backend writes it: one 512-byte sector.
//!
//! FAT has no atomic rename, so the file is never replaced: it is rewritten in
//! place, always exactly [`SECTOR`] bytes, in one `pwrite` at offset 0 followed
//! by `fsync`. The file's size, cluster chain and directory entry never change,
//! so the only thing a power cut can interrupt is the write of that one data
//! sector. An SD card writes a sector whole or not at all; and even a torn
//! sector is safe, because two renderings differ only in the two partition
//! digits (the layout is fixed), so any mix of old and new bytes is a valid
//! file naming either the old or the new partition in each section (tested
//! byte by byte in `torn_writes_are_always_bootable`).

use crate::Error;

/// The size of the file: one sector.
pub const SECTOR: usize = 512;

/// What the firmware reads from `autoboot.txt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Autoboot {
    /// `[all] boot_partition`: booted by default, after any power cycle.
    pub primary: u32,
    /// `[tryboot] boot_partition`: booted once after `reboot "0 tryboot"`.
    pub trial: u32,
}

impl Autoboot {
    /// The file's bytes: a fixed layout padded with a comment to one sector.
    ///
    /// # Errors
    /// A partition number outside 1–9 (the layout has room for one digit).
    pub fn render(&self) -> Result<[u8; SECTOR], Error> {
        for p in [self.primary, self.trial] {
            if !(1..=9).contains(&p) {
                return Err(Error::Invalid(format!("boot partition {p} is not 1-9")));
            }
        }
        let text = format!(
            "[all]\ntryboot_a_b=1\nboot_partition={}\n[tryboot]\nboot_partition={}\n\
             # Written by trellis-boot in place, one sector; keep it 512 bytes.\n",
            self.primary, self.trial
        );
        // Padding: short comment lines (the firmware reads config lines of limited length).
        let mut out = [b'#'; SECTOR];
        out[..text.len()].copy_from_slice(text.as_bytes());
        for (i, byte) in out.iter_mut().enumerate().skip(text.len()) {
            if (i - text.len()) % 64 == 63 || i == SECTOR - 1 {
                *byte = b'\n';
            }
        }
        Ok(out)
    }

    /// Parse the file (any layout the firmware accepts: keys before a section
    /// belong to `[all]`; other sections are ignored).
    ///
    /// # Errors
    /// No `boot_partition` in `[all]` or in `[tryboot]`, or one that is not a number.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let text = String::from_utf8_lossy(bytes);
        let mut section = "all".to_owned();
        let (mut primary, mut trial) = (None, None);
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                name.trim().clone_into(&mut section);
            } else if let Some(value) = line.strip_prefix("boot_partition=") {
                let n = value
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| Error::Invalid(format!("boot_partition={value} is not a number")))?;
                match section.as_str() {
                    "all" => primary = Some(n),
                    "tryboot" => trial = Some(n),
                    _ => {}
                }
            }
        }
        match (primary, trial) {
            (Some(primary), Some(trial)) => Ok(Self { primary, trial }),
            (None, _) => Err(Error::Invalid("autoboot.txt has no boot_partition in [all]".into())),
            (_, None) => Err(Error::Invalid("autoboot.txt has no boot_partition in [tryboot]".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_size() {
        let a = Autoboot { primary: 2, trial: 3 };
        let bytes = a.render().unwrap();
        assert_eq!(bytes.len(), SECTOR);
        assert_eq!(Autoboot::parse(&bytes).unwrap(), a);
        assert!(Autoboot { primary: 10, trial: 3 }.render().is_err());
    }

    #[test]
    fn the_factory_file_parses() {
        let factory = include_bytes!("../../../board/qemu-aarch64/autoboot.txt");
        assert_eq!(factory.len(), SECTOR, "the image's autoboot.txt must be one sector");
        assert_eq!(Autoboot::parse(factory).unwrap(), Autoboot { primary: 2, trial: 3 });
        assert_eq!(&Autoboot { primary: 2, trial: 3 }.render().unwrap()[..], &factory[..]);
    }

    #[test]
    fn torn_writes_are_always_bootable() {
        let states = [(2, 3), (3, 2), (2, 2), (3, 3)].map(|(primary, trial)| Autoboot { primary, trial });
        for old in states {
            for new in states {
                let (a, b) = (old.render().unwrap(), new.render().unwrap());
                // A write that got through the first `cut` bytes, and one that got
                // through everything but them (sectors are written in any order inside).
                for cut in 0..=SECTOR {
                    for torn in [[&b[..cut], &a[cut..]].concat(), [&a[..cut], &b[cut..]].concat()] {
                        let got = Autoboot::parse(&torn).unwrap();
                        assert!([old.primary, new.primary].contains(&got.primary), "{old:?}->{new:?} at {cut}");
                        assert!([old.trial, new.trial].contains(&got.trial), "{old:?}->{new:?} at {cut}");
                    }
                }
            }
        }
    }

    #[test]
    fn bad_files_are_named() {
        assert!(Autoboot::parse(b"[tryboot]\nboot_partition=3\n").unwrap_err().to_string().contains("[all]"));
        assert!(Autoboot::parse(b"boot_partition=2\n").unwrap_err().to_string().contains("[tryboot]"));
        assert!(Autoboot::parse(b"boot_partition=x\n").unwrap_err().to_string().contains("not a number"));
    }
}
