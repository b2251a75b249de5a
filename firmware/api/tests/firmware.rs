//! Firmware uploads, reboot and logs through the routes, against a device
//! whose "RAUC" installs a bundle that starts with `BUNDLE good` and refuses
//! anything else.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use trellis_api::http::parse_head;
use trellis_api::{Answer, Device, Response, Routes, Verdict};
use trellis_update::control::{DeviceStatus, Reply};
use trellis_update::{FirmwareStatus, Phase, Progress, UpdateRecord};

#[derive(Default)]
struct Fake {
    dir: Option<tempfile::TempDir>,
    /// What "RAUC" was given.
    installed_bytes: Mutex<Vec<String>>,
    rebooted_into_trial: AtomicBool,
    rebooted: AtomicBool,
    log: Mutex<Option<Sender<String>>>,
}

impl Device for Fake {
    fn status(&self) -> DeviceStatus {
        let firmware = FirmwareStatus::idle();
        DeviceStatus { uptime_ms: 0, firmware, apps: Vec::new() }
    }
    fn metrics(&self) -> String {
        String::new()
    }
    fn apps_dir(&self) -> PathBuf {
        std::env::temp_dir()
    }
    fn verify_app(&self, _: &str, _: &[u8]) -> Result<String, String> {
        Err("no apps here".into())
    }
    fn watch_app(&self, _: &str) -> Box<dyn Verdict> {
        unreachable!()
    }
    fn firmware_dir(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.path().join("firmware"))
    }
    fn install_firmware(&self, bundle: &Path, progress: &mut dyn FnMut(&Progress)) -> Result<UpdateRecord, String> {
        let text = std::fs::read_to_string(bundle).map_err(|e| e.to_string())?;
        self.installed_bytes.lock().unwrap().push(text.clone());
        if !text.starts_with("BUNDLE good") {
            return Err(format!("{}: signature verification failed", bundle.display()));
        }
        for (percent, message) in [(0, "Installing"), (50, "Copying image"), (100, "Installing done.")] {
            progress(&Progress { percent, message: message.into() });
        }
        Ok(UpdateRecord {
            bundle: bundle.display().to_string(),
            version: Some("2.0.0".into()),
            from: "A".into(),
            to: Some("B".into()),
            phase: Phase::Trial,
            reason: None,
            boot_id: "b1".into(),
            started: 1,
            changed: 2,
        })
    }
    fn installed(&self) {
        self.rebooted_into_trial.store(true, Ordering::SeqCst);
    }
    fn reboot(&self) -> Result<(), String> {
        self.rebooted.store(true, Ordering::SeqCst);
        Ok(())
    }
    fn logs(&self) -> (Vec<String>, Receiver<String>) {
        let (tx, rx) = channel();
        *self.log.lock().unwrap() = Some(tx);
        (vec![r#"{"app":"blinky","message":"old"}"#.into()], rx)
    }
}

fn setup() -> (Arc<Fake>, Routes) {
    let fake = Arc::new(Fake { dir: Some(tempfile::tempdir().unwrap()), ..Fake::default() });
    (fake.clone(), Routes::new(fake, 1 << 20).with_bundle_limit(1000))
}

fn send(routes: &Routes, raw: &[u8]) -> Response {
    let (head, used) = parse_head(raw).unwrap().unwrap();
    let mut body: &[u8] = &raw[used..];
    routes.route(&head, &mut body as &mut dyn Read)
}

fn put(body: &str, length: usize) -> Vec<u8> {
    format!("PUT /v1/firmware HTTP/1.1\r\nContent-Length: {length}\r\n\r\n{body}").into_bytes()
}

fn text(a: &Answer) -> String {
    String::from_utf8_lossy(&a.body).into_owned()
}

fn replies(a: &Answer) -> Vec<Reply> {
    text(a).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn files(fake: &Fake) -> Vec<String> {
    let dir = fake.firmware_dir().unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_bundle_is_stored_whole_installed_with_progress_then_removed() {
    let (fake, routes) = setup();
    let a = send(&routes, &put("BUNDLE good v2", 14)).collect().unwrap();
    assert_eq!((a.status, a.content_type.as_str()), (200, "application/x-ndjson"));
    let r = replies(&a);
    assert_eq!(r.len(), 4, "{}", text(&a));
    assert!(matches!(&r[1], Reply::Progress(p) if p.percent == 50 && p.message == "Copying image"));
    assert!(matches!(&r[3], Reply::Installed(rec) if rec.to.as_deref() == Some("B")));
    assert_eq!(*fake.installed_bytes.lock().unwrap(), ["BUNDLE good v2"], "RAUC saw the whole bundle");
    assert!(files(&fake).is_empty(), "the bundle is removed once installed: {:?}", files(&fake));
    for _ in 0..100 {
        if fake.rebooted_into_trial.load(Ordering::SeqCst) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(fake.rebooted_into_trial.load(Ordering::SeqCst), "then the trial reboot");
}

#[test]
fn refused_bundles_say_why_and_leave_nothing() {
    let (fake, routes) = setup();
    let a = send(&routes, &put("BUNDLE forged", 13)).collect().unwrap();
    assert_eq!(a.status, 200, "the upload was accepted; the installation says how it went");
    assert!(matches!(replies(&a).last(), Some(Reply::Error(e)) if e.contains("signature verification failed")));
    assert!(files(&fake).is_empty());
    assert!(!fake.rebooted_into_trial.load(Ordering::SeqCst), "no reboot after a failure");

    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (put("BUNDLE good", 500), 400, "ended after 11 of 500 bytes"),
        (put("", 1001), 413, "above the 1000-byte limit for a firmware bundle"),
        (b"PUT /v1/firmware HTTP/1.1\r\n\r\n".to_vec(), 411, "Content-Length"),
        (b"GET /v1/firmware HTTP/1.1\r\n\r\n".to_vec(), 405, "not allowed"),
    ];
    for (raw, status, needle) in cases {
        let a = send(&routes, &raw).collect().unwrap();
        assert_eq!(a.status, status, "{}", text(&a));
        assert!(text(&a).contains(needle), "{}", text(&a));
        assert!(files(&fake).is_empty(), "nothing left: {:?}", files(&fake));
    }
    assert_eq!(fake.installed_bytes.lock().unwrap().len(), 1, "RAUC saw none of them");
}

#[test]
fn one_update_at_a_time() {
    let (_fake, routes) = setup();
    let first = send(&routes, &put("BUNDLE good 1", 13));
    let second = send(&routes, &put("BUNDLE good 2", 13)).collect().unwrap();
    assert_eq!(second.status, 409, "{}", text(&second));
    assert_eq!(first.collect().unwrap().status, 200);
    assert_eq!(send(&routes, &put("BUNDLE good 3", 13)).collect().unwrap().status, 200, "free again");
}

#[test]
fn a_device_without_updates_says_so() {
    let fake = Arc::new(Fake::default());
    let routes = Routes::new(fake, 1 << 20);
    let a = send(&routes, &put("BUNDLE good", 11)).collect().unwrap();
    assert_eq!(a.status, 404);
    assert!(text(&a).contains("takes no firmware updates"));
}

#[test]
fn reboot_answers_first_then_reboots() {
    let (fake, routes) = setup();
    let a = send(&routes, b"POST /v1/reboot HTTP/1.1\r\n\r\n").collect().unwrap();
    assert_eq!(a.status, 202);
    for _ in 0..200 {
        if fake.rebooted.load(Ordering::SeqCst) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(fake.rebooted.load(Ordering::SeqCst));
    assert_eq!(send(&routes, b"GET /v1/reboot HTTP/1.1\r\n\r\n").collect().unwrap().status, 405);
}

#[test]
fn logs_are_server_sent_events_recent_first_then_followed() {
    let (fake, routes) = setup();
    let a = send(&routes, b"GET /v1/logs?follow=false HTTP/1.1\r\n\r\n").collect().unwrap();
    assert_eq!((a.status, a.content_type.as_str()), (200, "text/event-stream"));
    assert_eq!(text(&a), "data: {\"app\":\"blinky\",\"message\":\"old\"}\n\n");

    let Response::Stream(stream) = send(&routes, b"GET /v1/logs HTTP/1.1\r\n\r\n") else { panic!("a stream") };
    let tx = fake.log.lock().unwrap().take().unwrap();
    tx.send(r#"{"message":"new"}"#.into()).unwrap();
    drop(tx); // the device stops logging: the stream ends
    let mut out = Vec::new();
    (stream.write)(&mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(out, "data: {\"app\":\"blinky\",\"message\":\"old\"}\n\ndata: {\"message\":\"new\"}\n\n");
}

#[test]
fn a_follower_that_went_away_ends_its_stream() {
    struct Gone;
    impl std::io::Write for Gone {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (_fake, routes) = setup();
    let Response::Stream(stream) = send(&routes, b"GET /v1/logs HTTP/1.1\r\n\r\n") else { panic!("a stream") };
    assert!((stream.write)(&mut Gone).is_err(), "the writer gives up instead of waiting for ever");
}
