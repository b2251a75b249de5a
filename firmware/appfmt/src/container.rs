//! Reading and writing the custom sections of a component file.

use sha2::{Digest, Sha256};

use crate::keys::{KeyError, KeyId, SigningKey, TrustList};
use crate::manifest::{Manifest, ManifestError, format_code_digest, parse_code_digest};
use crate::{MANIFEST_SECTION, SIGNATURE_SECTION};

const MAGIC: &[u8; 4] = b"\0asm";
/// Component binary version and layer (`0d 00 01 00`).
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
const CORE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
const SIGNATURE_LEN: usize = 32 + 64;

/// Why a file is not a usable app file. Messages say what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Not WebAssembly at all.
    #[error("not a WebAssembly file (no \\0asm header)")]
    NotWasm,
    /// A core module, not a component.
    #[error("a core WebAssembly module, not a component: build the app for wasm32-wasip2")]
    CoreModule,
    /// An unknown binary version.
    #[error("unsupported WebAssembly binary version {0:02x?}")]
    UnknownVersion([u8; 4]),
    /// A section runs past the end of the file.
    #[error("truncated: the section at byte {offset} needs {needed} bytes but the file ends at {len}")]
    Truncated {
        /// Section start.
        offset: usize,
        /// Bytes the section claims.
        needed: u64,
        /// File length.
        len: usize,
    },
    /// The binary is otherwise malformed.
    #[error("malformed at byte {offset}: {reason}")]
    Malformed {
        /// Where.
        offset: usize,
        /// What.
        reason: &'static str,
    },
    /// No manifest section.
    #[error("no `{MANIFEST_SECTION}` section: pack the component with `trellis app pack`")]
    NoManifest,
    /// The manifest is there but invalid.
    #[error("embedded manifest: {0}")]
    Manifest(#[from] ManifestError),
    /// The manifest section is not UTF-8.
    #[error("embedded manifest is not UTF-8")]
    ManifestEncoding,
    /// Two manifest or signature sections.
    #[error("more than one `{0}` section")]
    Duplicate(&'static str),
    /// A signature section that is not last or has the wrong size.
    #[error("the `{SIGNATURE_SECTION}` section must be the last section and hold {SIGNATURE_LEN} bytes")]
    BadSignatureSection,
    /// The signature check failed.
    #[error("signature: {0}")]
    Signature(#[from] KeyError),
    /// Packed before apps carried a digest of their code.
    #[error(
        "the manifest has no code digest (packed by an older `trellis app pack`): repack it with `trellis app pack`"
    )]
    NoCodeDigest,
    /// The code is not what was packed: the file is damaged or was changed.
    #[error(
        "the component's code does not match its manifest: packed as {recorded}, the file's code is {actual} \
         (the file is damaged or was changed after packing)"
    )]
    CodeMismatch {
        /// The digest the manifest records.
        recorded: String,
        /// The digest of the code in the file.
        actual: String,
    },
}

#[derive(Debug, Clone, Copy)]
struct Section<'a> {
    /// Offset of the section id byte.
    start: usize,
    /// Offset one past the section's end.
    end: usize,
    /// Custom section name, if custom.
    custom: Option<(&'a str, &'a [u8])>,
}

fn read_leb_u32(bytes: &[u8], pos: &mut usize) -> Result<u64, FormatError> {
    let mut result: u64 = 0;
    for shift in (0..35).step_by(7) {
        let byte = *bytes
            .get(*pos)
            .ok_or(FormatError::Malformed { offset: *pos, reason: "file ends inside a LEB128 number" })?;
        *pos += 1;
        result |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(result);
        }
    }
    Err(FormatError::Malformed { offset: *pos, reason: "LEB128 number too long" })
}

fn write_leb_u32(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let byte = u8::try_from(value & 0x7f).unwrap_or(0);
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Check the header and split the top level of a component into sections.
fn sections(bytes: &[u8]) -> Result<Vec<Section<'_>>, FormatError> {
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(FormatError::NotWasm);
    }
    let version: [u8; 4] = [bytes[4], bytes[5], bytes[6], bytes[7]];
    if version == CORE_VERSION {
        return Err(FormatError::CoreModule);
    }
    if version != COMPONENT_VERSION {
        return Err(FormatError::UnknownVersion(version));
    }
    let mut out = Vec::new();
    let mut pos = 8;
    while pos < bytes.len() {
        let start = pos;
        let id = bytes[pos];
        pos += 1;
        let size = read_leb_u32(bytes, &mut pos)?;
        let body = pos;
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| body.checked_add(s))
            .filter(|&e| e <= bytes.len())
            .ok_or(FormatError::Truncated { offset: start, needed: size, len: bytes.len() })?;
        let custom = if id == 0 {
            let mut p = body;
            let name_len = read_leb_u32(bytes, &mut p)?;
            let name_end = usize::try_from(name_len)
                .ok()
                .and_then(|n| p.checked_add(n))
                .filter(|&e| e <= end)
                .ok_or(FormatError::Malformed { offset: p, reason: "custom section name runs past the section" })?;
            let name = std::str::from_utf8(&bytes[p..name_end])
                .map_err(|_| FormatError::Malformed { offset: p, reason: "custom section name is not UTF-8" })?;
            Some((name, &bytes[name_end..end]))
        } else {
            None
        };
        out.push(Section { start, end, custom });
        pos = end;
    }
    Ok(out)
}

