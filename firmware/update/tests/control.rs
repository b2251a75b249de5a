//! The control socket: a real Unix socket between the server and the client.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use trellis_update::control::{self, AppSummary, DeviceStatus, Handler, Reply, Request};
use trellis_update::{FirmwareStatus, Phase, Progress, UpdateRecord};

#[derive(Debug)]
struct Device(std::sync::Mutex<bool>);

impl Handler for Device {
    fn status(&self) -> DeviceStatus {
        DeviceStatus {
            uptime_ms: 1234,
            firmware: FirmwareStatus {
                slots: None,
                slots_error: Some("RAUC's D-Bus service: not running".into()),
                operation: "idle".into(),
                progress: None,
                last_update: None,
            },
            apps: vec![AppSummary {
                name: "blinky".into(),
                version: "1.0.0".into(),
                state: "running".into(),
                restarts: 0,
                last_error: None,
                memory_bytes: 1_179_648,
                cpu_ms: 42,
                calls: 7,
            }],
        }
    }
    fn install(&self, bundle: &Path, progress: &mut dyn FnMut(&Progress)) -> Result<UpdateRecord, String> {
        progress(&Progress { percent: 40, message: "Copying image".into() });
        if bundle.ends_with("bad.raucb") {
            return Err("RAUC: signature verification failed".into());
        }
        Ok(UpdateRecord {
            bundle: bundle.display().to_string(),
            version: Some("2.0.0".into()),
            from: "A".into(),
            to: Some("B".into()),
            phase: Phase::Trial,
            reason: None,
            boot_id: "b".into(),
            started: 1,
            changed: 2,
        })
    }
    fn installed(&self) {
        *self.0.lock().unwrap() = true;
    }
}

fn replies(sock: &Path, req: &Request) -> Vec<Reply> {
    let mut out = Vec::new();
    control::request(sock, req, |r| out.push(r)).unwrap();
    out
}

#[test]
fn status_and_install_round_trip_over_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run/control.sock");
    std::fs::create_dir_all(dir.path().join("run")).unwrap();
    std::fs::write(&sock, b"stale").unwrap();
    let device = Arc::new(Device(std::sync::Mutex::new(false)));
    control::serve(&sock, device.clone()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o600);

    let r = replies(&sock, &Request::Status);
    let [Reply::Status(s)] = r.as_slice() else { panic!("{r:?}") };
    assert_eq!((s.uptime_ms, s.apps[0].name.as_str()), (1234, "blinky"));

    let r = replies(&sock, &Request::Install { bundle: "/data/update.raucb".into() });
    assert!(matches!(&r[0], Reply::Progress(p) if p.percent == 40), "{r:?}");
    assert!(matches!(&r[1], Reply::Installed(rec) if rec.to.as_deref() == Some("B")), "{r:?}");
    // The reboot is asked for after the reply, once the client has gone.
    let asked = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        *device.0.lock().unwrap()
    });
    assert!(asked, "no reboot after a successful install");

    *device.0.lock().unwrap() = false;
    let r = replies(&sock, &Request::Install { bundle: "/data/bad.raucb".into() });
    assert!(matches!(r.last(), Some(Reply::Error(e)) if e.contains("signature")), "{r:?}");
    assert!(!*device.0.lock().unwrap(), "no reboot after a refused bundle");
}

#[test]
fn a_bad_request_gets_an_error_naming_it_and_a_missing_socket_is_named() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("control.sock");
    control::serve(&sock, Arc::new(Device(std::sync::Mutex::new(false)))).unwrap();
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.write_all(b"{\"request\":\"reformat\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    assert!(line.contains("bad request") && line.contains("reformat"), "{line}");

    let e = control::request(&dir.path().join("nope.sock"), &Request::Status, |_| {}).unwrap_err();
    assert!(e.to_string().contains("nope.sock"), "{e}");
}
