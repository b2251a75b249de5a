//! The runtime against the real example apps on a simulated board: swaps,
//! refusals, faults, limits, state, signatures, crash loops.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod support;

use std::time::{Duration, Instant};

use support::{device, device_on_fake_clock, example, manifest, pack, with_config};
use trellis_hal::gpio::Level;
use trellis_runtime::{AppState, Fault, HotplugAction, HotplugEvent, RuntimeEvent};

const SECS: Duration = Duration::from_secs(30);

fn recv_ticks(rx: &trellis_runtime::MessageReceiver, n: usize) -> Vec<u64> {
    (0..n).map(|_| String::from_utf8(rx.recv_timeout(SECS).unwrap().payload).unwrap().parse().unwrap()).collect()
}

#[test]
fn swap_under_load_loses_no_tick() {
    const PERIOD_MS: u64 = 20;
    let ticker = pack("publisher", &with_config(manifest("publisher"), &[("period-ms", "20")]));
    let counter = manifest("counter");
    let mut v2 = counter.clone();
    v2.version = "2.0.0".into();
    let variants = [pack("counter", &v2), pack("counter", &counter)];
    let dev = device(&[("publisher", ticker), ("counter", example("counter"))], |_| {});
    dev.wait_started("publisher", "1.0.0");
    dev.wait_started("counter", "1.0.0");
    let ticks = dev.runtime.subscribe("demo/ticks");
    let first: u64 = recv_ticks(&ticks, 1)[0];
    let t0 = Instant::now();

    for i in 0..100 {
        let (bytes, version) = if i % 2 == 0 { (&variants[0], "2.0.0") } else { (&variants[1], "1.0.0") };
        dev.install("counter", bytes);
        dev.wait_started("counter", version);
    }

    // Every tick of the periodic app arrived, in order, none missing...
    let elapsed = t0.elapsed();
    let mut seqs = vec![first];
    seqs.extend(ticks.try_iter().map(|m| String::from_utf8(m.payload).unwrap().parse::<u64>().unwrap()));
    for pair in seqs.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "tick lost or reordered: {pair:?}");
    }
    // ...and it kept its pace: at most one period behind the clock.
    let expected = elapsed.as_millis() as u64 / PERIOD_MS;
    let got = seqs.len() as u64 - 1;
    assert!(got + 1 >= expected, "{got} ticks in {elapsed:?}, expected {expected}");
    assert_eq!(dev.running_version("publisher").as_deref(), Some("1.0.0"));
    assert_eq!(dev.running_version("counter").as_deref(), Some("1.0.0"));
    assert_eq!(dev.runtime.app_status("publisher").unwrap().restarts, 0);
}

#[test]
fn broken_files_are_refused_and_the_old_version_keeps_running() {
    let good = example("counter");
    let dev = device(&[("counter", good.clone())], |_| {});
    dev.wait_started("counter", "1.0.0");
    let values = dev.runtime.subscribe("counter/value");

    let truncated = &good[..good.len() / 2];
    let random: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let core_module = wat::parse_str("(module (func (export \"start\")))").unwrap();
    let no_exports = trellis_appfmt::pack(&wat::parse_str("(component)").unwrap(), &manifest("counter")).unwrap();
    let cases: [(&str, &[u8], &str); 5] = [
        ("truncated", truncated, "truncated"),
        ("random", &random, "not a WebAssembly file"),
        ("core module", &core_module, "not a component"),
        ("component without the app exports", &no_exports, "cannot instantiate"),
        ("empty", &[], "not a WebAssembly file"),
    ];
    for (what, bytes, expect) in cases {
        dev.install("counter", bytes);
        let reason = dev.wait_refused("counter");
        assert!(reason.contains(expect), "{what}: {reason}");
        assert!(reason.contains("counter.wasm"), "{what}: the error names the file: {reason}");
        assert_eq!(dev.running_version("counter").as_deref(), Some("1.0.0"), "{what}");
        // still counting
        let _ = values.try_iter().count();
        values.recv_timeout(SECS).unwrap_or_else(|_| panic!("counter stopped after {what}"));
    }
}

#[test]
fn a_manifest_asking_for_hardware_not_granted_is_refused() {
    let dev = device(&[], |c| c.hardware.gpio_lines = Some(vec![17, 22]));
    let faulty = manifest("faulty");

    // Not available to apps on this device.
    let mut m = with_config(faulty.clone(), &[("mode", "claim"), ("line", "5")]);
    m.permissions.gpio_outputs = vec![5];
    dev.install("faulty", &pack("faulty", &m));
    let reason = dev.wait_refused("faulty");
    assert!(reason.contains("GPIO line 5 is not available"), "{reason}");

    // Not on the chip at all.
    m.permissions.gpio_outputs = vec![99];
    dev.install("faulty", &pack("faulty", &m));
    let reason = dev.wait_refused("faulty");
    assert!(reason.contains("GPIO line 99 does not exist"), "{reason}");

    // Granted 17, but claims 5 at run time: the call is denied, the app sees
    // the error (and here refuses to start), nothing happens on the line.
    m.permissions.gpio_outputs = vec![17];
    dev.install("faulty", &pack("faulty", &m));
    let denied = dev.wait_for("denial", SECS, |e| matches!(e, RuntimeEvent::Denied { app, .. } if app == "faulty"));
    let RuntimeEvent::Denied { reason, .. } = denied else { unreachable!() };
    assert!(reason.contains("GPIO line 5 as output is not granted"), "{reason}");
    let refused = dev.wait_refused("faulty");
    assert!(refused.contains("GPIO line 5"), "the app's start error names the line: {refused}");
    assert_eq!(dev.board.gpio.level(5).unwrap(), Level::Low);
    assert!(dev.board.gpio.holder(5).is_none());
    assert!(dev.running_version("faulty").is_none());
}

