//! Outgoing HTTP for apps (`wasi:http`): to the manifest's hosts only, every
//! other host refused by name, and a slow host holding up no one but the app
//! that asked. Served by a real HTTP server on loopback.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{device, manifest, pack, with_config};
use trellis_runtime::RuntimeEvent;

const SECS: Duration = Duration::from_secs(30);

/// Sizes of the request bodies a [`server`] received.
type Received = Arc<Mutex<Vec<usize>>>;

/// A small HTTP/1.1 server on 127.0.0.1: `/hello` answers `hello`, `/slow`
/// answers `slow` after 2 s; every request's body size is recorded.
fn server() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Received::default();
    let r = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let r = r.clone();
            std::thread::spawn(move || serve(stream, &r));
        }
    });
    (port, received)
}

fn serve(stream: TcpStream, record: &Received) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (mut length, mut chunked) = (0usize, false);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
        let lower = header.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
    }
    let received = if chunked {
        let mut total = 0;
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).unwrap();
            total += n;
            if n == 0 {
                break total;
            }
        }
    } else {
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        length
    };
    record.lock().unwrap().push(received);
    let body = if path == "/slow" {
        std::thread::sleep(Duration::from_secs(2));
        "slow"
    } else {
        "hello"
    };
    let mut stream = stream;
    let _ = write!(stream, "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
}

/// The `fetch` fixture allowed to reach `hosts`, with `limits` changed by `f`.
fn fetch(hosts: &[String], config: &[(&str, &str)], f: impl FnOnce(&mut trellis_appfmt::Limits)) -> Vec<u8> {
    let mut m = with_config(manifest("fetch"), config);
    m.permissions.http = hosts.to_vec();
    f(&mut m.limits);
    pack("fetch", &m)
}

fn next_result(rx: &crossbeam_channel::Receiver<trellis_runtime::Message>) -> String {
    let m = rx.recv_timeout(SECS).expect("no result from the fetch app");
    String::from_utf8(m.payload).unwrap()
}

#[test]
fn an_allowed_host_answers_and_every_other_host_is_refused_by_name() {
    let (port, received) = server();
    let app = fetch(&[format!("127.0.0.1:{port}")], &[], |_| {});
    let dev = device(&[("fetch", app)], |_| {});
    dev.wait_started("fetch", "1.0.0");
    let results = dev.runtime.subscribe("fetch/result");

    dev.runtime.publish("fetch/go", format!("http://127.0.0.1:{port}/hello").as_bytes());
    assert_eq!(next_result(&results), "ok 200 5");

    // The same server by another name, and another port: both refused, named.
    for (url, host) in [
        (format!("http://localhost:{port}/hello"), format!("localhost:{port}")),
        (format!("http://127.0.0.1:{}/hello", port.wrapping_add(1)), format!("127.0.0.1:{}", port.wrapping_add(1))),
    ] {
        dev.runtime.publish("fetch/go", url.as_bytes());
        let result = next_result(&results);
        assert_eq!(result, format!("err http-request-denied: host {host} is not in permissions.http"));
        dev.wait_for(
            "the refusal in the event stream",
            SECS,
            |e| matches!(e, RuntimeEvent::Denied { app, reason } if app == "fetch" && reason.contains(&host)),
        );
    }
    // Still running, still allowed where it was; the refused requests never reached the server.
    dev.runtime.publish("fetch/go", format!("http://127.0.0.1:{port}/hello").as_bytes());
    assert_eq!(next_result(&results), "ok 200 5");
    assert_eq!(received.lock().unwrap().len(), 2);
}

#[test]
fn a_request_body_reaches_the_host() {
    let (port, received) = server();
    let app = fetch(&[format!("127.0.0.1:{port}")], &[("post-kib", "300")], |_| {});
    let dev = device(&[("fetch", app)], |_| {});
    dev.wait_started("fetch", "1.0.0");
    let results = dev.runtime.subscribe("fetch/result");
    dev.runtime.publish("fetch/go", format!("http://127.0.0.1:{port}/hello").as_bytes());
    assert_eq!(next_result(&results), "ok 200 5");
    assert_eq!(*received.lock().unwrap(), [300 * 1024]);
}

