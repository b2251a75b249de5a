//! Compiled components: an in-memory map and a precompiled cache on disk, both
//! keyed by the SHA-256 of the component's code (manifest and signature
//! excluded, so repacking or re-signing an app does not recompile it) and the
//! engine's compatibility hash.
//!
//! A cache entry is native code that wasmtime maps and runs without checking
//! it, and it lives on the writable data partition. So every entry carries an
//! HMAC-SHA256, under a per-device key, of the code's digest, the engine hash
//! and the compiled bytes; the entry is read into memory, its MAC checked, and
//! only then deserialized. A damaged entry, one copied from another device, or
//! one written by anyone without the key (native code planted under the hash
//! of a signed app's code) fails the check: it is deleted, logged, and the
//! app compiled again from its verified code. The key
//! ([`trellis_layout::paths::state::CACHE_KEY`], mode 0600) is made on first
//! use from the kernel's random source; no app or API request can read or
//! write it (see docs/security.md).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use ring::hmac;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MEMORY_ENTRIES: usize = 32;
/// The first bytes of every cache entry (format version 1).
const MAGIC: &[u8; 16] = b"trellis-cwasm-1\n";
const MAC_LEN: usize = 32;
const KEY_LEN: usize = 32;

/// How a component was obtained (reported in swap timings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompileSource {
    /// Already compiled in this process.
    Memory,
    /// Loaded from the precompiled cache on disk.
    Disk,
    /// Loaded from the code compiled ahead of time that the app file carries
    /// (`trellis app precompile`), signed by a trusted key.
    Native,
    /// Compiled now (and written to the cache).
    Compiled,
}

struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

pub(crate) struct CompileCache {
    dir: PathBuf,
    engine_hash: String,
    /// `None`: the key could not be read or made; the disk cache is off.
    key: Option<hmac::Key>,
    memory: HashMap<[u8; 32], Component>,
}

impl CompileCache {
    /// A cache in `dir`, its entries authenticated with the key in `key_path`
    /// (made when missing or unusable).
    pub fn new(engine: &Engine, dir: PathBuf, key_path: &Path) -> Self {
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_hash = hex::encode(&h.0.finalize()[..8]);
        let key = match device_key(key_path) {
            Ok(k) => Some(hmac::Key::new(hmac::HMAC_SHA256, &k)),
            Err(e) => {
                tracing::warn!(path = %key_path.display(), "no compile cache key, compiling every app at start: {e}");
                None
            }
        };
        let cache = Self { dir, engine_hash, key, memory: HashMap::new() };
        cache.forget_other_engines();
        cache
    }