#[test]
fn two_apps_cannot_both_be_granted_one_output() {
    let dev = device(&[("blinky", example("blinky"))], |_| {});
    dev.wait_started("blinky", "1.0.0");
    let mut m = with_config(manifest("faulty"), &[("mode", "claim"), ("line", "17")]);
    m.permissions.gpio_outputs = vec![17];
    dev.install("faulty", &pack("faulty", &m));
    let reason = dev.wait_refused("faulty");
    assert!(reason.contains("GPIO line 17 is already granted as an output to app blinky"), "{reason}");
}

fn assert_fault_is_contained(mode: &str, expect: impl Fn(&Fault) -> bool) {
    let ticker = pack("publisher", &with_config(manifest("publisher"), &[("period-ms", "20")]));
    let bad = pack("faulty", &with_config(manifest("faulty"), &[("mode", mode)]));
    let dev = device(&[("publisher", ticker)], |_| {});
    dev.wait_started("publisher", "1.0.0");
    let ticks = dev.runtime.subscribe("demo/ticks");
    dev.install("faulty", &bad);
    let crash = dev.wait_for("a fault", SECS, |e| matches!(e, RuntimeEvent::Crashed { app, .. } if app == "faulty"));
    let RuntimeEvent::Crashed { fault, .. } = crash else { unreachable!() };
    assert!(expect(&fault), "unexpected fault: {fault}");
    // The other app never noticed: it keeps ticking, in sequence, never restarted.
    let seqs = recv_ticks(&ticks, 10);
    assert!(seqs.windows(2).all(|p| p[1] == p[0] + 1), "{seqs:?}");
    assert_eq!(dev.runtime.app_status("publisher").unwrap().restarts, 0);
    assert_eq!(dev.running_version("publisher").as_deref(), Some("1.0.0"));
}

#[test]
fn the_perfmap_profiler_names_the_apps_compiled_functions_for_perf() {
    // wasmtime's perf map is the process's: /tmp/perf-PID.map (no other test here asks for it).
    let map = std::path::PathBuf::from(format!("/tmp/perf-{}.map", std::process::id()));
    // wasmtime appends: a map left by an earlier process of the same id must not count.
    let _ = std::fs::remove_file(&map);
    let dev = device(&[("counter", example("counter"))], |c| c.profiler = trellis_runtime::Profiler::Perfmap);
    dev.wait_started("counter", "1.0.0");
    let text = std::fs::read_to_string(&map).unwrap_or_else(|e| panic!("{}: {e}", map.display()));
    let _ = std::fs::remove_file(&map);
    // One line a function: start address and size (hex), and its name.
    let functions = text
        .lines()
        .filter(|l| {
            let mut fields = l.splitn(3, ' ');
            let hex = |f: Option<&str>| {
                f.is_some_and(|f| u64::from_str_radix(f.trim_start_matches("0x"), 16).is_ok_and(|n| n > 0))
            };
            hex(fields.next()) && hex(fields.next()) && fields.next().is_some_and(|name| !name.is_empty())
        })
        .count();
    assert!(functions > 10, "the app's functions are not in {}:\n{text}", map.display());
}

/// `jitdump` writes `jit-PID.dump` into the working directory, which a test
/// can set only in a process of its own: this test runs itself again, once
/// in a directory that exists and once in one that is gone.
#[test]
fn the_jitdump_profiler_writes_beside_the_runtime_and_one_that_cannot_write_stops_no_app() {
    const CHILD: &str = "TRELLIS_TEST_JITDUMP_IN";
    if let Ok(mode) = std::env::var(CHILD) {
        // Not /tmp: jitdump maps its file executable, which a `noexec` /tmp refuses.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let cwd = dir.path().join("cwd");
        std::fs::create_dir(&cwd).unwrap();
        std::env::set_current_dir(&cwd).unwrap();
        if mode == "gone" {
            std::fs::remove_dir(&cwd).unwrap();
        }
        let dev = device(&[("counter", example("counter"))], |c| c.profiler = trellis_runtime::Profiler::Jitdump);
        dev.wait_started("counter", "1.0.0");
        let dump = cwd.join(format!("jit-{}.dump", std::process::id()));
        if mode == "here" {
            // A code-load record per compiled function, each with its name.
            let bytes = std::fs::read(&dump).unwrap_or_else(|e| panic!("{}: {e}", dump.display()));
            let name = b"wasm[0]::function[";
            let records = bytes.windows(name.len()).filter(|w| w == name).count();
            assert!(records > 10, "{}: {records} functions recorded", dump.display());
        }
        return;
    }
    let name = "the_jitdump_profiler_writes_beside_the_runtime_and_one_that_cannot_write_stops_no_app";
    for mode in ["here", "gone"] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads=1"])
            .env(CHILD, mode)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "working directory {mode}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn an_infinite_loop_is_cut_by_the_deadline() {
    assert_fault_is_contained("spin", |f| *f == Fault::Deadline { ms: 100 });
}

#[test]
fn a_memory_bomb_hits_its_limit_alone() {
    assert_fault_is_contained("grow", |f| matches!(f, Fault::MemoryLimit { limit, .. } if *limit == 4096 * 1024));
}

