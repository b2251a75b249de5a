//! The fleet's one error type: each names what failed (the server, the
//! bucket and key, the file, the release).

use std::path::PathBuf;

use crate::release::ReleaseError;

/// Why a fleet operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// No server could be reached (or the TLS setup is wrong).
    #[error("cannot connect to {servers}: {reason}")]
    Connect {
        /// The servers tried.
        servers: String,
        /// Why.
        reason: String,
    },
    /// A request to the server failed.
    #[error("{what}: {reason}")]
    Nats {
        /// What was asked (`reading trellis-desired/device.pi-1`).
        what: String,
        /// The server's or the client library's reason.
        reason: String,
    },
    /// A release that cannot be used.
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// A stored value that is not what it should be.
    #[error("{what} is not valid: {reason}")]
    Value {
        /// Which value (`trellis-rollouts/r-1`).
        what: String,
        /// Why.
        reason: String,
    },
    /// A file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A replica answered with a value older than one already read (it lags
    /// its leader).
    #[error("{what}: the replica read holds revision {revision}, older than revision {expected} already known of")]
    Lagging {
        /// Which key (`trellis-desired/group.north`).
        what: String,
        /// The revision read.
        revision: u64,
        /// The revision known of.
        expected: u64,
    },
    /// The operator asked for something that cannot be done.
    #[error("{0}")]
    Refused(String),
}

impl FleetError {
    /// A failed request, naming what was asked.
    pub fn nats(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::Nats { what: what.into(), reason: reason.to_string() }
    }

    /// A file error, naming the file.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    /// A stored value that does not parse.
    pub fn value(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::Value { what: what.into(), reason: reason.to_string() }
    }
}
