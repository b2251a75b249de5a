//! ed25519 app-signing keys and the device's trust list.
//!
//! Key files are hex text: `NAME.key` holds the 32-byte secret seed,
//! `NAME.pub` the 32-byte public key.

use std::fmt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

/// Key and signature failures; file errors name the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The app carries no signature.
    #[error("the app is not signed and signatures are required")]
    Unsigned,
    /// The signer is not trusted.
    #[error("signed by key {0}, which is not in the trust list")]
    Untrusted(KeyId),
    /// The signature does not verify.
    #[error("the signature by key {0} does not match the file (modified after signing?)")]
    Mismatch(KeyId),
    /// A key file cannot be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key file cannot be written.
    #[error("cannot write key file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key file holds something else.
    #[error("key file {path} does not hold 64 hex digits (a 32-byte ed25519 key)")]
    Format {
        /// The file.
        path: PathBuf,
    },
}

/// A short key identifier: the first 8 bytes of SHA-256 of the public key, in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 8]);

impl KeyId {
    /// The id of `public_key`.
    #[must_use]
    pub fn of(public_key: &[u8; 32]) -> Self {
        let digest = Sha256::digest(public_key);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        Self(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// A secret signing key.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", KeyId::of(&self.public_key_bytes()))
    }
}

impl SigningKey {
    /// The public half.
    #[must_use]
    pub fn public_key_bytes(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// Sign `data`.
    #[must_use]
    pub fn sign(&self, data: &[u8]) -> [u8; 64] {
        self.0.sign(data).to_bytes()
    }
}

/// A fresh random key.
#[must_use]
pub fn generate_key() -> SigningKey {
    SigningKey(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng))
}

fn read_hex32(path: &Path) -> Result<[u8; 32], KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read { path: path.to_owned(), source })?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out).map_err(|_| KeyError::Format { path: path.to_owned() })?;
    Ok(out)
}

/// Load a secret key file.
///
/// # Errors
/// The file cannot be read or is not a key.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    Ok(SigningKey(ed25519_dalek::SigningKey::from_bytes(&read_hex32(path)?)))
}

/// Write `key` as `dir/NAME.key` (mode 0600) and `dir/NAME.pub`; returns both paths.
///
/// # Errors
/// The files cannot be written.
pub fn write_key_pair(key: &SigningKey, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), KeyError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let secret = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let write = |path: &Path, text: String, mode: u32| -> Result<(), KeyError> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(|source| KeyError::Write { path: path.to_owned(), source })?;
        f.write_all(text.as_bytes()).map_err(|source| KeyError::Write { path: path.to_owned(), source })
    };
    write(&secret, format!("{}\n", hex::encode(key.0.to_bytes())), 0o600)?;
    write(&public, format!("{}\n", hex::encode(key.public_key_bytes())), 0o644)?;
    Ok((secret, public))
}

/// The public keys whose signatures a device accepts.
#[derive(Debug, Clone, Default)]
pub struct TrustList {
    keys: Vec<VerifyingKey>,
}

impl TrustList {
    /// From raw public keys (invalid points are skipped).
    pub fn from_keys(keys: impl IntoIterator<Item = [u8; 32]>) -> Self {
        Self { keys: keys.into_iter().filter_map(|k| VerifyingKey::from_bytes(&k).ok()).collect() }
    }

    /// Load `.pub` files: each path is a key file or a directory of them.
    ///
    /// # Errors
    /// A file cannot be read or does not hold a key.
    pub fn load(paths: &[PathBuf]) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        for path in paths {
            if path.is_dir() {
                let entries =
                    std::fs::read_dir(path).map_err(|source| KeyError::Read { path: path.clone(), source })?;
                let mut files: Vec<PathBuf> = entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "pub"))
                    .collect();
                files.sort();
                for f in files {
                    keys.push(Self::load_one(&f)?);
                }
            } else {
                keys.push(Self::load_one(path)?);
            }
        }
        Ok(Self { keys })
    }

    fn load_one(path: &Path) -> Result<VerifyingKey, KeyError> {
        VerifyingKey::from_bytes(&read_hex32(path)?).map_err(|_| KeyError::Format { path: path.to_owned() })
    }

    /// How many keys are trusted.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is trusted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verify `signature` over `data` by `public_key`, which must be trusted.
    ///
    /// # Errors
    /// Untrusted key or bad signature.
    pub fn verify(&self, public_key: &[u8; 32], data: &[u8], signature: &[u8; 64]) -> Result<KeyId, KeyError> {
        let id = KeyId::of(public_key);
        let key = self.keys.iter().find(|k| k.as_bytes() == public_key).ok_or(KeyError::Untrusted(id))?;
        key.verify(data, &Signature::from_bytes(signature)).map_err(|_| KeyError::Mismatch(id))?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn key_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate_key();
        let (secret, public) = write_key_pair(&key, dir.path(), "dev").unwrap();
        let loaded = load_signing_key(&secret).unwrap();
        assert_eq!(loaded.public_key_bytes(), key.public_key_bytes());
        let trust = TrustList::load(&[dir.path().to_owned()]).unwrap();
        assert_eq!(trust.len(), 1);
        let sig = loaded.sign(b"data");
        trust.verify(&key.public_key_bytes(), b"data", &sig).unwrap();
        assert!(write_key_pair(&key, dir.path(), "dev").is_err(), "must not overwrite keys");
        std::fs::write(&public, "zz").unwrap();
        let err = TrustList::load(std::slice::from_ref(&public)).unwrap_err().to_string();
        assert!(err.contains(&public.display().to_string()), "{err}");
    }
}
