//! Rollouts on a real 3-node `nats-server` cluster (every bucket and stream
//! replicated three times), with simulated devices running the real agent
//! and the real controller: waves advance on success and halt at the error
//! threshold; a server killed in the middle loses no report; a device that
//! was offline during the deploy catches up.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use trellis_fleet::sim as support;

use std::sync::Arc;
use std::time::Duration;

use support::Sim;
use support::{Pki, until};
use trellis_fleet::clock::SystemClock;
use trellis_fleet::controller::Controller;
use trellis_fleet::link::Link;
use trellis_fleet::names::{self, DESIRED};
use trellis_fleet::rollout::{Outcome, Plan, Rollout, State, WaveSize};
use trellis_fleet::sim;
use trellis_fleet::{EventKind, ops};

const GROUP: &str = "north";

struct Fleet {
    pki: Pki,
    servers: Vec<support::Server>,
    operator: Link,
    devices: Vec<Sim>,
    key: trellis_appfmt::SigningKey,
    _controllers: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    /// A cluster, `n` registered devices (`pi-1`..) running their agents, and two controllers.
    async fn start(n: usize) -> Self {
        let pki = Pki::new();
        let ids: Vec<String> = (1..=n).map(|i| format!("pi-{i}")).collect();
        let users: Vec<(&str, &str)> = ids.iter().map(|d| (d.as_str(), GROUP)).collect();
        let servers = support::cluster(&pki, &["operator", "controller-1", "controller-2"], &users);
        let addrs: Vec<_> = servers.iter().map(|s| s.addr()).collect();
        let operator = support::operator(&pki, &addrs, 3).await;
        let key = trellis_appfmt::generate_key();
        let mut devices = Vec::new();
        for id in &ids {
            ops::register(&operator, id, GROUP, sim::BOARD).await.unwrap();
            let mut d = Sim::new(&pki, &addrs, id, GROUP, sim::trust(&key));
            d.start().await;
            devices.push(d);
        }
        // Two controllers: they share the work through compare-and-set.
        let mut controllers = Vec::new();
        for name in ["controller-1", "controller-2"] {
            let link = Link::connect(&support::credentials(&pki, &addrs, name), None, false).await.unwrap();
            let c = Controller::new(link, Arc::new(SystemClock), Duration::from_millis(200));
            controllers.push(tokio::spawn(c.run()));
        }
        Self { pki, servers, operator, devices, key, _controllers: controllers }
    }

    async fn publish(&self, id: &str, version: &str) {
        let (release, artifacts) = sim::release(id, &self.key, &[("thermostat", version)]);
        ops::publish(&self.operator, &release, &artifacts).await.unwrap();
    }

    async fn rollout(&self, id: &str) -> Rollout {
        ops::rollout(&self.operator, id).await.unwrap().0
    }

    async fn wait_state(&self, id: &str, state: State, secs: u64) -> Rollout {
        until(secs, &format!("rollout {id} {state:?}"), || async { self.rollout(id).await.state == state }).await;
        self.rollout(id).await
    }
}

fn plan(waves: &[&str], error_pct: u8) -> Plan {
    Plan {
        waves: waves.iter().map(|w| w.parse::<WaveSize>().unwrap()).collect(),
        soak_s: 0,
        success_pct: 100,
        error_pct,
        attempts: 1,
        penalty_s: 0,
        forced: false,
        window: None,
    }
}

