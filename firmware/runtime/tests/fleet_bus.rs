//! The fleet bus between apps, against a real `nats-server` (mutual TLS, the
//! device permissions of `trellis_fleet::server`): an app's `fleet/...`
//! publish reaches apps on other devices and on an edge node (the
//! `trellis-runtime` binary with no hardware); ungranted topics are refused
//! naming the grant; a device's credential cannot speak for another device;
//! the aggregator summarises several devices' thermostats and they take the
//! setpoint it sends.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{TestRuntime, device, example, manifest, pack, with_config};
use trellis_appfmt::Manifest;
use trellis_fleet::sim::{self, Pki, Server};
use trellis_runtime::fleet::FleetConfig;
use trellis_runtime::{RuntimeConfig, RuntimeEvent};

const DEVICES: [(&str, &str); 3] = [("dev-1", "north"), ("dev-2", "north"), ("edge-1", "edge")];

fn fleet_toml(pki: &Pki, server: &Server, id: &str, cert_of: &str, group: &str) -> String {
    let (cert, key) = pki.issue(cert_of, false);
    format!(
        "servers = [\"tls://{}\"]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\ndevice = \"{id}\"\ngroup = \"{group}\"\n",
        server.addr(),
        pki.ca().display(),
        cert.display(),
        key.display(),
    )
}

/// Join `dev`'s apps to the fleet bus as `id`, with the certificate of `cert_of`.
fn join_as(dev: &TestRuntime, pki: &Pki, server: &Server, id: &str, cert_of: &str) {
    let fleet: FleetConfig = toml::from_str(&fleet_toml(pki, server, id, cert_of, "north")).unwrap();
    let config = RuntimeConfig::new(dev.apps(), dev.state());
    trellis_runtime::fleet::start_bus(&dev.runtime, &config, &fleet).unwrap();
}

fn join(dev: &TestRuntime, pki: &Pki, server: &Server, id: &str) {
    join_as(dev, pki, server, id, id);
}

fn publisher(topic: &str, fleet_grant: &str) -> Vec<u8> {
    let mut m = with_config(manifest("publisher"), &[("topic", topic), ("period-ms", "100")]);
    m.permissions.fleet.publish = vec![fleet_grant.to_owned()];
    pack("publisher", &m)
}

fn subscriber(pattern: &str, fleet_grant: &str) -> Vec<u8> {
    let mut m = with_config(manifest("subscriber"), &[("pattern", pattern), ("hotplug", "")]);
    m.permissions.fleet.subscribe = vec![fleet_grant.to_owned()];
    pack("subscriber", &m)
}

fn wait_log(dev: &TestRuntime, app: &str, needle: &str) -> String {
    match dev.wait_for(
        &format!("{app} logging {needle:?}"),
        Duration::from_secs(30),
        |e| matches!(e, RuntimeEvent::Log { app: a, message, .. } if a == app && message.contains(needle)),
    ) {
        RuntimeEvent::Log { message, .. } => message,
        _ => unreachable!(),
    }
}

#[test]
fn a_granted_fleet_topic_reaches_apps_on_other_devices() {
    let pki = Pki::new();
    let server = sim::single(&pki, &["operator"], &DEVICES);
    let dev1 = device(&[("publisher", publisher("fleet/demo/ticks", "demo/#"))], |_| {});
    let dev2 = device(&[("subscriber", subscriber("fleet/+/demo/#", "+/demo/#"))], |_| {});
    let edge = device(&[("subscriber", subscriber("fleet/dev-1/demo/ticks", "+/demo/#"))], |_| {});
    for (dev, id) in [(&dev1, "dev-1"), (&dev2, "dev-2"), (&edge, "edge-1")] {
        join(dev, &pki, &server, id);
    }
    // Another device's app, as `fleet/<device>/<topic>`, on a device and on the edge node.
    wait_log(&dev2, "subscriber", "fleet/dev-1/demo/ticks: ");
    wait_log(&edge, "subscriber", "fleet/dev-1/demo/ticks: ");
    // The host sees the bus too (a host subscription is interest like an app's).
    let host = dev2.runtime.subscribe("fleet/dev-1/#");
    let m = host.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((m.topic.as_str(), m.from.as_str()), ("fleet/dev-1/demo/ticks", "dev-1"));
    // (What it published before it joined the bus was dropped and counted.)
    let stats = dev1.runtime.bus_stats();
    assert!(stats.sent > 0, "{stats:?}");
    assert!(dev2.runtime.bus_stats().received > 0);
    // A fleet message is never a local one: dev-1's own subscribers see it
    // only back from the bus, with the device level.
    let own = dev1.runtime.subscribe("fleet/#").recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((own.topic.as_str(), own.from.as_str()), ("fleet/dev-1/demo/ticks", "dev-1"));
}

