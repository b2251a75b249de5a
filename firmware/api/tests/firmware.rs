//! Firmware uploads, reboot and logs through the routes, against the fake
//! device (its "RAUC" installs what it is given, or refuses it when told to).

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use trellis_api::http::parse_head;
use trellis_api::{Answer, Response, Routes};
use trellis_control::socket::Reply;
use trellis_control::testing::FakeDevice;

struct Fake {
    _dir: tempfile::TempDir,
    device: Arc<FakeDevice>,
}

impl std::ops::Deref for Fake {
    type Target = FakeDevice;
    fn deref(&self) -> &FakeDevice {
        &self.device
    }
}

/// A device taking firmware updates into a directory of its own, with a log.
fn setup() -> (Fake, Routes) {
    let dir = tempfile::tempdir().unwrap();
    let mut device = FakeDevice::new(dir.path()).with_firmware(dir.path().join("firmware"));
    device.recent_logs = vec![r#"{"app":"blinky","message":"old"}"#.into()];
    let device = Arc::new(device);
    let routes = Routes::new(device.clone(), 1 << 20).with_bundle_limit(1000);
    (Fake { _dir: dir, device }, routes)
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
    let dir = fake.firmware_dir.clone().unwrap();
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
    assert_eq!(*fake.bundles.lock().unwrap(), ["BUNDLE good v2"], "RAUC saw the whole bundle");
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
    fake.refuse_firmware.store(true, Ordering::SeqCst);
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
    assert_eq!(fake.bundles.lock().unwrap().len(), 1, "RAUC saw none of them");
}

fn post_url(body: &str) -> Vec<u8> {
    format!("POST /v1/firmware HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

#[test]
fn a_bundle_url_is_handed_to_rauc_to_stream_and_nothing_is_stored() {
    let (fake, routes) = setup();
    let a = send(&routes, &post_url(r#"{"url": "http://origin.lan:8080/v2.raucb"}"#)).collect().unwrap();
    assert_eq!((a.status, a.content_type.as_str()), (200, "application/x-ndjson"), "{}", text(&a));
    assert!(
        matches!(replies(&a).last(), Some(Reply::Installed(rec)) if rec.bundle == "http://origin.lan:8080/v2.raucb")
    );
    assert_eq!(*fake.bundles.lock().unwrap(), ["http://origin.lan:8080/v2.raucb"], "RAUC was given the URL");
    assert!(files(&fake).is_empty(), "nothing stored: {:?}", files(&fake));
    // A bundle named by its piece root streams from the device's asset sources.
    let root = "AB".repeat(32);
    let a = send(&routes, &post_url(&format!(r#"{{"url": "asset:{root}"}}"#))).collect().unwrap();
    assert_eq!(a.status, 200, "{}", text(&a));
    assert_eq!(fake.bundles.lock().unwrap()[1], format!("asset:{}", root.to_lowercase()));

    let long = format!(r#"{{"url": "http://h/{}"}}"#, "a".repeat(5000));
    for (body, needle) in [
        (r#"{"url": "/data/update.raucb"}"#, "is neither an http:// or https:// URL nor asset:<id>"),
        (r#"{"url": "ftp://h/u.raucb"}"#, "is neither an http:// or https:// URL nor asset:<id>"),
        (r#"{"url": "http://"}"#, "is not a bundle URL"),
        (r#"{"url": "asset:abc"}"#, "an asset bundle is asset:<64 hex digits>"),
        (r#"{"path": "x"}"#, "unknown field"),
        ("not json", "bad firmware URL request"),
        (long.as_str(), "at most 4096 bytes"),
    ] {
        let a = send(&routes, &post_url(body)).collect().unwrap();
        assert_eq!(a.status, 400, "{body}: {}", text(&a));
        assert!(text(&a).contains(needle), "{body}: {}", text(&a));
    }
    assert_eq!(fake.bundles.lock().unwrap().len(), 2, "RAUC saw none of them");
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
    let routes = Routes::new(Arc::new(FakeDevice::new(std::env::temp_dir())), 1 << 20);
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
    fake.log(r#"{"message":"new"}"#);
    fake.stop_logging(); // the device stops logging: the stream ends
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
