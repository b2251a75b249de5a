//! `make bench-lan`: a site's LAN in network namespaces (root): N devices,
//! each on a 100 Mbit/s link to a bridge, and the origin behind a 10 Mbit/s
//! uplink (`tc` tbf), running the real `trellis asset serve` and `trellis
//! asset fetch`. For N = 8, 16 and 32 (`LAN_SIZES`), in one run:
//! - the devices take a 20 MiB release from each other and from the origin
//!   (rarest first, then random piece choice), and then from the origin
//!   alone (client–server);
//! - the time until every device holds it, beside the Kumar–Ross bound;
//! - the origin's egress over F, on the wire and in blocks;
//! - how evenly the devices uploaded (Jain's index);
//! - the discrete-event simulation (`trellis_swarm::sim`) of the same site,
//!   its devices asking the origin as `download` does
//!   ([`OriginPolicy::Unheld`]), first at the links' nominal rates, then
//!   calibrated: every rate times the goodput the client–server run measured
//!   through the origin's link.
//!
//! Then the calibrated simulation, times the mean of measured over simulated
//! (rarest-first's and random's each), extends the curve to 1,000 and 10,000
//! devices (`LAN_EXTEND`) for both piece choices. Prints
//! Markdown tables; each run's time, when its first device was done and
//! what the site delivered in all go to stderr as it ends.
//! `LAN_CLIENT_SERVER=0` leaves client–server and the calibration out (its
//! rows say so). `LAN_MBIT` and `LAN_UPLINK_MBIT` set the devices' links
//! and the origin's uplink (100 and 10): a slower site needs less of what
//! this machine's emulated links carry for the same ratio to the bound.

#![allow(clippy::unwrap_used, clippy::cast_precision_loss, clippy::missing_panics_doc)]

#[path = "../tests/support/lan.rs"]
mod lan;

use std::path::Path;
use std::time::{Duration, Instant};

use lan::{Lan, Node, fetched, holds, origin, release_of, store};
use trellis_assets::Index;
use trellis_swarm::sim::{self, OriginPolicy, Scenario};
use trellis_swarm::{Capacity, Strategy, jain_index};

const MIB: usize = 1 << 20;
/// The release.
const SIZE: usize = 20 * MIB;
/// The devices' links, each way, and the origin's uplink, in Mbit/s, unless
/// `LAN_MBIT` and `LAN_UPLINK_MBIT` say otherwise.
const LAN_MBIT: f64 = 100.0;
const UPLINK_MBIT: f64 = 10.0;

/// The site's rates: the devices' links and the origin's uplink, in Mbit/s.
#[derive(Clone, Copy)]
struct Rates {
    lan: f64,
    uplink: f64,
}

impl Rates {
    fn from_env() -> Self {
        let rate = |var: &str, default: f64| {
            std::env::var(var)
                .ok()
                .map_or(default, |v| v.trim().parse().unwrap_or_else(|_| panic!("{var}={v}: not a rate in Mbit/s")))
        };
        Self { lan: rate("LAN_MBIT", LAN_MBIT), uplink: rate("LAN_UPLINK_MBIT", UPLINK_MBIT) }
    }
}
/// The asset protocol's block.
const BLOCK: u64 = 64 * 1024;

fn bytes_per_s(mbit: f64) -> f64 {
    mbit * 1e6 / 8.0
}

