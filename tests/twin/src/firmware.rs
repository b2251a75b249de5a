//! What the Pi firmware reads before the kernel: `autoboot.txt` on the first
//! partition (which boot partition, and which one for a trial boot) and the
//! chosen partition's `config.txt` (which kernel file).

use crate::Error;

/// The parts of `autoboot.txt` the firmware acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Autoboot {
    /// `tryboot_a_b=1`: the boot partitions are A/B slots with their own `config.txt`.
    pub tryboot_a_b: bool,
    /// `boot_partition` of the `[all]` section: the normal boot.
    pub boot_partition: u32,
    /// `boot_partition` of the `[tryboot]` section: the trial boot.
    pub tryboot_partition: Option<u32>,
}

impl Autoboot {
    /// Parse `autoboot.txt`. Keys before any section belong to `[all]`; other
    /// sections (filters for other boards) are ignored, as the firmware does on a Pi 4.
    ///
    /// # Errors
    /// No `boot_partition` for the normal boot, or a value that is not a partition number.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let mut section = String::from("all");
        let (mut tryboot_a_b, mut boot, mut tryboot) = (false, None, None);
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                name.trim().clone_into(&mut section);
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(Error::Firmware(format!("autoboot.txt line {}: {raw:?} is not key=value", n + 1)));
            };
            let number = || {
                value.trim().parse::<u32>().ok().filter(|p| (1..=63).contains(p)).ok_or_else(|| {
                    Error::Firmware(format!("autoboot.txt line {}: {value:?} is not a partition number", n + 1))
                })
            };
            match (section.as_str(), key.trim()) {
                ("all", "tryboot_a_b") => tryboot_a_b = value.trim() == "1",
                ("all", "boot_partition") => boot = Some(number()?),
                ("tryboot", "boot_partition") => tryboot = Some(number()?),
                _ => {}
            }
        }
        let boot_partition =
            boot.ok_or_else(|| Error::Firmware("autoboot.txt has no boot_partition in [all]".into()))?;
        Ok(Self { tryboot_a_b, boot_partition, tryboot_partition: tryboot })
    }

    /// The partition the firmware boots: the `[tryboot]` one when the last
    /// reboot asked for a trial boot (and there is one), else the `[all]` one.
    #[must_use]
    pub const fn choose(&self, tryboot: bool) -> u32 {
        match (tryboot, self.tryboot_partition) {
            (true, Some(p)) => p,
            _ => self.boot_partition,
        }
    }
}

/// The kernel file named by `config.txt` (`kernel=`, default `kernel8.img` on a 64-bit Pi 4).
#[must_use]
pub fn kernel_name(config_txt: &str) -> String {
    let mut section = String::from("all");
    let mut kernel = String::from("kernel8.img");
    for raw in config_txt.lines() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            name.trim().clone_into(&mut section);
        } else if let Some(value) = line.strip_prefix("kernel=")
            && matches!(section.as_str(), "all" | "pi4")
        {
            value.trim().clone_into(&mut kernel);
        }
    }
    kernel
}

/// What the kernel prints when a reboot carries a command; `0 tryboot` sets
/// the firmware's one-shot trial-boot flag.
pub const TRYBOOT_LINE: &str = "Restarting system with command '0 tryboot'";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_trellis_autoboot_txt() {
        let a = Autoboot::parse(include_str!("../../../board/qemu-aarch64/autoboot.txt")).unwrap();
        assert_eq!(a, Autoboot { tryboot_a_b: true, boot_partition: 2, tryboot_partition: Some(3) });
        assert_eq!(a.choose(false), 2);
        assert_eq!(a.choose(true), 3);
    }

    #[test]
    fn after_a_commit_b_is_primary_and_a_is_the_trial() {
        let a = Autoboot::parse("[all]\ntryboot_a_b=1\nboot_partition=3\n[tryboot]\nboot_partition=2\n").unwrap();
        assert_eq!((a.choose(false), a.choose(true)), (3, 2));
    }

    #[test]
    fn no_tryboot_section_boots_the_normal_partition() {
        let a = Autoboot::parse("boot_partition=2\n[cm4]\nboot_partition=5\n").unwrap();
        assert_eq!(a.choose(true), 2);
    }

    #[test]
    fn bad_files_are_named() {
        assert!(
            Autoboot::parse("[tryboot]\nboot_partition=3\n").unwrap_err().to_string().contains("no boot_partition")
        );
        assert!(Autoboot::parse("boot_partition=x\n").unwrap_err().to_string().contains("line 1"));
        assert!(Autoboot::parse("boot_partition\n").unwrap_err().to_string().contains("key=value"));
    }

    #[test]
    fn kernel_from_config_txt() {
        assert_eq!(kernel_name(include_str!("../../../board/qemu-aarch64/config.txt")), "Image");
        assert_eq!(kernel_name("arm_64bit=1\n"), "kernel8.img");
        assert_eq!(kernel_name("[pi3]\nkernel=k3\n[all]\n"), "kernel8.img");
    }
}
