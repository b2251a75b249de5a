//! The swarm simulation keeps its own books: every device ends with the
//! whole release, every byte received was sent by the origin or a device,
//! no node sends or receives faster than its capacity (so no run beats the
//! Kumar–Ross bound), client–server takes exactly N copies from the origin,
//! and a run repeats from its seed.

#![allow(clippy::unwrap_used, clippy::cast_precision_loss)]

use trellis_swarm::sim::{self, OriginPolicy, Scenario};
use trellis_swarm::{Capacity, Rng, Strategy};

const MIB: u64 = 1 << 20;

fn mbit(n: f64) -> f64 {
    n * 1e6 / 8.0
}

/// `n` devices with capacities drawn between 1 and 100 Mbit/s each way.
fn mixed(n: usize, seed: u64) -> Vec<Capacity> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| Capacity { up: mbit(1.0 + rng.below(100) as f64), down: mbit(1.0 + rng.below(100) as f64) })
        .collect()
}

#[test]
fn every_device_ends_with_the_release_and_no_run_beats_the_bound() {
    let mut runs = 0;
    for (n, seed) in [(1, 1), (2, 2), (8, 3), (20, 4), (45, 5)] {
        for strategy in [Strategy::RarestFirst, Strategy::Random, Strategy::InOrder] {
            for origin in
                [OriginPolicy::NewPiecesFirst, OriginPolicy::NewPiecesOnly, OriginPolicy::Any, OriginPolicy::Unheld]
            {
                for sharing in [true, false] {
                    let s = Scenario {
                        peers: mixed(n, seed),
                        origin_up: mbit(2.0 + seed as f64 * 7.0),
                        // Not a whole number of pieces: the last one is short.
                        file_bytes: 3 * MIB + 12_345,
                        piece_bytes: 128 * 1024,
                        strategy,
                        origin,
                        sharing,
                        sample: 16,
                        seed,
                    };
                    let o = sim::run(&s);
                    let what = format!("{n} devices, {strategy}, {origin:?}, sharing {sharing}");
                    assert!(o.done_s.iter().all(|t| t.is_finite()), "{what}: a device never finished: {:?}", o.done_s);
                    let sent = o.origin_bytes + o.uploaded.iter().sum::<u64>();
                    assert_eq!(sent, n as u64 * s.file_bytes, "{what}: bytes sent are the bytes received");
                    assert!(o.origin_bytes >= s.file_bytes, "{what}: every piece leaves the origin once");
                    if !sharing {
                        assert!(o.uploaded.iter().all(|&u| u == 0), "{what}: a device uploaded");
                    }
                    let bound = s.bound();
                    assert!(
                        o.all_done_s() >= bound * (1.0 - 1e-9),
                        "{what}: {} s beats the bound {bound} s",
                        o.all_done_s()
                    );
                    runs += 1;
                }
            }
        }
    }
    assert_eq!(runs, 120);
}

#[test]
fn client_server_takes_n_copies_at_the_origins_rate() {
    let site = Scenario::site(12, Capacity { up: mbit(50.0), down: mbit(50.0) }, mbit(10.0), 5 * MIB);
    let cs = site.client_server();
    let o = sim::run(&cs);
    assert_eq!(o.origin_bytes, 12 * 5 * MIB);
    let expected = 12.0 * (5 * MIB) as f64 / mbit(10.0);
    assert!((o.all_done_s() - expected).abs() < expected * 1e-9, "{} s, expected {expected} s", o.all_done_s());
    assert!((cs.bound() - expected).abs() < 1e-6);
}

#[test]
fn behind_a_slow_uplink_the_origin_sends_the_release_about_once() {
    // The site of the namespace tests: 16 devices on a 100 Mbit/s LAN, the origin behind 10 Mbit/s.
    let site = Scenario::site(16, Capacity { up: mbit(100.0), down: mbit(100.0) }, mbit(10.0), 20 * MIB);
    for origin in [OriginPolicy::NewPiecesFirst, OriginPolicy::Any, OriginPolicy::Unheld] {
        let o = sim::run(&Scenario { origin, ..site.clone() });
        let egress = o.origin_bytes as f64 / (20 * MIB) as f64;
        assert!(egress < 1.05, "{origin:?}: the origin sent {egress:.2} copies");
        assert!(o.uploaded.iter().all(|&u| u > 0), "{origin:?}: a device uploaded nothing: {:?}", o.uploaded);
        assert!(o.all_done_s() < 16.0 * site.bound(), "{origin:?}: no faster than client–server");
    }
}

#[test]
fn an_origin_that_sends_new_pieces_only_sends_one_copy() {
    let site = Scenario {
        origin: OriginPolicy::NewPiecesOnly,
        ..Scenario::site(24, Capacity { up: mbit(5.0), down: mbit(20.0) }, mbit(10.0), 6 * MIB)
    };
    let o = sim::run(&site);
    assert_eq!(o.origin_bytes, 6 * MIB, "one copy of each piece");
    assert!(o.done_s.iter().all(|t| t.is_finite()), "the devices share the rest");
}

#[test]
fn a_run_repeats_from_its_seed() {
    let site = Scenario {
        peers: mixed(30, 9),
        sample: 8,
        ..Scenario::site(30, Capacity { up: 1.0, down: 1.0 }, mbit(20.0), 4 * MIB)
    };
    let (a, b) = (sim::run(&site), sim::run(&site));
    assert_eq!((a.done_s, a.uploaded, a.transfers), (b.done_s, b.uploaded, b.transfers));
}