fn now() -> u64 {
    use trellis_fleet::clock::Clock;
    SystemClock.now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_advances_wave_by_wave_and_halts_at_the_error_threshold() {
    let fleet = Fleet::start(6).await;
    fleet.publish("thermostat-2.0.0", "2.0.0").await;
    let r =
        ops::deploy(&fleet.operator, "thermostat-2.0.0", GROUP, plan(&["1", "50%", "100%"], 30), now()).await.unwrap();
    let done = fleet.wait_state(&r.id, State::Done, 60).await;
    // Waves: 1 device, then 50 % of 6 (3 more), then the other 2, in id order.
    let waves: Vec<(String, u32)> = done.members.iter().map(|(d, m)| (d.clone(), m.wave)).collect();
    assert_eq!(
        waves,
        [("pi-1", 0), ("pi-2", 1), ("pi-3", 1), ("pi-4", 1), ("pi-5", 2), ("pi-6", 2)].map(|(d, w)| (d.to_owned(), w))
    );
    assert!(done.members.values().all(|m| m.outcome == Outcome::Updated));
    for d in &fleet.devices {
        assert!(d.runs("thermostat", "2.0.0"), "{}: {:?}", d.id, d.apps());
    }
    // The group now says the release; the devices' own keys are gone.
    let group = || async {
        let stored = fleet.operator.get_latest(DESIRED, &names::group_key(GROUP)).await.unwrap().unwrap();
        serde_json::from_slice::<trellis_fleet::DesiredState>(&stored.value).unwrap()
    };
    assert_eq!(group().await.release, "thermostat-2.0.0");
    assert!(fleet.operator.get_latest(DESIRED, &names::device_key("pi-1")).await.unwrap().is_none());
    // Nobody got a wave before the one before it was healthy.
    let events = sim::events(&fleet.operator).await;
    let at = |d: &str, k: EventKind| {
        events.iter().position(|e| e.device == d && e.kind == k && e.release == "thermostat-2.0.0").unwrap()
    };
    assert!(at("pi-1", EventKind::Healthy) < at("pi-2", EventKind::Downloaded));
    assert!(at("pi-4", EventKind::Healthy) < at("pi-5", EventKind::Downloaded));

    // The next release fails to start on two devices: the rollout halts by itself.
    fleet.publish("thermostat-3.0.0", "3.0.0").await;
    for d in &fleet.devices[3..5] {
        *d.device.refuse_apps.lock().unwrap() = Some("start failed: sensor not found".into());
    }
    let r = ops::deploy(&fleet.operator, "thermostat-3.0.0", GROUP, plan(&["1", "100%"], 30), now()).await.unwrap();
    let halted = fleet.wait_state(&r.id, State::Halted, 60).await;
    let reason = halted.reason.clone().unwrap();
    assert!(
        reason.contains("devices failed (error threshold 30 %)") && reason.contains("sensor not found"),
        "{reason}"
    );
    assert!(halted.counts().2 * 100 >= 30 * halted.counts().0, "{:?}", halted.counts());
    // The devices that refused run the old version; the reason is in the audit log.
    assert!(fleet.devices[3].runs("thermostat", "2.0.0"));
    until(10, "pi-4's refusal in the audit log", || async {
        sim::events(&fleet.operator).await.iter().any(|e| {
            e.device == "pi-4"
                && e.kind == EventKind::Refused
                && e.reason.as_deref().is_some_and(|r| r.contains("sensor not found"))
        })
    })
    .await;
    // A halted rollout's group is not moved on.
    assert_eq!(group().await.release, "thermostat-2.0.0");
    // Fixed, resumed: the failed devices try again and the rollout finishes.
    for d in &fleet.devices[3..5] {
        d.device.refuse_apps.lock().unwrap().take();
    }
    ops::resume(&fleet.operator, &r.id).await.unwrap();
    fleet.wait_state(&r.id, State::Done, 60).await;
    assert!(fleet.devices.iter().all(|d| d.runs("thermostat", "3.0.0")));
    drop(fleet.pki);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_loses_no_report_and_an_offline_device_catches_up() {
    let mut fleet = Fleet::start(4).await;
    fleet.publish("thermostat-2.0.0", "2.0.0").await;
    // pi-4 is offline during the deploy.
    fleet.devices[3].stop();
    let mut p = plan(&["1", "100%"], 50);
    p.soak_s = 2;
    let r = ops::deploy(&fleet.operator, "thermostat-2.0.0", GROUP, p, now()).await.unwrap();
    until(60, "the first wave healthy", || async {
        fleet.rollout(&r.id).await.members.get("pi-1").is_some_and(|m| m.outcome == Outcome::Updated)
    })
    .await;
    // One server goes (the one the operator is connected to, so it fails over too).
    let port = fleet.operator.nats.server_info().port;
    let i = fleet.servers.iter().position(|s| s.addr().port() == port).unwrap();
    fleet.servers[i].kill();
    // The others get the release; the rollout waits for pi-4.
    until(120, "pi-2 and pi-3 updated", || async { fleet.devices[1..3].iter().all(|d| d.runs("thermostat", "2.0.0")) })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fleet.rollout(&r.id).await.state, State::Running, "waiting for the offline device");
    assert!(!fleet.devices[3].runs("thermostat", "2.0.0"));
    // pi-4 comes back and catches up; the rollout finishes. With one of
    // three servers gone, nats-server 2.9 can take tens of seconds to serve
    // the artifacts' stream again (requests on it time out meanwhile, and
    // the device retries), longer on a loaded machine.
    fleet.devices[3].start().await;
    let done = fleet.wait_state(&r.id, State::Done, 180).await;
    assert!(done.members.values().all(|m| m.outcome == Outcome::Updated));
    // Every device's report and every event landed: none lost to the killed server.
    let reports = ops::reports(&fleet.operator).await.unwrap();
    for d in &fleet.devices {
        let rep = &reports[&d.id];
        assert_eq!(rep.release.as_deref(), Some("thermostat-2.0.0"), "{rep:?}");
        assert!(rep.healthy);
    }
    let events = sim::events(&fleet.operator).await;
    for d in &fleet.devices {
        let kinds: Vec<EventKind> = events.iter().filter(|e| e.device == d.id).map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [EventKind::Downloaded, EventKind::Verified, EventKind::Installed, EventKind::Healthy],
            "{}",
            d.id
        );
    }
    for d in &fleet.devices {
        assert_eq!(
            std::fs::read_dir(d.dir.path().join("fleet/outbox")).unwrap().count(),
            0,
            "{}: every event acknowledged",
            d.id
        );
    }
}
