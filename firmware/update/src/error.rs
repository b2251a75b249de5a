//! Errors of the update lifecycle; each names what failed.

use std::path::PathBuf;

use trellis_control::Bundle;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// RAUC refused or failed (its own message).
    #[error("RAUC: {0}")]
    Rauc(String),
    /// RAUC's D-Bus service cannot be reached.
    #[error("RAUC's D-Bus service: {0}")]
    Bus(String),
    /// Another operation is under way.
    #[error("busy: {0}")]
    Busy(String),
    /// The bundle cannot be used.
    #[error("bundle {bundle}: {reason}")]
    Bundle {
        /// The bundle (file or URL).
        bundle: Bundle,
        /// Why.
        reason: String,
    },
    /// The state file cannot be written.
    #[error("update state {path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The device's key cannot be handed to RAUC for a streamed install.
    #[error("streaming key {path}: {reason}")]
    StreamKey {
        /// The key or its copy.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Init could not be asked to reboot.
    #[error("requesting a reboot: {0}")]
    Reboot(String),
}
