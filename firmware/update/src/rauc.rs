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

    /// No install runs, nor will one resume: an install just ended
    /// (written or failed for good: no retry follows), or the device
    /// started without one to resume. `written` is the bundle on record
    /// whose slot was written (in its trial, or committed), if any. What
    /// was kept on the device for installs can go, except what `written`
    /// fetched, which may be kept for the device's peers.
    fn settled(&self, written: Option<&Bundle>) {
        let _ = written;
    }

    /// The trial of `bundle`'s slot failed (`why`) and the device went back
    /// to the other slot, or is about to: nothing of it is kept or offered
    /// to the device's peers any more.
    fn rolled_back(&self, bundle: &Bundle, why: &str) {
        let _ = (bundle, why);
    }
}