/// On the default crash policy (restart after 100 ms, doubling; 3 crashes in
/// a minute are a loop), counted on a fake clock: no real time passes.
#[test]
fn a_panic_is_a_trap_restarted_with_backoff_then_given_up() {
    let t0 = Instant::now();
    let bad = pack("faulty", &with_config(manifest("faulty"), &[("mode", "trap")]));
    let (dev, clock) = device_on_fake_clock(&[("faulty", bad)]);
    let policy = trellis_runtime::CrashPolicy::default();
    for n in 1..policy.max_crashes {
        dev.wait_for("a trap", SECS, |e| matches!(e, RuntimeEvent::Crashed { fault: Fault::Trap(_), .. }));
        let status = dev.runtime.app_status("faulty").unwrap();
        assert_eq!((status.state, status.restarts), (AppState::Restarting, n - 1), "waits out its back-off");
        // Just before the back-off ends nothing happens; at its end, the restart.
        clock.advance(policy.backoff(n) - Duration::from_millis(1));
        dev.runtime.tick();
        assert_eq!(dev.runtime.app_status("faulty").unwrap().restarts, n - 1, "restarted before its back-off");
        clock.advance(Duration::from_millis(1));
        dev.runtime.tick();
    }
    dev.wait_for("a trap", SECS, |e| matches!(e, RuntimeEvent::Crashed { fault: Fault::Trap(_), .. }));
    // No last good version to go back to: the app is stopped, not restarted forever.
    let stopped = dev.wait_for("given up", SECS, |e| matches!(e, RuntimeEvent::Stopped { .. }));
    let RuntimeEvent::Stopped { reason, .. } = stopped else { unreachable!() };
    assert!(reason.contains("crash loop"), "{reason}");
    assert!(matches!(dev.runtime.app_status("faulty").unwrap().state, AppState::Failed(_)));
    assert!(t0.elapsed() < Duration::from_secs(20), "no waiting in real time: {:?}", t0.elapsed());
}

/// A version becomes the last good one after running 10 s (the default) on the
/// fake clock; a crash-looping successor falls back to it.
#[test]
fn a_crash_loop_falls_back_to_the_last_good_version() {
    let (dev, clock) = device_on_fake_clock(&[("counter", example("counter"))]);
    dev.wait_started("counter", "1.0.0");
    let last_good = dev.state().join("last-good/counter.wasm");
    let policy = trellis_runtime::CrashPolicy::default();
    clock.advance(Duration::from_millis(policy.good_after_ms - 1));
    dev.runtime.tick();
    assert!(!last_good.exists(), "good before its time");
    clock.advance(Duration::from_millis(1));
    dev.runtime.tick();
    assert!(last_good.exists(), "version 1.0.0 did not become the last good one after 10 s");
    // A new "counter" that starts fine, then traps on every run.
    let mut m = with_config(manifest("faulty"), &[("mode", "trap")]);
    m.name = "counter".into();
    m.version = "2.0.0".into();
    dev.install("counter", &pack("faulty", &m));
    dev.wait_started("counter", "2.0.0");
    for n in 1..policy.max_crashes {
        dev.wait_for("a trap", SECS, |e| matches!(e, RuntimeEvent::Crashed { app, .. } if app == "counter"));
        clock.advance(policy.backoff(n));
        dev.runtime.tick();
    }
    let fell_back = dev.wait_for("fallback", SECS, |e| matches!(e, RuntimeEvent::FellBack { .. }));
    assert_eq!(fell_back, RuntimeEvent::FellBack { app: "counter".into(), version: "1.0.0".into() });
    let values = dev.runtime.subscribe("counter/value");
    values.recv_timeout(SECS).expect("1.0.0 counts again");
    assert_eq!(dev.running_version("counter").as_deref(), Some("1.0.0"));
}

#[test]
fn a_counter_survives_a_swap() {
    let fast = with_config(manifest("counter"), &[("period-ms", "20")]);
    let dev = device(&[("counter", pack("counter", &fast))], |_| {});
    dev.wait_started("counter", "1.0.0");
    let values = dev.runtime.subscribe("counter/value");
    let before = recv_ticks(&values, 5);
    let mut v2 = fast.clone();
    v2.version = "1.1.0".into();
    let outcome = dev.runtime.install("counter", &pack("counter", &v2));
    let outcome = outcome.unwrap();
    assert!(outcome.state_handed_over, "save/restore ran");
    assert_eq!(outcome.replaced.as_deref(), Some("1.0.0"));
    let after = recv_ticks(&values, 20);
    let all: Vec<u64> = before.into_iter().chain(after).collect();
    assert!(all.windows(2).all(|p| p[1] == p[0] + 1), "the count neither reset nor skipped: {all:?}");
    // The in-memory state came across too (ticks since boot, handed over).
    let log = dev.wait_for("v1.1.0's start log", SECS, |e| {
        matches!(e, RuntimeEvent::Log { app, message, .. } if app == "counter" && message.starts_with("counting from") && !message.contains("(0 ticks"))
    });
    assert!(matches!(log, RuntimeEvent::Log { .. }));
}

/// An app built against 0.1.0 runs on this 0.1.2 runtime (wasmtime's linker
/// resolves its `@0.1.0` imports to the `@0.1.2` definitions) and hands its
/// state over through its `state@0.1.0` export.
#[test]
fn an_app_built_against_an_older_patch_runs_and_hands_over_its_state() {
    let fast = with_config(manifest("counter"), &[("period-ms", "20")]);
    let old = trellis_appfmt::pack(
        &trellis_appfmt::retarget_interface(&support::component("counter"), "0.1.2", "0.1.0")
            .expect("the component names its interface version"),
        &fast,
    )
    .unwrap();
    let dev = device(&[("counter", old)], |_| {});
    dev.wait_started("counter", "1.0.0");
    let values = dev.runtime.subscribe("counter/value");
    let before = recv_ticks(&values, 3);
    let mut v2 = fast.clone();
    v2.version = "1.1.0".into();
    let outcome = dev.runtime.install("counter", &pack("counter", &v2)).unwrap();
    assert!(outcome.state_handed_over, "the 0.1.0 build's save ran");
    let after = recv_ticks(&values, 3);
    assert_eq!(after[0], before[2] + 1, "the count went on: {before:?} then {after:?}");
}

