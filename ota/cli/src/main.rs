//! `trellis`: the developer and operator CLI. All logic is in the library.

fn main() -> std::process::ExitCode {
    trellis_cli::main()
}
