//! `trellis-fleet-demo` (`make fleet-demo`): a fleet on this machine. A
//! `nats-server` with JetStream on loopback, twins in QEMU whose runtimes run
//! the fleet agent, and simulated devices (the same agent driving a simulated
//! device). The twins' thermostats publish their readings on the fleet bus;
//! an edge node (the runtime on this host, without hardware) runs the
//! aggregator app, whose setpoint the thermostats take. The operator's commands (`trellis fleet …`, printed as they run)
//! roll an app out in waves, then a firmware release whose trial boot fails
//! its health gate on the first device: that twin goes back to its old slot
//! by itself and reports it, and the rollout halts at its error threshold,
//! before any other device gets it. Exits non-zero if any of that does not
//! happen.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use trellis_appfmt::{AppFile, component_code, pack};
use trellis_fleet::sim::{self, Pki, Sim};
use trellis_twin::fleet::{EdgeNode, Operator, TakenByRoot, provision, rollout_id, taken_by_root};
use trellis_twin::{BOOT_TIMEOUT, EXAMPLES, Twin, set_temperature};

/// Run the fleet demo.
#[derive(Debug, Parser)]
#[command(name = "trellis-fleet-demo")]
struct Args {
    /// The build directory (`make bundle` output).
    #[arg(long, default_value = "build")]
    build: PathBuf,
    /// How many twins (QEMU) take part.
    #[arg(long, default_value_t = 2)]
    twins: usize,
    /// How many simulated devices take part.
    #[arg(long, default_value_t = 6)]
    simulated: usize,
}

const GROUP: &str = "demo";
const BOARD: &str = "qemu-aarch64";
/// The edge node's device id.
const EDGE: &str = "edge-1";

fn say(text: &str) {
    println!("\n== {text}");
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or("")
}

