//! The API under hostile clients, over real TLS on loopback: a flood of
//! silent and drip-feeding connections from one address leaves room for the
//! operator; a drip-feeding client is cut at the handshake deadline however
//! often it sends; a client turned away for load is told the device is busy,
//! with the device's reason.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use trellis_api::ApiConfig;
use trellis_api::client::{Client, ClientError, Credentials, Upload};
use trellis_control::DeviceStatus;
use trellis_control::testing::FakeDevice;

mod support;
use support::{ca, leaf, write};

struct Setup {
    _dir: tempfile::TempDir,
    apps: tempfile::TempDir,
    addr: SocketAddr,
    /// The operator's client (it connects from 127.0.0.1).
    client: Client,
}

/// The API on 127.0.0.1 in front of a fake device, with `tweak` applied to its configuration.
fn start(tweak: impl FnOnce(&mut ApiConfig)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let apps = tempfile::tempdir().unwrap();
    let ca = ca("Trellis test CA");
    let mut config = support::api_config(dir.path(), &ca);
    config.handshake_timeout_s = 5;
    config.timeout_s = 10;
    tweak(&mut config);
    let server = trellis_api::serve(&config, Arc::new(FakeDevice::new(apps.path()))).unwrap();
    let (cert, key) = leaf(&ca, "operator", false, false);
    let creds = Credentials {
        ca: config.client_ca.clone(),
        cert: write(dir.path(), "operator.pem", &cert),
        key: write(dir.path(), "operator.key", &key),
    };
    let client =
        Client::new(&creds, &server.addr().to_string(), "localhost").unwrap().with_timeout(Duration::from_secs(5));
    Setup { _dir: dir, apps, addr: server.addr(), client }
}

/// A TCP connection to `to` from the loopback address `local`.
fn connect_from(local: &str, to: SocketAddr) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    bind(&fd, &SocketAddr::new(local.parse().unwrap(), 0)).unwrap();
    connect(&fd, &to).unwrap();
    TcpStream::from(fd)
}

