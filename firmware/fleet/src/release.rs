//! A release: a signed manifest naming a firmware bundle and/or apps by the
//! SHA-256 of their bytes, with what it is compatible with, its urgency and
//! the order in which its parts are applied.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use trellis_appfmt::{KeyError, KeyId, SigningKey, TrustList, interface_compatible, semver_triple};
use trellis_assets::{AssetId, Index, Job};
use trellis_control::AppSummary;

use crate::names::valid_id;

/// Why a release cannot be used. Messages name the field or the artifact.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// Not JSON, or not a release.
    #[error("release is not valid: {0}")]
    Parse(String),
    /// A field out of range.
    #[error("release field `{field}`: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Not signed.
    #[error("release {id} is not signed")]
    Unsigned {
        /// The release.
        id: String,
    },
    /// The signature is not 32 + 64 bytes of hex.
    #[error("release {id}: the signature is not a 32-byte key and a 64-byte signature in hex")]
    SignatureEncoding {
        /// The release.
        id: String,
    },
    /// The signature does not verify.
    #[error("release {id}: {source}")]
    Signature {
        /// The release.
        id: String,
        /// Why.
        source: KeyError,
    },
    /// An artifact's bytes are not the ones the release names.
    #[error("artifact {name} of release {id}: expected sha256 {expected}, got {actual} ({size} bytes)")]
    ArtifactMismatch {
        /// The release.
        id: String,
        /// Which artifact (an app's name, or `firmware`).
        name: String,
        /// What the release says.
        expected: String,
        /// What the bytes hash to.
        actual: String,
        /// How many bytes there were.
        size: u64,
    },
    /// The release's apps do not run on the `trellis:app` interface the
    /// device will provide (its runtime's, or the release's firmware's).
    #[error("release {id} needs app interface {wanted}, {by} provides {provided}")]
    AppsDoNotFit {
        /// The release.
        id: String,
        /// What the release's apps were built for.
        wanted: String,
        /// What the device would provide.
        provided: String,
        /// `this runtime`, or `the release's firmware`.
        by: &'static str,
    },
    /// The release's firmware provides an interface that apps installed on
    /// the device (and not replaced by the release) were not built for.
    #[error(
        "release {id}: its firmware provides app interface {provided}, which installed apps do not run on: {} (add versions of them built for {provided} to the release, applied before the firmware)",
        apps.join(", ")
    )]
    BreaksApps {
        /// The release.
        id: String,
        /// What the firmware provides.
        provided: String,
        /// `name version (built for X)`, one per app.
        apps: Vec<String>,
    },
}

/// How soon a release should be applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Urgency {
    /// Within maintenance windows, after apps consent.
    #[default]
    Normal,
    /// Now: windows and consent deferrals do not hold it (it is still staged).
    Critical,
}

/// What a release contains, in the order it is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Part {
    /// The release's apps.
    Apps,
    /// The release's firmware bundle.
    Firmware,
}

/// A firmware bundle in a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FirmwareRef {
    /// The firmware's version (`TRELLIS_VERSION` of its release file).
    pub version: String,
    /// SHA-256 of the bundle, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The file's piece index root: the SHA-256 of its block index
    /// (`trellis_assets::Index`, 64 KiB blocks), hex. A device that gets the
    /// file from its peers checks the index against it, and each piece
    /// against the index, before it keeps a byte. Absent in releases made
    /// before pieces were shared: those come whole from the origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pieces: Option<String>,
    /// The `trellis:app` interface version its runtime provides (read from
    /// the bundle's description by `trellis fleet release create`). Absent in
    /// releases made before it was recorded: installed apps are then not
    /// checked against the firmware.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_interface: Option<String>,
}

/// An app file in a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AppRef {
    /// The app's name (its manifest's).
    pub name: String,
    /// Its version (its manifest's).
    pub version: String,
    /// SHA-256 of the app file, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The file's piece index root: the SHA-256 of its block index
    /// (`trellis_assets::Index`, 64 KiB blocks), hex. A device that gets the
    /// file from its peers checks the index against it, and each piece
    /// against the index, before it keeps a byte. Absent in releases made
    /// before pieces were shared: those come whole from the origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pieces: Option<String>,
}

/// The signature of a release: an ed25519 key of the device's trust list
/// over [`Release::signed_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Signature {
    /// The signer's public key, hex.
    pub key: String,
    /// The signature, hex.
    pub ed25519: String,
}

