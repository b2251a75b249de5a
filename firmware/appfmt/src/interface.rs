//! The `trellis:app` interface: which version an app was built against, and
//! whether a runtime providing some version runs it. One rule, used by the
//! runtime when it loads an app and by the fleet agent before it installs a
//! release's firmware or apps.

/// The WIT package apps import.
pub const INTERFACE_PACKAGE: &str = "trellis:app";

/// `MAJOR.MINOR.PATCH` as numbers (nothing else: no pre-release tags).
#[must_use]
pub fn semver_triple(v: &str) -> Option<(u64, u64, u64)> {
    let mut parts = v.split('.').map(|p| p.parse::<u64>().ok());
    let triple = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(triple)
}

/// Apps built for interface `wanted` run on a runtime providing `provided`
/// when the major (and, before 1.0, the minor) versions match and the
/// runtime's is not older.
#[must_use]
pub fn interface_compatible(wanted: &str, provided: &str) -> bool {
    let (Some(w), Some(p)) = (semver_triple(wanted), semver_triple(provided)) else { return false };
    let same_line = if w.0 == 0 { w.0 == p.0 && w.1 == p.1 } else { w.0 == p.0 };
    same_line && p >= w
}

/// The imports of the `trellis:app` package among a component's imports
/// ([`crate::interface_imports`]), each with its version as written after
/// the `@` (`("trellis:app/log@0.1.2", "0.1.2")`); an import without a
/// version gives `""`, which no runtime accepts.
#[must_use]
pub fn imported_versions(imports: &[String]) -> Vec<(&str, &str)> {
    let prefix = format!("{INTERFACE_PACKAGE}/");
    imports
        .iter()
        .filter_map(|import| Some((import.as_str(), import.strip_prefix(&prefix)?)))
        .map(|(import, rest)| (import, rest.split_once('@').map_or("", |(_, v)| v)))
        .collect()
}

/// The version an app was built for: the highest `trellis:app` version it
/// imports (`None` when it imports nothing of the package: any runtime runs it).
#[must_use]
pub fn built_for(imports: &[String]) -> Option<String> {
    imported_versions(imports).into_iter().map(|(_, v)| v).max_by_key(|v| semver_triple(v)).map(str::to_owned)
}

/// Component `code` as if built against interface version `to` instead of
/// `from`: every `@FROM` in it rewritten to `@TO` (the `trellis:app` imports
/// and exports and their type information, and any other `@FROM` bytes: a
/// blunt tool, for fixtures only). For fixtures standing in for
/// an app built against another patch of the interface: the versions must be
/// as long as each other (the binary stays valid); `None` when they are not,
/// or when the code names no `@FROM`.
#[must_use]
pub fn retarget_interface(code: &[u8], from: &str, to: &str) -> Option<Vec<u8>> {
    let (from, to) = (format!("@{from}"), format!("@{to}"));
    if from.len() != to.len() {
        return None;
    }
    let mut out = code.to_vec();
    let mut found = false;
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from.as_bytes() {
            out[i..i + from.len()].copy_from_slice(to.as_bytes());
            found = true;
            i += from.len();
        } else {
            i += 1;
        }
    }
    found.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compatibility() {
        assert!(interface_compatible("0.1.1", "0.1.1"));
        assert!(interface_compatible("0.1.0", "0.1.2"));
        assert!(!interface_compatible("0.1.2", "0.1.1"), "newer than the runtime");
        assert!(!interface_compatible("0.2.0", "0.1.9"));
        assert!(!interface_compatible("0.1.0", "0.2.0"), "0.x minors break");
        assert!(interface_compatible("1.0.0", "1.4.0"));
        assert!(!interface_compatible("1.0.0", "2.0.0"));
        assert!(!interface_compatible("x", "1.4.0"));
        let code = b"\0asm trellis:app/log@0.1.2 trellis:app/state@0.1.2";
        assert_eq!(
            retarget_interface(code, "0.1.2", "0.1.0").as_deref(),
            Some(&b"\0asm trellis:app/log@0.1.0 trellis:app/state@0.1.0"[..])
        );
        assert_eq!(retarget_interface(code, "0.1.2", "0.1.10"), None, "another length");
        assert_eq!(retarget_interface(code, "0.2.0", "0.1.0"), None, "not named");
        assert!(!interface_compatible("", "0.1.2"), "an import without a version");
    }

    #[test]
    fn the_highest_import_is_what_an_app_was_built_for() {
        let imports: Vec<String> = ["wasi:io/streams@0.2.0", "trellis:app/log@0.1.0", "trellis:app/assets@0.1.2"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            imported_versions(&imports),
            [("trellis:app/log@0.1.0", "0.1.0"), ("trellis:app/assets@0.1.2", "0.1.2")]
        );
        assert_eq!(built_for(&imports).as_deref(), Some("0.1.2"));
        assert_eq!(built_for(&imports[..1]), None);
    }
}
