//! `make bench`: the runtime's figures, each the median of repeated runs, printed
//! as a Markdown table for docs/benchmarks.md.
//!
//! - guest→host call round trip (the paper: 221 µs per call on a Pi 4)
//! - app swap latency, file renamed into place → first event handled by the
//!   new version: warm (compiled in memory), warm (precompiled cache on disk),
//!   cold (compile)
//! - swap downtime: the longest gap in a periodic app's output while it is
//!   swapped, next to the gap a whole runtime restart causes
//! - fleet bus round trip: a device app → an edge node's app → back, through
//!   a real `nats-server`, next to a native NATS client doing the same in the
//!   same run

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

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

/// Round trips (ms) device app → edge app → device app over the fleet bus,
/// and of two native async-nats clients doing the same on the same server,
/// interleaved in `rounds` of `per_round` sequential round trips each.
fn fleet_bus_round_trip(rounds: usize, per_round: usize) -> (Vec<f64>, Vec<f64>) {
    use futures_util::StreamExt;
    use trellis_fleet::sim;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let _in_rt = rt.enter();
    let pki = sim::Pki::new();
    let server = sim::single(&pki, &[], &[("bench-dev", "bench"), ("bench-edge", "bench")]);
    let join = |dev: &support::TestRuntime, id: &str| {
        let (cert, key) = pki.issue(id, false);
        let fleet: trellis_runtime::fleet::FleetConfig = toml::from_str(&format!(
            "servers = [\"tls://{}\"]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\ndevice = \"{id}\"\ngroup = \"bench\"\n",
            server.addr(),
            pki.ca().display(),
            cert.display(),
            key.display()
        ))
        .unwrap();
        let config = trellis_runtime::RuntimeConfig::new(dev.apps(), dev.state());
        trellis_runtime::fleet::start_bus(&dev.runtime, &config, &fleet).unwrap();
    };
    let relay = |routes: &str| pack("relay", &with_config(manifest("relay"), &[("routes", routes)]));
    let dev = device(&[("relay", relay("bench/ping=>fleet/bench/ping;fleet/+/bench/pong=>bench/pong"))], |_| {});
    let edge = device(&[("relay", relay("fleet/+/bench/ping=>fleet/bench/pong"))], |_| {});
    dev.wait_started("relay", "1.0.0");
    edge.wait_started("relay", "1.0.0");
    join(&dev, "bench-dev");
    join(&edge, "bench-edge");
    let pongs = dev.runtime.subscribe("bench/pong");
    // Until the subscriptions are in place on the server.
    let deadline = Instant::now() + WAIT;
    loop {
        dev.runtime.publish("bench/ping", b"warm-up");
        if pongs.recv_timeout(Duration::from_millis(200)).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "no pong through the fleet bus: {:?}", dev.runtime.bus_stats());
    }
    std::thread::sleep(Duration::from_millis(300));
    while pongs.try_recv().is_ok() {}

    // The native pair, on subjects of their own, with the same certificates.
    let (a, b) = rt.block_on(async {
        (
            sim::Client::connect(&pki, &[server.addr()], "bench-dev").await,
            sim::Client::connect(&pki, &[server.addr()], "bench-edge").await,
        )
    });
    let mut pings = rt.block_on(b.nats.subscribe("trellis.app.*.native.ping")).unwrap();
    let echo = b.nats.clone();
    rt.spawn(async move {
        while let Some(m) = pings.next().await {
            let _ = echo.publish("trellis.app.bench-edge.native.pong", m.payload).await;
        }
    });
    let mut native_pongs = rt.block_on(a.nats.subscribe("trellis.app.bench-edge.native.pong")).unwrap();
    rt.block_on(async {
        a.nats.flush().await.unwrap();
        b.nats.flush().await.unwrap();
    });

    let (mut bus, mut native) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for i in 0..per_round {
            let payload = i.to_string();
            let t0 = Instant::now();
            dev.runtime.publish("bench/ping", payload.as_bytes());
            let m = pongs.recv_timeout(WAIT).unwrap();
            bus.push(t0.elapsed().as_secs_f64() * 1e3);
            assert_eq!(m.payload, payload.as_bytes());
        }
        rt.block_on(async {
            for i in 0..per_round {
                let payload = i.to_string();
                let t0 = Instant::now();
                a.nats.publish("trellis.app.bench-dev.native.ping", payload.clone().into()).await.unwrap();
                let m = native_pongs.next().await.unwrap();
                native.push(t0.elapsed().as_secs_f64() * 1e3);
                assert_eq!(m.payload.as_ref(), payload.as_bytes());
            }
        });
    }
    assert_eq!(dev.runtime.bus_stats().dropped, 0, "{:?}", dev.runtime.bus_stats());
    (bus, native)
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
    let (bus, native) = fleet_bus_round_trip(5, 400);
    let bus_n = bus.len();
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
    let (bus_med, native_med) = (median(bus.clone()), median(native.clone()));
    println!(
        "| fleet bus round trip: device app → edge app → device app via nats-server (p99 {:.3} ms) | {bus_med:.3} ms | {bus_n} | native async-nats pair: {native_med:.3} ms, p99 {:.3} ms (same run) |",
        percentile(bus, 0.99),
        percentile(native, 0.99)
    );
}
