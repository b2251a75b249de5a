//! A twin in a fleet: the real agent in the twin's runtime, provisioned with
//! its own certificate, follows rollouts driven from the host by the
//! operator's CLI (`trellis fleet`) through a real `nats-server`, beside
//! simulated devices: first an app (by its piece root from the site's asset
//! origin, for the twin), then firmware whose app interface the
//! twin's apps do not run on (refused, naming them), then that firmware
//! released with versions of the apps built for it: the apps installed
//! first, then the firmware streamed by its piece root from the site's asset
//! origin through RAUC, and the trial boot. Needs `make bundle` and the host
//! CLI (make test-twin has both).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use trellis_fleet::sim::{self, Pki, Sim};
use trellis_twin::fleet::{Operator, provision, rollout_id, taken_by_root};
use trellis_twin::operator::text;
use trellis_twin::{BOOT_TIMEOUT, EXAMPLES, Outcome, Twin, repack};

const BOARD: &str = "qemu-aarch64";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or("")
}

#[test]
fn a_twin_takes_part_in_rollouts_of_an_app_and_of_firmware() -> Outcome {
    let dir = root().join("build/twin/runs/fleet-host");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("run directory");
    // Bundles of the same slot images under another version; `APP_INTERFACE` changes the app
    // interface the bundle says its runtime provides (by default wit/trellis.wit's, the apps').
    let make_bundle = |name: &str, version: &str, interface: Option<&str>| {
        let bundle = dir.join(name);
        let mut command = Command::new(root().join("scripts/twin-bundle.sh"));
        command.args([s(&root().join("build")), s(&bundle)]).env("VERSION", version).current_dir(root());
        if let Some(i) = interface {
            command.env("APP_INTERFACE", i);
        }
        let made = command.output().expect("twin-bundle.sh");
        assert!(made.status.success(), "{}", text(&made));
        bundle
    };
    let bundle = make_bundle("next.raucb", "fleet-2", Some("0.1.1"));
    // The site's asset origin (`trellis asset serve`, where the twin's
    // `[assets] origin` points), holding the bundle the firmware release names.
    let site = dir.join("site");
    std::fs::create_dir_all(&site).expect("the asset origin's directory");
    std::fs::copy(&bundle, site.join("next.raucb")).expect("the bundle at the asset origin");
    let release_key = root().join("build/keys/release.key");
    let trust = trellis_appfmt::TrustList::load(&[root().join("build/keys/release.pub")]).expect("release.pub");

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("executor");
    let pki = Pki::new();
    let devices = [("sim-1", "north"), ("sim-2", "north"), ("twin-1", "north")];
    let server = sim::single(&pki, &["operator"], &devices);

    // The twin, provisioned with its own certificate; the operator.
    let mut twin = Twin::new("fleet")?;
    let mut device = twin.boot()?;
    device.wait_apps_running(&EXAMPLES)?;
    provision(&twin, &mut device, &pki, server.addr().port(), "twin-1", "north")?;
    let op = Operator::new(&pki, server.addr(), &dir)?;
    let fleet = |args: &[&str]| op.run(args).unwrap_or_else(|e| panic!("{e}"));
    fleet(&["setup"]);
    for (d, g) in devices {
        assert!(fleet(&["register", d, "--group", g, "--board", BOARD]).contains("registered"));
    }
    let mut sims: Vec<Sim> = ["sim-1", "sim-2"]
        .iter()
        .map(|d| {
            let mut sim = Sim::new(&pki, &[server.addr()], d, "north", trust.clone());
            sim.board = BOARD.into();
            sim
        })
        .collect();
    rt.block_on(async {
        for sim in &mut sims {
            sim.start().await;
        }
    });
    let _controller = op.controller(300)?;

    // An app, in two waves: sim-1, then sim-2 and the twin. The site's asset
    // origin holds it too: the twin, which has asset sources, fetches it by
    // its piece root from there (the simulated devices, whole).
    let app = dir.join("counter-9.wasm");
    std::fs::write(&app, repack("counter", |m| m.version = "9.0.0".into())).expect("app");
    std::fs::copy(&app, site.join("counter-9.wasm")).expect("the app at the asset origin");
    // Versions of every example app as if built for app interface 0.1.1 (which the running
    // 0.1.2 runtime runs too), for the firmware release below; the site's origin holds them.
    let fitting: Vec<PathBuf> = EXAMPLES
        .iter()
        .map(|app| {
            let packed = repack(app, |m| m.version = "9.1.0".into());
            let manifest = trellis_appfmt::AppFile::parse(&packed).expect("a packed app").manifest;
            let code = trellis_appfmt::component_code(&packed).expect("a component");
            let code = trellis_appfmt::retarget_interface(&code, "0.1.2", "0.1.1").expect("built for 0.1.2");
            let path = dir.join(format!("{app}-9.1.0.wasm"));
            std::fs::write(&path, trellis_appfmt::pack(&code, &manifest).expect("packs")).expect("app");
            std::fs::copy(&path, site.join(format!("{app}-9.1.0.wasm"))).expect("the app at the asset origin");
            path
        })
        .collect();
    let _site_origin = op.asset_origin(&site)?;
    let said =
        fleet(&["release", "create", "counter-9.0.0", "--key", s(&release_key), "--app", s(&app), "--board", BOARD]);
    assert!(said.contains("published release counter-9.0.0 (1 app(s))"), "{said}");
    let said =
        fleet(&["deploy", "counter-9.0.0", "--group", "north", "--waves", "1,100%", "--soak-s", "0", "--errors", "50"]);
    let id = rollout_id(&said);
    let done = op.wait_rollout(&id, "done", Duration::from_secs(240))?;
    assert_eq!(done["members"]["twin-1"]["wave"], 1, "{done}");
    device.seen("app running app=\"counter\" version=9.0.0", BOOT_TIMEOUT)?;
    assert!(sims.iter().all(|d| d.runs("counter", "9.0.0")));
    let status = fleet(&["rollout", "status", &id]);
    assert!(status.contains("done, wave 2 of 2") || status.contains("Done, wave 2 of 2"), "{status}");
    assert!(status.contains("wave 2 (100%): 2 updated, 0 failed, 0 pending"), "{status}");
    let events = rt.block_on(async { sim::events(&sim::operator(&pki, &[server.addr()], 1).await).await });
    let how = events.iter().find_map(|e| {
        (e.device == "twin-1" && e.release == "counter-9.0.0" && e.kind == trellis_fleet::EventKind::Downloaded)
            .then(|| e.reason.clone())
            .flatten()
    });
    let app_root = how.as_deref().and_then(|h| taken_by_root(h, "counter")).map(|t| t.root);
    let app_root = app_root.unwrap_or_else(|| panic!("the twin fetched counter by its piece root: {how:?}"));
    // Its pieces stay while it runs that file, for the twin's peers.
    assert_eq!(device.sh("ls /data/trellis/artifacts")?.trim(), app_root, "the app's pieces are kept");

    // Firmware whose runtime provides app interface 0.1.1 (an older line than the one the twin's
    // apps were built for): the twin refuses it before fetching a byte, naming its apps.
    let older = make_bundle("older.raucb", "fleet-old", Some("0.1.1"));
    let said = fleet(&[
        "release",
        "create",
        "os-fleet-old",
        "--key",
        s(&release_key),
        "--bundle",
        s(&older),
        "--board",
        BOARD,
    ]);
    assert!(said.contains("published release os-fleet-old (0 app(s), firmware)"), "{said}");
    fleet(&["pin", "os-fleet-old", "--device", "twin-1"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let refused = loop {
        let rows: Value = serde_json::from_str(&fleet(&["devices", "--json"])).expect("JSON");
        let me = rows.as_array().and_then(|r| r.iter().find(|d| d["device"] == "twin-1")).cloned().expect("twin-1");
        if me["reported"]["target"] == "os-fleet-old" && me["reported"]["phase"] == "failed" {
            break me["reported"]["error"].as_str().unwrap_or_default().to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "twin-1 did not refuse os-fleet-old: {me}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        refused.contains("its firmware provides app interface 0.1.1")
            && refused.contains("counter 9.0.0 (built for 0.1.2)")
            && refused.contains("blinky 1.0.0 (built for 0.1.2)"),
        "{refused}"
    );
    assert_eq!(device.sh("ls -A /data/trellis/firmware 2>/dev/null || true")?.trim(), "", "nothing of it fetched");
    fleet(&["unpin", "--device", "twin-1"]);

    // The same interface, released with a version of every installed app built for 0.1.1 (the
    // running 0.1.2 runtime runs them too): the twin installs the apps, then the firmware. It is
    // given the bundle's piece root, and RAUC streams it from the site's asset origin through the
    // runtime (each block checked against the signed root); the trial boot commits it.
    let mut create = vec!["release", "create", "os-fleet-2", "--key", s(&release_key), "--bundle", s(&bundle)];
    for app in &fitting {
        create.extend(["--app", s(app)]);
    }
    create.extend(["--board", BOARD]);
    let said = fleet(&create);
    assert!(said.contains("published release os-fleet-2 (6 app(s), firmware)"), "{said}");
    let said =
        fleet(&["deploy", "os-fleet-2", "--group", "north", "--waves", "1,100%", "--soak-s", "0", "--errors", "50"]);
    let id = rollout_id(&said);
    for app in EXAMPLES {
        device.seen(&format!("app running app=\"{app}\" version=9.1.0"), BOOT_TIMEOUT)?;
    }
    let mut device = twin.restarted(device, Duration::from_secs(400))?;
    assert_eq!(device.partition, 3, "the trial boot runs slot B");
    device.wait_apps_running(&EXAMPLES)?;
    for app in EXAMPLES {
        device.seen(&format!("app running app=\"{app}\" version=9.1.0"), BOOT_TIMEOUT)?;
    }
    device.seen("phase=Committed", BOOT_TIMEOUT)?;
    op.wait_rollout(&id, "done", Duration::from_secs(180))?;
    let rows: Value = serde_json::from_str(&fleet(&["devices", "--json"])).expect("JSON");
    let me = rows.as_array().and_then(|r| r.iter().find(|d| d["device"] == "twin-1")).expect("twin-1");
    let r = &me["reported"];
    assert_eq!(
        (r["release"].as_str(), r["slot"].as_str(), r["firmware"].as_str()),
        (Some("os-fleet-2"), Some("B"), Some("fleet-2")),
        "{me}"
    );
    assert_eq!(r["healthy"], true, "{me}");
    let table = fleet(&["devices"]);
    assert!(
        table.lines().any(|l| l.starts_with("twin-1") && l.contains("os-fleet-2") && l.contains("healthy")),
        "{table}"
    );
    device.wait_console()?;
    let kept = device.sh("find /data/trellis/firmware -type f 2>/dev/null | wc -l")?;
    assert_eq!(kept.trim(), "0", "no copy of the bundle was kept");
    let events = rt.block_on(async { sim::events(&sim::operator(&pki, &[server.addr()], 1).await).await });
    let hows: Vec<&str> = events
        .iter()
        .filter(|e| e.device == "twin-1" && e.release == "os-fleet-2")
        .filter_map(|e| e.reason.as_deref())
        .collect();
    // The firmware's root, from the install's event (the apps' download was announced before it).
    let root = hows.iter().find_map(|how| {
        let (_, root) = how.split_once("firmware streamed as asset:").filter(|_| !how.contains("whole"))?;
        root.split([',', ')']).next()
    });
    let root = root.unwrap_or_else(|| panic!("the twin streamed the firmware by its piece root: {hows:#?}"));
    // What RAUC read of it stays, for the twin's peers (`[assets] share`).
    assert_eq!(device.sh("ls /data/trellis/bundles")?.trim(), root, "the streamed bundle's blocks alone are kept");
    // And the pieces of the apps it runs, taken by their roots from the site's origin, across
    // the reboot; those of counter 9.0.0, which it no longer runs, are gone.
    let mut app_roots: Vec<String> = EXAMPLES
        .iter()
        .map(|app| {
            let taken = hows.iter().flat_map(|how| how.split("; ")).find_map(|how| taken_by_root(how, app));
            taken.unwrap_or_else(|| panic!("the twin took {app} 9.1.0 by its piece root: {hows:#?}")).root
        })
        .collect();
    app_roots.sort();
    assert!(!app_roots.contains(&app_root));
    let kept = device.sh("ls /data/trellis/artifacts")?;
    assert_eq!(kept.split_whitespace().collect::<Vec<_>>(), app_roots, "the running apps' pieces are kept");
    drop(sims);
    drop(server);
    Ok(())
}
