//! The network commands as an operator runs them, against the real API
//! server (mutual TLS on loopback, certificates made here) in front of a
//! device whose firmware update rolls back: what the CLI prints and how it
//! fails.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::process::{Command, Output};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use trellis_api::ApiConfig;
use trellis_control::testing::FakeDevice;
use trellis_control::{AppSummary, DeviceStatus, FirmwareStatus, Progress};

/// A device: one app, and a firmware update that installs and then, after the
/// trial reboot, is found rolled back.
fn fake_device() -> FakeDevice {
    let app = AppSummary { memory_bytes: 1 << 20, cpu_ms: 5, calls: 3, ..FakeDevice::app("blinky", "1.0.0") };
    let status = DeviceStatus { uptime_ms: 61_000, firmware: FirmwareStatus::idle(), apps: vec![app] };
    let mut device = FakeDevice::new(std::env::temp_dir())
        .with_status(status)
        .with_firmware(std::env::temp_dir().join(format!("trellis-cli-remote-{}", std::process::id())));
    device.progress = vec![
        Progress { percent: 50, message: "Copying image".into() },
        Progress { percent: 100, message: "Installing done.".into() },
    ];
    device.rolls_back = Some("not healthy within 60 s of boot: blinky: not loaded".into());
    device.recent_logs =
        vec![r#"{"time": 3723.5, "app": "blinky", "level": "info", "message": "blinking GPIO 17"}"#.into()];
    device
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    (p.self_signed(&key).unwrap(), key)
}

fn leaf(ca: &(rcgen::Certificate, KeyPair), server: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    p.extended_key_usages =
        vec![if server { ExtendedKeyUsagePurpose::ServerAuth } else { ExtendedKeyUsagePurpose::ClientAuth }];
    (p.signed_by(&key, &ca.0, &ca.1).unwrap().pem(), key.serialize_pem())
}

struct Setup {
    dir: tempfile::TempDir,
    address: String,
}

impl Setup {
    /// A device's API on loopback and the operator's PKI directory.
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let w = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).unwrap();
            dir.path().join(name)
        };
        let (devices, operators) = (ca("device CA"), ca("operator CA"));
        let (device_cert, device_key) = leaf(&devices, true);
        let (operator_cert, operator_key) = leaf(&operators, false);
        w("device-ca.pem", &devices.0.pem());
        w("operator.pem", &operator_cert);
        w("operator.key", &operator_key);
        let mut config = ApiConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            w("operator-ca.pem", &operators.0.pem()),
            w("device.pem", &device_cert),
            w("device.key", &device_key),
        );
        (config.max_connections, config.timeout_s) = (4, 10);
        (config.max_app_bytes, config.max_bundle_bytes, config.announce) = (1 << 20, 1 << 20, false);
        let server = trellis_api::serve(&config, Arc::new(fake_device())).unwrap();
        Self { address: server.addr().to_string(), dir }
    }

    fn trellis(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_trellis"))
            .args(args)
            .env("TRELLIS_CONFIG", self.dir.path().join("devices.toml"))
            .env_remove("TRELLIS_DEVICE")
            .output()
            .unwrap()
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn an_operator_adds_a_device_reads_it_and_sees_an_update_roll_back() {
    let s = Setup::start();
    let pki = s.dir.path().to_str().unwrap();
    let o = s.trellis(&["status"]);
    assert!(
        !o.status.success() && text(&o).contains("no device yet: add one with `trellis device add"),
        "{}",
        text(&o)
    );
    let o = s.trellis(&["device", "add", "lab", &s.address, "--pki", pki, "--server-name", "localhost"]);
    assert!(o.status.success(), "{}", text(&o));

    let o = s.trellis(&["status"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("device:      lab (") && out.contains("blinky       1.0.0      running      1.0 MiB"),
        "{out}"
    );
    let o = s.trellis(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["apps"][0]["memory-bytes"], 1 << 20);
    let o = s.trellis(&["devices", "--browse-s", "0"]);
    assert!(text(&o).contains("* lab") && text(&o).contains("up 0:01:01, 1/1 apps running"), "{}", text(&o));
    let o = s.trellis(&["logs"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "01:02:03.500 blinky       info  blinking GPIO 17\n");

    // The device refuses the app: the CLI says why, in one line.
    let app = s.dir.path().join("blinky.wasm");
    std::fs::write(&app, b"not an app").unwrap();
    let o = s.trellis(&["push", app.to_str().unwrap()]);
    assert!(!o.status.success() && text(&o).contains("is not an app file"), "{}", text(&o));

    // An update that installs, trial-boots and comes back rolled back.
    let bundle = s.dir.path().join("update.raucb");
    std::fs::write(&bundle, vec![7u8; 300_000]).unwrap();
    let o = s.trellis(&["update", bundle.to_str().unwrap(), "--wait-s", "30"]);
    let out = text(&o);
    assert!(!o.status.success(), "a rollback is a failure: {out}");
    assert!(out.contains("upload") && out.contains("100%"), "upload progress: {out}");
    assert!(out.contains("install  50% Copying image") && out.contains("installed 2.0.0 into slot B of lab"), "{out}");
    assert!(
        out.lines().last().unwrap_or("").contains("lab rolled back to slot A: not healthy within 60 s of boot"),
        "the last line says why: {out}"
    );

    // A URL: nothing uploaded, the device is given the URL to stream from.
    let o = s.trellis(&["update", "http://origin.lan:8080/v2.raucb", "--no-wait"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(!out.contains("upload"), "nothing was uploaded: {out}");
    assert!(out.contains("installed 2.0.0 into slot B of lab"), "{out}");
    let o = s.trellis(&["update", "http://", "--no-wait"]);
    assert!(!o.status.success() && text(&o).contains("is not a bundle URL"), "{}", text(&o));

    // Too large for the device: refused before the upload, with the device's reason.
    std::fs::write(&bundle, vec![7u8; 2 << 20]).unwrap();
    let o = s.trellis(&["update", bundle.to_str().unwrap(), "--no-wait"]);
    assert!(
        !o.status.success() && text(&o).contains("413") && text(&o).contains("limit for a firmware bundle"),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains("upload  ["), "nothing was uploaded: {}", text(&o));

    // A device that is not there.
    let o = s.trellis(&["device", "add", "gone", "127.0.0.1:1", "--pki", pki, "--server-name", "localhost"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = s.trellis(&["status", "-d", "gone"]);
    assert!(!o.status.success() && text(&o).contains("device gone: cannot reach 127.0.0.1:1"), "{}", text(&o));
    let o = s.trellis(&["device", "add", "x", &s.address, "--pki", "/nonexistent"]);
    assert!(!o.status.success() && text(&o).contains("/nonexistent/device-ca.pem: missing"), "{}", text(&o));
}

#[test]
fn an_operator_stops_and_starts_an_app_on_a_device_and_on_its_own_console() {
    let s = Setup::start();
    let pki = s.dir.path().to_str().unwrap();
    let o = s.trellis(&["device", "add", "lab", &s.address, "--pki", pki, "--server-name", "localhost"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = s.trellis(&["app", "stop", "blinky"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "blinky 1.0.0 is stopped on lab\n");
    let o = s.trellis(&["status"]);
    assert!(text(&o).contains("blinky       1.0.0      stopped"), "{}", text(&o));
    let o = s.trellis(&["app", "start", "blinky", "-d", "lab", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["name"].as_str(), v["state"].as_str()), (Some("blinky"), Some("running")), "{}", text(&o));
    // An unknown app is named, in one line.
    let o = s.trellis(&["app", "stop", "nope"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("stopping nope on lab: the device answered 404: no app nope"), "{}", text(&o));
    let o = s.trellis(&["app", "start", "../x"]);
    assert!(!o.status.success() && text(&o).contains("\"../x\" is not an app name"), "{}", text(&o));

    // On the device itself: the same through the runtime's control socket.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("control.sock");
    std::fs::write(dir.path().join("blinky.wasm"), "APP blinky 1.0.0").unwrap();
    trellis_control::socket::serve(
        &sock,
        Arc::new(FakeDevice::new(dir.path()).with_status(trellis_control::Device::status(&fake_device()))),
    )
    .unwrap();
    let local = |args: &[&str]| s.trellis(&[args, &["--socket", sock.to_str().unwrap()]].concat());
    let o = local(&["app", "stop", "blinky"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "blinky 1.0.0 is stopped on this device\n", "{}", text(&o));
    let o = local(&["app", "start", "blinky", "--json"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains(r#""state": "running""#), "{}", text(&o));
    let o = local(&["app", "remove", "blinky"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "blinky is removed from this device\n", "{}", text(&o));
    assert!(!dir.path().join("blinky.wasm").exists());
    let o = local(&["app", "stop", "blinky"]);
    assert!(!o.status.success() && text(&o).contains("stopping blinky: no app blinky"), "{}", text(&o));
}