#[test]
fn ungranted_fleet_topics_are_refused_with_the_reason() {
    // The checks are the runtime's, before the network: no server needed,
    // and a device without a fleet refuses them the same way.
    let pub_elsewhere = publisher("fleet/secret/x", "demo/#");
    let mut local_wildcard = with_config(manifest("subscriber"), &[("pattern", "fleet/+/demo/#"), ("hotplug", "")]);
    local_wildcard.permissions.subscribe = vec!["#".into()];
    let dev = device(&[("publisher", pub_elsewhere), ("subscriber", pack("subscriber", &local_wildcard))], |_| {});
    let denied = dev.wait_for(
        "the publish denied",
        Duration::from_secs(30),
        |e| matches!(e, RuntimeEvent::Denied { app, .. } if app == "publisher"),
    );
    let RuntimeEvent::Denied { reason, .. } = denied else { unreachable!() };
    assert_eq!(reason, "publishing to \"fleet/secret/x\" on the fleet bus is not granted (permissions.fleet.publish)");
    // A local `#` does not reach into the bus: subscribing is refused, and so the app.
    let refused = dev.wait_refused("subscriber");
    assert!(
        refused.contains(
            "subscribing to \"fleet/+/demo/#\" on the fleet bus is not granted (permissions.fleet.subscribe)"
        ),
        "{refused}"
    );
    // A pattern wider than the grant (another topic of a granted device).
    let wider = subscriber("fleet/dev-1/#", "dev-1/demo/#");
    dev.install("subscriber", &wider);
    let refused = dev.wait_refused("subscriber");
    assert!(refused.contains("\"fleet/dev-1/#\" on the fleet bus is not granted"), "{refused}");
    // A level that would be several NATS tokens is invalid, not a topic.
    let dotted = publisher("fleet/demo/a.b", "demo/#");
    dev.install("publisher", &dotted);
    dev.wait_started("publisher", "1.0.0");
    let _ = dev.wait_for("the dotted topic refused", Duration::from_secs(30), |e| {
        matches!(e, RuntimeEvent::Log { app, message, .. } if app == "publisher"
            && message.contains("\"fleet/demo/a.b\": a level on the fleet bus may not contain '.', '*' or '>'"))
    });
}

#[test]
fn a_device_credential_cannot_publish_as_another_device() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let _in_rt = rt.enter();
    let pki = Pki::new();
    let server = sim::single(&pki, &["operator"], &DEVICES);
    let operator = rt.block_on(sim::Client::connect(&pki, &[server.addr()], "operator"));
    let mut seen = rt.block_on(operator.nats.subscribe("trellis.app.>")).unwrap();
    // dev-1's certificate, configured to call itself dev-2: the server refuses its subjects.
    let forger = device(&[("publisher", publisher("fleet/demo/ticks", "demo/#"))], |_| {});
    join_as(&forger, &pki, &server, "dev-2", "dev-1");
    // The honest dev-1 beside it, to show the bus works.
    let honest = device(&[("publisher", publisher("fleet/demo/ticks", "demo/#"))], |_| {});
    join(&honest, &pki, &server, "dev-1");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut from_honest = 0;
    while Instant::now() < deadline && (from_honest < 5 || forger.runtime.bus_stats().sent < 5) {
        let next = rt.block_on(tokio::time::timeout(Duration::from_secs(1), futures_next(&mut seen)));
        if let Ok(Some(subject)) = next {
            assert!(!subject.starts_with("trellis.app.dev-2."), "a forged message got through: {subject}");
            from_honest += usize::from(subject == "trellis.app.dev-1.demo.ticks");
        }
    }
    assert!(from_honest >= 5, "the honest device's messages arrive");
    assert!(forger.runtime.bus_stats().sent >= 5, "the forger published: {:?}", forger.runtime.bus_stats());
    // Anything in flight: still nothing from "dev-2" (the honest device goes on publishing).
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        let next = rt.block_on(tokio::time::timeout(Duration::from_millis(200), futures_next(&mut seen)));
        if let Ok(Some(subject)) = next {
            assert!(!subject.starts_with("trellis.app.dev-2."), "a forged message got through: {subject}");
        }
    }
}

