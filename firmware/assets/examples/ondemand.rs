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

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
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

/// Copy `from` to `to`, each chunk `delay` after it was read.
fn delayed(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0; 64 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for (due, bytes) in rx {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        drop(to.shutdown(std::net::Shutdown::Write));
    });
}

/// A relay on loopback to `origin` adding `delay` each way; its address.
fn relay(origin: &str, delay: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let origin = origin.to_owned();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let server = TcpStream::connect(&origin).unwrap();
            client.set_nodelay(true).unwrap();
            server.set_nodelay(true).unwrap();
            delayed(client.try_clone().unwrap(), server.try_clone().unwrap(), delay);
            delayed(server, client, delay);
        }
    });
    addr
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
    let origin = if delay > 0 { relay(&origin, Duration::from_micros(delay)) } else { origin };
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
