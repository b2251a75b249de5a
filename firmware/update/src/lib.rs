//! The firmware update lifecycle of a Trellis device (docs/update.md).
//!
//! 1. [`Updater::install`] hands a bundle to RAUC and reports its progress;
//!    RAUC writes the other slot and, through `trellis-boot`, names it in
//!    `autoboot.txt`'s `[tryboot]` section only.
//! 2. [`Updater::reboot_into_trial`] asks init to reboot with `"0 tryboot"`:
//!    the firmware boots the new slot once.
//! 3. In the trial boot, [`Updater::resume`] finds the pending trial and
//!    [`Updater::gate`] waits for the device to be healthy within a deadline
//!    counted from kernel start. Healthy: RAUC marks the slot good, which makes
//!    it permanent. Not healthy in time: the slot is marked bad and the device
//!    reboots normally, which boots the old slot.
//! 4. A trial that never reaches the gate (a kernel that does not boot, an init
//!    or runtime that crash-loops, a power cut) ends in a reboot without the
//!    tryboot flag, so the firmware boots the old slot; the runtime there finds
//!    the trial unresolved and records the rollback.
//!
//! Every step is written to a small state file on the data partition
//! ([`StateFile`]), so the outcome survives the reboots and is what
//! `trellis device status` shows. Side effects sit behind [`Rauc`] and
//! [`Platform`]; the real ones are [`dbus::DbusRauc`] and [`system::LinuxPlatform`].

#[cfg(feature = "dbus")]
pub mod dbus;
mod error;
mod lifecycle;
mod rauc;
mod state;
pub mod stream_key;
#[cfg(feature = "device")]
pub mod system;

pub use error::UpdateError;
pub use lifecycle::{GateOutcome, Platform, Policy, Reboot, Resume, StreamTls, Updater};
pub use rauc::{Mark, Rauc};
pub use state::StateFile;
// What the lifecycle reports is part of the device interface (`trellis-control`).
pub use trellis_control::{Bundle, FirmwareStatus, Phase, Progress, SlotInfo, Slots, UpdateRecord};