#[test]
fn the_key_value_store_survives_a_reboot() {
    let fast = with_config(manifest("counter"), &[("period-ms", "10")]);
    let dev = device(&[("counter", pack("counter", &fast))], |_| {});
    let values = dev.runtime.subscribe("counter/value");
    let last = *recv_ticks(&values, 5).last().unwrap();
    let support::TestRuntime { dir, runtime, .. } = dev;
    runtime.shutdown();
    let dev = support::boot(dir, |_| {});
    let values = dev.runtime.subscribe("counter/value");
    let next = recv_ticks(&values, 1)[0];
    assert!(next > last, "count went from {last} to {next} across a reboot");
}

#[test]
fn signatures_when_required() {
    let keys = tempfile::tempdir().unwrap();
    let trusted = trellis_appfmt::generate_key();
    let stranger = trellis_appfmt::generate_key();
    trellis_appfmt::write_key_pair(&trusted, keys.path(), "ops").unwrap();
    let app = example("counter");
    let trust = keys.path().to_owned();
    let dev = device(&[("counter", app.clone())], |c| {
        c.require_signatures = true;
        c.trust = vec![trust];
    });
    let reason = dev.wait_refused("counter");
    assert!(reason.contains("not signed"), "{reason}");

    dev.install("counter", &trellis_appfmt::sign(&app, &stranger).unwrap());
    let reason = dev.wait_refused("counter");
    assert!(reason.contains("not in the trust list"), "{reason}");

    let mut tampered = trellis_appfmt::sign(&app, &trusted).unwrap();
    let at = tampered.windows(5).position(|w| w == b"1.0.0").unwrap();
    tampered[at] = b'7';
    dev.install("counter", &tampered);
    let reason = dev.wait_refused("counter");
    assert!(reason.contains("does not match"), "{reason}");

    dev.install("counter", &trellis_appfmt::sign(&app, &trusted).unwrap());
    dev.wait_started("counter", "1.0.0");
}

/// Code compiled ahead of time (`trellis app precompile`) runs unchecked, so
/// the runtime loads it only from a file signed by a key in its trust list,
/// compiled from that very code; any other file's code is compiled from the
/// Wasm, and the app runs either way. Each case on a device of its own, as a
/// compiled component is kept in memory and on disk once loaded.
#[test]
fn precompiled_code_is_loaded_only_from_a_trusted_signer_for_its_own_code() {
    use trellis_runtime::CompileSource;
    let keys = tempfile::tempdir().unwrap();
    let (trusted, stranger) = (trellis_appfmt::generate_key(), trellis_appfmt::generate_key());
    trellis_appfmt::write_key_pair(&trusted, keys.path(), "ops").unwrap();
    let host = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let (counter, blinky) = (example("counter"), example("blinky"));
    let native = trellis_runtime::precompile(&counter, &host).unwrap();
    let sign = |bytes: &[u8], key| trellis_appfmt::sign(bytes, key).unwrap();
    let load = |bytes: &[u8]| {
        let dev = device(&[], |c| c.trust = vec![keys.path().to_owned()]);
        let compile = dev.runtime.install("counter", bytes).unwrap().compile;
        let values = dev.runtime.subscribe("counter/value");
        assert!(!recv_ticks(&values, 2).is_empty(), "counter does not count ({compile:?})");
        compile
    };

    assert_eq!(load(&sign(&native, &trusted)), CompileSource::Native);
    assert_eq!(load(&native), CompileSource::Compiled, "unsigned");
    assert_eq!(load(&sign(&native, &stranger)), CompileSource::Compiled, "signed by a stranger");

    // blinky's precompiled code put into counter's file, signed by the trusted key.
    let blinky_native = trellis_runtime::precompile(&blinky, &host).unwrap();
    let mut mixed = counter.clone();
    mixed.extend_from_slice(&blinky_native[blinky.len()..]);
    let mixed = sign(&mixed, &trusted);
    let file = trellis_appfmt::AppFile::parse(&mixed).unwrap();
    assert_ne!(file.native.unwrap().code_sha256, file.code_sha256);
    assert_eq!(load(&mixed), CompileSource::Compiled, "another app's precompiled code");

    // Compiled for another target: wasmtime refuses it, the code is compiled.
    if cfg!(feature = "cross-compile") && std::env::consts::ARCH == "x86_64" {
        let pi = trellis_runtime::precompile(&counter, "aarch64-unknown-linux-gnu").unwrap();
        assert_eq!(load(&sign(&pi, &trusted)), CompileSource::Compiled, "precompiled for a Pi");
    }
    let err = trellis_runtime::precompile(&counter, "no-such-target").unwrap_err().to_string();
    assert!(err.contains("no-such-target"), "{err}");
}

#[test]
fn an_app_built_for_another_interface_version_is_refused() {
    let dev = device(&[], |_| {});
    let future = wat::parse_str(
        r#"(component
            (import "trellis:app/log@0.2.0" (instance))
        )"#,
    )
    .unwrap();
    dev.install("counter", &trellis_appfmt::pack(&future, &manifest("counter")).unwrap());
    let reason = dev.wait_refused("counter");
    assert!(
        reason.contains("built for trellis:app/log@0.2.0, but this runtime provides trellis:app@0.1.2"),
        "{reason}"
    );
    // What a running app was built for is in its status: the fleet agent checks a new firmware against it.
    dev.install("counter", &example("counter"));
    dev.wait_started("counter", "1.0.0");
    assert_eq!(
        dev.runtime.app_status("counter").unwrap().interface.as_deref(),
        Some(trellis_runtime::INTERFACE_VERSION)
    );
}

