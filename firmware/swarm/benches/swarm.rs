//! `make bench-swarm`: one site's swarm in the discrete-event simulation
//! (`trellis_swarm::sim`) for several fleet sizes, each next to the
//! Kumar–Ross bound and to client–server download from the origin in the
//! same run, with rarest-first, random and in-order piece choice. Prints
//! Markdown tables. `SWARM_SIZES=8,16,32` limits the sizes.

#![allow(clippy::cast_precision_loss)]

use std::time::Instant;

use trellis_swarm::sim::{self, OriginPolicy, Outcome, Scenario};
use trellis_swarm::{Capacity, Strategy};

const MIB: u64 = 1 << 20;

fn mbit(n: f64) -> f64 {
    n * 1e6 / 8.0
}

fn main() {
    let sizes: Vec<usize> = std::env::var("SWARM_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![8, 16, 32, 1000, 10_000]);
    let file = 20 * MIB;
    let sites = [
        ("wired LAN, 100 Mbit/s each way", Capacity { up: mbit(100.0), down: mbit(100.0) }),
        ("slow peers, 20 Mbit/s down and 5 Mbit/s up", Capacity { up: mbit(5.0), down: mbit(20.0) }),
    ];
    for (name, lan) in sites {
        println!("\n{name}; the origin behind a 10 Mbit/s uplink; 20 MiB in 256 KiB pieces\n");
        println!(
            "| devices | bound | rarest-first | random | in order | origin steers | origin: new pieces only | client–server | origin egress ÷ F: rarest / random / steers / new only | upload fairness (rarest) | wall |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for &n in &sizes {
            let t = Instant::now();
            // Devices ask the origin for the piece their picker chooses, as they ask peers.
            let site = Scenario { origin: OriginPolicy::Any, ..Scenario::site(n, lan, mbit(10.0), file) };
            let bound = site.bound();
            let with = |strategy| sim::run(&Scenario { strategy, ..site.clone() });
            let (rarest, random, ordered) =
                (with(Strategy::RarestFirst), with(Strategy::Random), with(Strategy::InOrder));
            let steers = sim::run(&Scenario { origin: OriginPolicy::NewPiecesFirst, ..site.clone() });
            let once = sim::run(&Scenario { origin: OriginPolicy::NewPiecesOnly, ..site.clone() });
            let cs = site.client_server();
            let server = sim::run(&cs);
            let cell = |o: &Outcome, b: f64| format!("{:.1} s ({:.2}×)", o.all_done_s(), o.all_done_s() / b);
            let egress = |o: &Outcome| format!("{:.2}", o.origin_bytes as f64 / file as f64);
            println!(
                "| {n} | {bound:.1} s | {} | {} | {} | {} | {} | {} | {} / {} / {} / {} | {:.3} | {:.0} s |",
                cell(&rarest, bound),
                cell(&random, bound),
                cell(&ordered, bound),
                cell(&steers, bound),
                cell(&once, bound),
                cell(&server, cs.bound()),
                egress(&rarest),
                egress(&random),
                egress(&steers),
                egress(&once),
                rarest.upload_fairness(),
                t.elapsed().as_secs_f64()
            );
        }
    }
}
