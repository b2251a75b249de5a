//! The control socket: a real Unix socket between the server and the client.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use trellis_control::socket::{self, Reply, Request};
use trellis_control::testing::FakeDevice;
use trellis_control::{AppSummary, DeviceStatus, FirmwareStatus, Progress};

fn device(dir: &Path) -> FakeDevice {
    let mut firmware = FirmwareStatus::idle();
    firmware.slots_error = Some("RAUC's D-Bus service: not running".into());
    let apps = vec![AppSummary { memory_bytes: 1_179_648, cpu_ms: 42, calls: 7, ..FakeDevice::app("blinky", "1.0.0") }];
    let mut device = FakeDevice::new(dir).with_status(DeviceStatus { uptime_ms: 1234, firmware, apps });
    device.progress = vec![Progress { percent: 40, message: "Copying image".into() }];
    device
}

fn replies(sock: &Path, req: &Request) -> Vec<Reply> {
    let mut out = Vec::new();
    socket::request(sock, req, |r| out.push(r)).unwrap();
    out
}

#[test]
fn status_and_install_round_trip_over_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run/control.sock");
    std::fs::create_dir_all(dir.path().join("run")).unwrap();
    std::fs::write(&sock, b"stale").unwrap();
    let device = Arc::new(device(dir.path()));
    socket::serve(&sock, device.clone()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o600);

    let r = replies(&sock, &Request::Status);
    let [Reply::Status(s)] = r.as_slice() else { panic!("{r:?}") };
    assert_eq!((s.uptime_ms, s.apps[0].name.as_str()), (1234, "blinky"));

    let bundle = dir.path().join("update.raucb");
    std::fs::write(&bundle, b"BUNDLE good").unwrap();
    let r = replies(&sock, &Request::Install { bundle: bundle.into() });
    assert!(matches!(&r[0], Reply::Progress(p) if p.percent == 40), "{r:?}");
    assert!(matches!(&r[1], Reply::Installed(rec) if rec.to.as_deref() == Some("B")), "{r:?}");
    // The reboot is asked for after the reply, once the client has gone.
    let asked = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        device.rebooted_into_trial.load(Ordering::SeqCst)
    });
    assert!(asked, "no reboot after a successful install");

    device.rebooted_into_trial.store(false, Ordering::SeqCst);
    device.refuse_firmware.store(true, Ordering::SeqCst);
    let r = replies(&sock, &Request::Install { bundle: std::path::Path::new("/data/bad.raucb").into() });
    assert!(matches!(r.last(), Some(Reply::Error(e)) if e.contains("signature")), "{r:?}");
    assert!(!device.rebooted_into_trial.load(Ordering::SeqCst), "no reboot after a refused bundle");
}

#[test]
fn a_bad_request_gets_an_error_naming_it_and_a_missing_socket_is_named() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("control.sock");
    socket::serve(&sock, Arc::new(device(dir.path()))).unwrap();
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.write_all(b"{\"request\":\"reformat\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    assert!(line.contains("bad request") && line.contains("reformat"), "{line}");

    let e = socket::request(&dir.path().join("nope.sock"), &Request::Status, |_| {}).unwrap_err();
    assert!(e.to_string().contains("nope.sock"), "{e}");
}

#[test]
fn apps_stop_start_and_remove_over_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("control.sock");
    let device = Arc::new(device(dir.path()));
    socket::serve(&sock, device.clone()).unwrap();
    std::fs::write(dir.path().join("blinky.wasm"), b"APP blinky 1.0.0").unwrap();

    let r = replies(&sock, &Request::StopApp { app: "blinky".into() });
    assert!(matches!(r.as_slice(), [Reply::App(a)] if a.name == "blinky" && a.state == "stopped"), "{r:?}");
    let r = replies(&sock, &Request::StartApp { app: "blinky".into() });
    assert!(matches!(r.as_slice(), [Reply::App(a)] if a.state == "running"), "{r:?}");
    // An unknown app, and a name that is none, are named in the error.
    let r = replies(&sock, &Request::StopApp { app: "nope".into() });
    assert!(matches!(r.as_slice(), [Reply::Error(e)] if e == "no app nope"), "{r:?}");
    let r = replies(&sock, &Request::StartApp { app: "../x".into() });
    assert!(matches!(r.as_slice(), [Reply::Error(e)] if e.contains("\"../x\" is not an app name")), "{r:?}");
    let r = replies(&sock, &Request::RemoveApp { app: "blinky".into() });
    assert!(matches!(r.as_slice(), [Reply::Removed(a)] if a == "blinky"), "{r:?}");
    assert!(!dir.path().join("blinky.wasm").exists());
    // The wire format: kebab-case requests.
    let text = serde_json::to_string(&Request::StopApp { app: "blinky".into() }).unwrap();
    assert_eq!(text, r#"{"request":"stop-app","app":"blinky"}"#);
}
