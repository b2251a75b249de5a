//! The binary when it is not PID 1: `--version`, `--check`, and a console
//! that cannot be written (PID 1 may have none: the kernel gives it
//! `/dev/console` only when there is one). It must never panic on a failed
//! write, which `println!` and `eprintln!` do.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_trellis-init");

/// Whether the binary runs here at all (these tests also run as aarch64
/// binaries under qemu-user, where a child may not).
fn runnable() -> bool {
    let ok = Command::new(BIN).arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: {BIN} does not run here");
    }
    ok
}

fn full() -> std::fs::File {
    std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full")
}

fn scratch(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trellis-init-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn version_and_refusal_survive_a_console_that_cannot_be_written() {
    if !runnable() {
        return;
    }
    let v = Command::new(BIN).arg("--version").stdout(full()).status().unwrap();
    assert_eq!(v.code(), Some(0), "--version into a full stdout: {v:?} (101 is a panic)");
    let r = Command::new(BIN).stderr(full()).status().unwrap();
    assert_eq!(r.code(), Some(2), "the refusal into a full stderr: {r:?} (101 is a panic)");
    let r = Command::new(BIN).stderr(Stdio::null()).stdout(Stdio::null()).arg("--check").status().unwrap();
    assert_eq!(r.code(), Some(2), "--check without a file");
    let o = Command::new(BIN).output().unwrap();
    assert!(stderr(&o).starts_with("trellis-init: runs only as PID 1"), "{}", stderr(&o));
}

#[test]
fn check_accepts_the_boards_init_toml_and_names_what_is_wrong() {
    if !runnable() {
        return;
    }
    let board = |b: &str| format!("{}/../../board/{b}/init.toml", env!("CARGO_MANIFEST_DIR"));
    let o = Command::new(BIN).arg("--check").arg(board("qemu-aarch64")).arg(board("rpi4")).output().unwrap();
    assert!(o.status.success() && o.stderr.is_empty(), "{:?}: {}", o.status, stderr(&o));

    let bad = scratch("bad.toml", "data-fs = \"btrfs\"\n");
    let good = scratch("good.toml", "data-fs = \"ext4\"\n");
    let o = Command::new(BIN).arg("--check").arg(&good).arg(&bad).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.starts_with(&format!("trellis-init: {}: ", bad.display())), "{e}");
    assert!(e.contains("unknown variant `btrfs`, expected `f2fs` or `ext4`"), "{e}");
    assert!(!e.contains("good.toml"), "{e}");

    let o = Command::new(BIN).arg("--check").arg("/nonexistent/init.toml").output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/nonexistent/init.toml: cannot read it"), "{}", stderr(&o));

    // Its verdict is not lost with the console: the exit code carries it.
    let o = Command::new(BIN).arg("--check").arg(&bad).stderr(full()).status().unwrap();
    assert_eq!(o.code(), Some(1), "{o:?}");
    let _ = std::fs::remove_dir_all(bad.parent().unwrap());
}
