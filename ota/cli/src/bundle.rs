//! `trellis bundle inspect`: what a RAUC update bundle carries, read by RAUC
//! itself (`rauc info`), so the signature check is the device's own.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// One image of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Slot class (`boot`, `rootfs`).
    pub class: String,
    /// File in the bundle.
    pub filename: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
    /// Hooks run for it.
    pub hooks: Vec<String>,
}

/// What `rauc info` says about a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleInfo {
    /// Must equal the device's `compatible`.
    pub compatible: String,
    /// The firmware version inside.
    pub version: String,
    /// Free text.
    pub description: String,
    /// The `trellis:app` interface its runtime provides, from the description's
    /// `apps: trellis:app@VERSION` (written by `make bundle`).
    pub app_interface: Option<String>,
    /// The images, in manifest order.
    pub images: Vec<Image>,
    /// Who signed it, when the signature was checked against a keyring.
    pub signer: Option<String>,
}

/// The version in a description's `apps: trellis:app@VERSION`.
fn app_interface(description: &str) -> Option<String> {
    let (_, rest) = description.split_once(&format!("apps: {}@", trellis_appfmt::INTERFACE_PACKAGE))?;
    let version: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    trellis_appfmt::semver_triple(&version).map(|_| version)
}

/// Parse `rauc info --output-format=json` and its messages.
///
/// # Errors
/// The JSON lacks what every bundle has.
pub fn parse(json: &str, messages: &str) -> Result<BundleInfo> {
    let v: Value = serde_json::from_str(json).context("rauc info printed no JSON")?;
    let field = |name: &str| v.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    let mut images = Vec::new();
    for entry in v.get("images").and_then(Value::as_array).into_iter().flatten() {
        for (class, img) in entry.as_object().into_iter().flatten() {
            images.push(Image {
                class: class.clone(),
                filename: img.get("filename").and_then(Value::as_str).unwrap_or_default().to_owned(),
                size: img.get("size").and_then(Value::as_u64).unwrap_or_default(),
                sha256: img.get("checksum").and_then(Value::as_str).unwrap_or_default().to_owned(),
                hooks: img
                    .get("hooks")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|h| h.as_str().map(String::from))
                    .collect(),
            });
        }
    }
    if field("compatible").is_empty() {
        bail!("rauc info: no compatible in the manifest");
    }
    let signer = messages
        .lines()
        .find_map(|l| l.split_once("Verified inline signature by '").map(|(_, rest)| rest.trim_end_matches('\'')))
        .map(String::from);
    Ok(BundleInfo {
        compatible: field("compatible"),
        version: field("version"),
        app_interface: app_interface(&field("description")),
        description: field("description"),
        images,
        signer,
    })
}

/// Run `rauc info` on `bundle`, checking its signature against `keyring`
/// (without one, the signature is not checked, and the output says so).
///
/// # Errors
/// `rauc` is missing, or refuses the bundle (its reason, with the file's name).
pub fn inspect(bundle: &Path, keyring: Option<&Path>) -> Result<BundleInfo> {
    let mut cmd = Command::new("rauc");
    cmd.arg("info").arg("--output-format=json");
    match keyring {
        Some(k) => cmd.arg(format!("--keyring={}", k.display())),
        None => cmd.arg("--no-verify"),
    };
    let out = cmd.arg(bundle).output().context("cannot run rauc (apt-get install rauc)")?;
    let messages = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let reason = messages
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.split_once("**: ").map_or(l, |(_, r)| r).trim().to_owned())
            .unwrap_or_else(|| format!("exit status {}", out.status));
        bail!("{}: {reason}", bundle.display());
    }
    parse(&String::from_utf8_lossy(&out.stdout), &messages).with_context(|| bundle.display().to_string())
}

/// Human-readable summary.
#[must_use]
pub fn describe(info: &BundleInfo, size: u64, verified: bool) -> String {
    #[allow(clippy::cast_precision_loss)]
    let mib = |b: u64| b as f64 / 1_048_576.0;
    let mut s = format!(
        "compatible   {}\nversion      {}\ndescription  {}\napps         {}\nsize         {:.1} MiB\nsignature    {}\nimages\n",
        info.compatible,
        info.version,
        info.description,
        info.app_interface.as_deref().map_or_else(
            || "not said (the description has no apps: trellis:app@VERSION)".to_owned(),
            |v| format!("{}@{v}", trellis_appfmt::INTERFACE_PACKAGE)
        ),
        mib(size),
        match (&info.signer, verified) {
            (Some(who), true) => format!("verified, signed by {who}"),
            _ => "not checked (give --keyring to check it)".into(),
        }
    );
    for i in &info.images {
        s.push_str(&format!(
            "  {:<8} {:<18} {:>8.1} MiB  sha256 {}{}\n",
            i.class,
            i.filename,
            mib(i.size),
            i.sha256,
            if i.hooks.is_empty() { String::new() } else { format!("  hooks {}", i.hooks.join(",")) }
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_rauc_info() {
        let json = r#"{"compatible":"trellis-qemu-aarch64","version":"1.2","description":"d","build":"x","hooks":[],
            "images":[{"boot":{"variant":null,"filename":"boot.vfat","checksum":"ab","size":67108864,"hooks":["post-install"],"adaptive":[]}},
                      {"rootfs":{"variant":null,"filename":"rootfs.squashfs","checksum":"cd","size":17801216,"hooks":[],"adaptive":[]}}]}"#;
        let info = parse(json, "rauc-Message: Verified inline signature by 'O = T, CN = S'\n").unwrap();
        assert_eq!(info.compatible, "trellis-qemu-aarch64");
        assert_eq!(info.images.len(), 2);
        assert_eq!(info.images[0].hooks, ["post-install"]);
        assert_eq!(info.signer.as_deref(), Some("O = T, CN = S"));
        let text = describe(&info, 21 << 20, true);
        assert!(text.contains("rootfs.squashfs") && text.contains("verified, signed by O = T, CN = S"), "{text}");
        assert!(parse("{}", "").is_err());
        assert_eq!(info.app_interface, None, "a bundle that does not say");
    }

    #[test]
    fn the_app_interface_is_read_from_the_description() {
        let info = |d: &str| {
            let json = format!(r#"{{"compatible":"c","version":"1","description":"{d}","images":[]}}"#);
            parse(&json, "").unwrap().app_interface
        };
        assert_eq!(info("Trellis for trellis-rpi4; apps: trellis:app@0.1.2").as_deref(), Some("0.1.2"));
        assert_eq!(info("apps: trellis:app@1.10.0 (beta)").as_deref(), Some("1.10.0"));
        assert_eq!(info("apps: trellis:app@next"), None);
        assert_eq!(info("trellis:app@0.1.2"), None, "only after `apps: `");
    }
}