/// A release (stored as JSON in [`crate::names::RELEASES`] under its id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Release {
    /// `[a-z0-9][a-z0-9-]*` plus dots (`thermostat-2.1.0`).
    pub id: String,
    /// The board it is for (`rpi4`, `qemu-aarch64`).
    pub board: String,
    /// The `trellis:app` interface version its apps were built against.
    pub app_interface: String,
    /// How soon to apply it.
    #[serde(default)]
    pub urgency: Urgency,
    /// The firmware bundle, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<FirmwareRef>,
    /// The apps, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<AppRef>,
    /// The order the parts are applied in.
    #[serde(default = "Release::default_order")]
    pub order: Vec<Part>,
    /// The signature over everything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ReleaseError {
    ReleaseError::Invalid { field, reason: reason.into() }
}

fn valid_sha256(hex_digits: &str) -> bool {
    hex_digits.len() == 64 && hex_digits.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Release {
    fn default_order() -> Vec<Part> {
        vec![Part::Apps, Part::Firmware]
    }

    /// An empty, unsigned, normal release (add apps and firmware, then sign).
    #[must_use]
    pub fn new(id: &str, board: &str, app_interface: &str) -> Self {
        Self {
            id: id.to_owned(),
            board: board.to_owned(),
            app_interface: app_interface.to_owned(),
            urgency: Urgency::Normal,
            firmware: None,
            apps: Vec::new(),
            order: Self::default_order(),
            signature: None,
        }
    }

    /// The same, naming app `name` at `version` whose file is `bytes`.
    #[must_use]
    pub fn with_app(mut self, name: &str, version: &str, bytes: &[u8]) -> Self {
        self.apps.push(AppRef {
            name: name.to_owned(),
            version: version.to_owned(),
            sha256: hex::encode(Sha256::digest(bytes)),
            size: bytes.len() as u64,
            pieces: Some(Index::of(bytes).id().to_string()),
        });
        self
    }

    /// The same, naming the firmware bundle `bytes` of firmware `version`.
    #[must_use]
    pub fn with_firmware(mut self, version: &str, bytes: &[u8]) -> Self {
        self.firmware = Some(FirmwareRef {
            version: version.to_owned(),
            sha256: hex::encode(Sha256::digest(bytes)),
            size: bytes.len() as u64,
            pieces: Some(Index::of(bytes).id().to_string()),
            app_interface: None,
        });
        self
    }

    /// The same, recording that its firmware's runtime provides the
    /// `trellis:app` interface `version` (after [`Self::with_firmware`]).
    #[must_use]
    pub fn firmware_provides(mut self, version: &str) -> Self {
        if let Some(f) = self.firmware.as_mut() {
            f.app_interface = Some(version.to_owned());
        }
        self
    }

    /// Whether the release fits a device whose runtime provides `provided`
    /// and runs `installed`, when the release's firmware is installed too
    /// (`installs_firmware`). Its apps must run on the runtime they are
    /// installed under and on the one that follows; every installed app still
    /// there during the firmware's trial boot (all of them when the firmware
    /// goes first, else those the release does not replace) must run on the
    /// interface the new firmware provides, or the trial fails its health gate.
    ///
    /// # Errors
    /// The apps of the release, or the installed apps (named), that would not run.
    pub fn check_fit(
        &self,
        provided: &str,
        installed: &[AppSummary],
        installs_firmware: bool,
    ) -> Result<(), ReleaseError> {
        let after = self.firmware.as_ref().filter(|_| installs_firmware).and_then(|f| f.app_interface.as_deref());
        let firmware_first = after.is_some() && self.order.first() == Some(&Part::Firmware);
        if !self.apps.is_empty() {
            let runtimes =
                [(!firmware_first).then_some(("this runtime", provided)), after.map(|a| ("the release's firmware", a))];
            for (by, runtime) in runtimes.into_iter().flatten() {
                if !interface_compatible(&self.app_interface, runtime) {
                    return Err(ReleaseError::AppsDoNotFit {
                        id: self.id.clone(),
                        wanted: self.app_interface.clone(),
                        provided: runtime.to_owned(),
                        by,
                    });
                }
            }
        }
        let Some(after) = after else { return Ok(()) };
        let broken: Vec<String> = installed
            .iter()
            .filter(|app| firmware_first || !self.apps.iter().any(|a| a.name == app.name))
            .filter_map(|app| {
                let built_for = app.interface.as_deref()?;
                (!interface_compatible(built_for, after))
                    .then(|| format!("{} {} (built for {built_for})", app.name, app.version))
            })
            .collect();
        if broken.is_empty() {
            Ok(())
        } else {
            Err(ReleaseError::BreaksApps { id: self.id.clone(), provided: after.to_owned(), apps: broken })
        }
    }

    /// Parse and check a release (its signature is checked by [`Self::verify`]).
    ///
    /// # Errors
    /// Not JSON, an unknown field, or a field out of range (named).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ReleaseError> {
        let release: Self = serde_json::from_slice(bytes).map_err(|e| ReleaseError::Parse(e.to_string()))?;
        release.validate()?;
        Ok(release)
    }

    /// The release as JSON (what is stored).
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Check every field.
    ///
    /// # Errors
    /// The first field out of range, named.
    pub fn validate(&self) -> Result<(), ReleaseError> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 128
            && self
                .id
                .split('.')
                .all(|part| !part.is_empty() && part.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-')))
            && self.id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
        if !id_ok {
            return Err(invalid("id", format!("{:?} must be a-z, 0-9, '-' and '.', like thermostat-2.1.0", self.id)));
        }
        if !valid_id(&self.board) {
            return Err(invalid("board", format!("{:?} is not a board name", self.board)));
        }
        if semver_triple(&self.app_interface).is_none() {
            return Err(invalid("app-interface", format!("{:?} is not a version like 0.1.1", self.app_interface)));
        }
        if self.firmware.is_none() && self.apps.is_empty() {
            return Err(invalid("firmware", "a release names a firmware bundle, apps, or both"));
        }
        if let Some(f) = &self.firmware
            && !valid_sha256(&f.sha256)
        {
            return Err(invalid("firmware.sha256", format!("{:?} is not 64 lowercase hex digits", f.sha256)));
        }
        if let Some(p) = self.firmware.as_ref().and_then(|f| f.pieces.as_deref())
            && !valid_sha256(p)
        {
            return Err(invalid("firmware.pieces", format!("{p:?} is not 64 lowercase hex digits")));
        }
        if let Some(v) = self.firmware.as_ref().and_then(|f| f.app_interface.as_deref())
            && semver_triple(v).is_none()
        {
            return Err(invalid("firmware.app-interface", format!("{v:?} is not a version like 0.1.2")));
        }
        for (i, app) in self.apps.iter().enumerate() {
            if !trellis_appfmt::valid_name(&app.name) {
                return Err(invalid("apps.name", format!("{:?} is not an app name", app.name)));
            }
            if !valid_sha256(&app.sha256) {
                return Err(invalid(
                    "apps.sha256",
                    format!("{}: {:?} is not 64 lowercase hex digits", app.name, app.sha256),
                ));
            }
            if let Some(p) = app.pieces.as_deref()
                && !valid_sha256(p)
            {
                return Err(invalid("apps.pieces", format!("{}: {p:?} is not 64 lowercase hex digits", app.name)));
            }
            if self.apps[..i].iter().any(|a| a.name == app.name) {
                return Err(invalid("apps", format!("{} is listed twice", app.name)));
            }
        }
        let mut order = self.order.clone();
        order.sort_by_key(|p| *p as u8);
        order.dedup();
        if order.len() != self.order.len() || order.len() != 2 {
            return Err(invalid("order", "lists apps and firmware, once each"));
        }
        Ok(())
    }

    /// The bytes the signature covers: the release without its signature, as
    /// compact JSON with its keys sorted (the same on every machine).
    #[must_use]
    pub fn signed_bytes(&self) -> Vec<u8> {
        let unsigned = Self { signature: None, ..self.clone() };
        // A `Value`'s maps are sorted by key: the canonical form.
        serde_json::to_value(&unsigned).and_then(|v| serde_json::to_vec(&v)).unwrap_or_default()
    }

    /// Sign the release with `key`, replacing any signature.
    #[must_use]
    pub fn signed(mut self, key: &SigningKey) -> Self {
        self.signature = None;
        let signature = key.sign(&self.signed_bytes());
        self.signature = Some(Signature { key: hex::encode(key.public_key_bytes()), ed25519: hex::encode(signature) });
        self
    }

    /// Check the signature against `trust`.
    ///
    /// # Errors
    /// Unsigned, a key not in `trust`, or a signature that does not match.
    pub fn verify(&self, trust: &TrustList) -> Result<KeyId, ReleaseError> {
        let sig = self.signature.as_ref().ok_or_else(|| ReleaseError::Unsigned { id: self.id.clone() })?;
        let encoding = || ReleaseError::SignatureEncoding { id: self.id.clone() };
        let mut key = [0u8; 32];
        let mut signature = [0u8; 64];
        hex::decode_to_slice(&sig.key, &mut key).map_err(|_| encoding())?;
        hex::decode_to_slice(&sig.ed25519, &mut signature).map_err(|_| encoding())?;
        trust
            .verify(&key, &self.signed_bytes(), &signature)
            .map_err(|source| ReleaseError::Signature { id: self.id.clone(), source })
    }

    /// The piece index root of artifact `name` (an app's name, or
    /// `firmware`), if the release carries one: what its pieces are checked
    /// against when they come from peers (`trellis_assets::download`).
    #[must_use]
    pub fn pieces(&self, name: &str) -> Option<AssetId> {
        let pieces = if name == "firmware" {
            self.firmware.as_ref().and_then(|f| f.pieces.as_deref())
        } else {
            self.apps.iter().find(|a| a.name == name).and_then(|a| a.pieces.as_deref())
        };
        pieces?.parse().ok()
    }

    /// Its artifacts as jobs of a download queue (`trellis_assets::Queue`),
    /// named `RELEASE/ARTIFACT`, in the order the release is applied (the
    /// apps a firmware needs before it, unless the release puts the firmware
    /// first), urgent for a critical release. Artifacts without a piece root
    /// are left out: they come whole from the origin.
    #[must_use]
    pub fn jobs(&self) -> Vec<Job> {
        let urgent = self.urgency == Urgency::Critical;
        let names = self.order.iter().flat_map(|part| match part {
            Part::Apps => self.apps.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
            Part::Firmware => self.firmware.iter().map(|_| "firmware").collect(),
        });
        names
            .filter_map(|name| Some(Job { name: format!("{}/{name}", self.id), id: self.pieces(name)?, urgent }))
            .collect()
    }

    /// Check that `bytes` are the artifact `name` (an app's name, or
    /// `firmware`) names by hash and size.
    ///
    /// # Errors
    /// No such artifact, or other bytes.
    pub fn check_artifact(&self, name: &str, bytes: &[u8]) -> Result<(), ReleaseError> {
        let expected = if name == "firmware" {
            self.firmware.as_ref().map(|f| (&f.sha256, f.size))
        } else {
            self.apps.iter().find(|a| a.name == name).map(|a| (&a.sha256, a.size))
        };
        let Some((sha256, _size)) = expected else {
            return Err(invalid("apps", format!("release {} names no artifact {name}", self.id)));
        };
        let actual = hex::encode(Sha256::digest(bytes));
        if &actual == sha256 {
            Ok(())
        } else {
            Err(ReleaseError::ArtifactMismatch {
                id: self.id.clone(),
                name: name.to_owned(),
                expected: sha256.clone(),
                actual,
                size: bytes.len() as u64,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use trellis_appfmt::generate_key;

    fn release() -> Release {
        Release {
            id: "thermostat-2.1.0".into(),
            board: "rpi4".into(),
            app_interface: "0.1.1".into(),
            urgency: Urgency::Normal,
            firmware: None,
            apps: vec![AppRef {
                name: "thermostat".into(),
                version: "2.1.0".into(),
                sha256: hex::encode(Sha256::digest(b"app bytes")),
                size: 9,
                pieces: None,
            }],
            order: Release::default_order(),
            signature: None,
        }
    }

    /// A running app as the device reports it, built for `interface`.
    fn app(name: &str, version: &str, interface: Option<&str>) -> AppSummary {
        AppSummary {
            interface: interface.map(str::to_owned),
            ..trellis_control::testing::FakeDevice::app(name, version)
        }
    }

    /// Firmware providing `trellis:app` 0.2.0 on a device whose runtime provides 0.1.2.
    #[test]
    fn firmware_that_would_break_installed_apps_is_refused_naming_them() {
        let installed = [
            app("thermostat", "1.0.0", Some("0.1.2")),
            app("counter", "1.0.0", Some("0.1.0")),
            app("bare", "1.0.0", None),
        ];
        let mut r =
            Release::new("os-3.0.0", "rpi4", "0.1.2").with_firmware("3.0.0", b"bundle").firmware_provides("0.2.0");
        let err = r.check_fit("0.1.2", &installed, true).unwrap_err().to_string();
        assert!(
            err.contains("provides app interface 0.2.0")
                && err.contains("thermostat 1.0.0 (built for 0.1.2), counter 1.0.0 (built for 0.1.0)")
                && !err.contains("bare"),
            "{err}"
        );
        // Already running (the firmware is not installed again): nothing to break.
        assert!(r.check_fit("0.1.2", &installed, false).is_ok());
        // The same firmware line (0.1.3 runs 0.1.x apps): fits.
        r = r.firmware_provides("0.1.3");
        assert!(r.check_fit("0.1.2", &installed, true).is_ok());
        // A firmware that does not say what it provides is not checked (releases made before it was recorded).
        r.firmware.as_mut().unwrap().app_interface = None;
        assert!(r.check_fit("0.1.2", &installed, true).is_ok());
    }

    #[test]
    fn apps_carried_with_the_firmware_must_run_before_and_after_it() {
        let installed = [app("thermostat", "1.0.0", Some("0.1.2")), app("counter", "1.0.0", Some("0.1.2"))];
        // The release replaces thermostat with a version built for 0.1.0, which 0.1.2 and 0.1.3 both run;
        // counter is not replaced and 0.1.3 runs it.
        let fits = Release::new("os-2.2.0", "rpi4", "0.1.0")
            .with_app("thermostat", "2.0.0", b"APP thermostat 2.0.0")
            .with_firmware("2.2.0", b"bundle")
            .firmware_provides("0.1.3");
        fits.check_fit("0.1.2", &installed, true).unwrap();
        // Apps built for 0.2.0: the runtime they are installed under (before the firmware) cannot run them.
        let ahead = Release::new("os-3.0.0", "rpi4", "0.2.0")
            .with_app("thermostat", "3.0.0", b"APP thermostat 3.0.0")
            .with_app("counter", "3.0.0", b"APP counter 3.0.0")
            .with_firmware("3.0.0", b"bundle")
            .firmware_provides("0.2.0");
        let err = ahead.check_fit("0.1.2", &installed, true).unwrap_err().to_string();
        assert_eq!(err, "release os-3.0.0 needs app interface 0.2.0, this runtime provides 0.1.2");
        // Firmware first: the installed versions run through its trial boot, so they must fit it.
        let mut first = ahead.clone();
        first.order = vec![Part::Firmware, Part::Apps];
        let err = first.check_fit("0.1.2", &installed, true).unwrap_err().to_string();
        assert!(err.contains("thermostat 1.0.0 (built for 0.1.2), counter 1.0.0 (built for 0.1.2)"), "{err}");
        // Apps the new firmware would not run.
        let behind = Release::new("os-3.0.1", "rpi4", "0.1.2")
            .with_app("thermostat", "2.0.1", b"APP thermostat 2.0.1")
            .with_firmware("3.0.1", b"bundle")
            .firmware_provides("0.2.0");
        let err = behind.check_fit("0.1.2", &installed, true).unwrap_err().to_string();
        assert_eq!(err, "release os-3.0.1 needs app interface 0.1.2, the release's firmware provides 0.2.0");
        // A bad version in the manifest is refused by name.
        let mut bad = behind.clone();
        bad.firmware.as_mut().unwrap().app_interface = Some("two".into());
        assert!(bad.validate().unwrap_err().to_string().contains("firmware.app-interface"));
    }

    #[test]
    fn a_signed_release_verifies_and_any_change_breaks_it() {
        let key = generate_key();
        let trust = TrustList::from_keys([key.public_key_bytes()]);
        let signed = release().signed(&key);
        let back = Release::from_json(&signed.to_json()).unwrap();
        assert_eq!(back.verify(&trust).unwrap(), KeyId::of(&key.public_key_bytes()));
        let mut changed = back.clone();
        changed.apps[0].sha256 = hex::encode(Sha256::digest(b"other bytes"));
        assert!(changed.verify(&trust).unwrap_err().to_string().contains("does not match"));
        let mut critical = back.clone();
        critical.urgency = Urgency::Critical;
        assert!(critical.verify(&trust).is_err());
        let other = TrustList::from_keys([generate_key().public_key_bytes()]);
        assert!(back.verify(&other).unwrap_err().to_string().contains("not in the trust list"));
        assert!(matches!(release().verify(&trust), Err(ReleaseError::Unsigned { .. })));
    }

    #[test]
    fn each_artifacts_piece_root_names_its_block_index_under_the_signature() {
        let key = generate_key();
        let trust = TrustList::from_keys([key.public_key_bytes()]);
        let (app, bundle) = (vec![7u8; 200_000], vec![9u8; 300_000]);
        let r = Release::new("mixed-1.0.0", "rpi4", "0.1.1")
            .with_app("counter", "1.0.0", &app)
            .with_firmware("1.0.0", &bundle);
        assert_eq!(r.pieces("counter"), Some(Index::of(&app).id()));
        assert_eq!(r.pieces("firmware"), Some(Index::of(&bundle).id()));
        assert_eq!(r.pieces("thermostat"), None);
        let signed = Release::from_json(&r.signed(&key).to_json()).unwrap();
        signed.verify(&trust).unwrap();
        assert_eq!(signed.pieces("counter"), Some(Index::of(&app).id()));
        // A peer's index for other bytes cannot be slipped in: the root is signed.
        let mut changed = signed.clone();
        changed.apps[0].pieces = Some(Index::of(b"other bytes").id().to_string());
        assert!(changed.verify(&trust).is_err());
        let mut bad = signed;
        bad.firmware.as_mut().unwrap().pieces = Some("ABC".into());
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("firmware.pieces") && e.contains("\"ABC\""), "{e}");
        // A release made before pieces were shared has none, and still reads.
        assert_eq!(release().pieces("thermostat"), None);
        release().validate().unwrap();
    }

    #[test]
    fn a_releases_jobs_come_in_its_order_and_a_critical_ones_are_urgent() {
        let (app, bundle) = (vec![7u8; 1000], vec![9u8; 3000]);
        let r = Release::new("mixed-1.0.0", "rpi4", "0.1.1")
            .with_firmware("1.0.0", &bundle)
            .with_app("counter", "1.0.0", &app)
            .with_app("blinky", "1.0.0", &app);
        let names = |r: &Release| r.jobs().into_iter().map(|j| (j.name, j.urgent)).collect::<Vec<_>>();
        // The apps the firmware needs come first.
        let normal = |n: &str| (n.to_owned(), false);
        assert_eq!(
            names(&r),
            [normal("mixed-1.0.0/counter"), normal("mixed-1.0.0/blinky"), normal("mixed-1.0.0/firmware")]
        );
        assert_eq!(r.jobs()[2].id, Index::of(&bundle).id());
        let mut first = r.clone();
        first.order = vec![Part::Firmware, Part::Apps];
        first.urgency = Urgency::Critical;
        assert_eq!(names(&first)[0], ("mixed-1.0.0/firmware".to_owned(), true));
        // An artifact without a piece root is not a job.
        let mut old = r;
        old.apps[0].pieces = None;
        assert_eq!(old.jobs().len(), 2);
    }

    #[test]
    fn the_signed_bytes_do_not_depend_on_field_order() {
        let key = generate_key();
        let signed = release().signed(&key);
        let json: serde_json::Value = serde_json::from_slice(&signed.to_json()).unwrap();
        // Reorder the top-level fields by writing them back out in reverse.
        let serde_json::Value::Object(map) = json else { panic!() };
        let reversed: String = format!(
            "{{{}}}",
            map.iter()
                .rev()
                .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), v))
                .collect::<Vec<_>>()
                .join(",")
        );
        let back = Release::from_json(reversed.as_bytes()).unwrap();
        back.verify(&TrustList::from_keys([key.public_key_bytes()])).unwrap();
    }

    #[test]
    fn artifacts_are_checked_by_hash() {
        let r = release();
        r.check_artifact("thermostat", b"app bytes").unwrap();
        let err = r.check_artifact("thermostat", b"app bytez").unwrap_err().to_string();
        assert!(err.contains("artifact thermostat of release thermostat-2.1.0: expected sha256"), "{err}");
        assert!(r.check_artifact("firmware", b"x").is_err());
    }

    #[test]
    fn bad_fields_are_named() {
        type Spoil = fn(&mut Release);
        let cases: [(&str, Spoil); 7] = [
            ("`id`", |r| r.id = "Thermostat 2".into()),
            ("`board`", |r| r.board = "RPi".into()),
            ("`app-interface`", |r| r.app_interface = "one".into()),
            ("`apps.sha256`", |r| r.apps[0].sha256 = "ABC".into()),
            ("`apps`", |r| r.apps.push(r.apps[0].clone())),
            ("`firmware`", |r| r.apps.clear()),
            ("`order`", |r| r.order = vec![Part::Apps]),
        ];
        for (field, spoil) in cases {
            let mut r = release();
            spoil(&mut r);
            let err = r.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
        let err = Release::from_json(br#"{"id":"a","surprise":1}"#).unwrap_err().to_string();
        assert!(err.contains("surprise"), "{err}");
    }
}