    /// Remove the entries another engine made (a firmware whose runtime
    /// compiles differently ran before): this one can never load them.
    fn forget_other_engines(&self) {
        let ours = format!("-{}.cwasm", self.engine_hash);
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().filter_map(Result::ok) {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".cwasm") && !name.ends_with(&ours) {
                tracing::info!(entry = name, "compile cache entry of another engine: removed");
                remove(&entry.path());
            }
        }
    }

    fn path(&self, code_sha256: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}-{}.cwasm", hex::encode(code_sha256), self.engine_hash))
    }

    /// An entry: the magic, the code's digest, the engine hash, the compiled
    /// bytes, then the HMAC of everything before it.
    fn entry(key: &hmac::Key, digest: &[u8; 32], engine_hash: &str, compiled: &[u8]) -> Vec<u8> {
        let mut entry = Vec::with_capacity(MAGIC.len() + 32 + engine_hash.len() + compiled.len() + MAC_LEN);
        entry.extend_from_slice(MAGIC);
        entry.extend_from_slice(digest);
        entry.extend_from_slice(engine_hash.as_bytes());
        entry.extend_from_slice(compiled);
        let tag = hmac::sign(key, &entry);
        entry.extend_from_slice(tag.as_ref());
        entry
    }

    /// The compiled form of the code whose SHA-256 is `digest` (the
    /// component without Trellis sections, as [`trellis_appfmt::AppFile`]
    /// computed it from the bytes it checked); `code` gives the code itself
    /// when it has to be compiled.
    ///
    /// `native` gives that code compiled ahead of time, when the caller has
    /// checked it was compiled from this code and signed by a key the device
    /// trusts: asked for when nothing in the cache holds the code, and when
    /// wasmtime refuses it (another target, another engine) the code is
    /// compiled. It is not written to the disk cache: the app file keeps it.
    pub fn get(
        &mut self,
        engine: &Engine,
        digest: &[u8; 32],
        native: impl FnOnce() -> Option<Vec<u8>>,
        code: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<(Component, CompileSource), String> {
        let digest = *digest;
        if let Some(c) = self.memory.get(&digest) {
            return Ok((c.clone(), CompileSource::Memory));
        }
        let loaded = self
            .load(engine, &digest)
            .map(|c| (c, CompileSource::Disk))
            .or_else(|| native().and_then(|bytes| load_native(engine, &bytes)).map(|c| (c, CompileSource::Native)));
        let (component, source) = match loaded {
            Some(found) => found,
            None => {
                let code = code()?;
                debug_assert_eq!(<[u8; 32]>::from(Sha256::digest(&code)), digest);
                let component = Component::new(engine, &code).map_err(|e| format!("{e:#}"))?;
                self.store(&digest, &component);
                (component, CompileSource::Compiled)
            }
        };
        if self.memory.len() >= MEMORY_ENTRIES {
            self.memory.clear();
        }
        self.memory.insert(digest, component.clone());
        Ok((component, source))
    }

    /// Write the compiled form of the code with digest `digest`, with its MAC.
    fn store(&self, digest: &[u8; 32], component: &Component) {
        let Some(key) = &self.key else { return };
        let path = self.path(digest);
        let written = component.serialize().map_err(|e| std::io::Error::other(format!("{e:#}"))).and_then(|bytes| {
            let entry = Self::entry(key, digest, &self.engine_hash, &bytes);
            std::fs::create_dir_all(&self.dir).and_then(|()| {
                trellis_layout::write_atomic(&path, &entry).map_err(trellis_layout::AtomicWriteError::into_io)
            })
        });
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), "cannot write the compile cache: {e}");
        }
    }

    /// Load a cached entry whose MAC checks; any other is removed (and logged).
    fn load(&self, engine: &Engine, digest: &[u8; 32]) -> Option<Component> {
        let key = self.key.as_ref()?;
        let path = self.path(digest);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read the compile cache entry: {e}");
                return None;
            }
        };
        let compiled = match authentic(key, digest, &self.engine_hash, &bytes) {
            Ok(compiled) => compiled,
            Err(why) => {
                tracing::warn!(path = %path.display(), "discarding a compile cache entry ({why}): compiling again");
                remove(&path);
                return None;
            }
        };
        // SAFETY: wasmtime requires that the bytes were produced by
        // `Component::serialize` of a compatible engine. They carry a MAC under
        // this device's key, which only `store` above computes, over exactly
        // these bytes, the code's digest and the engine hash; the bytes were
        // checked in memory and are deserialized from that same memory.
        #[allow(unsafe_code)]
        match unsafe { Component::deserialize(engine, compiled) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), "discarding an unusable compile cache entry: {e:#}");
                remove(&path);
                None
            }
        }
    }
}

/// Code compiled ahead of time, if wasmtime accepts it for this engine.
fn load_native(engine: &Engine, bytes: &[u8]) -> Option<Component> {
    // SAFETY: wasmtime requires bytes produced by `precompile_component` of a
    // compatible engine, and checks the engine and the target itself. Only
    // bytes under a signature by a key the device trusts reach here (the
    // caller checks it), bound by that signature to this code's digest.
    #[allow(unsafe_code)]
    match unsafe { Component::deserialize(engine, bytes) } {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("the app's precompiled code does not load here ({e:#}): compiling its code");
            None
        }
    }
}

