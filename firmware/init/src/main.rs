//! `trellis-init`: PID 1. All logic is in the library; this only wires it to Linux.

fn main() {
    if std::process::id() != 1 {
        // Not the first process: never touch mounts or reboot a development machine.
        if std::env::args().nth(1).as_deref() == Some("--version") {
            println!("trellis-init {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        eprintln!("trellis-init: runs only as PID 1 (the kernel's init=); try --version");
        std::process::exit(2);
    }
    let mut sys = trellis_init::linux::Linux::new();
    let path = trellis_layout::paths::INIT_CONFIG;
    let cfg = match std::fs::read_to_string(path) {
        Ok(text) => trellis_init::Config::from_toml(&text).unwrap_or_else(|e| {
            eprintln!("trellis-init: {path}: {e}; using defaults");
            trellis_init::Config::default()
        }),
        Err(_) => trellis_init::Config::default(),
    };
    trellis_init::supervise::main_loop(&mut sys, &cfg);
    // The kernel refused to reboot: nothing else to do but wait.
    loop {
        std::thread::park();
    }
}
