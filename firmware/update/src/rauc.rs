//! What the lifecycle needs from RAUC.

use crate::{Bundle, Progress, Slots, UpdateError};

/// What a slot is marked as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Boots from now on (for the booted slot: commits the trial).
    Good,
    /// Must not be booted.
    Bad,
}

impl Mark {
    /// RAUC's word for it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Bad => "bad",
        }
    }
}

/// RAUC, as the lifecycle uses it.
pub trait Rauc: Send + Sync {
    /// Install `bundle` (a file, or a URL RAUC streams from) into the other
    /// slot, calling `progress` as RAUC reports it; returns when RAUC is done.
    ///
    /// # Errors
    /// RAUC refused the bundle or failed to install it (its message), or the
    /// service cannot be reached.
    fn install(&self, bundle: &Bundle, progress: &mut dyn FnMut(&Progress)) -> Result<(), UpdateError>;

    /// Mark a slot (`booted`, `other` or a slot name).
    ///
    /// # Errors
    /// RAUC refused, or the service cannot be reached.
    fn mark(&self, mark: Mark, slot: &str) -> Result<String, UpdateError>;

    /// The slots and which one runs.
    ///
    /// # Errors
    /// The service cannot be reached.
    fn slots(&self) -> Result<Slots, UpdateError>;

    /// The install of `bundle` is over: the slot is written, or it failed
    /// for good (no retry, no resume will follow). What was kept on the
    /// device for it can go.
    fn finished(&self, bundle: &Bundle) {
        let _ = bundle;
    }
}
