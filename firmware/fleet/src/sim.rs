//! A fleet on one machine, for the tests, the demo and the benchmarks: a
//! test PKI, real `nats-server`s started on loopback (one, or a 3-node
//! cluster) and stopped when dropped, and simulated devices — the real
//! agent driving the shared fake device
//! (`trellis_control::testing::FakeDevice`). Feature `sim`.
//!
//! A harness: it panics when the machine cannot set it up (no
//! `nats-server`, no free port), naming what is missing.

#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    clippy::new_without_default,
    missing_docs,
    missing_debug_implementations
)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::names;
use crate::server::{Cluster, DeviceUser, ServerConfig, Tls};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};

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
            // The host as QEMU's user network shows it to a twin.
            p.subject_alt_names.push(SanType::IpAddress("10.0.2.2".parse().unwrap()));
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

/// A port on 127.0.0.1 that nothing listens on now.
///
/// Taken below Linux's ephemeral range (32768 and up by default): a port
/// the kernel handed out for `:0` is soon handed out again as the source port
/// of an outgoing connection (a server dialing its routes, a client), which
/// then holds it when the server comes to listen on it.
pub fn free_port() -> SocketAddr {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(2_654_435_761);
    for _ in 0..12_000 {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 20_000 + u16::try_from(seed.wrapping_add(n.wrapping_mul(7919)) % 12_000).unwrap_or(0);
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().unwrap();
        }
    }
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A running `nats-server`, killed when dropped.
pub struct Server {
    pub name: String,
    pub config: ServerConfig,
    path: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl Server {
    /// Start a server as `config` says and wait (at most 20 s) until it accepts clients.
    ///
    /// Its client port is taken again if another process bound it between
    /// [`free_port`] and the server (tests run side by side): a server that
    /// exits before it listens is started on another port, up to 5 times.
    pub fn start(dir: &Path, config: ServerConfig) -> Self {
        let path = dir.join(format!("{}.conf", config.name));
        let log = dir.join(format!("{}.log", config.name));
        let mut server = Self { name: config.name.clone(), config, path, child: None, log };
        for _ in 0..5 {
            std::fs::write(&server.path, server.config.render()).unwrap();
            if server.spawn() {
                return server;
            }
            server.config.listen = free_port();
        }
        panic!("nats-server {} exited before it listened: {}", server.name, server.log_text());
    }

    /// Start the process and wait until it listens; false if it exited first.
    fn spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let before = usize::try_from(log.metadata().unwrap().len()).unwrap();
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
        // Its own log (from this start on) says it listens: a connection
        // alone may reach another process on the port.
        let listening = format!("Listening for client connections on {}", self.addr());
        let says = |text: String| text.get(before..).is_some_and(|t| t.contains(&listening));
        while !(says(self.log_text()) && TcpStream::connect(self.addr()).is_ok()) {
            if self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some()) {
                self.child = None;
                return false;
            }
            assert!(Instant::now() < deadline, "nats-server {} did not listen: {}", self.name, self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// The address its clients connect to.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.config.listen
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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
        assert!(self.spawn(), "nats-server {} exited before it listened: {}", self.name, self.log_text());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One server with JetStream and mutual TLS, its users `operators` and `devices` (id, group).
pub fn single(pki: &Pki, operators: &[&str], devices: &[(&str, &str)]) -> Server {
    Server::start(pki.dir.path(), single_config(pki, operators, devices))
}

/// The configuration [`single`] starts its server with.
pub fn single_config(pki: &Pki, operators: &[&str], devices: &[(&str, &str)]) -> ServerConfig {
    let (cert, key) = pki.issue("nats-server", true);
    ServerConfig {
        name: "n1".into(),
        listen: free_port(),
        store_dir: pki.dir.path().join("n1-store"),
        tls: Tls { cert, key, ca: pki.ca() },
        cluster: None,
        operators: operators.iter().map(|s| (*s).to_owned()).collect(),
        devices: devices.iter().map(|(d, g)| DeviceUser { device: (*d).to_owned(), group: (*g).to_owned() }).collect(),
        previous_agents: false,
    }
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
                previous_agents: false,
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
pub fn credentials(pki: &Pki, servers: &[SocketAddr], cn: &str) -> crate::link::Credentials {
    let (cert, key) = pki.issue(cn, false);
    crate::link::Credentials {
        servers: servers.iter().map(|a| format!("tls://{a}")).collect(),
        ca: pki.ca(),
        cert,
        key,
    }
}

/// An operator's link; the first JetStream request is retried while a
/// cluster elects its leader.
pub async fn operator(pki: &Pki, servers: &[SocketAddr], replicas: usize) -> crate::link::Link {
    let link = crate::link::Link::connect(&credentials(pki, servers, "operator"), None, false).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match crate::ops::setup(&link, replicas).await {
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

// Simulated devices.

use crate::agent::{Agent, AgentConfig};
use crate::clock::{Clock, SystemClock};
use crate::link::{Credentials, Link};
use crate::{Event, Release};
use trellis_appfmt::{SigningKey, TrustList};
use trellis_control::testing::FakeDevice;

pub const BOARD: &str = "rpi4";
pub const INTERFACE: &str = "0.1.2";

/// An app file the fake device accepts.
pub fn app(name: &str, version: &str) -> Vec<u8> {
    format!("APP {name} {version}\n").into_bytes()
}

/// A signed release of apps (name, version), with the artifacts to publish.
pub fn release(id: &str, key: &SigningKey, apps: &[(&str, &str)]) -> (Release, Vec<(String, Vec<u8>)>) {
    let mut r = Release::new(id, BOARD, INTERFACE);
    let mut artifacts = Vec::new();
    for (name, version) in apps {
        let bytes = app(name, version);
        r = r.with_app(name, version, &bytes);
        artifacts.push(((*name).to_owned(), bytes));
    }
    (r.signed(key), artifacts)
}

pub fn trust(key: &SigningKey) -> TrustList {
    TrustList::from_keys([key.public_key_bytes()])
}

pub struct Sim {
    pub id: String,
    pub group: String,
    pub board: String,
    pub device: Arc<FakeDevice>,
    pub dir: tempfile::TempDir,
    pub creds: Credentials,
    pub trust: TrustList,
    pub clock: Arc<dyn Clock>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Sim {
    /// Device `id` of `group`, running app `thermostat` 1.0.0, taking firmware updates.
    pub fn new(pki: &Pki, servers: &[SocketAddr], id: &str, group: &str, trust: TrustList) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let device = FakeDevice::new(dir.path().join("apps")).with_firmware(dir.path().join("firmware"));
        std::fs::create_dir_all(dir.path().join("apps")).unwrap();
        device.status.lock().unwrap().apps.push(FakeDevice::app("thermostat", "1.0.0"));
        Self {
            id: id.to_owned(),
            group: group.to_owned(),
            board: BOARD.to_owned(),
            device: Arc::new(device),
            creds: credentials(pki, servers, id),
            dir,
            trust,
            clock: Arc::new(SystemClock),
            task: None,
        }
    }

    pub fn config(&self) -> AgentConfig {
        let mut c =
            AgentConfig::new(&self.id, &self.group, &self.board, INTERFACE, "1.0.0", &self.dir.path().join("fleet"));
        c.poll = std::time::Duration::from_secs(2);
        c
    }

    /// Start its agent (connecting in the background, as on a device).
    pub async fn start(&mut self) {
        let config = self.config();
        self.start_with(config).await;
    }

    /// The same, with `config`.
    pub async fn start_with(&mut self, config: AgentConfig) {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let link = Link::connect(&self.creds, Some(&self.id), true).await.unwrap();
        let agent = Agent::new(config, self.device.clone(), self.trust.clone(), self.clock.clone()).unwrap();
        self.task = Some(tokio::spawn(agent.run(link)));
    }

    /// Stop its agent (the device goes offline).
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// The apps it runs: name and version.
    pub fn apps(&self) -> Vec<(String, String)> {
        self.device.status.lock().unwrap().apps.iter().map(|a| (a.name.clone(), a.version.clone())).collect()
    }

    pub fn runs(&self, name: &str, version: &str) -> bool {
        self.apps().iter().any(|(n, v)| n == name && v == version)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every event in the fleet's audit log so far, oldest first (retried
/// while a cluster that lost a server elects the stream's leader).
pub async fn events(link: &Link) -> Vec<Event> {
    for _ in 0..20 {
        if let Ok(events) = events_once(link).await {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    panic!("the events stream cannot be read");
}

async fn events_once(link: &Link) -> Result<Vec<Event>, String> {
    use async_nats::jetstream::consumer;
    use futures_util::StreamExt;
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let stream = link.js.get_stream(crate::names::EVENTS_STREAM).await.map_err(|x| e(&x))?;
    let count = stream.cached_info().state.messages;
    if count == 0 {
        return Ok(Vec::new());
    }
    let c = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|x| e(&x))?;
    let mut messages = c.messages().await.map_err(|x| e(&x))?.take(usize::try_from(count).unwrap());
    let mut out = Vec::new();
    while let Some(m) = messages.next().await {
        out.push(serde_json::from_slice(&m.map_err(|x| e(&x))?.payload).unwrap());
    }
    Ok(out)
}
