//! The one error type of the crate: every variant names the path, tool or entry
//! that failed.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: holds {got} bytes, {size} expected", path.display())]
    Short { path: PathBuf, size: u64, got: u64 },
    #[error("{}: not a firmware delta: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    #[error("delta entry {path:?}: {reason}")]
    Entry { path: String, reason: String },
    #[error("{}: {reason}", path.display())]
    Unsupported { path: PathBuf, reason: String },
    #[error("{tool} {what}: {reason}")]
    Tool { tool: String, what: String, reason: String },
    #[error("{}: the delta's base is {want}, this image is {got}", path.display())]
    WrongBase { path: PathBuf, want: String, got: String },
    #[error(
        "the delta rebuilds an image of {got_size} bytes with SHA-256 {got}, not the new image ({want_size} bytes, {want}): {hint}"
    )]
    NotReproduced { want: String, want_size: u64, got: String, got_size: u64, hint: &'static str },
    #[error("RAUC's handler environment: {0}")]
    Env(String),
    #[error("{}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }
    pub fn entry(path: &str, reason: impl Into<String>) -> Self {
        Error::Entry { path: path.to_string(), reason: reason.into() }
    }
}
