//! Per-app outgoing rate limits, enforced by the kernel (HTB classes chosen
//! by the socket mark the runtime gives each app), measured in the twin:
//! Paradrop's bandwidth experiment with seven limits, each held within ±10 %
//! (beside a run without a limit: what the twin's link gives an app).
//! Needs `make bundle` and `make apps` (make test-twin has both).

use trellis_twin::bandwidth::{LIMITS_KBIT, experiment, table};
use trellis_twin::{Outcome, Twin};

#[test]
fn each_app_is_held_to_its_rate_limit() -> Outcome {
    let mut twin = Twin::new("bandwidth")?;
    let mut device = twin.boot()?;
    device.wait_app_running("counter")?;
    device.wait_console()?;
    // The runtime put the HTB root on eth0 at start.
    let qdisc = device.sh("/sbin/tc qdisc show dev eth0")?;
    assert!(qdisc.contains("qdisc htb 1: root"), "no HTB root on eth0: {qdisc}");

    let runs: Vec<u32> = LIMITS_KBIT.into_iter().chain([0]).collect();
    let rows = experiment(&twin, &mut device, &runs)?;
    println!("{}", table(&rows));
    let (unlimited, limited) = rows.split_last().expect("rows");
    // Without a limit the app sends too: that run shows what the link gives.
    assert!(unlimited.measured_kbit > 0.0, "nothing arrived without a limit\n{}", table(&rows));
    for row in limited {
        let rate = format!("rate {}", fmt_rate(row.limit_kbit));
        assert!(row.class.contains(&rate), "the app's class on the device is not at {rate}: {}", row.class);
        assert!(
            (0.9..=1.1).contains(&row.ratio()),
            "limit {} kbit/s: measured {:.0} kbit/s ({:.3} of it)\n{}",
            row.limit_kbit,
            row.measured_kbit,
            row.ratio(),
            table(&rows)
        );
    }
    Ok(())
}

/// How `tc` prints a rate of `kbit` kbit/s (`500Kbit`, `2Mbit`).
fn fmt_rate(kbit: u32) -> String {
    if kbit.is_multiple_of(1000) { format!("{}Mbit", kbit / 1000) } else { format!("{kbit}Kbit") }
}
