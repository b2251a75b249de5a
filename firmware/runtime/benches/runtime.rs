//! `make bench`: the runtime's figures, each the median of repeated runs, printed
//! as a Markdown table for docs/benchmarks.md.
//!
//! - guest→host call round trip (the paper: 221 µs per call on a Pi 4)
//! - app swap latency, file renamed into place → first event handled by the
//!   new version: warm (compiled in memory), warm (precompiled cache on disk),
//!   cold (compile)
//! - swap downtime: the longest gap in a periodic app's output while it is
//!   swapped, next to the gap a whole runtime restart causes

#![allow(clippy::unwrap_used, clippy::missing_panics_doc, clippy::cast_precision_loss)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{device, manifest, pack, with_config};

const WAIT: Duration = Duration::from_secs(60);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn call_round_trip() -> (f64, usize) {
    const CALLS: u64 = 200_000;
    const RUNS: usize = 11;
    let dev = device(&[("bench", pack("bench", &manifest("bench")))], |_| {});
    dev.wait_started("bench", "1.0.0");
    let results = dev.runtime.subscribe("bench/result");
    let mut per_call = Vec::new();
    for _ in 0..RUNS {
        dev.runtime.publish("bench/calls", CALLS.to_string().as_bytes());
        let m = results.recv_timeout(WAIT).unwrap();
        let ns: f64 = String::from_utf8(m.payload).unwrap().parse().unwrap();
        per_call.push(ns / CALLS as f64);
    }
    (median(per_call), RUNS)
}

/// Rename a publisher variant into place; time until its first message arrives.
fn swap_latency(runs: usize, fresh_runtime_each: bool, keep_cache: bool) -> f64 {
    let mut times = Vec::new();
    let mut base = with_config(manifest("publisher"), &[("period-ms", "1")]);
    base.permissions.publish = vec!["bench/#".into()];
    let mut dev = device(&[], |_| {});
    for i in 0..runs {
        if fresh_runtime_each {
            let support::TestRuntime { dir, runtime, .. } = dev;
            runtime.shutdown();
            // Boot with no app, so the measured load is the first of this code.
            let _ = std::fs::remove_file(dir.path().join("apps/publisher.wasm"));
            if !keep_cache {
                let _ = std::fs::remove_dir_all(dir.path().join("state/cache"));
            }
            dev = support::boot(dir, |_| {});
        }
        let topic = format!("bench/v{i}");
        let mut m = with_config(base.clone(), &[("topic", &topic)]);
        m.version = format!("1.0.{i}");
        let bytes = pack("publisher", &m);
        let rx = dev.runtime.subscribe(&topic);
        let t0 = Instant::now();
        dev.install("publisher", &bytes);
        rx.recv_timeout(WAIT).unwrap();
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    median(times)
}

/// The longest gap in a 2 ms ticker's output while it is swapped for a new version.
fn swap_downtime(runs: usize) -> f64 {
    let m = with_config(manifest("publisher"), &[("period-ms", "2"), ("topic", "demo/gap")]);
    let dev = device(&[("publisher", pack("publisher", &m))], |_| {});
    dev.wait_started("publisher", "1.0.0");
    let rx = dev.runtime.subscribe("demo/gap");
    let mut gaps = Vec::new();
    for i in 0..runs {
        let mut v = m.clone();
        v.version = format!("2.0.{i}");
        let bytes = pack("publisher", &v);
        rx.recv_timeout(WAIT).unwrap();
        while rx.try_recv().is_ok() {}
        let mut last = Instant::now();
        let mut longest = Duration::ZERO;
        dev.install("publisher", &bytes);
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            if rx.recv_timeout(WAIT).is_ok() {
                longest = longest.max(last.elapsed());
                last = Instant::now();
            }
        }
        gaps.push(longest.as_secs_f64() * 1e3);
    }
    median(gaps)
}

/// The same ticker's gap when the whole runtime is restarted instead.
fn restart_downtime(runs: usize) -> f64 {
    let m = with_config(manifest("publisher"), &[("period-ms", "2"), ("topic", "demo/gap")]);
    let mut dev = device(&[("publisher", pack("publisher", &m))], |_| {});
    let mut gaps = Vec::new();
    for _ in 0..runs {
        let rx = dev.runtime.subscribe("demo/gap");
        rx.recv_timeout(WAIT).unwrap();
        let t0 = Instant::now();
        let support::TestRuntime { dir, runtime, .. } = dev;
        runtime.shutdown();
        dev = support::boot(dir, |_| {});
        dev.runtime.subscribe("demo/gap").recv_timeout(WAIT).unwrap();
        gaps.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    median(gaps)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches asks for a list
    }
    let (call_ns, call_runs) = call_round_trip();
    let warm_mem = swap_latency(21, false, true);
    let warm_disk = swap_latency(7, true, true);
    let cold = swap_latency(7, true, false);
    let downtime = swap_downtime(21);
    let restart = restart_downtime(7);
    println!("| figure | median | runs | baseline |");
    println!("|---|---|---|---|");
    println!(
        "| guest→host call round trip | {call_ns:.1} ns | {call_runs} × 200 000 calls | 221 µs (paper, Pi 4): {:.0}× faster |",
        221_000.0 / call_ns
    );
    println!(
        "| app swap, warm (compiled in memory): file renamed in → new version's first event | {warm_mem:.2} ms | 21 | 1.4 s (paper, Pi 4) |"
    );
    println!("| app swap, warm (precompiled cache on disk, runtime just started) | {warm_disk:.2} ms | 7 | 1.4 s |");
    println!("| app swap, cold (compile) | {cold:.2} ms | 7 | 1.4 s |");
    println!(
        "| swap downtime: longest gap in a 2 ms ticker's output during its own swap | {downtime:.2} ms | 21 | runtime restart: {restart:.1} ms (same run) |"
    );
}