/// Everything `stream` receives until the device closes it; panics if it is
/// still open at `until`.
fn read_until_closed(stream: &TcpStream, until: Instant) -> String {
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "still open; received so far: {:?}", String::from_utf8_lossy(&got));
        stream.set_read_timeout(Some(left)).unwrap();
        match (&*stream).read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(_) => break, // reset: closed as well
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The start of a TLS handshake record announcing 512 bytes of body (a
/// ClientHello in the making), then body bytes for ever.
fn tls_drip() -> impl Iterator<Item = u8> {
    [0x16, 0x03, 0x01, 0x02, 0x00].into_iter().chain(std::iter::repeat(0x01))
}

#[test]
fn a_flood_from_one_address_leaves_room_for_the_operator() {
    const FLOOD: usize = 200;
    let s = start(|c| c.handshake_timeout_s = 1);
    let started = Instant::now();
    // From 127.0.0.2: every other connection says nothing, the others drip a
    // TLS record one byte every 50 ms; all of them stay open on this side.
    let flood: Vec<TcpStream> = (0..FLOOD).map(|_| connect_from("127.0.0.2", s.addr)).collect();
    let drippers: Vec<TcpStream> = flood.iter().skip(1).step_by(2).map(|t| t.try_clone().unwrap()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let dripping = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            for byte in tls_drip().take(60) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                for mut t in &drippers {
                    let _ = t.write(&[byte]);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    // The operator, from 127.0.0.1, is answered at once ...
    let asked = Instant::now();
    let status: DeviceStatus = s.client.get("/v1/status").unwrap().json().unwrap();
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(1), "the status took {took:?}");
    assert!(status.apps.is_empty());
    // ... and an upload goes through.
    let app = b"APP blinky 2.0.0 code";
    let upload = Upload { reader: &mut &app[..], len: app.len() as u64, sent: &mut |_| {} };
    let answer = s.client.send("PUT", "/v1/apps/blinky", Some(upload)).unwrap().ok().unwrap();
    assert_eq!(answer.status, 201);
    assert_eq!(std::fs::read(s.apps.path().join("blinky.wasm")).unwrap(), app);

    // Every flood connection is closed by the device: turned away at once
    // with a 503 naming the address, or cut at the 1 s deadline.
    let until = started + Duration::from_millis(2500);
    let answers: Vec<String> = flood.iter().map(|t| read_until_closed(t, until)).collect();
    let busy = answers.iter().filter(|a| a.starts_with("HTTP/1.1 503 Service Unavailable\r\n")).count();
    assert!(busy >= FLOOD - 16, "only {busy} of {FLOOD} were answered 503: {:?}", &answers[..8]);
    assert!(
        answers.iter().filter(|a| !a.is_empty()).all(|a| a.contains("too many connections from 127.0.0.2")),
        "{answers:?}"
    );
    stop.store(true, Ordering::SeqCst);
    dripping.join().unwrap();
}

#[test]
fn a_drip_feeding_client_is_cut_at_the_deadline() {
    // The per-read timeout (10 s) is far longer than the test: only the total deadline can cut it.
    let s = start(|c| c.handshake_timeout_s = 1);
    let silent = TcpStream::connect(s.addr).unwrap();
    let drip = TcpStream::connect(s.addr).unwrap();
    let connected = Instant::now();
    drip.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut cut = None;
    // One byte every 50 ms, for at most 4 s.
    for byte in tls_drip().take(80) {
        if (&drip).write_all(&[byte]).is_err() {
            cut = Some(connected.elapsed());
            break;
        }
        match (&drip).read(&mut [0u8; 64]) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Ok(0) | Err(_) => {
                cut = Some(connected.elapsed());
                break;
            }
            Ok(n) => panic!("the device answered {n} bytes to half a ClientHello"),
        }
    }
    let cut = cut.expect("the drip-feeding client is still connected after 4 s");
    assert!(cut >= Duration::from_millis(900) && cut < Duration::from_millis(1750), "cut after {cut:?}");
    // The silent one went at the same deadline.
    assert_eq!(read_until_closed(&silent, Instant::now() + Duration::from_millis(500)), "");
    // And the operator is answered.
    assert!(s.client.get("/v1/status").unwrap().ok().is_ok());
}

/// The CLI's client, turned away for load, says so, with the device's reason.
#[test]
fn a_client_turned_away_for_load_is_told_the_device_is_busy() {
    // Every handshake slot taken (from two other addresses).
    let s = start(|c| c.max_handshakes = 2);
    let _held = [connect_from("127.0.0.2", s.addr), connect_from("127.0.0.3", s.addr)];
    let e = s.client.get("/v1/status").unwrap_err();
    let text = e.to_string();
    assert!(matches!(&e, ClientError::Busy { reason, .. } if reason.contains("busy: 2 connections")), "{e:?}");
    assert!(text.contains("busy") && !text.contains("certificate"), "{text}");

    // Every slot for this address taken.
    let s = start(|c| c.max_handshakes_per_peer = 2);
    let _held = [TcpStream::connect(s.addr).unwrap(), TcpStream::connect(s.addr).unwrap()];
    let e = s.client.get("/v1/status").unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(&e, ClientError::Busy { reason, .. } if reason.contains("too many connections from 127.0.0.1")),
        "{e:?}"
    );
    assert!(text.contains("busy") && !text.contains("certificate"), "{text}");

    // Every request slot taken by an operator following the log: the next
    // operator is answered 503 inside TLS.
    let s = start(|c| c.max_connections = 1);
    let follower = s.client.get("/v1/logs").unwrap();
    assert_eq!(follower.status, 200);
    match s.client.get("/v1/status").unwrap().ok() {
        Err(ClientError::Status { status: 503, message }) => assert!(message.starts_with("busy: "), "{message}"),
        other => panic!("{other:?}"),
    }
}