#[test]
fn a_file_named_differently_from_its_manifest_is_refused() {
    let dev = device(&[], |_| {});
    dev.install("other", &example("counter"));
    let reason = dev.wait_refused("other");
    assert!(reason.contains("names the app \"counter\""), "{reason}");
    // Not an app name at all: ignored by the watcher, refused when asked for.
    let odd = dev.apps().join("Odd Name.wasm");
    std::fs::write(&odd, example("counter")).unwrap();
    let err = dev.runtime.load(&odd).unwrap_err().to_string();
    assert!(err.contains("an app file is named NAME.wasm"), "{err}");
}

#[test]
fn removing_the_file_stops_the_app_and_frees_its_lines() {
    let dev = device(&[("blinky", example("blinky"))], |_| {});
    dev.wait_started("blinky", "1.0.0");
    assert_eq!(dev.board.gpio.holder(17).as_deref(), Some("blinky"));
    std::fs::remove_file(dev.apps().join("blinky.wasm")).unwrap();
    dev.wait_for("stop", SECS, |e| matches!(e, RuntimeEvent::Stopped { app, .. } if app == "blinky"));
    assert!(dev.board.gpio.holder(17).is_none());
    assert!(dev.runtime.app_status("blinky").is_none());
}

#[test]
fn a_broken_file_at_boot_runs_the_last_good_copy() {
    let (dev, clock) = device_on_fake_clock(&[("counter", example("counter"))]);
    dev.wait_started("counter", "1.0.0");
    // Good after the default 10 s, on the fake clock.
    clock.advance(Duration::from_millis(trellis_runtime::CrashPolicy::default().good_after_ms));
    dev.runtime.tick();
    assert!(dev.state().join("last-good/counter.wasm").exists(), "1.0.0 is the last good version");
    let support::TestRuntime { dir, runtime, .. } = dev;
    runtime.shutdown();
    // Power cut in the middle of copying a new version over the file.
    let path = dir.path().join("apps/counter.wasm");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    let dev = support::boot(dir, |_| {});
    dev.wait_for("fallback", SECS, |e| matches!(e, RuntimeEvent::FellBack { app, .. } if app == "counter"));
    assert_eq!(dev.running_version("counter").as_deref(), Some("1.0.0"));
}

#[test]
fn blinky_toggles_its_line() {
    let fast = with_config(manifest("blinky"), &[("period-ms", "10")]);
    let dev = device(&[("blinky", pack("blinky", &fast))], |_| {});
    let (tx, rx) = crossbeam_channel::unbounded();
    dev.board.gpio.on_output_change(move |line, level| {
        let _ = tx.send((line, level));
    });
    dev.wait_started("blinky", "1.0.0");
    let seen: Vec<(u32, Level)> = (0..4).map(|_| rx.recv_timeout(SECS).unwrap()).collect();
    assert!(seen.iter().all(|(line, _)| *line == 17));
    assert!(seen.windows(2).all(|p| p[0].1 != p[1].1), "alternates: {seen:?}");
}

/// The button's manifest wires GPIO 27 as a button to ground (pull-up,
/// active-low): released reads low to the app although the wire is high, and
/// pulling the wire low is a "pressed" (logical rising) edge.
#[test]
fn a_button_edge_reaches_its_handler_through_the_wiring_in_the_manifest() {
    let dev = device(&[("button", example("button"))], |_| {});
    dev.wait_started("button", "1.0.0");
    let presses = dev.runtime.subscribe("buttons/27");
    assert_eq!(dev.board.gpio.level(27).unwrap(), Level::High, "the pull-up holds a released button high");
    dev.wait_for(
        "released at start",
        SECS,
        |e| matches!(e, RuntimeEvent::Log { app, message, .. } if app == "button" && message.ends_with(": released")),
    );
    dev.board.gpio.drive(27, Level::Low).unwrap();
    assert_eq!(presses.recv_timeout(SECS).unwrap().payload, b"pressed");
    dev.board.gpio.drive(27, Level::High).unwrap();
    assert_eq!(presses.recv_timeout(SECS).unwrap().payload, b"released");
    dev.wait_for("the press logged", SECS, |e| {
        matches!(e, RuntimeEvent::Log { app, message, .. }
            if app == "button" && message.starts_with("button on GPIO 27 pressed (press 1, kernel time "))
    });
}

/// An I2C adapter unplugged under a running app: the app that follows `i2c`
/// is told, and the next transfer on the bus fails naming it instead of using
/// a stale handle; the thermostat returns the error and runs on.
#[test]
fn a_bus_that_goes_away_fails_the_next_call_cleanly() {
    let fast = with_config(manifest("thermostat"), &[("period-ms", "20")]);
    let mut watcher = with_config(manifest("subscriber"), &[("hotplug", "i2c")]);
    watcher.permissions.hotplug = vec!["i2c".into()];
    let dev =
        device(&[("thermostat", pack("thermostat", &fast)), ("subscriber", pack("subscriber", &watcher))], |_| {});
    dev.wait_started("thermostat", "1.0.0");
    dev.wait_started("subscriber", "1.0.0");
    let readings = dev.runtime.subscribe("sensors/temperature");
    readings.recv_timeout(SECS).unwrap();
    assert!(dev.board.i2c.remove_bus(1));
    dev.runtime.hotplug(&HotplugEvent {
        action: HotplugAction::Remove,
        subsystem: "i2c".into(),
        device: "i2c-1".into(),
    });
    dev.wait_for("the watcher told", SECS, |e| {
        matches!(e, RuntimeEvent::Log { app, message, .. } if app == "subscriber" && message == "i2c device i2c-1 removed")
    });
    // The thermostat's handler gets the error and returns it: logged, not a crash.
    dev.wait_for("the thermostat's failed read", SECS, |e| {
        matches!(e, RuntimeEvent::Log { app, level: "warn", message }
            if app == "thermostat" && message.contains("I2C bus 1 does not exist"))
    });
    assert_eq!(dev.running_version("thermostat").as_deref(), Some("1.0.0"), "a failed call is not a crash");
    assert_eq!(dev.running_version("subscriber").as_deref(), Some("1.0.0"), "the other app runs on");
}

