//! `trellis-init`: PID 1. All logic is in the library (whose lints deny every
//! construct that can panic); this only wires it to Linux. Not as PID 1 it
//! does nothing to the system ([`trellis_init::cli`]).

fn main() {
    if std::process::id() != 1 {
        // Not the first process: never touch mounts or reboot a development machine.
        // (`args_os`: `args` panics on an argument that is not UTF-8.)
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        std::process::exit(trellis_init::cli::not_pid1(&args));
    }
    let mut sys = trellis_init::linux::Linux::new();
    trellis_init::supervise::run(&mut sys, trellis_layout::paths::INIT_CONFIG);
    // The kernel refused to reboot: nothing else to do but wait.
    loop {
        std::thread::park();
    }
}
