//! Real `nats-server`s for the fleet's tests: a test PKI (one CA for the
//! server, operators and devices), servers started on loopback from a
//! [`ServerConfig`] and stopped when dropped, and clients that connect with a
//! device's or an operator's certificate.

#![allow(dead_code, clippy::unwrap_used, clippy::missing_panics_doc)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use trellis_fleet::names;
use trellis_fleet::server::{Cluster, DeviceUser, ServerConfig, Tls};

pub mod sim;

pub struct Pki {
    pub dir: tempfile::TempDir,
    cert: Certificate,
    key: KeyPair,
}

impl Pki {
    pub fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "Trellis fleet test CA");
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let cert = p.self_signed(&key).unwrap();
        let pki = Self { dir: tempfile::tempdir().unwrap(), cert, key };
        std::fs::write(pki.ca(), pki.cert.pem()).unwrap();
        pki
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate and key for `cn` (PEM files): a server's (for 127.0.0.1)
    /// or a client's (common name only, so it maps to the user `CN=<cn>`).
    pub fn issue(&self, cn: &str, server: bool) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        if server {
            p.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
            p.subject_alt_names.push(SanType::DnsName("localhost".try_into().unwrap()));
        }
        p.extended_key_usages =
            vec![if server { ExtendedKeyUsagePurpose::ServerAuth } else { ExtendedKeyUsagePurpose::ClientAuth }];
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let (c, k) = (self.dir.path().join(format!("{cn}.pem")), self.dir.path().join(format!("{cn}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A running `nats-server`, killed when dropped.
pub struct Server {
    pub name: String,
    pub addr: SocketAddr,
    pub config: ServerConfig,
    path: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl Server {
    /// Start a server as `config` says and wait (at most 20 s) until it accepts clients.
    pub fn start(dir: &Path, config: ServerConfig) -> Self {
        let path = dir.join(format!("{}.conf", config.name));
        let log = dir.join(format!("{}.log", config.name));
        std::fs::write(&path, config.render()).unwrap();
        let mut server = Self { name: config.name.clone(), addr: config.listen, config, path, child: None, log };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&self.path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server (apt install nats-server; make test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(self.addr).is_err() {
            assert!(Instant::now() < deadline, "nats-server {} did not listen: {}", self.name, self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kill the server (SIGKILL: no goodbye to the cluster).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again with the same configuration and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One server with JetStream and mutual TLS, its users `operators` and `devices` (id, group).
pub fn single(pki: &Pki, operators: &[&str], devices: &[(&str, &str)]) -> Server {
    let (cert, key) = pki.issue("nats-server", true);
    let config = ServerConfig {
        name: "n1".into(),
        listen: free_port(),
        store_dir: pki.dir.path().join("n1-store"),
        tls: Tls { cert, key, ca: pki.ca() },
        cluster: None,
        operators: operators.iter().map(|s| (*s).to_owned()).collect(),
        devices: devices.iter().map(|(d, g)| DeviceUser { device: (*d).to_owned(), group: (*g).to_owned() }).collect(),
    };
    Server::start(pki.dir.path(), config)
}

/// Three servers in one cluster (JetStream replicated over them).
pub fn cluster(pki: &Pki, operators: &[&str], devices: &[(&str, &str)]) -> Vec<Server> {
    let (cert, key) = pki.issue("nats-server", true);
    let clients: Vec<SocketAddr> = (0..3).map(|_| free_port()).collect();
    let routes: Vec<SocketAddr> = (0..3).map(|_| free_port()).collect();
    (0..3)
        .map(|i| {
            let config = ServerConfig {
                name: format!("n{}", i + 1),
                listen: clients[i],
                store_dir: pki.dir.path().join(format!("n{}-store", i + 1)),
                tls: Tls { cert: cert.clone(), key: key.clone(), ca: pki.ca() },
                cluster: Some(Cluster {
                    name: "trellis".into(),
                    listen: routes[i],
                    routes: routes.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, r)| *r).collect(),
                }),
                operators: operators.iter().map(|s| (*s).to_owned()).collect(),
                devices: devices
                    .iter()
                    .map(|(d, g)| DeviceUser { device: (*d).to_owned(), group: (*g).to_owned() })
                    .collect(),
            };
            Server::start(pki.dir.path(), config)
        })
        .collect()
}

/// A client connected as `cn` (an operator, or a device with its own inbox
/// prefix); server errors it receives (permission violations) are kept.
pub struct Client {
    pub nats: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub errors: Arc<Mutex<Vec<String>>>,
}

impl Client {
    pub async fn connect(pki: &Pki, servers: &[SocketAddr], cn: &str) -> Self {
        let (cert, key) = pki.issue(cn, false);
        let errors = Arc::new(Mutex::new(Vec::new()));
        let seen = errors.clone();
        let urls: Vec<async_nats::ServerAddr> = servers.iter().map(|a| format!("tls://{a}").parse().unwrap()).collect();
        let nats = async_nats::ConnectOptions::new()
            .add_root_certificates(pki.ca())
            .add_client_certificate(cert, key)
            .require_tls(true)
            .custom_inbox_prefix(names::inbox(cn))
            .request_timeout(Some(Duration::from_millis(1500)))
            .event_callback(move |event| {
                let seen = seen.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        seen.lock().unwrap().push(e.to_string());
                    }
                }
            })
            .connect(urls)
            .await
            .unwrap_or_else(|e| panic!("{cn} cannot connect: {e}"));
        let js = async_nats::jetstream::new(nats.clone());
        Self { nats, js, errors }
    }

    /// Whether the server reported a permission violation naming `subject`.
    pub async fn was_denied(&self, subject: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if self
                .errors
                .lock()
                .unwrap()
                .iter()
                .any(|e| e.to_lowercase().contains("permissions violation") && e.contains(subject))
            {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The credentials of `cn` (a fresh certificate) for `servers`.
pub fn credentials(pki: &Pki, servers: &[SocketAddr], cn: &str) -> trellis_fleet::link::Credentials {
    let (cert, key) = pki.issue(cn, false);
    trellis_fleet::link::Credentials {
        servers: servers.iter().map(|a| format!("tls://{a}")).collect(),
        ca: pki.ca(),
        cert,
        key,
    }
}

/// An operator's link; the first JetStream request is retried while a
/// cluster elects its leader.
pub async fn operator(pki: &Pki, servers: &[SocketAddr], replicas: usize) -> trellis_fleet::link::Link {
    let link = trellis_fleet::link::Link::connect(&credentials(pki, servers, "operator"), None, false).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match trellis_fleet::ops::setup(&link, replicas).await {
            Ok(()) => return link,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("no fleet buckets: {e}"),
        }
    }
}

/// Wait (at most `secs`) until `check` holds; panic with `what` otherwise.
pub async fn until<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