#[allow(clippy::too_many_lines)]
fn run(args: &Args) -> Result<()> {
    let dir = args.build.join("fleet-demo");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let release_key = args.build.join("keys/release.key");
    let trust = trellis_appfmt::TrustList::load(&[args.build.join("keys/release.pub")])
        .context("the release-signing key (make bundle makes it)")?;

    say("a firmware bundle whose runtime refuses every app, so its trial boot never gets healthy");
    let broken = dir.join("broken.raucb");
    let made = Command::new("scripts/twin-broken-bundle.sh")
        .args([s(&args.build), "unhealthy", s(&broken)])
        .env("VERSION", "demo-2")
        .output()
        .context("scripts/twin-broken-bundle.sh")?;
    ensure!(made.status.success(), "twin-broken-bundle.sh: {}", String::from_utf8_lossy(&made.stderr));

    say("a nats-server with JetStream on loopback, mutual TLS, a user per device");
    let pki = Pki::new();
    let twins: Vec<String> = (1..=args.twins).map(|i| format!("pi-{i}")).collect();
    let sims: Vec<String> = (1..=args.simulated).map(|i| format!("sim-{i:02}")).collect();
    let mut users: Vec<(&str, &str)> = twins.iter().chain(&sims).map(|d| (d.as_str(), GROUP)).collect();
    users.push((EDGE, "edge"));
    let server = sim::single(&pki, &["operator"], &users);
    println!("listening on {}", server.addr());

    say(&format!("{} twins boot; each is provisioned with its own certificate", twins.len()));
    let mut machines = Vec::new();
    for (i, id) in twins.iter().enumerate() {
        let mut twin = Twin::new(&format!("fleet-demo-{id}"))?;
        if i == 0 {
            // The others' LAN peer (their `[assets] peers`): what it holds, they read from it.
            twin.serve_as_site_peer()?;
        }
        let device = twin.boot()?;
        machines.push((id.clone(), twin, Some(device)));
    }
    for (id, twin, device) in &mut machines {
        let device = device.as_mut().context("a twin")?;
        device.wait_apps_running(&EXAMPLES)?;
        provision(twin, device, &pki, server.addr().port(), id, GROUP)?;
        println!("{id}: the fleet agent runs");
    }

    say("an edge node on this host (the runtime without hardware) runs the aggregator app;");
    say("the twins' thermostats read 19.5 and 21.5 °C and publish their readings on the fleet bus");
    let readings = [19.5_f32, 21.5];
    for ((id, _, device), celsius) in machines.iter_mut().zip(readings.iter().cycle()) {
        set_temperature(device.as_mut().context("a twin")?, *celsius)?;
        println!("{id}: {celsius:.1} °C");
    }
    let aggregator = args.build.join("edge-apps/aggregator.wasm");
    let bytes = std::fs::read(&aggregator).with_context(|| format!("{} (make apps)", aggregator.display()))?;
    let edge = EdgeNode::start(&dir.join("edge"), &pki, server.addr().port(), EDGE, "edge", &[("aggregator", bytes)])?;
    let line = edge.wait_log(&format!("following {} devices", twins.len()), BOOT_TIMEOUT)?;
    println!("{EDGE}: {}", line.split(" INFO ").nth(1).unwrap_or(&line));
    // The aggregator's summary: the fleet's mean, and the setpoint it asks for
    // (target 21 °C, half the mean's shortfall added), which each thermostat takes.
    let mean = readings.iter().cycle().take(twins.len()).sum::<f32>() / f32::from(u16::try_from(twins.len())?);
    let setpoint = (21.0 + 0.5 * (21.0 - mean)).clamp(19.0, 23.0);
    let expected =
        format!("setpoint {setpoint:.2} °C from {EDGE} (fleet mean {mean:.2} °C over {} devices)", twins.len());
    for (id, _, device) in &mut machines {
        let line = device.as_mut().context("a twin")?.seen(&expected, BOOT_TIMEOUT)?;
        println!("{id}: {}", line.text.split(" INFO ").nth(1).unwrap_or(&line.text));
    }

    let mut op = Operator::new(&pki, server.addr(), &dir)?;
    op.echo = true;
    let app = args.build.join("apps/counter.wasm");
    let bytes = std::fs::read(&app).with_context(|| format!("{} (make apps)", app.display()))?;
    let mut manifest = AppFile::parse(&bytes)?.manifest;
    manifest.version = "9.0.0".into();
    let next = dir.join("counter-9.0.0.wasm");
    std::fs::write(&next, pack(&component_code(&bytes)?, &manifest)?)?;
    say("the site's asset origin (trellis asset serve) holds the app and the bundle:");
    say("twins take both by their piece roots, every block checked against the signed root,");
    say(&format!("from their LAN peer ({}, which shares what it runs) first, then from the origin", twins[0]));
    let site = dir.join("site");
    std::fs::create_dir_all(&site).with_context(|| site.display().to_string())?;
    std::fs::copy(&broken, site.join("broken.raucb")).context("the bundle at the asset origin")?;
    std::fs::copy(&next, site.join("counter-9.0.0.wasm")).context("the app at the asset origin")?;
    let _site_origin = op.asset_origin(&site)?;
    say("the operator sets up the fleet and registers the devices");
    op.run(&["setup"])?;
    for d in twins.iter().chain(&sims) {
        op.run(&["register", d, "--group", GROUP, "--board", BOARD])?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut simulated: Vec<Sim> = sims
        .iter()
        .map(|d| {
            let mut sim = Sim::new(&pki, &[server.addr()], d, GROUP, trust.clone());
            sim.board = BOARD.into();
            sim
        })
        .collect();
    rt.block_on(async {
        for sim in &mut simulated {
            sim.start().await;
        }
    });
    let controller = op.controller(300)?;
    let audit_log = || {
        rt.block_on(async {
            let link =
                trellis_fleet::link::Link::connect(&sim::credentials(&pki, &[server.addr()], "operator"), None, false)
                    .await?;
            anyhow::Ok(sim::events(&link).await)
        })
    };
    let result = (|| -> Result<()> {
        op.run(&["devices"])?;

        say("an app release, rolled out in waves: one device, then half, then the rest");
        op.run(&["release", "create", "counter-9.0.0", "--key", s(&release_key), "--app", s(&next), "--board", BOARD])?;
        let said = op.run(&[
            "deploy",
            "counter-9.0.0",
            "--group",
            GROUP,
            "--waves",
            "1,50%,100%",
            "--soak-s",
            "5",
            "--errors",
            "20",
        ])?;
        let done = op.wait_rollout(&rollout_id(&said), "done", Duration::from_secs(600))?;
        ensure!(done["members"].as_object().is_some_and(|m| m.len() == twins.len() + sims.len()), "everyone: {done}");
        for (id, _, device) in &mut machines {
            let device = device.as_mut().context("a twin")?;
            device.seen("app running app=\"counter\" version=9.0.0", BOOT_TIMEOUT)?;
            println!("{id}: counter 9.0.0 running (its console)");
        }
        let events = audit_log()?;
        for (i, (id, _, _)) in machines.iter().enumerate() {
            let how = events
                .iter()
                .find(|e| {
                    e.device == *id && e.release == "counter-9.0.0" && e.kind == trellis_fleet::EventKind::Downloaded
                })
                .and_then(|e| e.reason.clone())
                .unwrap_or_default();
            // The first wave is the first twin: the origin sent it every block; the
            // second twin's wave came after it ran the app, so its LAN peer sent them all.
            let TakenByRoot { fetched, from_peers, .. } =
                taken_by_root(&how, "counter").with_context(|| format!("{id} did not take it by its root: {how:?}"))?;
            ensure!(fetched > 0, "{id} fetched no block: {how:?}");
            if i == 0 {
                ensure!(from_peers == 0, "{id} has no peer that holds it: {how:?}");
            } else {
                ensure!(from_peers == fetched, "{id} did not take every block from its LAN peer: {how:?}");
            }
            println!("{id}: downloaded {how}");
        }
        op.run(&["devices"])?;

        say("a firmware release that will not come up healthy; the first wave is one twin");
        op.run(&[
            "release",
            "create",
            "os-demo-2",
            "--key",
            s(&release_key),
            "--bundle",
            s(&broken),
            "--board",
            BOARD,
        ])?;
        let said = op.run(&[
            "deploy",
            "os-demo-2",
            "--group",
            GROUP,
            "--waves",
            "1,50%,100%",
            "--soak-s",
            "5",
            "--errors",
            "20",
        ])?;
        let id = rollout_id(&said);
        let (first, twin, device) = &mut machines[0];
        println!("{first}: downloads the bundle, RAUC installs it, it reboots into the trial");
        let stopped = device.take().context("a twin")?;
        let trial = twin.restarted(stopped, Duration::from_secs(600))?;
        ensure!(trial.partition == 3, "{first}: the trial boot runs slot B");
        println!("{first}: trial boot of slot B; the health gate waits for its apps");
        let trial_log = trial.log_path().to_owned();
        let back = twin.restarted(trial, Duration::from_secs(300))?;
        ensure!(back.partition == 2, "{first}: back on slot A");
        let device = device.insert(back);
        // The agent reports the roll-back once it reads the gate's verdict: in the
        // trial boot, if it looks before the reboot is through, or else in the next.
        let trial_console = std::fs::read_to_string(&trial_log).with_context(|| trial_log.display().to_string())?;
        if !trial_console.contains("fleet: RolledBack") {
            device.seen("fleet: RolledBack", BOOT_TIMEOUT)?;
        }
        println!("{first}: back on slot A by itself");
        let halted = op.wait_rollout(&id, "halted", Duration::from_secs(300))?;
        let reason = halted["reason"].as_str().unwrap_or_default().to_owned();
        ensure!(reason.contains(first.as_str()) && reason.contains("rolled back"), "the halt names {first}: {halted}");
        ensure!(halted["members"].as_object().is_some_and(|m| m.len() == 1), "no one else got it: {halted}");
        op.run(&["devices"])?;
        let events = audit_log()?;
        let audit: Vec<_> = events.iter().filter(|e| e.device == *first && e.release == "os-demo-2").collect();
        println!("{first}'s audit log for os-demo-2:");
        for e in &audit {
            println!("  {:?} {}", e.kind, e.reason.as_deref().unwrap_or(""));
        }
        if !audit.iter().any(|e| e.kind == trellis_fleet::EventKind::RolledBack) {
            bail!("{first} did not report its roll-back");
        }
        say("the operator aborts the rollout; the fleet stays on the release it runs");
        op.run(&["abort", &id])?;
        Ok(())
    })();
    drop(controller);
    drop(simulated);
    drop(edge);
    for device in machines.into_iter().filter_map(|(_, _, d)| d) {
        device.power_cut();
    }
    drop(server);
    result?;
    say("done: the app reached every device wave by wave; the bad firmware stopped at the first");
    Ok(())
}