/// The next message's subject.
async fn futures_next(sub: &mut async_nats::Subscriber) -> Option<String> {
    use futures_util::StreamExt;
    sub.next().await.map(|m| m.subject.to_string())
}

/// The `trellis-runtime` binary as an edge node: no hardware, `[fleet]` configured.
struct EdgeNode {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl EdgeNode {
    fn start(pki: &Pki, server: &Server, apps: &[(&str, Vec<u8>)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let apps_dir = dir.path().join("apps");
        std::fs::create_dir_all(&apps_dir).unwrap();
        for (name, bytes) in apps {
            support::install(&apps_dir, name, bytes);
        }
        let config = dir.path().join("runtime.toml");
        std::fs::write(
            &config,
            format!(
                "apps-dir = \"{}\"\nstate-dir = \"{}\"\n[fleet]\n{}board = \"edge\"\n",
                apps_dir.display(),
                dir.path().join("state").display(),
                fleet_toml(pki, server, "edge-1", "edge-1", "edge")
            ),
        )
        .unwrap();
        let log = dir.path().join("edge.log");
        let child = Command::new(env!("CARGO_BIN_EXE_trellis-runtime"))
            .args(["--board", "none", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, log, _dir: dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.log().contains(needle) {
            assert!(Instant::now() < deadline, "the edge node never logged {needle:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for EdgeNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on_sensor(name: &str, pairs: &[(&str, &str)]) -> Manifest {
    with_config(manifest(name), pairs)
}

#[test]
fn the_aggregator_on_an_edge_node_summarises_devices_and_they_take_its_setpoint() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let pki = Pki::new();
    let server = sim::single(&pki, &["operator"], &DEVICES);
    let _operator = rt.block_on(sim::operator(&pki, &[server.addr()], 1));
    // The edge node: the aggregator, and a thermostat that has no hardware there.
    let aggregator = pack("aggregator", &on_sensor("aggregator", &[("period-ms", "300")]));
    let edge = EdgeNode::start(&pki, &server, &[("aggregator", aggregator), ("thermostat", example("thermostat"))]);
    edge.wait_log("fleet bus started");
    edge.wait_log("GPIO line 22 does not exist (no GPIO chip (--board none) has 0 lines)");
    // Two devices' thermostats, reading 21.5 °C and 19.5 °C.
    let thermostat = pack("thermostat", &on_sensor("thermostat", &[("period-ms", "200")]));
    let dev1 = device(&[("thermostat", thermostat.clone())], |_| {});
    let dev2 = device(&[("thermostat", thermostat)], |_| {});
    dev2.board.temperature.set(19.5);
    join(&dev1, &pki, &server, "dev-1");
    join(&dev2, &pki, &server, "dev-2");

    // The aggregator hears both; mean 20.5 °C, 0.5 below the target: setpoint 21.0 + 0.5 × 0.5.
    edge.wait_log("following 2 devices: dev-1, dev-2");
    for dev in [&dev1, &dev2] {
        let line = wait_log(dev, "thermostat", "over 2 devices");
        assert_eq!(line, "setpoint 21.25 °C from edge-1 (fleet mean 20.50 °C over 2 devices)");
    }
}

#[test]
fn without_a_fleet_publishes_are_dropped_and_counted_and_the_app_runs_on() {
    let dev = device(&[("thermostat", pack("thermostat", &on_sensor("thermostat", &[("period-ms", "50")])))], |_| {});
    dev.wait_started("thermostat", "1.0.0");
    let deadline = Instant::now() + Duration::from_secs(30);
    while dev.runtime.bus_stats().dropped < 5 {
        assert!(Instant::now() < deadline, "{:?}", dev.runtime.bus_stats());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(dev.running_version("thermostat").as_deref(), Some("1.0.0"));
}
