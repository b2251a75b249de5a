//! An app's lifecycle from the operator's side, on the twin: deploy, stop,
//! start and delete over the management API with the host's `trellis` CLI,
//! each checked on the device and timed (the figures are `make bench-twin`'s,
//! docs/benchmarks.md; here only that they are times a command can take);
//! then a stopped app stays stopped across a reboot, and the device's own
//! console stops and starts apps through the control socket. Needs `make
//! bundle` and the host CLI (`target/debug/trellis`; make test-twin has both).

use std::path::PathBuf;

use trellis_twin::lifecycle::{self, APP};
use trellis_twin::operator::Cli;
use trellis_twin::{BOOT_TIMEOUT, EXAMPLES, Outcome, Twin};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One app's `(version, state)` in `trellis status --json`.
fn app(cli: &Cli, name: &str) -> Option<(String, String)> {
    let status = cli.status();
    let apps = status["apps"].as_array().cloned().unwrap_or_default();
    apps.iter()
        .find(|a| a["name"] == name)
        .map(|a| (a["version"].as_str().unwrap_or("").to_owned(), a["state"].as_str().unwrap_or("").to_owned()))
}

#[test]
fn deploy_stop_start_delete_timed_and_a_stop_survives_a_reboot() -> Outcome {
    let mut twin = Twin::new("lifecycle")?;
    let dir = root().join("build/twin/runs/lifecycle");
    let mut device = twin.boot()?;
    device.wait_apps_running(&EXAMPLES)?;
    device.seen("management API listening", BOOT_TIMEOUT)?;
    device.wait_console()?;
    let cli = Cli::new(&twin, &dir);

    // Each operation does what it says (the experiment checks every step on
    // the device) and every time it reports is plausible.
    // Two runs here; `TRELLIS_LIFECYCLE_RUNS=5` gives the benchmark's medians without the rest of it.
    let runs = std::env::var("TRELLIS_LIFECYCLE_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(2);
    let times = lifecycle::experiment(&cli, &mut device, &dir.join("apps"), runs)?;
    println!("{}", lifecycle::table(&times));
    if let Err(e) = lifecycle::plausible(&times, BOOT_TIMEOUT) {
        panic!("{e}\n{}", lifecycle::table(&times));
    }
    assert_eq!(app(&cli, APP), None, "the experiment leaves no app behind");

    // Stopped on request: it stays stopped across a reboot, while the others run.
    let said = cli.ok(&["app", "stop", "counter"]);
    assert!(said.contains("counter 1.0.0 is stopped on twin"), "{said}");
    let stopped = device.sh("cat /data/trellis/stopped")?;
    assert_eq!(stopped.trim(), "counter", "the stop is recorded on the data partition");
    let rebooted = cli.ok(&["reboot"]);
    assert!(rebooted.contains("twin is rebooting"), "{rebooted}");
    let mut device = twin.restarted(device, std::time::Duration::from_secs(60))?;
    let others: Vec<&str> = EXAMPLES.iter().copied().filter(|a| *a != "counter").collect();
    device.wait_apps_running(&others)?;
    device.seen("management API listening", BOOT_TIMEOUT)?;
    device.seen("stopped on request: not started (trellis app start counter runs it)", BOOT_TIMEOUT)?;
    assert_eq!(app(&cli, "counter"), Some(("1.0.0".into(), "stopped".into())));
    assert!(
        !device.lines().iter().any(|l| l.text.contains("app running app=\"counter\"")),
        "counter was started at boot although stopped"
    );
    // Unknown apps are named.
    let unknown = cli.run(&["app", "start", "nope"]);
    assert!(!unknown.status.success(), "{}", trellis_twin::operator::text(&unknown));
    assert!(
        trellis_twin::operator::text(&unknown).contains("404: no app nope"),
        "{}",
        trellis_twin::operator::text(&unknown)
    );

    // On the device's own console, through the control socket.
    device.wait_console()?;
    let said = device.sh("trellis app start counter --local")?;
    assert!(said.contains("counter 1.0.0 is running on this device"), "{said}");
    device.wait_app_running("counter")?;
    assert_eq!(app(&cli, "counter"), Some(("1.0.0".into(), "running".into())));
    let said = device.sh("trellis app stop blinky --local --json")?;
    assert!(said.contains("\"state\": \"stopped\""), "{said}");
    assert_eq!(app(&cli, "blinky").map(|a| a.1).as_deref(), Some("stopped"));
    let said = cli.ok(&["app", "start", "blinky"]);
    assert!(said.contains("blinky 1.0.0 is running on twin"), "{said}");
    assert_eq!(device.sh("cat /data/trellis/stopped")?.trim(), "", "nothing is stopped any more");
    Ok(())
}