#[test]
fn a_slow_host_holds_up_only_the_app_that_asked() {
    let (port, _) = server();
    // The request takes 2 s, twenty times the app's call deadline: waiting is
    // not the app's own time, so it is not a fault.
    let app = fetch(&[format!("127.0.0.1:{port}")], &[], |_| {});
    let counter = pack("counter", &with_config(manifest("counter"), &[("period-ms", "50")]));
    let dev = device(&[("fetch", app), ("counter", counter)], |_| {});
    dev.wait_started("fetch", "1.0.0");
    dev.wait_started("counter", "1.0.0");
    let results = dev.runtime.subscribe("fetch/result");
    let counts = dev.runtime.subscribe("counter/value");

    let t0 = Instant::now();
    dev.runtime.publish("fetch/go", format!("http://127.0.0.1:{port}/slow").as_bytes());
    // The counter goes on ticking while the request waits.
    let mut ticks = 0;
    while t0.elapsed() < Duration::from_millis(1500) {
        if counts.recv_timeout(Duration::from_millis(500)).is_ok() {
            ticks += 1;
        }
    }
    assert!(ticks >= 10, "the counter ticked {ticks} times in 1.5 s while another app waited on a slow host");
    assert_eq!(next_result(&results), "ok 200 4");
    assert!(t0.elapsed() >= Duration::from_secs(2));
    assert_eq!(dev.running_version("fetch").as_deref(), Some("1.0.0"), "waiting was not a fault");
}

#[test]
fn a_request_past_its_limit_fails_and_the_app_goes_on() {
    let (port, _) = server();
    let app = fetch(&[format!("127.0.0.1:{port}")], &[], |l| l.request_ms = 500);
    let dev = device(&[("fetch", app)], |_| {});
    dev.wait_started("fetch", "1.0.0");
    let results = dev.runtime.subscribe("fetch/result");
    let t0 = Instant::now();
    dev.runtime.publish("fetch/go", format!("http://127.0.0.1:{port}/slow").as_bytes());
    let result = next_result(&results);
    assert!(result.starts_with("err ") && result.contains("Timeout"), "{result}");
    assert!(t0.elapsed() < Duration::from_millis(1900), "the limit was not kept: {:?}", t0.elapsed());
    dev.runtime.publish("fetch/go", format!("http://127.0.0.1:{port}/hello").as_bytes());
    assert_eq!(next_result(&results), "ok 200 5");
}

#[test]
fn an_app_without_the_permission_reaches_no_host() {
    let (port, received) = server();
    let app = fetch(&[], &[], |_| {});
    let dev = device(&[("fetch", app)], |_| {});
    dev.wait_started("fetch", "1.0.0");
    let results = dev.runtime.subscribe("fetch/result");
    dev.runtime.publish("fetch/go", format!("http://127.0.0.1:{port}/hello").as_bytes());
    assert_eq!(
        next_result(&results),
        format!("err http-request-denied: host 127.0.0.1:{port} is not in permissions.http")
    );
    assert!(received.lock().unwrap().is_empty(), "a refused request reached the server");
}

#[test]
fn https_checks_the_server_before_sending_anything() {
    // A server that answers in plain HTTP, whatever it is sent: the TLS
    // handshake fails, and the request never goes out in the clear.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Received::default();
    let g = got.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            g.lock().unwrap().push(n);
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        }
    });
    let app = fetch(&[format!("127.0.0.1:{port}")], &[], |_| {});
    let dev = device(&[("fetch", app)], |_| {});
    dev.wait_started("fetch", "1.0.0");
    let results = dev.runtime.subscribe("fetch/result");
    dev.runtime.publish("fetch/go", format!("https://127.0.0.1:{port}/hello").as_bytes());
    let result = next_result(&results);
    assert!(result.starts_with("err ") && result.contains("Tls"), "{result}");
    assert_eq!(got.lock().unwrap().len(), 1, "one connection: the handshake, nothing after it");
}
