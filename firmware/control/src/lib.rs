//! The one interface to a Trellis device.
//!
//! Every client drives a device through [`Device`]: the local control socket
//! ([`socket`], what `trellis device` speaks), the HTTPS management API
//! (`trellis-api`) and the fleet agent. The runtime implements it once. The
//! types a device reports ([`DeviceStatus`], [`AppSummary`],
//! [`FirmwareStatus`], [`UpdateRecord`], ...) live here too, so a client
//! depends on this small crate and on nothing of the runtime or the update
//! lifecycle.
//!
//! With the feature `testing`, [`testing::FakeDevice`] is an in-memory device
//! for the clients' tests.

mod device;
pub mod socket;
#[cfg(feature = "testing")]
pub mod testing;
mod types;

pub use device::{AppError, AppInstalled, ByRoot, Consent, Device};
pub use types::{
    AppSummary, Bundle, DeviceStatus, FirmwareStatus, Phase, Progress, SlotInfo, Slots, UpdateRecord, is_refusal,
};