fn sizes(var: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(var)
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

/// What one download of the release by every device measured.
struct Measured {
    /// Until the last device held the release.
    seconds: f64,
    /// Bytes the origin put on its link.
    origin_wire: u64,
    /// Blocks the devices took from the origin.
    origin_blocks: u64,
    /// Blocks each device uploaded to the others.
    uploaded: Vec<u64>,
}

impl Measured {
    fn fairness(&self) -> f64 {
        jain_index(&self.uploaded)
    }
}

/// Every device of `lan` fetches the release `id` into its own store under
/// `dir`: from the others and the origin with `strategy`, or (`None`) from
/// the origin alone.
fn fetch_all(lan: &Lan, dir: &Path, id: &str, bytes: &[u8], strategy: Option<&str>, deadline: Duration) -> Measured {
    let n = lan.nodes - 1;
    let (before, started) = (lan.sent(0), Instant::now());
    let devices: Vec<Node> = (1..=n)
        .map(|k| {
            let mut args: Vec<String> = ["asset", "fetch", id, "--origin", &lan.addr(0)].map(String::from).into();
            args.extend(["--store".into(), store(dir, k).display().to_string()]);
            if let Some(strategy) = strategy {
                args.extend(["--strategy".into(), strategy.into(), "--share".into(), lan.addr(k), "--linger".into()]);
                for j in (1..=n).filter(|&j| j != k) {
                    args.extend(["--peer".into(), lan.addr(j)]);
                }
            }
            lan.start(k, &args)
        })
        .collect();
    let reports: Vec<_> =
        devices.iter().enumerate().map(|(i, d)| d.report_within(&format!("device {}", i + 1), deadline)).collect();
    let seconds = started.elapsed().as_secs_f64();
    let origin_wire = lan.sent(0) - before;
    // When the first device was done, and what the site delivered in all
    // (what the machine's emulated links carried, against what the bound needs).
    let first = reports.iter().filter_map(|r| r["seconds"].as_f64()).fold(f64::INFINITY, f64::min);
    let delivered = (n * bytes.len()) as f64 * 8.0 / seconds / 1e6;
    eprintln!(
        "{n} devices, {}: {seconds:.1} s (the first done at {first:.1} s; {delivered:.0} Mbit/s delivered in all)",
        strategy.unwrap_or("client–server")
    );
    drop(devices);
    let blocks = u64::from(Index::of(bytes).count());
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(fetched(r), blocks, "device {}: {r}", i + 1);
        holds(dir, i + 1, bytes);
    }
    let uploaded = (1..=n)
        .map(|k| reports.iter().filter_map(|r| r["from-peers"].get(lan.addr(k))).map(|v| v.as_u64().unwrap()).sum())
        .collect();
    let origin_blocks = reports.iter().map(|r| r["from-origin"].as_u64().unwrap()).sum();
    Measured { seconds, origin_wire, origin_blocks, uploaded }
}

/// The simulated site: `n` devices, every rate times `efficiency`.
fn scenario(rates: Rates, n: usize, efficiency: f64, strategy: Strategy) -> Scenario {
    let lan = Capacity { up: bytes_per_s(rates.lan) * efficiency, down: bytes_per_s(rates.lan) * efficiency };
    Scenario {
        piece_bytes: BLOCK,
        strategy,
        origin: OriginPolicy::Unheld,
        ..Scenario::site(n, lan, bytes_per_s(rates.uplink) * efficiency, SIZE as u64)
    }
}

