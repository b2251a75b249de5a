//! The Trellis app host.
//!
//! Runs WebAssembly component apps (the `trellis:app` world in `wit/`), one
//! wasmtime `Store` per app on its own thread, and swaps an app in place as a
//! transaction when its file changes: validate, compile (or load the
//! precompiled cache), instantiate and start the new version, then retire the
//! old one. Any failure leaves the old version running. See `docs/runtime.md`.

pub mod api;
mod bindings;
mod broker;
mod cache;
mod cgroup;
mod clock;
pub mod config;
mod consent;
pub mod device;
mod engine;
mod error;
mod events;
pub mod fleet;
mod host;
mod hw;
mod kv;
mod mailbox;
pub mod printable;
mod runtime;
mod seed;
pub mod shaping;
mod status;
mod stopped;
mod supervisor;
mod sync;
pub mod uevent;
mod watcher;
mod worker;

pub use broker::Message;
pub use cache::CompileSource;
pub use cgroup::CgroupError;
pub use clock::{Clock, FakeClock, SystemClock};
pub use config::{BoardConfig, CgroupConfig, CrashPolicy, HardwarePolicy, LogPolicy, Profiler, RuntimeConfig};
pub use consent::{CONSENT_MARGIN, MAX_DEFERRAL_S};
pub use engine::precompile;
pub use error::{Fault, LoadError, RuntimeError};
pub use events::RuntimeEvent;
pub use host::Usage;
pub use runtime::Runtime;
pub use status::{AppState, AppStatus, HotplugAction, HotplugEvent, SwapOutcome};
pub use trellis_fleet::bus::BusStats;
/// Every on-device path (owned by `trellis-layout`).
pub use trellis_layout::paths;

/// A stream of [`RuntimeEvent`]s.
pub type EventReceiver = crossbeam_channel::Receiver<RuntimeEvent>;
/// A stream of published [`Message`]s.
pub type MessageReceiver = crossbeam_channel::Receiver<Message>;

/// The version of the `trellis:app` WIT package this runtime provides.
pub const INTERFACE_VERSION: &str = "0.1.2";
/// The WIT package name apps import.
pub use trellis_appfmt::INTERFACE_PACKAGE;
