//! The command line of a `trellis-init` that is not PID 1: it does nothing to
//! the system; it answers `--version`, and `--check FILE...` checks init
//! configuration files the way init reads them (the image build runs it on
//! the board's `init.toml`).

use std::ffi::OsString;
use std::io::Write as _;

use crate::console;

/// Run the command line `args` (without the program name); the exit code.
#[must_use]
pub fn not_pid1(args: &[OsString]) -> i32 {
    match args.split_first() {
        Some((flag, [])) if flag == "--version" => {
            // A failed write (stdout closed or full) is not worth a panic either.
            let _ = writeln!(std::io::stdout().lock(), "trellis-init {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Some((flag, files)) if flag == "--check" && !files.is_empty() => check(files),
        _ => {
            console("runs only as PID 1 (the kernel's init=); otherwise: --version, or --check INIT.TOML...");
            2
        }
    }
}

/// `--check FILE...`: each file parsed and checked as init reads its
/// configuration; every error on the console. 0 when all are good, 1 otherwise.
fn check(files: &[OsString]) -> i32 {
    let mut code = 0;
    for file in files {
        let name = file.to_string_lossy();
        let verdict = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read it: {e}"))
            .and_then(|text| crate::Config::from_toml(&text));
        if let Err(e) = verdict {
            console(&format!("{name}: {e}"));
            code = 1;
        }
    }
    code
}
