//! The booted slot, as the kernel command line names it for RAUC.

/// `X` of `rauc.slot=X` on the kernel command line `cmdline` (where RAUC reads
/// it too), if it is there.
#[must_use]
pub fn booted_slot(cmdline: &str) -> Option<&str> {
    cmdline.split_whitespace().find_map(|w| w.strip_prefix("rauc.slot=")).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_slot_anywhere_on_the_line() {
        let c = "console=ttyAMA0 root=/dev/vda6 rootfstype=squashfs ro panic=5 rauc.slot=B\n";
        assert_eq!(booted_slot(c), Some("B"));
        assert_eq!(booted_slot("rauc.slot=A quiet"), Some("A"));
    }

    #[test]
    fn none_without_it() {
        assert_eq!(booted_slot("console=ttyAMA0 root=/dev/vda5"), None);
        assert_eq!(booted_slot("rauc.slot= quiet"), None);
        assert_eq!(booted_slot("xrauc.slot=A"), None);
    }
}
