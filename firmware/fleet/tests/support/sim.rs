//! Simulated devices: the real agent driving the shared fake device
//! (`trellis_control::testing::FakeDevice`), each with its own state
//! directory and certificate.

use std::net::SocketAddr;
use std::sync::Arc;

use trellis_appfmt::{SigningKey, TrustList};
use trellis_control::testing::FakeDevice;
use trellis_fleet::agent::{Agent, AgentConfig};
use trellis_fleet::clock::{Clock, SystemClock};
use trellis_fleet::link::{Credentials, Link};
use trellis_fleet::{Event, Release};

use super::Pki;

pub const BOARD: &str = "rpi4";
pub const INTERFACE: &str = "0.1.1";

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
            device: Arc::new(device),
            creds: super::credentials(pki, servers, id),
            dir,
            trust,
            clock: Arc::new(SystemClock),
            task: None,
        }
    }

    pub fn config(&self) -> AgentConfig {
        let mut c = AgentConfig::new(&self.id, &self.group, BOARD, INTERFACE, "1.0.0", &self.dir.path().join("fleet"));
        c.poll = std::time::Duration::from_secs(2);
        c
    }

    /// Start its agent (connecting in the background, as on a device).
    pub async fn start(&mut self) {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let link = Link::connect(&self.creds, Some(&self.id), true).await.unwrap();
        let agent = Agent::new(self.config(), self.device.clone(), self.trust.clone(), self.clock.clone()).unwrap();
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
    let stream = link.js.get_stream(trellis_fleet::names::EVENTS_STREAM).await.map_err(|x| e(&x))?;
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
