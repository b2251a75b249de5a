//! Trellis PID 1.
//!
//! Tiny and never panicking, in the manner of Nerves' erlinit: it mounts the
//! pseudo file systems, makes stable links to the boot disk, mounts the data
//! partition (formatting it when it holds no file system, and setting a
//! corrupted one aside), steps the clock forward to the build time, starts and
//! supervises the runtime and other services with restart back-off, pets the
//! hardware watchdog, reaps zombies, and on a fatal error syncs, unmounts and
//! reboots.
//!
//! Every side effect goes through [`System`], so the whole boot sequence runs
//! in tests against a recording implementation; [`linux::Linux`] is the real one.

pub mod boot;
pub mod config;
pub mod disk;
#[cfg(target_os = "linux")]
pub mod linux;
pub mod supervise;
pub mod system;

pub use boot::{Fatal, boot};
pub use config::Config;
pub use supervise::{Outcome, Supervisor};
pub use system::{ExitStatus, Request, System};
