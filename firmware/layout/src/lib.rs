//! The on-device contract of a Trellis device, owned in one place:
//!
//! - [`paths`]: every path on the device (the data partition, the apps
//!   directory, the runtime's state, the configuration files, the control
//!   socket, the reboot parameter);
//! - [`write_atomic`] / [`write_atomic_with`]: the one way a file is replaced,
//!   so that a power cut leaves either the old file or the whole new one;
//! - [`AppsDir`]: the apps directory and its `NAME.wasm` ↔ app name mapping;
//! - [`booted_slot`]: the slot the kernel was booted from (`rauc.slot=`).
//!
//! The crate has no dependency beyond `std` and `thiserror`, so PID 1, the
//! boot backend and the CLI use it as well as the runtime.

mod apps;
mod atomic;
pub mod paths;
mod slot;

pub use apps::{APP_EXTENSION, AppsDir, valid_name};
pub use atomic::{AtomicWriteError, temporary_path, write_atomic, write_atomic_with};
pub use slot::booted_slot;