/// Hardware PWM: the fader runs channel 0; a new version takes the channel
/// over without it stopping in between; removing the app stops it; another
/// app is refused the channel, and a channel not granted is denied.
#[test]
fn pwm_channels_are_granted_kept_across_a_swap_and_stopped_with_the_app() {
    let fast = with_config(manifest("fader"), &[("step-ms", "5")]);
    let dev = device(&[("fader", pack("fader", &fast))], |_| {});
    dev.wait_started("fader", "1.0.0");
    let duty = || dev.board.pwm.state(0).map(|s| (s.enabled, s.period_ns, s.duty_ns));
    let t0 = Instant::now();
    let first = duty();
    while duty() == first {
        assert!(t0.elapsed() < SECS, "the duty never changed: {first:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(duty().map(|d| (d.0, d.1)), Some((true, 1_000_000)), "1 kHz, running");

    // A swap: sampled all along, the channel never stops.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (pwm, s) = (dev.board.pwm.clone(), stop.clone());
    let watcher = std::thread::spawn(move || {
        let mut stopped = 0;
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            if pwm.state(0).is_none_or(|st| !st.enabled) {
                stopped += 1;
            }
            std::thread::yield_now();
        }
        stopped
    });
    let mut v2 = fast.clone();
    v2.version = "1.1.0".into();
    dev.runtime.install("fader", &pack("fader", &v2)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(watcher.join().unwrap(), 0, "the channel stopped during the swap");

    // Another app asking for channel 0 is refused; one not granted a channel is denied.
    let mut rival = with_config(manifest("fader"), &[]);
    rival.name = "rival".into();
    dev.install("rival", &pack("fader", &rival));
    let reason = dev.wait_refused("rival");
    assert!(reason.contains("PWM channel 0 is already granted to app fader"), "{reason}");
    let mut sneaky = with_config(manifest("fader"), &[("channel", "1")]);
    sneaky.name = "sneaky".into();
    sneaky.permissions.pwm = vec![];
    dev.install("sneaky", &pack("fader", &sneaky));
    let reason = dev.wait_refused("sneaky");
    assert!(reason.contains("PWM channel 1 is not granted"), "{reason}");
    assert!(dev.board.pwm.state(1).is_none(), "channel 1 was never touched");

    std::fs::remove_file(dev.apps().join("fader.wasm")).unwrap();
    let t0 = Instant::now();
    while dev.board.pwm.state(0).is_some_and(|s| s.enabled) {
        assert!(t0.elapsed() < SECS, "the channel kept running after the app was removed");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_thermostat_follows_the_sensor() {
    let fast = with_config(manifest("thermostat"), &[("period-ms", "10")]);
    let dev = device(&[("thermostat", pack("thermostat", &fast))], |_| {});
    dev.wait_started("thermostat", "1.0.0");
    let readings = dev.runtime.subscribe("sensors/temperature");
    let wait_heater = |level: Level| {
        let t0 = Instant::now();
        while dev.board.gpio.level(22).unwrap() != level {
            assert!(t0.elapsed() < SECS, "heater never went {level:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    dev.board.temperature.set(18.0);
    wait_heater(Level::High);
    dev.board.temperature.set(25.0);
    wait_heater(Level::Low);
    let reading = loop {
        let m = readings.recv_timeout(SECS).unwrap();
        if m.payload == b"25.00" {
            break m;
        }
    };
    assert_eq!(reading.from, "thermostat");
}

#[test]
fn publishing_outside_the_grant_is_denied() {
    let m = with_config(manifest("publisher"), &[("topic", "secret/x"), ("period-ms", "10")]);
    let dev = device(&[("publisher", pack("publisher", &m))], |_| {});
    let denied = dev.wait_for("denial", SECS, |e| matches!(e, RuntimeEvent::Denied { .. }));
    let RuntimeEvent::Denied { app, reason } = denied else { unreachable!() };
    assert_eq!(app, "publisher");
    assert!(reason.contains("\"secret/x\" is not granted"), "{reason}");
}

#[test]
fn messages_flow_from_publisher_to_subscriber() {
    let p = with_config(manifest("publisher"), &[("period-ms", "10")]);
    let dev = device(&[("publisher", pack("publisher", &p)), ("subscriber", example("subscriber"))], |_| {});
    dev.wait_for("a delivery", SECS, |e| {
        matches!(e, RuntimeEvent::Log { app, message, .. } if app == "subscriber" && message.starts_with("demo/ticks: "))
    });
}

#[test]
fn hotplug_events_reach_subscribed_apps_only() {
    let dev = device(&[("subscriber", example("subscriber"))], |_| {});
    dev.wait_started("subscriber", "1.0.0");
    let plug = |subsystem: &str, device: &str| {
        dev.runtime.hotplug(&HotplugEvent {
            action: HotplugAction::Add,
            subsystem: subsystem.into(),
            device: device.into(),
        });
    };
    plug("tty", "ttyS9"); // granted, but not subscribed: nothing
    plug("usb", "1-1.2");
    // The first hot-plug line the app logs is the USB one: the tty event never reached it.
    let got = dev.wait_for(
        "hot-plug log",
        SECS,
        |e| matches!(e, RuntimeEvent::Log { app, message, .. } if app == "subscriber" && message.contains(" device ")),
    );
    assert_eq!(
        got,
        RuntimeEvent::Log { app: "subscriber".into(), level: "info", message: "usb device 1-1.2 added".into() }
    );

    // Asking for a subsystem the manifest does not grant is denied.
    let m = with_config(manifest("subscriber"), &[("hotplug", "gpio")]);
    dev.install("subscriber", &pack("subscriber", &m));
    let reason = dev.wait_refused("subscriber");
    assert!(reason.contains("hot-plug events of \"gpio\" are not granted"), "{reason}");
    assert_eq!(dev.running_version("subscriber").as_deref(), Some("1.0.0"));
}

/// A TMP102 that takes 80 ms per transfer (a slow bus, clock stretching).
struct SlowSensor(trellis_hal::sim::Tmp102);

impl trellis_hal::sim::SimI2cDevice for SlowSensor {
    fn write(&mut self, data: &[u8]) {
        std::thread::sleep(Duration::from_millis(80));
        self.0.write(data);
    }
    fn read(&mut self, buf: &mut [u8]) {
        self.0.read(buf);
    }
}

#[test]
fn time_blocked_in_the_host_does_not_count_against_the_deadline() {
    // call-ms is 50; every reading blocks 80 ms in the host's I2C transfer.
    let fast = with_config(manifest("thermostat"), &[("period-ms", "10")]);
    assert_eq!(fast.limits.call_ms, 50);
    let dev = device(&[("thermostat", pack("thermostat", &fast))], |_| {});
    dev.wait_started("thermostat", "1.0.0");
    let slow = SlowSensor(trellis_hal::sim::Tmp102::new(dev.board.temperature.clone()));
    dev.board.i2c.add_device(trellis_hal::sim::SENSOR_BUS, trellis_hal::sim::SENSOR_ADDRESS, slow);
    let readings = dev.runtime.subscribe("sensors/temperature");
    for _ in 0..5 {
        readings.recv_timeout(SECS).expect("the thermostat keeps reading");
    }
    let status = dev.runtime.app_status("thermostat").unwrap();
    assert_eq!(status.restarts, 0, "{:?}", status.last_error);
    assert!(status.last_error.is_none(), "{:?}", status.last_error);
}

#[test]
fn the_image_seeds_a_new_apps_directory_once() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::write(seed.join("counter.wasm"), example("counter")).unwrap();
    std::fs::write(seed.join("README"), "not an app").unwrap();
    // First boot: no apps directory yet.
    let dev = support::boot(dir, |c| c.seed_dir = Some(seed.clone()));
    dev.wait_started("counter", "1.0.0");
    assert!(dev.apps().join("counter.wasm").exists());
    assert!(!dev.apps().join("README").exists());
    // The user removes the app; the next boot does not bring it back.
    std::fs::remove_file(dev.apps().join("counter.wasm")).unwrap();
    let support::TestRuntime { dir, runtime, .. } = dev;
    runtime.shutdown();
    let dev = support::boot(dir, |c| c.seed_dir = Some(seed.clone()));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(dev.running_version("counter"), None);
    assert!(!dev.apps().join("counter.wasm").exists());
    // A missing seed directory does not stop the runtime from starting.
    let support::TestRuntime { dir, runtime, .. } = dev;
    runtime.shutdown();
    std::fs::remove_dir_all(dir.path().join("apps")).unwrap();
    let dev = support::boot(dir, |c| c.seed_dir = Some(seed.join("missing")));
    assert!(dev.apps().is_dir(), "an empty apps directory to copy apps into");
}

/// An app that logs 20,000 lines a call gets its burst, then the rate; the
/// device log says how many lines were dropped; no line carries a raw
/// control character (a forged log line or a terminal escape).
#[test]
fn a_flooding_app_is_rate_limited_and_cannot_forge_log_lines() {
    let mut m = with_config(manifest("faulty"), &[("mode", "flood"), ("lines", "20000"), ("after-ms", "300")]);
    m.limits.call_ms = 5_000;
    let t0 = Instant::now();
    let dev = device(&[("faulty", pack("faulty", &m))], |c| {
        c.app_log = trellis_runtime::LogPolicy { burst: 50, per_second: 20, max_line_bytes: 256 };
    });
    let (mut lines, mut notes) = (0u64, Vec::new());
    while t0.elapsed() < Duration::from_secs(4) {
        let Ok(e) = dev.events.recv_timeout(Duration::from_millis(100)) else { continue };
        let RuntimeEvent::Log { app, message, level } = e else { continue };
        if app != "faulty" {
            continue;
        }
        lines += 1;
        assert!(!message.chars().any(char::is_control), "a raw control character: {message:?}");
        if message.starts_with("flood") {
            assert!(message.contains("\\n\\u{1b}[2J"), "escaped: {message:?}");
        }
        if message.contains("lines dropped") {
            assert_eq!(level, "warn");
            notes.push(message);
        }
    }
    let allowed = 50 + (20.0 * t0.elapsed().as_secs_f64()).ceil() as u64;
    assert!(lines <= allowed, "{lines} lines got through, {allowed} allowed");
    assert!(lines >= 50, "the burst got through: {lines}");
    let first = notes.first().expect("a line saying how many were dropped");
    // A note comes with the next line let through, so a flood slowed down
    // by a loaded machine may be reported in several notes: they add up.
    let dropped: u64 = notes.iter().map(|n| n.split(' ').next().unwrap().parse::<u64>().unwrap()).sum();
    assert!(dropped >= 20_000 - allowed, "{dropped} dropped in all: {notes:?}");
    assert!(first.contains("more than 50 at once or 20 per second"), "{first}");
    assert_eq!(dev.running_version("faulty").as_deref(), Some("1.0.0"), "the app itself keeps running");
}

/// Bit rot or a damaged transfer: a single flipped bit anywhere in the code
/// of a packed example app never runs. Each damaged file is refused (most
/// naming both digests), and the working version keeps running.
#[test]
fn a_flipped_bit_in_an_apps_code_never_runs() {
    let good = example("counter");
    let dev = device(&[("counter", good.clone())], |_| {});
    dev.wait_started("counter", "1.0.0");
    let code_len = trellis_appfmt::component_code(&good).unwrap().len();
    let mut named_digests = 0;
    for i in 1..=24 {
        let mut damaged = good.clone();
        let at = 8 + (code_len - 8) * i / 25;
        damaged[at] ^= 1 << (i % 8);
        let err = dev.runtime.install("counter", &damaged).expect_err("a damaged app was loaded");
        let reason = err.to_string();
        if reason.contains("does not match its manifest") {
            assert!(reason.matches("sha256:").count() == 2, "{reason}");
            named_digests += 1;
        }
        assert_eq!(dev.running_version("counter").as_deref(), Some("1.0.0"), "after a flip at byte {at}");
    }
    assert!(named_digests >= 20, "{named_digests} of 24 flips reached the digest check");
    // The file on the device is still the good one.
    assert_eq!(std::fs::read(dev.apps().join("counter.wasm")).unwrap(), good);
}

/// A file packed before apps carried a code digest is refused with the fix.
#[test]
fn an_app_packed_without_a_code_digest_is_refused_with_the_fix() {
    let dev = device(&[], |_| {});
    let mut old = trellis_appfmt::component_code(&example("counter")).unwrap();
    let mut m = manifest("counter");
    m.code_digest = None;
    let text = m.to_toml();
    // A manifest section as the old `trellis app pack` wrote it.
    let mut body = vec![u8::try_from(trellis_appfmt::MANIFEST_SECTION.len()).unwrap()];
    body.extend_from_slice(trellis_appfmt::MANIFEST_SECTION.as_bytes());
    body.extend_from_slice(text.as_bytes());
    old.push(0);
    let mut len = body.len();
    loop {
        let byte = u8::try_from(len & 0x7f).unwrap();
        len >>= 7;
        old.push(if len == 0 { byte } else { byte | 0x80 });
        if len == 0 {
            break;
        }
    }
    old.extend_from_slice(&body);
    let err = dev.runtime.install("counter", &old).expect_err("an undigested app was loaded").to_string();
    assert!(err.contains("repack it with `trellis app pack`"), "{err}");
}

/// Someone who can write `/data` plants native code under the name of an
/// app's code in the compile cache (here: blinky's compiled code as
/// counter's). After a reboot the planted entry is deleted and counter's own
/// code is compiled and runs.
#[test]
fn native_code_planted_in_the_compile_cache_never_runs() {
    let (counter, blinky) = (example("counter"), example("blinky"));
    let dev = device(&[("counter", counter.clone()), ("blinky", blinky.clone())], |_| {});
    dev.wait_started("counter", "1.0.0");
    dev.wait_started("blinky", "1.0.0");
    let name = |app: &[u8]| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(trellis_appfmt::component_code(app).unwrap()))
    };
    let cache = dev.state().join("cache");
    let entry = |app: &[u8]| {
        let prefix = name(app);
        std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&prefix))
            .unwrap_or_else(|| panic!("no cache entry for {prefix}"))
    };
    let (counter_entry, blinky_entry) = (entry(&counter), entry(&blinky));
    let support::TestRuntime { dir, runtime, .. } = dev;
    runtime.shutdown();
    std::fs::copy(&blinky_entry, &counter_entry).unwrap();

    let dev = support::boot(dir, |_| {});
    let values = dev.runtime.subscribe("counter/value");
    assert!(!recv_ticks(&values, 2).is_empty(), "counter's own code counts");
    let planted = std::fs::read(&counter_entry).unwrap();
    assert_ne!(planted, std::fs::read(&blinky_entry).unwrap(), "the planted entry was replaced");
}

/// `[cgroups]` on a machine where they cannot be set up (no cgroup2 there):
/// the runtime warns and runs every app unconfined, here the CPU-bound
/// `spin` fixture, which keeps every call inside its deadline.
#[test]
fn apps_run_unconfined_when_cgroups_cannot_be_set_up() {
    let nowhere = tempfile::tempdir().unwrap();
    let path = nowhere.path().join("no-cgroup2/trellis");
    let mut spin = manifest("spin");
    spin.limits.cpu_weight = 512;
    let dev = device(&[("spin", pack("spin", &spin))], |c| {
        c.cgroups = Some(trellis_runtime::CgroupConfig { path: path.clone() });
    });
    dev.wait_started("spin", "1.0.0");
    std::thread::sleep(Duration::from_millis(1500));
    let status = dev.runtime.app_status("spin").unwrap();
    assert_eq!(status.state, trellis_runtime::AppState::Running);
    assert_eq!(status.restarts, 0, "{:?}", status.last_error);
    assert!(status.usage.cpu_time() > Duration::from_millis(500), "{:?}", status.usage.cpu_time());
    assert_eq!((status.cgroup(), status.kernel_cpu_time()), (None, None));
    assert!(!path.exists());
}