fn custom_section(name: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(name.len() + payload.len() + 5);
    write_leb_u32(&mut body, name.len());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut out = vec![0u8];
    write_leb_u32(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// `bytes` without the custom sections named in `drop`.
fn strip(bytes: &[u8], drop: &[&str]) -> Result<Vec<u8>, FormatError> {
    let secs = sections(bytes)?;
    let mut out = bytes[..8].to_vec();
    for s in secs {
        if !s.custom.is_some_and(|(name, _)| drop.contains(&name)) {
            out.extend_from_slice(&bytes[s.start..s.end]);
        }
    }
    Ok(out)
}

/// Embed `manifest` in `component`, replacing any manifest and dropping any
/// signature (which would no longer match). The embedded manifest records the
/// digest of the code (`code-digest`), whatever `manifest` said.
///
/// # Errors
/// `component` is not a component, or the manifest is invalid.
pub fn pack(component: &[u8], manifest: &Manifest) -> Result<Vec<u8>, FormatError> {
    let mut out = strip(component, &[MANIFEST_SECTION, SIGNATURE_SECTION])?;
    let mut manifest = manifest.clone();
    manifest.code_digest = Some(format_code_digest(&Sha256::digest(&out).into()));
    manifest.validate()?;
    out.extend(custom_section(MANIFEST_SECTION, manifest.to_toml().as_bytes()));
    Ok(out)
}

/// The component itself: the app file without its manifest and signature
/// sections (what gets compiled; its hash keys the compile cache).
///
/// # Errors
/// Not a component.
pub fn component_code(app: &[u8]) -> Result<Vec<u8>, FormatError> {
    strip(app, &[MANIFEST_SECTION, SIGNATURE_SECTION])
}

/// Sign an app file with `key`, replacing any earlier signature.
///
/// # Errors
/// The file is not a valid app file.
pub fn sign(app: &[u8], key: &SigningKey) -> Result<Vec<u8>, FormatError> {
    let mut out = strip(app, &[SIGNATURE_SECTION])?;
    AppFile::parse(&out)?;
    let signature = key.sign(&out);
    let mut payload = key.public_key_bytes().to_vec();
    payload.extend_from_slice(&signature);
    out.extend(custom_section(SIGNATURE_SECTION, &payload));
    Ok(out)
}

/// A signature found in an app file (not yet checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureInfo {
    /// The signer's public key.
    pub public_key: [u8; 32],
    /// The signature over the first `signed_len` bytes.
    pub signature: [u8; 64],
    /// How many bytes it covers.
    pub signed_len: usize,
}

impl SignatureInfo {
    /// The signer's key id.
    #[must_use]
    pub fn key_id(&self) -> KeyId {
        KeyId::of(&self.public_key)
    }
}

/// A parsed app file.
#[derive(Debug, Clone)]
pub struct AppFile {
    /// The embedded manifest.
    pub manifest: Manifest,
    /// The signature, if signed.
    pub signature: Option<SignatureInfo>,
    /// SHA-256 of the whole file.
    pub sha256: [u8; 32],
    /// SHA-256 of the component's code: the file without its manifest and
    /// signature sections (what [`component_code`] returns).
    pub code_sha256: [u8; 32],
    /// File size in bytes.
    pub size: usize,
}

impl AppFile {
    /// Parse the container: header, sections, manifest, signature layout,
    /// and check that the code is the code that was packed ([`Self::check_code`]).
    /// This does not validate the component itself (the runtime's engine does).
    ///
    /// # Errors
    /// Anything that makes the file unusable, named.
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        let file = Self::inspect(bytes)?;
        file.check_code()?;
        Ok(file)
    }

    /// [`Self::parse`] without the code check, for tools that report on a
    /// damaged file (`trellis app inspect`).
    ///
    /// # Errors
    /// The container or its manifest cannot be read.
    pub fn inspect(bytes: &[u8]) -> Result<Self, FormatError> {
        let secs = sections(bytes)?;
        let mut manifest = None;
        let mut signature = None;
        let mut code = Sha256::new();
        code.update(&bytes[..8]);
        for (i, s) in secs.iter().enumerate() {
            if !s.custom.is_some_and(|(name, _)| name == MANIFEST_SECTION || name == SIGNATURE_SECTION) {
                code.update(&bytes[s.start..s.end]);
            }
            match s.custom {
                Some((MANIFEST_SECTION, payload)) => {
                    if manifest.is_some() {
                        return Err(FormatError::Duplicate(MANIFEST_SECTION));
                    }
                    let text = std::str::from_utf8(payload).map_err(|_| FormatError::ManifestEncoding)?;
                    manifest = Some(Manifest::from_toml(text)?);
                }
                Some((SIGNATURE_SECTION, payload)) => {
                    if signature.is_some() {
                        return Err(FormatError::Duplicate(SIGNATURE_SECTION));
                    }
                    if i + 1 != secs.len() || payload.len() != SIGNATURE_LEN {
                        return Err(FormatError::BadSignatureSection);
                    }
                    let mut public_key = [0u8; 32];
                    let mut sig = [0u8; 64];
                    public_key.copy_from_slice(&payload[..32]);
                    sig.copy_from_slice(&payload[32..]);
                    signature = Some(SignatureInfo { public_key, signature: sig, signed_len: s.start });
                }
                _ => {}
            }
        }
        Ok(Self {
            manifest: manifest.ok_or(FormatError::NoManifest)?,
            signature,
            sha256: Sha256::digest(bytes).into(),
            code_sha256: code.finalize().into(),
            size: bytes.len(),
        })
    }

    /// Whether the code is what `trellis app pack` recorded in the manifest.
    ///
    /// # Errors
    /// [`FormatError::NoCodeDigest`] for a file packed without one,
    /// [`FormatError::CodeMismatch`] naming both digests.
    pub fn check_code(&self) -> Result<(), FormatError> {
        let recorded = self.manifest.code_digest.as_deref().ok_or(FormatError::NoCodeDigest)?;
        if parse_code_digest(recorded) == Some(self.code_sha256) {
            Ok(())
        } else {
            Err(FormatError::CodeMismatch { recorded: recorded.to_owned(), actual: self.code_digest() })
        }
    }

    /// The digest of the file's code, as the manifest writes it.
    #[must_use]
    pub fn code_digest(&self) -> String {
        format_code_digest(&self.code_sha256)
    }

    /// Check the signature of `bytes` (the same file) against `trust`.
    ///
    /// # Errors
    /// Unsigned, signed by a key not in `trust`, or a signature that does not match.
    pub fn verify(&self, bytes: &[u8], trust: &TrustList) -> Result<KeyId, FormatError> {
        let sig = self.signature.as_ref().ok_or(KeyError::Unsigned)?;
        let signed = bytes.get(..sig.signed_len).ok_or(FormatError::BadSignatureSection)?;
        Ok(trust.verify(&sig.public_key, signed, &sig.signature)?)
    }

    /// The SHA-256 as hex.
    #[must_use]
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// The names of the interfaces a component imports at its top level
/// (`trellis:app/gpio@0.1.0`, `wasi:clocks/wall-clock@0.2.6`, ...).
///
/// # Errors
/// The component cannot be parsed.
pub fn interface_imports(bytes: &[u8]) -> Result<Vec<String>, FormatError> {
    sections(bytes)?;
    let mut names = Vec::new();
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|_| FormatError::Malformed { offset: 0, reason: "component does not parse" })?;
        match payload {
            wasmparser::Payload::Version { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let import = import.map_err(|_| FormatError::Malformed { offset: 0, reason: "bad import" })?;
                    names.push(import.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::keys::generate_key;

    fn component() -> Vec<u8> {
        wat::parse_str(
            r#"(component
                (import "trellis:app/log@0.1.0" (instance))
                (core module (func (export "f")))
            )"#,
        )
        .unwrap()
    }

    fn manifest() -> Manifest {
        Manifest::from_toml("name = \"demo\"\nversion = \"1.0.0\"\n").unwrap()
    }

    #[test]
    fn pack_then_parse() {
        let app = pack(&component(), &manifest()).unwrap();
        let parsed = AppFile::parse(&app).unwrap();
        let code_sha256: [u8; 32] = Sha256::digest(component()).into();
        assert_eq!(parsed.code_sha256, code_sha256);
        assert_eq!(parsed.manifest.code_digest, Some(format!("sha256:{}", hex::encode(code_sha256))));
        assert_eq!(Manifest { code_digest: None, ..parsed.manifest }, manifest());
        assert!(parsed.signature.is_none());
        // repacking replaces, never duplicates
        let mut m2 = manifest();
        m2.version = "2.0.0".into();
        let again = pack(&app, &m2).unwrap();
        assert_eq!(AppFile::parse(&again).unwrap().manifest.version, "2.0.0");
        assert_eq!(interface_imports(&again).unwrap(), vec!["trellis:app/log@0.1.0".to_owned()]);
    }

    #[test]
    fn sign_and_verify() {
        let key = generate_key();
        let other = generate_key();
        let app = sign(&pack(&component(), &manifest()).unwrap(), &key).unwrap();
        let parsed = AppFile::parse(&app).unwrap();
        let trust = TrustList::from_keys([key.public_key_bytes()]);
        assert_eq!(parsed.verify(&app, &trust).unwrap(), KeyId::of(&key.public_key_bytes()));
        let wrong = TrustList::from_keys([other.public_key_bytes()]);
        let err = parsed.verify(&app, &wrong).unwrap_err().to_string();
        assert!(err.contains("not in the trust list"), "{err}");
        // a changed manifest breaks the signature
        let mut tampered = app.clone();
        let at = tampered.windows(5).position(|w| w == b"1.0.0").unwrap();
        tampered[at] = b'9';
        let t = AppFile::parse(&tampered).unwrap();
        assert!(t.verify(&tampered, &trust).unwrap_err().to_string().contains("does not match"));
        // unsigned
        let unsigned = pack(&component(), &manifest()).unwrap();
        let u = AppFile::parse(&unsigned).unwrap();
        assert!(u.verify(&unsigned, &trust).unwrap_err().to_string().contains("not signed"));
    }

    /// Every single-bit flip in the code of a packed app is refused by name,
    /// or breaks the container; none parses as a usable app.
    #[test]
    fn a_flipped_bit_in_the_code_is_refused() {
        let app = pack(&component(), &manifest()).unwrap();
        let code_len = component().len();
        let mut mismatches = 0;
        for byte in 8..code_len {
            for bit in 0..8 {
                let mut damaged = app.clone();
                damaged[byte] ^= 1 << bit;
                match AppFile::parse(&damaged) {
                    Ok(_) => panic!("a flip of bit {bit} of byte {byte} was accepted"),
                    Err(FormatError::CodeMismatch { recorded, actual }) => {
                        assert_ne!(recorded, actual);
                        assert!(recorded.starts_with("sha256:") && actual.starts_with("sha256:"));
                        mismatches += 1;
                    }
                    Err(_) => {}
                }
            }
        }
        assert!(mismatches > 0, "no flip reached the digest check");
        // inspect still reads the damaged file, and says the code does not match
        let mut damaged = app.clone();
        let at = damaged.windows(1).position(|w| w == b"f").unwrap();
        damaged[at] = b'g';
        let inspected = AppFile::inspect(&damaged).unwrap();
        let err = inspected.check_code().unwrap_err().to_string();
        assert!(err.contains("does not match its manifest") && err.contains(&inspected.code_digest()), "{err}");
    }

    #[test]
    fn files_packed_without_a_digest_are_refused_with_the_fix() {
        let mut old = component();
        old.extend(custom_section(MANIFEST_SECTION, manifest().to_toml().as_bytes()));
        let err = AppFile::parse(&old).unwrap_err();
        assert!(matches!(err, FormatError::NoCodeDigest));
        assert!(err.to_string().contains("repack it with `trellis app pack`"), "{err}");
        assert!(AppFile::inspect(&old).unwrap().manifest.code_digest.is_none());
        // repacking fixes it
        AppFile::parse(&pack(&old, &manifest()).unwrap()).unwrap();
    }

    #[test]
    fn refuses_broken_files_by_name() {
        let app = pack(&component(), &manifest()).unwrap();
        let truncated = &app[..app.len() - 3];
        assert!(matches!(AppFile::parse(truncated), Err(FormatError::Truncated { .. })));
        assert!(matches!(AppFile::parse(b"hello world, not wasm"), Err(FormatError::NotWasm)));
        let core = wat::parse_str("(module)").unwrap();
        assert!(AppFile::parse(&core).unwrap_err().to_string().contains("wasm32-wasip2"));
        assert!(matches!(AppFile::parse(&component()), Err(FormatError::NoManifest)));
        // a signature that is not last
        let key = generate_key();
        let mut signed = sign(&app, &key).unwrap();
        signed.extend(custom_section("extra", b"x"));
        assert!(matches!(AppFile::parse(&signed), Err(FormatError::BadSignatureSection)));
    }
}
