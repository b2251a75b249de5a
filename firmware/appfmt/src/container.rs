//! Reading and writing the custom sections of a component file.

use sha2::{Digest, Sha256};

use crate::keys::{KeyError, KeyId, SigningKey, TrustList};
use crate::manifest::{Manifest, ManifestError, format_code_digest, parse_code_digest};
use crate::{MANIFEST_SECTION, NATIVE_SECTION, SIGNATURE_SECTION};

const MAGIC: &[u8; 4] = b"\0asm";
/// Component binary version and layer (`0d 00 01 00`).
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
const CORE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
const SIGNATURE_LEN: usize = 32 + 64;
/// The first bytes of a native section's payload (format version 1).
const NATIVE_MAGIC: &[u8; 17] = b"trellis-native-1\n";
/// zstd's own default: CPython's 40 MB of aarch64 code to 12.4 MB, in well under a second.
const NATIVE_ZSTD_LEVEL: i32 = 3;
/// The most a native section may unpack to (CPython's is 40 MB).
const NATIVE_MAX_BYTES: usize = 256 << 20;
/// The sections that are not the component's code.
const NOT_CODE: [&str; 3] = [MANIFEST_SECTION, NATIVE_SECTION, SIGNATURE_SECTION];

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
    /// A native section whose header cannot be read.
    #[error("the `{NATIVE_SECTION}` section is malformed: {0}")]
    BadNativeSection(&'static str),
    /// Precompiled code that cannot be compressed or unpacked.
    #[error("the precompiled code in `{NATIVE_SECTION}`: {0}")]
    Native(String),
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
/// digest of the code (`code-digest`), whatever `manifest` said. Precompiled
/// code ([`with_native`]) is kept when it was compiled from this code, and
/// dropped otherwise.
///
/// # Errors
/// `component` is not a component, or the manifest is invalid.
pub fn pack(component: &[u8], manifest: &Manifest) -> Result<Vec<u8>, FormatError> {
    let code = component_code(component)?;
    let code_sha256: [u8; 32] = Sha256::digest(&code).into();
    let native = sections(component)?
        .into_iter()
        .filter_map(|s| match s.custom {
            Some((NATIVE_SECTION, payload)) => Some((s, payload)),
            _ => None,
        })
        .find(|(s, payload)| {
            NativeCode::read(payload, s.end - payload.len()).is_ok_and(|n| n.code_sha256 == code_sha256)
        })
        .map(|(s, _)| &component[s.start..s.end]);
    let mut out = code;
    let mut manifest = manifest.clone();
    manifest.code_digest = Some(format_code_digest(&code_sha256));
    manifest.validate()?;
    if let Some(native) = native {
        out.extend_from_slice(native);
    }
    out.extend(custom_section(MANIFEST_SECTION, manifest.to_toml().as_bytes()));
    Ok(out)
}

/// The component itself: the app file without its manifest, precompiled code
/// and signature (what gets compiled; its hash keys the compile cache).
///
/// # Errors
/// Not a component.
pub fn component_code(app: &[u8]) -> Result<Vec<u8>, FormatError> {
    strip(app, &NOT_CODE)
}

/// Add to a packed app its code compiled ahead of time for `target` (a
/// target triple, as wasmtime names it), replacing any precompiled code and
/// dropping the signature (sign the result). `compiled` is what wasmtime's
/// `Engine::precompile_component` made of [`component_code`] of `app`; it is
/// stored compressed (zstd).
///
/// # Errors
/// `app` is not a usable app file, or `target` is empty or longer than 255 bytes.
pub fn with_native(app: &[u8], target: &str, compiled: &[u8]) -> Result<Vec<u8>, FormatError> {
    let file = AppFile::parse(app)?;
    let target_len = u8::try_from(target.len())
        .ok()
        .filter(|n| *n > 0)
        .ok_or(FormatError::BadNativeSection("the target must be 1 to 255 bytes"))?;
    let mut payload = Vec::with_capacity(NATIVE_MAGIC.len() + 33 + target.len() + compiled.len());
    payload.extend_from_slice(NATIVE_MAGIC);
    payload.extend_from_slice(&file.code_sha256);
    payload.push(target_len);
    payload.extend_from_slice(target.as_bytes());
    payload.extend(zstd::bulk::compress(compiled, NATIVE_ZSTD_LEVEL).map_err(|e| FormatError::Native(e.to_string()))?);
    let mut out = strip(app, &[NATIVE_SECTION, SIGNATURE_SECTION])?;
    out.extend(custom_section(NATIVE_SECTION, &payload));
    Ok(out)
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

/// Code compiled ahead of time, found in an app file (not yet checked: only
/// a runtime that trusts the file's signer may load it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeCode {
    /// The target it was compiled for (`aarch64-unknown-linux-gnu`).
    pub target: String,
    /// SHA-256 of the code it was compiled from.
    pub code_sha256: [u8; 32],
    /// Where wasmtime's serialized component lies in the file (compressed).
    pub range: std::ops::Range<usize>,
}

impl NativeCode {
    /// Read the header of a native section whose payload starts at byte `at` of the file.
    fn read(payload: &[u8], at: usize) -> Result<Self, FormatError> {
        let rest = payload.strip_prefix(NATIVE_MAGIC.as_slice()).ok_or(FormatError::BadNativeSection("no header"))?;
        let (digest, rest) = rest.split_at_checked(32).ok_or(FormatError::BadNativeSection("truncated header"))?;
        let (&len, rest) = rest.split_first().ok_or(FormatError::BadNativeSection("truncated header"))?;
        let (target, compiled) =
            rest.split_at_checked(usize::from(len)).ok_or(FormatError::BadNativeSection("truncated target"))?;
        let target =
            std::str::from_utf8(target).map_err(|_| FormatError::BadNativeSection("the target is not UTF-8"))?;
        let mut code_sha256 = [0u8; 32];
        code_sha256.copy_from_slice(digest);
        let start = at + (payload.len() - compiled.len());
        Ok(Self { target: target.to_owned(), code_sha256, range: start..start + compiled.len() })
    }

    /// The serialized component in `bytes` (the same file), unpacked.
    ///
    /// # Errors
    /// It does not unpack (a damaged file), or to more than 256 MiB.
    pub fn compiled(&self, bytes: &[u8]) -> Result<Vec<u8>, FormatError> {
        let packed = bytes.get(self.range.clone()).ok_or(FormatError::BadNativeSection("not in this file"))?;
        let size = zstd::zstd_safe::get_frame_content_size(packed)
            .ok()
            .flatten()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| FormatError::Native("not a zstd frame that says how large it unpacks".into()))?;
        if size > NATIVE_MAX_BYTES {
            return Err(FormatError::Native(format!("it unpacks to {size} bytes, more than {NATIVE_MAX_BYTES}")));
        }
        zstd::bulk::decompress(packed, size).map_err(|e| FormatError::Native(e.to_string()))
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
    /// SHA-256 of the component's code: the file without its manifest,
    /// precompiled code and signature (what [`component_code`] returns).
    pub code_sha256: [u8; 32],
    /// File size in bytes.
    pub size: usize,
    /// Code compiled ahead of time, if the file carries some.
    pub native: Option<NativeCode>,
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
        let mut native = None;
        let mut code = Sha256::new();
        code.update(&bytes[..8]);
        for (i, s) in secs.iter().enumerate() {
            if !s.custom.is_some_and(|(name, _)| NOT_CODE.contains(&name)) {
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
                Some((NATIVE_SECTION, payload)) => {
                    if native.is_some() {
                        return Err(FormatError::Duplicate(NATIVE_SECTION));
                    }
                    let at = s.end - payload.len();
                    native = Some(NativeCode::read(payload, at)?);
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
            native,
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

    /// Precompiled code is not code: adding it keeps the code digest, a
    /// signature covers it, repacking keeps it only while the code is the
    /// same, and a damaged header is refused by name.
    #[test]
    fn precompiled_code_rides_beside_the_code_under_the_signature() {
        let app = pack(&component(), &manifest()).unwrap();
        let plain = AppFile::parse(&app).unwrap();
        assert!(plain.native.is_none());
        let native = with_native(&app, "aarch64-unknown-linux-gnu", b"NATIVE BYTES").unwrap();
        let file = AppFile::parse(&native).unwrap();
        assert_eq!(file.code_sha256, plain.code_sha256);
        assert_eq!(component_code(&native).unwrap(), component_code(&app).unwrap());
        let n = file.native.as_ref().unwrap();
        assert_eq!((n.target.as_str(), n.code_sha256), ("aarch64-unknown-linux-gnu", plain.code_sha256));
        assert_eq!(n.compiled(&native).unwrap(), b"NATIVE BYTES");

        // The signature covers the native code.
        let key = generate_key();
        let trust = TrustList::from_keys([key.public_key_bytes()]);
        let signed = sign(&native, &key).unwrap();
        AppFile::parse(&signed).unwrap().verify(&signed, &trust).unwrap();
        let mut tampered = signed.clone();
        let at = tampered.windows(6).position(|w| w == b"NATIVE").unwrap();
        tampered[at] = b'X';
        let t = AppFile::parse(&tampered).unwrap();
        assert!(t.verify(&tampered, &trust).unwrap_err().to_string().contains("does not match"));

        // Precompiling again replaces, and drops the signature.
        let again = with_native(&signed, "x86_64-unknown-linux-gnu", b"OTHER").unwrap();
        let f = AppFile::parse(&again).unwrap();
        assert!(f.signature.is_none());
        assert_eq!(f.native.unwrap().compiled(&again).unwrap(), b"OTHER");

        // Repacking the same code (a new manifest) keeps it; other code drops it.
        let mut m2 = manifest();
        m2.version = "2.0.0".into();
        let repacked = pack(&native, &m2).unwrap();
        let r = AppFile::parse(&repacked).unwrap();
        assert_eq!(r.manifest.version, "2.0.0");
        assert_eq!(r.native.unwrap().compiled(&repacked).unwrap(), b"NATIVE BYTES");
        let other_code = wat::parse_str(r#"(component (core module (func (export "g"))))"#).unwrap();
        let mut mixed = other_code.clone();
        mixed.extend_from_slice(&native[component().len()..]);
        let repacked = pack(&mixed, &manifest()).unwrap();
        assert!(AppFile::parse(&repacked).unwrap().native.is_none(), "stale precompiled code was kept");

        // A header that cannot be read; two native sections; an empty target.
        let mut broken = app.clone();
        broken.extend(custom_section(NATIVE_SECTION, b"trellis-native-1\nshort"));
        assert!(AppFile::parse(&broken).unwrap_err().to_string().contains("`trellis-native` section is malformed"));
        let mut twice = native.clone();
        twice.extend(custom_section(NATIVE_SECTION, b"x"));
        assert!(matches!(AppFile::parse(&twice), Err(FormatError::Duplicate(NATIVE_SECTION))));
        assert!(with_native(&app, "", b"x").unwrap_err().to_string().contains("target"));
        // Compressed: a large run of code takes little room, and a damaged frame is named.
        let big = with_native(&app, "aarch64-unknown-linux-gnu", &vec![7u8; 1 << 20]).unwrap();
        assert!(big.len() < app.len() + 4096, "{} bytes", big.len());
        let n = AppFile::parse(&big).unwrap().native.unwrap();
        assert_eq!(n.compiled(&big).unwrap().len(), 1 << 20);
        let mut damaged = big.clone();
        damaged[n.range.start + 1] ^= 0xff;
        let err = n.compiled(&damaged).unwrap_err().to_string();
        assert!(err.contains("the precompiled code in `trellis-native`"), "{err}");
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
