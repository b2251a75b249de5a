//! The slot hook's job: a boot slot image is built once and written to either
//! slot, so after RAUC writes it, its `cmdline.txt` must name that slot's root
//! filesystem and bootname.

use crate::Slot;

/// `cmdline` with `root=` pointing at `slot`'s root filesystem partition (the
/// device name kept, only its partition number changed) and `rauc.slot=` set.
#[must_use]
pub fn for_slot(cmdline: &str, slot: Slot) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut has_slot = false;
    for arg in cmdline.split_whitespace() {
        if let Some(dev) = arg.strip_prefix("root=") {
            let disk = dev.trim_end_matches(|c: char| c.is_ascii_digit());
            out.push(format!("root={disk}{}", slot.rootfs_partition()));
        } else if arg.starts_with("rauc.slot=") {
            has_slot = true;
            out.push(format!("rauc.slot={}", slot.name()));
        } else {
            out.push(arg.to_owned());
        }
    }
    if !has_slot {
        out.push(format!("rauc.slot={}", slot.name()));
    }
    out.join(" ") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_twin_and_the_pi() {
        let a = include_str!("../../../board/qemu-aarch64/cmdline-a.txt");
        let b = include_str!("../../../board/qemu-aarch64/cmdline-b.txt");
        assert_eq!(for_slot(a, Slot::B), b);
        assert_eq!(for_slot(b, Slot::A), a);
        let a = include_str!("../../../board/rpi4/cmdline-a.txt");
        let b = include_str!("../../../board/rpi4/cmdline-b.txt");
        assert_eq!(for_slot(a, Slot::B), b);
        assert_eq!(for_slot(b, Slot::A), a);
        assert_eq!(
            for_slot("console=serial0 root=/dev/mmcblk0p5 rootwait", Slot::B),
            "console=serial0 root=/dev/mmcblk0p6 rootwait rauc.slot=B\n"
        );
    }
}