fn main() {
    let counts = sizes("LAN_SIZES", &[8, 16, 32]);
    let extend = sizes("LAN_EXTEND", &[1000, 10_000]);
    let f = SIZE as f64;
    let rates = Rates::from_env();
    let client_server = !std::env::var("LAN_CLIENT_SERVER").is_ok_and(|v| v == "0");
    println!(
        "\n{} Mbit/s links, the origin behind a {} Mbit/s uplink; 20 MiB in {} KiB blocks\n",
        rates.lan,
        rates.uplink,
        BLOCK / 1024
    );
    println!(
        "| devices | bound | rarest-first | random | client–server (its bound) | origin egress ÷ F, wire (blocks): rarest / random | upload fairness: rarest / random | simulated: nominal / calibrated (its origin egress ÷ F) | measured ÷ calibrated |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut residuals = Vec::new();
    let mut efficiencies = Vec::new();
    for &n in &counts {
        let lan = Lan::new(&format!("bench{n}"), n + 1);
        lan.uplink(&format!("{}mbit", rates.uplink));
        for k in 1..=n {
            lan.shape(k, &format!("{}mbit", rates.lan));
        }
        let dir = tempfile::tempdir().unwrap();
        let (bytes, id) = release_of(dir.path(), SIZE);
        let _origin = origin(&lan, dir.path());
        let bound = scenario(rates, n, 1.0, Strategy::RarestFirst).bound();
        // Client–server takes N·F over the uplink: its deadline, with room.
        let cs_bound = n as f64 * f / bytes_per_s(rates.uplink);
        let deadline = Duration::from_secs_f64(cs_bound * 3.0 + 120.0);
        let rarest = fetch_all(&lan, &dir.path().join("rarest"), &id, &bytes, Some("rarest-first"), deadline);
        let random = fetch_all(&lan, &dir.path().join("random"), &id, &bytes, Some("random"), deadline);
        let egress =
            |m: &Measured| format!("{:.2} ({:.2})", m.origin_wire as f64 / f, (m.origin_blocks * BLOCK) as f64 / f);
        let nominal = sim::run(&scenario(rates, n, 1.0, Strategy::RarestFirst)).all_done_s();
        if !client_server {
            println!(
                "| {n} | {bound:.1} s | {:.1} s ({:.2}×) | {:.1} s ({:.2}×) | not run ({cs_bound:.1} s) | {} / {} | {:.3} / {:.3} | {nominal:.1} s / not calibrated | — |",
                rarest.seconds,
                rarest.seconds / bound,
                random.seconds,
                random.seconds / bound,
                egress(&rarest),
                egress(&random),
                rarest.fairness(),
                random.fairness(),
            );
            continue;
        }
        let server = fetch_all(&lan, &dir.path().join("server"), &id, &bytes, None, deadline);
        // The goodput through the origin's link, as a share of its rate.
        let efficiency = cs_bound / server.seconds;
        let model = sim::run(&scenario(rates, n, efficiency, Strategy::RarestFirst));
        let calibrated = model.all_done_s();
        let residual = rarest.seconds / calibrated;
        // Random piece choice's own (the extension compares the two).
        let random_residual = random.seconds / sim::run(&scenario(rates, n, efficiency, Strategy::Random)).all_done_s();
        residuals.push((residual, random_residual));
        efficiencies.push(efficiency);
        println!(
            "| {n} | {bound:.1} s | {:.1} s ({:.2}×) | {:.1} s ({:.2}×) | {:.1} s ({cs_bound:.1} s) | {} / {} | {:.3} / {:.3} | {nominal:.1} s / {calibrated:.1} s ({:.2}) | {residual:.2} |",
            rarest.seconds,
            rarest.seconds / bound,
            random.seconds,
            random.seconds / bound,
            server.seconds,
            egress(&rarest),
            egress(&random),
            rarest.fairness(),
            random.fairness(),
            model.origin_bytes as f64 / f,
        );
    }
    if residuals.is_empty() || extend.is_empty() {
        return;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let efficiency = mean(&efficiencies);
    let residual = mean(&residuals.iter().map(|r| r.0).collect::<Vec<_>>());
    let random_residual = mean(&residuals.iter().map(|r| r.1).collect::<Vec<_>>());
    println!(
        "\nthe simulation calibrated: rates × {efficiency:.3} (the origin link's goodput), times × {residual:.2} rarest-first and × {random_residual:.2} random (measured ÷ simulated, mean of the sizes above)\n"
    );
    println!(
        "| devices | bound | rarest-first: simulated, calibrated | × measured ÷ simulated (÷ bound) | random: simulated, calibrated | × measured ÷ simulated (÷ bound) | client–server |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &n in &extend {
        let bound = scenario(rates, n, 1.0, Strategy::RarestFirst).bound();
        let run = |strategy, residual: f64| {
            let simulated = sim::run(&scenario(rates, n, efficiency, strategy)).all_done_s();
            let predicted = simulated * residual;
            format!("{simulated:.1} s | {predicted:.1} s ({:.2}×)", predicted / bound)
        };
        println!(
            "| {n} | {bound:.1} s | {} | {} | {:.1} s |",
            run(Strategy::RarestFirst, residual),
            run(Strategy::Random, random_residual),
            n as f64 * f / bytes_per_s(rates.uplink),
        );
    }
}
