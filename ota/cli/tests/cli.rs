//! The `trellis` command as a user runs it.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod support {
    pub mod lan;
}

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::lan::{Node, TRELLIS, noise};
use trellis_appfmt::{generate_key, write_key_pair};
use trellis_assets::{BlockStore, Index};
use trellis_fleet::Release;

fn trellis(args: &[&str]) -> Output {
    Command::new(TRELLIS).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn component(name: &str) -> PathBuf {
    let p = repo().join(format!("wasm-apps/target/wasm32-wasip2/release/{name}.wasm"));
    assert!(p.exists(), "{}: build the apps first with `make apps`", p.display());
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn help_everywhere() {
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["app", "--help"],
        &["app", "pack", "--help"],
        &["app", "sign", "--help"],
        &["app", "precompile", "--help"],
        &["app", "inspect", "--help"],
        &["app", "keygen", "--help"],
        &["device", "status", "--help"],
        &["device", "update", "--help"],
        &["fleet", "--help"],
        &["fleet", "deploy", "--help"],
        &["fleet", "release", "create", "--help"],
        &["fleet", "rollout", "status", "--help"],
        &["fleet", "server-config", "--help"],
    ] {
        let o = trellis(args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("Usage:"), "{args:?}");
    }
}

#[test]
fn keygen_pack_sign_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(trellis(&["app", "keygen", "--dir", s(d), "--name", "dev"]).status.success());
    let app = d.join("counter.wasm");
    let manifest = repo().join("wasm-apps/examples/counter/trellis.toml");
    let o = trellis(&[
        "app",
        "pack",
        s(&component("counter")),
        "-m",
        s(&manifest),
        "--version",
        "1.2.3",
        "--set",
        "period-ms=5",
        "-o",
        s(&app),
    ]);
    assert!(o.status.success(), "{}", text(&o));

    let o = trellis(&["app", "inspect", s(&app)]);
    let out = text(&o);
    assert!(out.contains("app:         counter 1.2.3"), "{out}");
    assert!(out.contains("signature:   none"), "{out}");
    assert!(out.contains("config:      period-ms = 5"), "{out}");
    assert!(out.contains("trellis:app/kv@0.1.2"), "{out}");

    let o = trellis(&["app", "sign", s(&app), "--key", s(&d.join("dev.key"))]);
    assert!(o.status.success(), "{}", text(&o));
    let o = trellis(&["app", "inspect", s(&app), "--trust", s(&d.join("dev.pub")), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["manifest"]["version"], "1.2.3");
    assert!(v["verified"]["key"].is_string(), "{v}");

    let code = v["code"]["digest"].as_str().unwrap().to_owned();
    assert!(code.starts_with("sha256:") && v["code"]["matches"] == true, "{v}");
    assert!(out.contains(&format!("code:        {code} (matches the manifest)")), "{out}");

    // A flipped bit in the code: inspect shows both digests and fails.
    let mut bytes = std::fs::read(&app).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x10;
    let damaged = d.join("damaged.wasm");
    std::fs::write(&damaged, &bytes).unwrap();
    let o = trellis(&["app", "inspect", s(&damaged)]);
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("DOES NOT MATCH") && out.contains(&format!("packed as {code}")), "{out}");

    // Verification against another key fails, and says why.
    assert!(trellis(&["app", "keygen", "--dir", s(d), "--name", "other"]).status.success());
    let o = trellis(&["app", "inspect", s(&app), "--trust", s(&d.join("other.pub"))]);
    assert!(!o.status.success());
    assert!(text(&o).contains("not in the trust list"), "{}", text(&o));
}

