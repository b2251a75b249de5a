//! Compiled components: an in-memory map and a precompiled cache on disk, both
//! keyed by the SHA-256 of the component's code (manifest and signature
//! excluded, so repacking or re-signing an app does not recompile it) and the
//! engine's compatibility hash.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MEMORY_ENTRIES: usize = 32;

/// How a component was obtained (reported in swap timings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompileSource {
    /// Already compiled in this process.
    Memory,
    /// Loaded from the precompiled cache on disk.
    Disk,
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
    memory: HashMap<[u8; 32], Component>,
}

impl CompileCache {
    pub fn new(engine: &Engine, dir: PathBuf) -> Self {
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_hash = hex::encode(&h.0.finalize()[..8]);
        Self { dir, engine_hash, memory: HashMap::new() }
    }

    fn path(&self, key: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}-{}.cwasm", hex::encode(key), self.engine_hash))
    }

    /// The compiled form of `code` (the component without Trellis sections).
    pub fn get(&mut self, engine: &Engine, code: &[u8]) -> Result<(Component, CompileSource), String> {
        let key: [u8; 32] = Sha256::digest(code).into();
        if let Some(c) = self.memory.get(&key) {
            return Ok((c.clone(), CompileSource::Memory));
        }
        let path = self.path(&key);
        let (component, source) = match load(engine, &path) {
            Some(c) => (c, CompileSource::Disk),
            None => {
                let component = Component::new(engine, code).map_err(|e| format!("{e:#}"))?;
                let written =
                    component.serialize().map_err(|e| std::io::Error::other(format!("{e:#}"))).and_then(|bytes| {
                        std::fs::create_dir_all(&self.dir).and_then(|()| {
                            trellis_layout::write_atomic(&path, &bytes)
                                .map_err(trellis_layout::AtomicWriteError::into_io)
                        })
                    });
                if let Err(e) = written {
                    tracing::warn!(path = %path.display(), "cannot write the compile cache: {e}");
                }
                (component, CompileSource::Compiled)
            }
        };
        if self.memory.len() >= MEMORY_ENTRIES {
            self.memory.clear();
        }
        self.memory.insert(key, component.clone());
        Ok((component, source))
    }
}

/// Load a cached artifact; a stale or damaged one is removed and recompiled.
#[allow(unsafe_code)]
fn load(engine: &Engine, path: &Path) -> Option<Component> {
    if !path.exists() {
        return None;
    }
    // SAFETY: wasmtime requires that the file was produced by
    // `Engine::precompile_component` of a compatible engine. Only this module
    // writes the cache directory (atomically), names files by the content and
    // engine hash, and wasmtime checks the header and engine compatibility.
    match unsafe { Component::deserialize_file(engine, path) } {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(path = %path.display(), "discarding unusable compile cache entry: {e:#}");
            let _ = std::fs::remove_file(path);
            None
        }
    }
}
