//! The API over real TLS on loopback: an operator certificate from the
//! device's CA gets an answer; no certificate, one from another CA, or an
//! expired one gets none.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use trellis_control::testing::FakeDevice;
use trellis_control::{DeviceStatus, FirmwareStatus};

mod support;
use support::{Ca, ca, leaf, write};

fn device() -> FakeDevice {
    let mut firmware = FirmwareStatus::idle();
    firmware.slots_error = Some("no RAUC here".into());
    let mut device =
        FakeDevice::new(std::env::temp_dir()).with_status(DeviceStatus { uptime_ms: 1234, firmware, apps: Vec::new() });
    device.metrics = "trellis_uptime_seconds 1.234\n".into();
    device
}

struct Setup {
    _dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
    device_ca: Ca,
}

fn start() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let device_ca = ca("Trellis device CA");
    let mut config = support::api_config(dir.path(), &device_ca);
    config.max_connections = 4;
    config.timeout_s = 5;
    let server = trellis_api::serve(&config, Arc::new(device())).unwrap();
    Setup { addr: server.addr(), _dir: dir, device_ca }
}

/// GET `path` presenting `client` (PEM cert, key), trusting `server_ca`.
/// `Err` when no HTTP answer came back.
fn get(s: &Setup, client: Option<(String, String)>, path: &str) -> Result<String, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(s.device_ca.cert.der().to_vec())).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<_, _>>().unwrap();
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap()).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let conn = rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(s.addr).unwrap());
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    tls.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = String::new();
    match tls.read_to_string(&mut answer) {
        Ok(_) if answer.starts_with("HTTP/1.1 ") => Ok(answer),
        Ok(_) => Err(format!("no answer: {answer:?}")),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn an_operator_certificate_from_the_devices_ca_is_answered() {
    let s = start();
    let operator = leaf(&s.device_ca, "operator", false, false);
    let answer = get(&s, Some(operator.clone()), "/v1/status").unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("\"uptime-ms\": 1234"), "{answer}");
    let metrics = get(&s, Some(operator.clone()), "/metrics").unwrap();
    assert!(metrics.contains("trellis_uptime_seconds 1.234"), "{metrics}");
    let missing = get(&s, Some(operator), "/v1/nothing").unwrap();
    assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
}

#[test]
fn no_certificate_another_ca_or_an_expired_one_is_refused() {
    let s = start();
    let stranger = ca("Someone else");
    let cases = [
        ("no client certificate", None),
        ("a certificate from another CA", Some(leaf(&stranger, "intruder", false, false))),
        ("an expired certificate", Some(leaf(&s.device_ca, "old operator", false, true))),
    ];
    for (what, client) in cases {
        let result = get(&s, client, "/v1/status");
        assert!(result.is_err(), "{what} was answered: {result:?}");
    }
    // The refusals did not use up the connection slots.
    let ok = get(&s, Some(leaf(&s.device_ca, "operator", false, false)), "/v1/status");
    assert!(ok.is_ok(), "{ok:?}");
}

/// The CLI's client: it checks the device's certificate (CA and name) and presents the operator's.
#[test]
fn the_operator_client_checks_the_device_and_is_answered() {
    use trellis_api::client::{Client, ClientError, Credentials};
    let s = start();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = leaf(&s.device_ca, "operator", false, false);
    let creds = Credentials {
        ca: write(dir.path(), "device-ca.pem", &s.device_ca.cert.pem()),
        cert: write(dir.path(), "operator.pem", &cert),
        key: write(dir.path(), "operator.key", &key),
    };
    let address = s.addr.to_string();
    let client = Client::new(&creds, &address, "localhost").unwrap();
    let status: DeviceStatus = client.get("/v1/status").unwrap().json().unwrap();
    assert_eq!(status.uptime_ms, 1234);
    match client.get("/v1/nothing").unwrap().ok() {
        Err(ClientError::Status { status: 404, message }) => assert!(message.contains("/v1/nothing"), "{message}"),
        other => panic!("{other:?}"),
    }
    // A device whose certificate does not carry the name asked for.
    let wrong_name = Client::new(&creds, &address, "trellis.local").unwrap();
    let e = wrong_name.get("/v1/status").unwrap_err();
    assert!(
        matches!(e, ClientError::Handshake { .. })
            && e.to_string().contains("certificate not valid for name \"trellis.local\""),
        "{e}"
    );
    // A device signed by another CA than the one the operator trusts.
    let other = ca("Someone else");
    let mistrust = Credentials { ca: write(dir.path(), "other.pem", &other.cert.pem()), ..creds.clone() };
    let e = Client::new(&mistrust, &address, "localhost").unwrap().get("/v1/status").unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    // An operator certificate the device does not accept: named as such.
    let (cert, key) = leaf(&other, "intruder", false, false);
    let intruder = Credentials {
        cert: write(dir.path(), "intruder.pem", &cert),
        key: write(dir.path(), "intruder.key", &key),
        ..creds.clone()
    };
    let e = Client::new(&intruder, &address, "localhost").unwrap().get("/v1/status").unwrap_err();
    assert!(e.to_string().contains("the device refused our certificate"), "{e}");
    // Nobody listening.
    let e = Client::new(&creds, "127.0.0.1:1", "localhost").unwrap().get("/v1/status").unwrap_err();
    assert!(e.to_string().starts_with("cannot reach 127.0.0.1:1: "), "{e}");
    // Missing credentials are named.
    let missing = Credentials { ca: dir.path().join("nope.pem"), ..creds };
    let e = Client::new(&missing, &address, "localhost").unwrap_err();
    assert!(e.to_string().contains("nope.pem"), "{e}");
}
