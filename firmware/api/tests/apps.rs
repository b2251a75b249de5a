//! App uploads through the routes, against the fake device (a file is
//! acceptable when it starts with `APP NAME VERSION`): refusals included.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::io::Read;
use std::sync::Arc;

use trellis_api::http::parse_head;
use trellis_api::{Answer, Routes};
use trellis_control::testing::FakeDevice;

struct Fake {
    dir: tempfile::TempDir,
    device: Arc<FakeDevice>,
}

fn routes() -> (Fake, Routes) {
    let dir = tempfile::tempdir().unwrap();
    let device = Arc::new(FakeDevice::new(dir.path()));
    let routes = Routes::new(device.clone(), 1 << 20);
    (Fake { dir, device }, routes)
}

fn request(routes: &Routes, raw: &[u8]) -> Answer {
    let (head, used) = parse_head(raw).unwrap().unwrap();
    let mut body: &[u8] = &raw[used..];
    routes.route(&head, &mut body as &mut dyn Read).collect().unwrap()
}

fn put(name: &str, body: &str, length: usize) -> Vec<u8> {
    format!("PUT /v1/apps/{name} HTTP/1.1\r\nContent-Length: {length}\r\n\r\n{body}").into_bytes()
}

fn body(a: &Answer) -> String {
    String::from_utf8_lossy(&a.body).into_owned()
}

#[test]
fn an_upload_lands_whole_and_runs() {
    let (fake, routes) = routes();
    let app = "APP blinky 2.0.0 code...";
    let a = request(&routes, &put("blinky", app, app.len()));
    assert_eq!(a.status, 201, "{}", body(&a));
    assert_eq!(std::fs::read_to_string(fake.dir.path().join("blinky.wasm")).unwrap(), app);
    let d = request(&routes, b"DELETE /v1/apps/blinky HTTP/1.1\r\n\r\n");
    assert_eq!(d.status, 204);
    assert!(!fake.dir.path().join("blinky.wasm").exists());
    assert_eq!(request(&routes, b"DELETE /v1/apps/blinky HTTP/1.1\r\n\r\n").status, 404);
}

#[test]
fn truncated_wrongly_signed_oversized_and_badly_named_uploads_change_nothing() {
    let (fake, routes) = routes();
    let old = "APP blinky 1.0.0 old";
    std::fs::write(fake.dir.path().join("blinky.wasm"), old).unwrap();
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (put("blinky", "APP blinky 2.0.0", 100), 400, "ended after 16 of 100 bytes"),
        (put("blinky", "garbage", 7), 422, "not a signed app"),
        (put("blinky", "APP thermostat 2.0.0", 20), 422, "names the app"),
        (put("blinky", "", 2 << 20), 413, "above the 1048576-byte limit"),
        (b"PUT /v1/apps/blinky HTTP/1.1\r\n\r\n".to_vec(), 411, "Content-Length"),
        (put("..", "APP .. 1.0.0", 12), 400, "is not an app name"),
        (put("a%00b", "APP a 1.0.0", 11), 400, "is not an app name"),
        (put("a%2Fb", "APP a 1.0.0", 11), 400, "is not an app name"),
    ];
    for (raw, status, needle) in cases {
        let a = request(&routes, &raw);
        assert_eq!(a.status, status, "{}: {}", String::from_utf8_lossy(&raw[..40.min(raw.len())]), body(&a));
        assert!(body(&a).contains(needle), "{}", body(&a));
        assert_eq!(std::fs::read_to_string(fake.dir.path().join("blinky.wasm")).unwrap(), old);
    }
    // A path with a real `/` or `..` never reaches an app at all.
    assert_eq!(request(&routes, &put("a/b", "APP a 1", 7)).status, 404);
    assert_eq!(request(&routes, b"PUT /v1/apps/../x HTTP/1.1\r\nContent-Length: 0\r\n\r\n").status, 404);
    let left: Vec<_> = std::fs::read_dir(fake.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["blinky.wasm"], "no temporary file is left");
    assert!(fake.device.apps_installed.lock().unwrap().is_empty(), "nothing went in place");
}

#[test]
fn two_concurrent_pushes_of_one_app_leave_one_complete_version() {
    let (fake, routes) = routes();
    let routes = Arc::new(routes);
    let apps: Vec<String> = (0..2).map(|i| format!("APP blinky 2.0.{i} {}", i.to_string().repeat(200_000))).collect();
    let threads: Vec<_> = apps
        .iter()
        .cloned()
        .map(|app| {
            let routes = routes.clone();
            std::thread::spawn(move || request(&routes, &put("blinky", &app, app.len())).status)
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 201);
    }
    let file = std::fs::read_to_string(fake.dir.path().join("blinky.wasm")).unwrap();
    assert!(apps.contains(&file), "the file is one of the two, whole");
    let swapped = fake.device.apps_installed.lock().unwrap();
    assert_eq!(swapped.len(), 2);
    assert!(swapped.iter().all(|s| apps.contains(s)), "each swap saw a whole file");
}

#[test]
fn an_app_is_stopped_and_started_and_unknown_apps_are_named() {
    let (_fake, routes) = routes();
    let app = "APP blinky 2.0.0 code...";
    assert_eq!(request(&routes, &put("blinky", app, app.len())).status, 201);
    let stop = request(&routes, b"POST /v1/apps/blinky/stop HTTP/1.1\r\n\r\n");
    assert_eq!(stop.status, 200, "{}", body(&stop));
    let summary: serde_json::Value = serde_json::from_slice(&stop.body).unwrap();
    assert_eq!((summary["name"].as_str(), summary["state"].as_str()), (Some("blinky"), Some("stopped")));
    let start = request(&routes, b"POST /v1/apps/blinky/start HTTP/1.1\r\n\r\n");
    assert_eq!(start.status, 200, "{}", body(&start));
    assert!(body(&start).contains(r#""state": "running""#), "{}", body(&start));

    let unknown = request(&routes, b"POST /v1/apps/nope/stop HTTP/1.1\r\n\r\n");
    assert_eq!(unknown.status, 404);
    assert!(body(&unknown).contains("no app nope"), "{}", body(&unknown));
    let bad = request(&routes, b"POST /v1/apps/..%2fx/start HTTP/1.1\r\n\r\n");
    assert_eq!(bad.status, 400, "{}", body(&bad));
    let wrong = request(&routes, b"GET /v1/apps/blinky/stop HTTP/1.1\r\n\r\n");
    assert_eq!(wrong.status, 405, "{}", body(&wrong));
    assert_eq!(request(&routes, b"POST /v1/apps/blinky/pause HTTP/1.1\r\n\r\n").status, 404);
}
