//! Apps written in other languages than Rust, built and packed by `make apps`
//! into `build/lang-apps/`, run on the simulated board: each must behave
//! exactly like the Rust example it mirrors.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::device;
use trellis_appfmt::{AppFile, Manifest};
use trellis_hal::gpio::Level;
use trellis_runtime::RuntimeEvent;

// ---- Python (componentize-py, wasm-apps/python) ----

/// Compiling a Python component (tens of MiB: the interpreter and its standard
/// library) takes tens of seconds in the tests' build of wasmtime.
const PY_LOAD: Duration = Duration::from_secs(600);
const PY_SECS: Duration = Duration::from_secs(30);

/// A Python app as `make apps` packed it (`build/lang-apps/NAME.wasm`, or
/// `$TRELLIS_LANG_APPS/NAME.wasm`): its code and its manifest.
fn py_app(name: &str) -> (Vec<u8>, Manifest) {
    let dir = std::env::var_os("TRELLIS_LANG_APPS")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../build/lang-apps"), PathBuf::from);
    let path = dir.join(format!("{name}.wasm"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; build the Python apps first with `make apps`", path.display()));
    let manifest = AppFile::inspect(&bytes).unwrap().manifest;
    (trellis_appfmt::component_code(&bytes).unwrap(), manifest)
}

/// `manifest` with `[config]` values replaced.
fn py_config(mut manifest: Manifest, pairs: &[(&str, &str)]) -> Manifest {
    for (k, v) in pairs {
        manifest.config.insert((*k).to_owned(), (*v).to_owned());
    }
    manifest
}

fn py_wait_started(dev: &support::TestRuntime, app: &str, version: &str) {
    dev.wait_for(
        &format!("{app} {version} started"),
        PY_LOAD,
        |e| matches!(e, RuntimeEvent::Started { app: a, version: v, .. } if a == app && v == version),
    );
}

fn py_log(dev: &support::TestRuntime, app: &str, prefix: &str) -> String {
    match dev.wait_for(
        &format!("{app} logging {prefix:?}"),
        PY_SECS,
        |e| matches!(e, RuntimeEvent::Log { app: a, message, .. } if a == app && message.starts_with(prefix)),
    ) {
        RuntimeEvent::Log { message, .. } => message,
        _ => unreachable!(),
    }
}

fn py_values(rx: &trellis_runtime::MessageReceiver, n: usize) -> Vec<u64> {
    (0..n).map(|_| String::from_utf8(rx.recv_timeout(PY_SECS).unwrap().payload).unwrap().parse().unwrap()).collect()
}

/// The values received, in order, until `n` of them are above `past` (the
/// ones an app published before a swap may still be queued).
fn py_values_past(rx: &trellis_runtime::MessageReceiver, past: u64, n: usize) -> Vec<u64> {
    let mut seen = Vec::new();
    while seen.iter().filter(|&&v| v > past).count() < n {
        seen.extend(py_values(rx, 1));
    }
    seen
}

/// "counting from N (M ticks since boot)" → (N, M).
fn py_counting(line: &str) -> (u64, u64) {
    let rest = line.strip_prefix("counting from ").unwrap();
    let (count, rest) = rest.split_once(" (").unwrap();
    let ticks = rest.strip_suffix(" ticks since boot)").unwrap();
    (count.parse().unwrap(), ticks.parse().unwrap())
}

/// py-blinky claims GPIO 17 and toggles it on its period, as blinky does.
#[test]
fn python_blinky_toggles_its_line() {
    let (code, manifest) = py_app("py-blinky");
    let fast = py_config(manifest.clone(), &[("period-ms", "20")]);
    let dev = device(&[], |_| {});
    let changes = Arc::new(Mutex::new(Vec::new()));
    let seen = changes.clone();
    dev.board.gpio.on_output_change(move |line, level| seen.lock().unwrap().push((line, level)));
    let t0 = Instant::now();
    let outcome = dev.runtime.install("py-blinky", &trellis_appfmt::pack(&code, &fast).unwrap()).unwrap();
    eprintln!("py-blinky: loaded in {:?} ({:?}), {} bytes of code", t0.elapsed(), outcome.compile, code.len());
    assert_eq!(py_log(&dev, "py-blinky", "blinking"), "blinking GPIO 17 every 20 ms");
    assert_eq!(dev.board.gpio.holder(17).as_deref(), Some("py-blinky"));
    let toggles =
        || -> Vec<Level> { changes.lock().unwrap().iter().filter(|(l, _)| *l == 17).map(|(_, v)| *v).collect() };
    let deadline = Instant::now() + PY_SECS;
    while toggles().len() < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let toggles = toggles();
    assert!(toggles.len() >= 10, "GPIO 17 changed {} times in {PY_SECS:?} at 20 ms", toggles.len());
    assert!(toggles.windows(2).all(|p| p[0] != p[1]), "the line alternates: {toggles:?}");
    assert_eq!(toggles[0], Level::High, "the first toggle drives it high (claimed low)");
    let status = dev.runtime.app_status("py-blinky").unwrap();
    assert_eq!(status.restarts, 0, "{:?}", status.last_error);
    eprintln!(
        "py-blinky: {} KiB of linear memory (limit {} KiB)",
        status.usage.memory_bytes() / 1024,
        manifest.limits.memory_kib
    );
    assert!(status.usage.memory_bytes() <= u64::from(manifest.limits.memory_kib) * 1024);
    // Stopped: on shutdown it drives the line low and releases it.
    dev.runtime.remove("py-blinky").unwrap();
    assert_eq!(dev.board.gpio.level(17).unwrap(), Level::Low);
    assert!(dev.board.gpio.holder(17).is_none());
}

/// py-counter keeps its count in the key-value store ("count", a u64
/// little-endian) across a restart of the runtime, and hands its ticks since
/// boot to the next version across a hot swap through `state`.
#[test]
fn python_counter_persists_its_count_and_hands_over_its_ticks() {
    let (code, manifest) = py_app("py-counter");
    let fast = py_config(manifest.clone(), &[("period-ms", "20")]);
    let t0 = Instant::now();
    let dev = device(&[("py-counter", trellis_appfmt::pack(&code, &fast).unwrap())], |_| {});
    py_wait_started(&dev, "py-counter", "1.0.0");
    let cold = t0.elapsed();
    assert_eq!(py_counting(&py_log(&dev, "py-counter", "counting from")), (0, 0));
    let values = dev.runtime.subscribe("counter/value");
    let first = py_values(&values, 5);
    assert!(first.windows(2).all(|p| p[1] == p[0] + 1), "{first:?}");
    let status = dev.runtime.app_status("py-counter").unwrap();
    eprintln!(
        "py-counter: runtime start with a cold compile {cold:?}; {} KiB of linear memory (limit {} KiB)",
        status.usage.memory_bytes() / 1024,
        manifest.limits.memory_kib
    );

    // A restart of the runtime (a reboot): the count comes back from kv, the
    // compiled code from the compile cache on disk.
    let support::TestRuntime { dir, runtime, .. } = dev;
    runtime.shutdown();
    let store = std::fs::read_dir(dir.path().join("state")).unwrap().count();
    assert!(store > 0);
    let t0 = Instant::now();
    let dev = support::boot(dir, |_| {});
    py_wait_started(&dev, "py-counter", "1.0.0");
    let warm = t0.elapsed();
    eprintln!("py-counter: runtime restart, loaded from the compile cache on disk: {warm:?}");
    let (from, ticks) = py_counting(&py_log(&dev, "py-counter", "counting from"));
    assert!(from >= *first.last().unwrap() && ticks == 0, "after a restart: counting from {from} ({ticks} ticks)");
    let values = dev.runtime.subscribe("counter/value");
    let before = py_values(&values, 5);
    assert!(before[0] > from, "{before:?} after counting from {from}");

    // A hot swap to 1.1.0: the ticks since boot come across through save/restore.
    let mut v2 = fast.clone();
    v2.version = "1.1.0".into();
    let outcome = dev.runtime.install("py-counter", &trellis_appfmt::pack(&code, &v2).unwrap()).unwrap();
    assert!(outcome.state_handed_over, "save/restore ran");
    assert_eq!(outcome.replaced.as_deref(), Some("1.0.0"));
    eprintln!("py-counter: hot swap to 1.1.0 in {:?} ({:?})", outcome.elapsed, outcome.compile);
    let after = py_values(&values, 5);
    let all: Vec<u64> = before.iter().chain(&after).copied().collect();
    assert!(all.windows(2).all(|p| p[1] == p[0] + 1), "the count neither reset nor skipped: {all:?}");
    let (_, handed) = py_counting(&py_log(&dev, "py-counter", "counting from"));
    assert!(handed >= 5, "1.1.0 started with {handed} ticks since boot, handed over by 1.0.0");
}

/// The Python counter is a drop-in for the Rust one: packed under the Rust
/// example's manifest (app `counter`), it replaces the running Rust version in
/// place, takes the Rust version's ticks through `state` and its count from
/// the same kv key, and the Rust version takes them back from it.
#[test]
fn python_counter_swaps_in_for_the_rust_counter_and_back() {
    let (code, _) = py_app("py-counter");
    let rust = support::with_config(support::manifest("counter"), &[("period-ms", "20")]);
    let dev = device(&[("counter", support::pack("counter", &rust))], |_| {});
    dev.wait_started("counter", "1.0.0");
    assert_eq!(py_counting(&py_log(&dev, "counter", "counting from")), (0, 0), "Rust's own start");
    let values = dev.runtime.subscribe("counter/value");
    let before = py_values(&values, 5);
    let mut python = rust.clone();
    python.version = "2.0.0".into();
    // The one difference: CPython's memory snapshot alone is 12.3 MiB (Rust's counter asks for 2 MiB).
    python.limits.memory_kib = 32768;
    let outcome = dev.runtime.install("counter", &trellis_appfmt::pack(&code, &python).unwrap()).unwrap();
    assert!(outcome.state_handed_over, "Rust's save, Python's restore");
    let (from, ticks) = py_counting(&py_log(&dev, "counter", "counting from"));
    assert!(from >= before[4] && ticks >= 5, "Python counting from {from} ({ticks} ticks since boot)");
    // Rust's values published while Python compiled may still be queued: 5 of Python's own.
    let during = py_values_past(&values, from, 5);
    let outcome = dev.runtime.install("counter", &support::pack("counter", &rust)).unwrap();
    assert!(outcome.state_handed_over, "Python's save, Rust's restore");
    let (again, back) = py_counting(&py_log(&dev, "counter", "counting from"));
    assert!(back >= ticks + 5, "Rust took {back} ticks back (Python started from {ticks})");
    let after = py_values_past(&values, again, 5);
    let all: Vec<u64> = before.iter().chain(&during).chain(&after).copied().collect();
    assert!(all.windows(2).all(|p| p[1] == p[0] + 1), "one count across both languages: {all:?}");
}

// ---- C (clang, wit-bindgen, wasm-tools; wasm-apps/c) ----

const C_SECS: Duration = Duration::from_secs(30);

/// A C app as `make apps` packed it (`build/lang-apps/NAME.wasm`, or
/// `$TRELLIS_LANG_APPS/NAME.wasm`): its code and its manifest.
fn c_app(name: &str) -> (Vec<u8>, trellis_appfmt::Manifest) {
    let dir = std::env::var_os("TRELLIS_LANG_APPS").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../build/lang-apps"),
        std::path::PathBuf::from,
    );
    let path = dir.join(format!("{name}.wasm"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; build the C apps first with `make apps`", path.display()));
    let manifest = trellis_appfmt::AppFile::parse(&bytes).unwrap().manifest;
    (trellis_appfmt::component_code(&bytes).unwrap(), manifest)
}

/// `code` packed with `manifest` at `version`, its `[config]` values replaced.
fn c_pack(code: &[u8], manifest: &trellis_appfmt::Manifest, version: &str, config: &[(&str, &str)]) -> Vec<u8> {
    let mut manifest = support::with_config(manifest.clone(), config);
    manifest.version = version.into();
    trellis_appfmt::pack(code, &manifest).unwrap()
}

/// The C app's manifest grants and limits what the Rust example's does, with the same config.
fn c_assert_same_manifest(c: &trellis_appfmt::Manifest, rust: &str) {
    let rust = support::manifest(rust);
    assert_eq!(c.name, format!("c-{}", rust.name));
    assert_eq!(c.permissions, rust.permissions, "{}", c.name);
    assert_eq!(c.limits, rust.limits, "{}", c.name);
    assert_eq!(c.config, rust.config, "{}", c.name);
}

/// The next log line of `app` that starts with `prefix`.
fn c_log(dev: &support::TestRuntime, app: &str, prefix: &str) -> String {
    match dev.wait_for(
        &format!("{app} logging {prefix:?}"),
        C_SECS,
        |e| matches!(e, RuntimeEvent::Log { app: a, message, .. } if a == app && message.starts_with(prefix)),
    ) {
        RuntimeEvent::Log { message, .. } => message,
        _ => unreachable!(),
    }
}

fn c_values(rx: &trellis_runtime::MessageReceiver, n: usize) -> Vec<u64> {
    (0..n).map(|_| String::from_utf8(rx.recv_timeout(C_SECS).unwrap().payload).unwrap().parse().unwrap()).collect()
}

/// "counting from N (M ticks since boot)" → (N, M).
fn c_counting(line: &str) -> (u64, u64) {
    let rest = line.strip_prefix("counting from ").unwrap();
    let (count, rest) = rest.split_once(" (").unwrap();
    let ticks = rest.strip_suffix(" ticks since boot)").unwrap();
    (count.parse().unwrap(), ticks.parse().unwrap())
}

/// c-blinky claims GPIO 17 low and toggles it on its period with blinky's log
/// lines, drives it low when stopped, and refuses a bad config with the Rust
/// SDK's very message.
#[test]
fn c_blinky_toggles_its_line_like_blinky() {
    let (code, manifest) = c_app("c-blinky");
    c_assert_same_manifest(&manifest, "blinky");
    let dev = device(&[], |_| {});
    let (tx, rx) = crossbeam_channel::unbounded();
    dev.board.gpio.on_output_change(move |line, level| {
        let _ = tx.send((line, level));
    });
    let outcome = dev.runtime.install("c-blinky", &c_pack(&code, &manifest, "1.0.0", &[("period-ms", "10")])).unwrap();
    eprintln!("c-blinky: {} bytes of code, loaded in {:?} ({:?})", code.len(), outcome.elapsed, outcome.compile);
    assert_eq!(c_log(&dev, "c-blinky", "blinking"), "blinking GPIO 17 every 10 ms");
    assert_eq!(dev.board.gpio.holder(17).as_deref(), Some("c-blinky"));
    let seen: Vec<(u32, Level)> = (0..6).map(|_| rx.recv_timeout(C_SECS).unwrap()).collect();
    assert!(seen.iter().all(|(line, _)| *line == 17), "{seen:?}");
    assert!(seen.windows(2).all(|p| p[0].1 != p[1].1), "alternates: {seen:?}");
    assert_eq!(c_log(&dev, "c-blinky", "GPIO 17 "), "GPIO 17 High (toggle 1)", "claimed low, the first toggle is high");
    assert_eq!(c_log(&dev, "c-blinky", "GPIO 17 "), "GPIO 17 Low (toggle 2)");
    let status = dev.runtime.app_status("c-blinky").unwrap();
    assert_eq!(status.restarts, 0, "{:?}", status.last_error);
    eprintln!(
        "c-blinky: {} KiB of linear memory (limit {} KiB)",
        status.usage.memory_bytes() / 1024,
        manifest.limits.memory_kib
    );
    dev.runtime.remove("c-blinky").unwrap();
    assert_eq!(dev.board.gpio.level(17).unwrap(), Level::Low, "driven low on shutdown");
    assert!(dev.board.gpio.holder(17).is_none());

    // A config value that does not parse refuses the version, in the SDK's words.
    let refusal = |app: &str, bytes: Vec<u8>| {
        let err = dev.runtime.install(app, &bytes).expect_err("a bad period-ms was accepted").to_string();
        err.split_once("refused to start: ").unwrap_or_else(|| panic!("{err}")).1.to_owned()
    };
    let c = refusal("c-blinky", c_pack(&code, &manifest, "1.0.1", &[("period-ms", "fast\t")]));
    assert_eq!(c, r#"config period-ms = "fast\t" is not valid"#);
    let rust = support::with_config(support::manifest("blinky"), &[("period-ms", "fast\t")]);
    assert_eq!(refusal("blinky", support::pack("blinky", &rust)), c, "the Rust blinky's message");
}

/// c-counter keeps its count in the key-value store across a restart of the
/// runtime, and hands its ticks since boot to the next version across a hot
/// swap through `state`.
#[test]
fn c_counter_persists_its_count_and_hands_over_its_ticks() {
    let (code, manifest) = c_app("c-counter");
    c_assert_same_manifest(&manifest, "counter");
    let dev = device(&[], |_| {});
    let values = dev.runtime.subscribe("counter/value");
    let outcome = dev.runtime.install("c-counter", &c_pack(&code, &manifest, "1.0.0", &[("period-ms", "20")])).unwrap();
    eprintln!("c-counter: {} bytes of code, loaded in {:?} ({:?})", code.len(), outcome.elapsed, outcome.compile);
    assert_eq!(c_counting(&c_log(&dev, "c-counter", "counting from")), (0, 0));
    let first = c_values(&values, 5);
    assert_eq!(first, [1, 2, 3, 4, 5]);
    assert_eq!(c_log(&dev, "c-counter", "count "), "count 1");
    let status = dev.runtime.app_status("c-counter").unwrap();
    eprintln!(
        "c-counter: {} KiB of linear memory (limit {} KiB)",
        status.usage.memory_bytes() / 1024,
        manifest.limits.memory_kib
    );

    // A restart of the runtime (a reboot): the count comes back from kv, the ticks start again.
    let support::TestRuntime { dir, runtime, .. } = dev;
    runtime.shutdown();
    let dev = support::boot(dir, |_| {});
    dev.wait_started("c-counter", "1.0.0");
    let (from, ticks) = c_counting(&c_log(&dev, "c-counter", "counting from"));
    assert!(from >= 5 && ticks == 0, "after a restart: counting from {from} ({ticks} ticks since boot)");
    let values = dev.runtime.subscribe("counter/value");
    let before = c_values(&values, 5);
    assert!(before[0] > from, "{before:?} after counting from {from}");

    // A hot swap to 1.1.0: the ticks since boot come across through save/restore.
    let outcome = dev.runtime.install("c-counter", &c_pack(&code, &manifest, "1.1.0", &[("period-ms", "20")])).unwrap();
    assert!(outcome.state_handed_over, "save/restore ran");
    assert_eq!(outcome.replaced.as_deref(), Some("1.0.0"));
    let (_, handed) = c_counting(&c_log(&dev, "c-counter", "counting from"));
    assert!(handed >= 5, "1.1.0 started with {handed} ticks since boot, handed over by 1.0.0");
    let after = c_values(&values, 5);
    let all: Vec<u64> = before.iter().chain(&after).copied().collect();
    assert!(all.windows(2).all(|p| p[1] == p[0] + 1), "the count neither reset nor skipped: {all:?}");
}

/// The C counter is a drop-in for the Rust one: packed under the Rust
/// example's manifest (app `counter`), it replaces the running Rust version in
/// place, takes its ticks through `state` and its count from the same kv key
/// and encoding, and the Rust version takes both back from it.
#[test]
fn c_counter_swaps_in_for_the_rust_counter_and_back() {
    let (code, _) = c_app("c-counter");
    let rust = support::with_config(support::manifest("counter"), &[("period-ms", "20")]);
    let dev = device(&[], |_| {});
    let values = dev.runtime.subscribe("counter/value");
    let outcome = dev.runtime.install("counter", &support::pack("counter", &rust)).unwrap();
    eprintln!("counter (Rust): loaded in {:?} ({:?})", outcome.elapsed, outcome.compile);
    assert_eq!(c_counting(&c_log(&dev, "counter", "counting from")), (0, 0), "Rust's own start");
    let before = c_values(&values, 5);
    let outcome = dev.runtime.install("counter", &c_pack(&code, &rust, "2.0.0", &[])).unwrap();
    assert!(outcome.state_handed_over, "Rust's save, C's restore");
    let (from, ticks) = c_counting(&c_log(&dev, "counter", "counting from"));
    assert!(from >= before[4] && ticks >= 5, "C counting from {from} ({ticks} ticks since boot)");
    // Until C has ticked 5 times itself (Rust's last values may still be queued).
    let mut during = Vec::new();
    while during.last().is_none_or(|v| *v < from + 5) {
        during.extend(c_values(&values, 1));
    }
    let outcome = dev.runtime.install("counter", &support::pack("counter", &rust)).unwrap();
    assert!(outcome.state_handed_over, "C's save, Rust's restore");
    let (_, back) = c_counting(&c_log(&dev, "counter", "counting from"));
    assert!(back >= ticks + 5, "Rust took {back} ticks back (C started from {ticks})");
    let after = c_values(&values, 5);
    let all: Vec<u64> = before.iter().chain(&during).chain(&after).copied().collect();
    assert!(all.windows(2).all(|p| p[1] == p[0] + 1), "one count across both languages: {all:?}");
}