/// `trellis app precompile` adds the Pi's native code to an app file; the
/// code digest stays, `inspect` shows it, and signing covers it.
#[test]
fn precompile_for_the_pi_then_sign() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(trellis(&["app", "keygen", "--dir", s(d), "--name", "dev"]).status.success());
    let (app, pi) = (d.join("blinky.wasm"), d.join("pi/blinky.wasm"));
    std::fs::create_dir(d.join("pi")).unwrap();
    let manifest = repo().join("wasm-apps/examples/blinky/trellis.toml");
    assert!(trellis(&["app", "pack", s(&component("blinky")), "-m", s(&manifest), "-o", s(&app)]).status.success());
    let o = trellis(&["app", "precompile", s(&app), "-o", s(&pi)]);
    let out = text(&o);
    assert!(o.status.success() && out.contains("for aarch64-unknown-linux-gnu") && out.contains("unsigned"), "{out}");
    assert!(trellis(&["app", "sign", s(&pi), "--key", s(&d.join("dev.key"))]).status.success());
    let o = trellis(&["app", "inspect", s(&pi), "--trust", s(&d.join("dev.pub")), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let plain: serde_json::Value =
        serde_json::from_slice(&trellis(&["app", "inspect", s(&app), "--json"]).stdout).unwrap();
    assert_eq!(v["code"]["digest"], plain["code"]["digest"], "precompiling changed the code digest");
    assert_eq!(v["native"]["target"], "aarch64-unknown-linux-gnu", "{v}");
    assert_eq!(v["native"]["for-this-code"], true, "{v}");
    assert!(v["native"]["bytes"].as_u64().unwrap() > 10_000, "{v}");
    assert!(v["verified"]["key"].is_string(), "{v}");
    assert!(plain["native"].is_null(), "{plain}");

    let o = trellis(&["app", "precompile", s(&app), "--target", "mips-nowhere", "-o", s(&pi)]);
    assert!(!o.status.success() && text(&o).contains("mips-nowhere"), "{}", text(&o));
}

#[test]
fn errors_name_what_was_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("trellis.toml");
    std::fs::write(&bad, "name = \"Bad Name\"\nversion = \"1.0.0\"\n").unwrap();
    let o = trellis(&["app", "pack", s(&component("counter")), "-m", s(&bad), "-o", s(&dir.path().join("x.wasm"))]);
    assert!(!o.status.success());
    assert!(text(&o).contains("manifest field `name`"), "{}", text(&o));

    let o = trellis(&["app", "sign", s(&component("counter")), "--key", "/nonexistent/dev.key"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("/nonexistent/dev.key"), "{}", text(&o));

    let o = trellis(&["app", "inspect", s(&component("counter"))]);
    assert!(!o.status.success());
    assert!(text(&o).contains("trellis app pack"), "a bare component says how to make an app: {}", text(&o));
}

#[test]
fn run_streams_app_logs_and_messages() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = repo().join("wasm-apps/examples/publisher/trellis.toml");
    let app = dir.path().join("publisher.wasm");
    let o = trellis(&[
        "app",
        "pack",
        s(&component("publisher")),
        "-m",
        s(&manifest),
        "--set",
        "period-ms=100",
        "-o",
        s(&app),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = trellis(&["run", s(dir.path()), "--seconds", "3"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("publishing on demo/ticks every 100 ms"), "{out}");
    assert!(out.contains("publisher demo/ticks: 3"), "{out}");
}

#[test]
fn run_one_app_file_runs_only_that_app() {
    let dir = tempfile::tempdir().unwrap();
    for app in ["publisher", "counter"] {
        let manifest = repo().join(format!("wasm-apps/examples/{app}/trellis.toml"));
        let out = dir.path().join(format!("{app}.wasm"));
        let o = trellis(&["app", "pack", s(&component(app)), "-m", s(&manifest), "-o", s(&out)]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = trellis(&["run", s(&dir.path().join("publisher.wasm")), "--seconds", "2"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("publishing on demo/ticks"), "{out}");
    assert!(!out.contains("counting from"), "counter must not run: {out}");
}

/// A real bundle made by RAUC's host tool with a development PKI from scripts/dev-keys.sh.
fn make_bundle(dir: &Path) -> PathBuf {
    let keys = dir.join("keys");
    let ok = Command::new(repo().join("scripts/dev-keys.sh")).arg(&keys).output().unwrap();
    assert!(ok.status.success(), "{}", text(&ok));
    let content = dir.join("content");
    std::fs::create_dir_all(&content).unwrap();
    // Incompressible, so the bundle's squashfs has a size RAUC accepts.
    let mut x: u32 = 0x9e37_79b9;
    let image: Vec<u8> = (0..256 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect();
    std::fs::write(content.join("rootfs.img"), image).unwrap();
    std::fs::write(
        content.join("manifest.raucm"),
        "[update]\ncompatible=trellis-test\nversion=1.2.3\ndescription=a test\n\n[bundle]\nformat=verity\n\n\
         [image.rootfs]\nfilename=rootfs.img\n",
    )
    .unwrap();
    let out = dir.join("update.raucb");
    let made = Command::new("rauc")
        .arg("bundle")
        .arg(format!("--cert={}", keys.join("signing.cert.pem").display()))
        .arg(format!("--key={}", keys.join("signing.key.pem").display()))
        .arg(&content)
        .arg(&out)
        .output()
        .expect("rauc (make setup installs it)");
    assert!(made.status.success(), "{}", text(&made));
    out
}

#[test]
fn bundle_inspect_shows_a_signed_bundle_and_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = make_bundle(dir.path());
    let keyring = dir.path().join("keys/ca.cert.pem");

    let o = trellis(&["bundle", "inspect", s(&bundle), "--keyring", s(&keyring)]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    for want in ["trellis-test", "1.2.3", "rootfs.img", "verified, signed by", "Trellis development bundle signing"] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let o = trellis(&["bundle", "inspect", s(&bundle), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["images"][0]["class"], "rootfs");
    assert_eq!(v["images"][0]["size"], 256 * 1024);

    // Signed by a CA the device does not trust.
    let other = dir.path().join("other");
    assert!(Command::new(repo().join("scripts/dev-keys.sh")).arg(&other).output().unwrap().status.success());
    let o = trellis(&["bundle", "inspect", s(&bundle), "--keyring", s(&other.join("ca.cert.pem"))]);
    assert!(!o.status.success());
    assert!(text(&o).contains("update.raucb") && text(&o).contains("signature"), "{}", text(&o));

    // Truncated.
    let bytes = std::fs::read(&bundle).unwrap();
    let cut = dir.path().join("cut.raucb");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let o = trellis(&["bundle", "inspect", s(&cut), "--keyring", s(&keyring)]);
    assert!(!o.status.success());
    assert!(text(&o).contains("cut.raucb"), "{}", text(&o));
}

/// A device's runtime answering on a control socket (the protocol and server of
/// the device; the twin runs the real runtime behind it: tests/twin/tests/update.rs).
fn fake_device() -> trellis_control::testing::FakeDevice {
    use trellis_control::testing::FakeDevice;
    use trellis_control::{AppSummary, DeviceStatus, FirmwareStatus, Phase, Progress, SlotInfo, Slots, UpdateRecord};
    let slot = |name: &str, bootname: &str, state: &str, version: Option<&str>| SlotInfo {
        name: name.into(),
        bootname: bootname.into(),
        state: state.into(),
        boot_status: Some("good".into()),
        version: version.map(Into::into),
    };
    let status = DeviceStatus {
        uptime_ms: 3_723_000,
        firmware: FirmwareStatus {
            slots: Some(Slots {
                booted: "A".into(),
                primary: Some("A".into()),
                compatible: "trellis-qemu-aarch64".into(),
                slots: vec![slot("rootfs.0", "A", "booted", None), slot("rootfs.1", "B", "inactive", Some("2.0.0"))],
            }),
            slots_error: None,
            operation: "idle".into(),
            progress: None,
            last_update: Some(UpdateRecord {
                bundle: "/data/u.raucb".into(),
                version: Some("2.0.0".into()),
                from: "A".into(),
                to: Some("B".into()),
                phase: Phase::RolledBack,
                reason: Some("not healthy within 20 s of boot: blinky: not loaded".into()),
                boot_id: "x".into(),
                started: 1,
                changed: 2,
                resumed: 0,
            }),
        },
        apps: vec![AppSummary {
            restarts: 2,
            memory_bytes: 1_179_648,
            cpu_ms: 42,
            calls: 7,
            ..FakeDevice::app("counter", "1.0.0")
        }],
    };
    let mut device = FakeDevice::new(std::env::temp_dir()).with_status(status);
    device.progress = vec![Progress { percent: 10, message: "Checking bundle".into() }];
    device.refuse_firmware.store(true, std::sync::atomic::Ordering::SeqCst);
    device
}

#[test]
fn device_status_and_update_talk_to_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("control.sock");
    trellis_control::socket::serve(&sock, std::sync::Arc::new(fake_device())).unwrap();
    let o = trellis(&["device", "status", "--socket", s(&sock)]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for want in [
        "uptime:      1:02:03",
        "booted:      slot A (factory)",
        "slot B (rootfs.1): inactive, good, 2.0.0",
        "last update: rolled back: 2.0.0 A -> B (/data/u.raucb)",
        "why:       not healthy within 20 s of boot: blinky: not loaded",
        "counter      1.0.0      running      1.1 MiB      42 ms cpu, 2 restarts",
    ] {
        assert!(out.contains(want), "{want:?} in\n{out}");
    }
    let o = trellis(&["device", "status", "--json", "--socket", s(&sock)]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["firmware"]["last-update"]["phase"], "rolled-back");

    let o = trellis(&["device", "update", "/data/bad.raucb", "--socket", s(&sock)]);
    let out = text(&o);
    assert!(!o.status.success());
    assert!(
        out.contains(" 10% Checking bundle") && out.contains("update failed: RAUC: /data/bad.raucb: signature"),
        "{out}"
    );

    let o = trellis(&["device", "status", "--socket", s(&dir.path().join("none.sock"))]);
    assert!(!o.status.success() && text(&o).contains("none.sock"), "{}", text(&o));
}

/// A free port on loopback (bound, then let go).
fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn a_device_that_rolled_a_release_back_stops_sharing_it_and_its_peers_are_told_why() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fix = noise(1 << 20, 0x2545_F491_4F6C_DD1D);
    std::fs::create_dir_all(d.join("origin")).unwrap();
    std::fs::write(d.join("origin/fix.wasm"), &fix).unwrap();
    let key = generate_key();
    let (_, public) = write_key_pair(&key, d, "release").unwrap();
    let release = Release::new("fix-1.0.1", "qemu-aarch64", "0.1.2").with_app("fix", "1.0.1", &fix).signed(&key);
    let id = release.pieces("fix").unwrap().to_string();
    std::fs::create_dir_all(d.join("releases")).unwrap();
    std::fs::write(d.join("releases/fix-1.0.1.json"), release.to_json()).unwrap();

    let origin =
        Node::spawn(Command::new(TRELLIS).args(["asset", "serve", s(&d.join("origin")), "--listen", "127.0.0.1:0"]));
    let origin_addr = origin.wait_for("serving on ", "the origin").trim_start_matches("serving on ").to_owned();
    let shared = free_port();
    let device =
        Node::spawn(Command::new(TRELLIS).args(["asset", "sync", "--releases", s(&d.join("releases"))]).args([
            "--trust",
            s(&public),
            "--store",
            s(&d.join("a")),
            "--origin",
            &origin_addr,
            "--share",
            &shared,
            "--linger",
        ]));
    let fetched = device.report("the device's fetch");
    assert_eq!(
        (fetched["release"].as_str(), fetched["artifact"].as_str()),
        (Some("fix-1.0.1"), Some("fix")),
        "{fetched}"
    );

    // The trial boot failed: the installer says so beside the manifest.
    std::fs::write(d.join("releases/fix-1.0.1.rolled-back"), "the trial boot was not healthy\n").unwrap();
    let rolled = device.report("the device's rollback");
    assert_eq!(rolled["rolled-back"], "the trial boot was not healthy", "{rolled}");
    assert_eq!(rolled["withdrawn"], serde_json::json!(["fix-1.0.1/fix"]), "{rolled}");

    // A peer that asks is told, and takes the release from the origin instead.
    let out =
        trellis(&["asset", "fetch", &id, "--origin", &origin_addr, "--peer", &shared, "--store", s(&d.join("b"))]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["rolled-back"],
        serde_json::json!([{"peer": shared, "why": "the trial boot was not healthy"}]),
        "{report}"
    );
    let index = Index::of(&fix);
    assert_eq!(report["from-origin"].as_u64(), Some(u64::from(index.count())), "{report}");
    let store = BlockStore::open(&d.join("b"), &index.id(), &index).unwrap();
    assert!(store.read(0, index.size).unwrap() == fix, "the peer holds the publisher's bytes");
}