/// The compiled bytes of an entry, if its MAC and header are right.
fn authentic<'a>(
    key: &hmac::Key,
    digest: &[u8; 32],
    engine_hash: &str,
    entry: &'a [u8],
) -> Result<&'a [u8], &'static str> {
    let body_len = entry.len().checked_sub(MAC_LEN).ok_or("truncated")?;
    let (body, tag) = entry.split_at(body_len);
    hmac::verify(key, body, tag)
        .map_err(|_| "its authenticator does not match: damaged, or not written by this device")?;
    let rest = body.strip_prefix(MAGIC.as_slice()).ok_or("not a Trellis cache entry")?;
    let rest = rest.strip_prefix(digest.as_slice()).ok_or("made for other code")?;
    rest.strip_prefix(engine_hash.as_bytes()).ok_or("made by another engine")
}

fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(path = %path.display(), "cannot remove the compile cache entry: {e}");
    }
}

/// The device's cache key: read from `path`, or made from the kernel's random
/// source and written there (mode 0600) when missing or not 32 bytes.
fn device_key(path: &Path) -> std::io::Result<[u8; KEY_LEN]> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() == KEY_LEN => {
            let mut key = [0u8; KEY_LEN];
            key.copy_from_slice(&bytes);
            return Ok(key);
        }
        Ok(bytes) => {
            tracing::warn!(path = %path.display(), len = bytes.len(), "compile cache key has the wrong size: making a new one");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut key = [0u8; KEY_LEN];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
        .map_err(|_| std::io::Error::other("the kernel's random source failed"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    trellis_layout::write_atomic_with(path, |f| {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(&key)
    })
    .map_err(trellis_layout::AtomicWriteError::into_io)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn engine() -> Engine {
        Engine::default()
    }

    fn get(cache: &mut CompileCache, engine: &Engine, code: &[u8]) -> Result<(Component, CompileSource), String> {
        cache.get(engine, &Sha256::digest(code).into(), || None, || Ok(code.to_vec()))
    }

    const CODE_A: &str = r#"(component (core module (func (export "a"))))"#;
    const CODE_B: &str = r#"(component (core module (func (export "b"))))"#;

    fn entries(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir).map(|r| r.map(|e| e.unwrap().path()).collect()).unwrap_or_default()
    }

    #[test]
    fn an_entry_is_reused_across_restarts_and_the_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let (cache_dir, key) = (dir.path().join("cache"), dir.path().join("cache.key"));
        let code = wat::parse_str(CODE_A).unwrap();
        let engine = engine();
        let mut cache = CompileCache::new(&engine, cache_dir.clone(), &key);
        assert_eq!(get(&mut cache, &engine, &code).unwrap().1, CompileSource::Compiled);
        assert_eq!(get(&mut cache, &engine, &code).unwrap().1, CompileSource::Memory);
        let mut again = CompileCache::new(&engine, cache_dir, &key);
        assert_eq!(get(&mut again, &engine, &code).unwrap().1, CompileSource::Disk);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&key).unwrap().len(), KEY_LEN);
    }

    /// Each way an entry can be wrong: the entry is not deserialized, it is
    /// removed, and the app is compiled again (and cached correctly again).
    #[test]
    fn entries_that_fail_their_check_are_deleted_and_recompiled() {
        let engine = engine();
        let (code_a, code_b) = (wat::parse_str(CODE_A).unwrap(), wat::parse_str(CODE_B).unwrap());
        type Tamper = fn(&Path, &Path, &Path);
        let cases: [(&str, Tamper); 5] = [
            ("a flipped bit in the native code", |a, _, _| {
                let mut bytes = std::fs::read(a).unwrap();
                let at = bytes.len() - MAC_LEN - 100;
                bytes[at] ^= 0x04;
                std::fs::write(a, bytes).unwrap();
            }),
            ("a flipped bit in the MAC", |a, _, _| {
                let mut bytes = std::fs::read(a).unwrap();
                let at = bytes.len() - 3;
                bytes[at] ^= 0x01;
                std::fs::write(a, bytes).unwrap();
            }),
            ("code B's entry planted under code A's name", |a, b, _| std::fs::copy(b, a).map(drop).unwrap()),
            ("a bare wasmtime artifact (no MAC)", |a, _, _| {
                let bytes = std::fs::read(a).unwrap();
                std::fs::write(a, &bytes[MAGIC.len() + 32 + 16..bytes.len() - MAC_LEN]).unwrap();
            }),
            ("an entry made with another device's key", |a, _, key| {
                let entry = std::fs::read(a).unwrap();
                let compiled = &entry[MAGIC.len() + 32 + 16..entry.len() - MAC_LEN];
                let name = a.file_name().unwrap().to_str().unwrap();
                let (digest_hex, engine_hash) = name.trim_end_matches(".cwasm").split_once('-').unwrap();
                let mut digest = [0u8; 32];
                hex::decode_to_slice(digest_hex, &mut digest).unwrap();
                let other = hmac::Key::new(hmac::HMAC_SHA256, &[7u8; KEY_LEN]);
                std::fs::write(a, CompileCache::entry(&other, &digest, engine_hash, compiled)).unwrap();
                assert!(key.exists());
            }),
        ];
        for (what, tamper) in cases {
            let dir = tempfile::tempdir().unwrap();
            let (cache_dir, key) = (dir.path().join("cache"), dir.path().join("cache.key"));
            let mut cache = CompileCache::new(&engine, cache_dir.clone(), &key);
            get(&mut cache, &engine, &code_a).unwrap();
            let path_a = cache.path(&Sha256::digest(&code_a).into());
            get(&mut cache, &engine, &code_b).unwrap();
            let path_b = cache.path(&Sha256::digest(&code_b).into());
            assert_eq!(entries(&cache_dir).len(), 2);
            tamper(&path_a, &path_b, &key);
            let mut fresh = CompileCache::new(&engine, cache_dir.clone(), &key);
            assert!(fresh.load(&engine, &Sha256::digest(&code_a).into()).is_none(), "{what}: loaded");
            assert!(!path_a.exists(), "{what}: the bad entry is still there");
            assert_eq!(get(&mut fresh, &engine, &code_a).unwrap().1, CompileSource::Compiled, "{what}");
            let mut third = CompileCache::new(&engine, cache_dir, &key);
            assert_eq!(get(&mut third, &engine, &code_a).unwrap().1, CompileSource::Disk, "{what}: cached again");
        }
    }

    #[test]
    fn entries_of_another_engine_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (cache_dir, key) = (dir.path().join("cache"), dir.path().join("cache.key"));
        let engine = engine();
        get(&mut CompileCache::new(&engine, cache_dir.clone(), &key), &engine, &wat::parse_str(CODE_A).unwrap())
            .unwrap();
        let ours = entries(&cache_dir);
        let other = cache_dir.join(format!("{}-0123456789abcdef.cwasm", "ab".repeat(32)));
        std::fs::write(&other, b"compiled by another engine").unwrap();
        std::fs::write(cache_dir.join("notes.txt"), b"not an entry").unwrap();
        let _cache = CompileCache::new(&engine, cache_dir.clone(), &key);
        assert!(!other.exists(), "another engine's entry is removed");
        assert!(ours.iter().all(|p| p.exists()) && !ours.is_empty(), "this engine's entries stay");
        assert!(cache_dir.join("notes.txt").exists(), "what is not an entry stays");
    }

    #[test]
    fn a_lost_key_invalidates_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (cache_dir, key) = (dir.path().join("cache"), dir.path().join("cache.key"));
        let code = wat::parse_str(CODE_A).unwrap();
        let engine = engine();
        get(&mut CompileCache::new(&engine, cache_dir.clone(), &key), &engine, &code).unwrap();
        std::fs::write(&key, b"short").unwrap();
        let mut cache = CompileCache::new(&engine, cache_dir, &key);
        assert_eq!(get(&mut cache, &engine, &code).unwrap().1, CompileSource::Compiled);
        assert_eq!(std::fs::read(&key).unwrap().len(), KEY_LEN, "a new key was made");
    }

    #[test]
    fn without_a_usable_key_nothing_is_read_or_written_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache");
        // The key's directory is a file: no key can be made.
        std::fs::write(dir.path().join("blocked"), b"").unwrap();
        let key = dir.path().join("blocked/cache.key");
        let code = wat::parse_str(CODE_A).unwrap();
        let engine = engine();
        let mut cache = CompileCache::new(&engine, cache_dir.clone(), &key);
        assert_eq!(get(&mut cache, &engine, &code).unwrap().1, CompileSource::Compiled);
        assert!(entries(&cache_dir).is_empty());
    }
}
