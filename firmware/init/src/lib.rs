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
//!
//! A panic in PID 1 is a kernel panic, so the constructs that can panic are
//! denied here (`main.rs` only calls into this library): no `unwrap`/`expect`, no indexing or
//! slicing, no arithmetic that can overflow, no print macros (they panic when
//! the console write fails; [`console`] ignores the error instead).

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::unwrap_in_result,
    clippy::get_unwrap,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::arithmetic_side_effects,
    clippy::panic,
    clippy::panic_in_result_fn,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::dbg_macro,
    clippy::exit
)]

pub mod boot;
pub mod cli;
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

/// A line on the console (standard error: `/dev/console` for PID 1), prefixed
/// `trellis-init: `. A write that fails (no console, a closed descriptor, a
/// full device) is ignored: `eprintln!` would panic, and PID 1 must not.
pub fn console(message: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "trellis-init: {message}");
}
