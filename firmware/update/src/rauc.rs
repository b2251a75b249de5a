//! What the lifecycle needs from RAUC.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::UpdateError;

/// RAUC's progress report: a percentage and what it is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// 0–100.
    pub percent: i32,
    /// RAUC's message ("Checking bundle", "Copying image to rootfs.1", ...).
    pub message: String,
}

/// A slot as RAUC reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SlotInfo {
    /// RAUC's slot name (`rootfs.1`).
    pub name: String,
    /// Boot name (`B`).
    pub bootname: String,
    /// `booted`, `active` or `inactive`.
    pub state: String,
    /// `good` or `bad` (from the boot backend).
    pub boot_status: Option<String>,
    /// The version of the bundle last installed into it.
    pub version: Option<String>,
}

/// The slots of the system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Slots {
    /// Boot name of the slot running now.
    pub booted: String,
    /// Boot name of the slot the next normal boot starts.
    pub primary: Option<String>,
    /// The system's compatible string.
    pub compatible: String,
    /// The bootable slots (those with a boot name).
    pub slots: Vec<SlotInfo>,
}

impl Slots {
    /// The bootable slot that is not running: where an update goes.
    #[must_use]
    pub fn other(&self) -> Option<&SlotInfo> {
        self.slots.iter().find(|s| s.bootname != self.booted)
    }

    /// The slot with boot name `bootname`.
    #[must_use]
    pub fn by_bootname(&self, bootname: &str) -> Option<&SlotInfo> {
        self.slots.iter().find(|s| s.bootname == bootname)
    }
}

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
    /// Install `bundle` into the other slot, calling `progress` as RAUC reports
    /// it; returns when RAUC is done.
    ///
    /// # Errors
    /// RAUC refused the bundle or failed to install it (its message), or the
    /// service cannot be reached.
    fn install(&self, bundle: &Path, progress: &mut dyn FnMut(&Progress)) -> Result<(), UpdateError>;

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
}
