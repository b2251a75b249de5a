//! The on-demand assets benchmark's client (run by `scripts/bench-assets.sh`,
//! which puts the origin behind a shaped link in a network namespace).
//!
//! `ondemand ORIGIN ID LABEL [DELAY_US]`: reads asset `ID` whole, in 256 KiB reads in
//! order (as a model loader does), four ways, and prints one line each:
//! (a) every block already on the device; (b) the whole asset downloaded
//! first; (c) read on demand, the origin with no recorded order; (d) read on
//! demand on another device, the origin pushing from the order (c) left.
//! The origin must be fresh (no recorded order) when this starts.
//!
//! With `DELAY_US` (microseconds), every byte to and from the origin goes through a relay
//! here that holds it that long before passing it on, in each direction:
//! the link's latency (the host's kernel may have no `netem`; the rate is
//! limited by `tbf` on the link itself).

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use trellis_assets::{AssetId, Fetcher};

const READ: u64 = 256 * 1024;

fn read_all(f: &Fetcher, id: AssetId) {
    let size = f.size(id).unwrap();
    let mut at = 0;
    while at < size {
        let n = READ.min(size - at);
        std::hint::black_box(f.read(id, at, n).unwrap());
        at += n;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (origin, id, label, delay) = match args.as_slice() {
        [_, origin, id, label] => (origin.clone(), id, label, 0),
        [_, origin, id, label, delay] => (origin.clone(), id, label, delay.parse().unwrap()),
        _ => {
            eprintln!("usage: ondemand ORIGIN ID LABEL [DELAY_US]");
            std::process::exit(2);
        }
    };
    let origin =
        if delay > 0 { trellis_assets::relay::relay(&origin, Duration::from_micros(delay)).unwrap() } else { origin };
    let id: AssetId = id.parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fetcher = |name: &str| Fetcher::new(Some(origin.clone()), dir.path().join(name), format!("bench-{name}"));
    let report = |mode: &str, f: &Fetcher, t: Instant| {
        println!(
            "{label} {mode:<28} {:>8.1} ms  {:>9} bytes  {:>3} blocking misses  {:>3} requests  {:>3} pushed",
            t.elapsed().as_secs_f64() * 1000.0,
            f.stats.bytes.load(Ordering::Relaxed),
            f.stats.misses.load(Ordering::Relaxed),
            f.stats.requests.load(Ordering::Relaxed),
            f.stats.pushed.load(Ordering::Relaxed),
        );
    };

    // (a) Already on the device: filled beforehand, untimed; the index too.
    let local = fetcher("a");
    local.fetch_all(id).unwrap();
    let local = fetcher("a");
    let t = Instant::now();
    read_all(&local, id);
    report("(a) on the device", &local, t);

    // (b) Downloaded whole, then read.
    let whole = fetcher("b");
    let t = Instant::now();
    whole.fetch_all(id).unwrap();
    read_all(&whole, id);
    report("(b) whole download first", &whole, t);

    // (c) On demand, nothing recorded yet: every block is a round trip.
    let cold = fetcher("c");
    let t = Instant::now();
    read_all(&cold, id);
    report("(c) on demand", &cold, t);

    // (d) On demand on another device: the origin pushes from (c)'s order.
    let warm = fetcher("d");
    let t = Instant::now();
    read_all(&warm, id);
    report("(d) on demand + recorded push", &warm, t);
}
