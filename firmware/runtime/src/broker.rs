//! Message routing: pub/sub topics, hot-plug subscriptions, and the mailbox of
//! each running app (which a swap repoints at the new version); `fleet/...`
//! topics go to and come from the fleet bus (`trellis_fleet::bus`).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};

use crossbeam_channel::{Sender, TrySendError};
use trellis_appfmt::{FLEET_PREFIX, topic_matches};
use trellis_fleet::bus::BusHandle;

use crate::bindings::Event;
use crate::mailbox::WorkerMsg;
use crate::sync::lock;

/// A published message, as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic.
    pub topic: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// Who published it: an app name, or `host`.
    pub from: String,
}

#[derive(Default, Clone)]
pub(crate) struct Subscriptions {
    pub topics: Vec<String>,
    pub hotplug: Vec<String>,
}

#[derive(Default)]
pub(crate) struct Broker {
    routes: RwLock<HashMap<String, Sender<WorkerMsg>>>,
    subs: RwLock<HashMap<String, Subscriptions>>,
    host: Mutex<Vec<(String, Sender<Message>)>>,
    dropped: Mutex<HashMap<String, u64>>,
    /// The fleet bus: apps' `fleet/...` publishes go to it, and it is told
    /// which `fleet/...` patterns are subscribed (docs/fleet.md, "The app bus").
    bus: BusHandle,
}

/// The bus pattern of a `fleet/...` subscription (`fleet/+/a/#` → `+/a/#`).
fn bus_pattern(pattern: &str) -> Option<&str> {
    pattern.strip_prefix(FLEET_PREFIX)?.strip_prefix('/')
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

impl Broker {
    /// Point `app`'s mailbox at a new worker, returning the previous one.
    pub fn set_route(&self, app: &str, to: Sender<WorkerMsg>) -> Option<Sender<WorkerMsg>> {
        write(&self.routes).insert(app.to_owned(), to)
    }

    /// Forget `app` entirely (stopped or removed).
    pub fn remove(&self, app: &str) {
        write(&self.routes).remove(app);
        write(&self.subs).remove(app);
        self.bus_interest_changed();
    }

    /// Replace `app`'s subscriptions (at the commit of a swap).
    pub fn set_subscriptions(&self, app: &str, subs: Subscriptions) {
        write(&self.subs).insert(app.to_owned(), subs);
        self.bus_interest_changed();
    }

    /// The fleet bus.
    pub fn bus(&self) -> &BusHandle {
        &self.bus
    }

    /// Tell the bus every `fleet/...` pattern apps and the host follow now.
    fn bus_interest_changed(&self) {
        let mut patterns: Vec<String> = read(&self.subs)
            .values()
            .flat_map(|s| s.topics.iter().filter_map(|p| bus_pattern(p)).map(str::to_owned))
            .collect();
        patterns.extend(lock(&self.host).iter().filter_map(|(p, _)| bus_pattern(p)).map(str::to_owned));
        self.bus.set_interest(patterns);
    }

    /// A message from the fleet bus: topic `fleet/<device>/<topic>`, to the
    /// apps (and host subscribers) following it. Only `fleet/...` patterns
    /// match: a local grant such as `#` never reaches into the bus.
    pub fn deliver_bus(&self, device: &str, topic: &str, payload: &[u8]) {
        let topic = format!("{FLEET_PREFIX}/{device}/{topic}");
        let matches = |p: &str| bus_pattern(p).is_some() && topic_matches(p, &topic);
        let targets: Vec<String> = read(&self.subs)
            .iter()
            .filter(|(_, s)| s.topics.iter().any(|p| matches(p)))
            .map(|(app, _)| app.clone())
            .collect();
        for app in targets {
            let event = Event::Message(crate::bindings::WitMessage { topic: topic.clone(), payload: payload.to_vec() });
            self.deliver(&app, event);
        }
        let mut host = lock(&self.host);
        host.retain(|(pattern, tx)| {
            !topic_matches(pattern, &topic)
                || tx.send(Message { topic: topic.clone(), payload: payload.to_vec(), from: device.to_owned() }).is_ok()
        });
    }

    /// Add one topic subscription for a live app.
    pub fn subscribe(&self, app: &str, pattern: &str) {
        let mut subs = write(&self.subs);
        let s = subs.entry(app.to_owned()).or_default();
        if !s.topics.iter().any(|p| p == pattern) {
            s.topics.push(pattern.to_owned());
        }
        drop(subs);
        self.bus_interest_changed();
    }

    pub fn unsubscribe(&self, app: &str, pattern: &str) {
        if let Some(s) = write(&self.subs).get_mut(app) {
            s.topics.retain(|p| p != pattern);
        }
        self.bus_interest_changed();
    }

    pub fn subscribe_hotplug(&self, app: &str, subsystem: &str) {
        let mut subs = write(&self.subs);
        let s = subs.entry(app.to_owned()).or_default();
        if !s.hotplug.iter().any(|p| p == subsystem) {
            s.hotplug.push(subsystem.to_owned());
        }
    }

    /// Deliver `event` to `app`'s current version. Drops it (and counts) when the
    /// app's mailbox is full; a stuck app must not stall the publisher.
    pub fn deliver(&self, app: &str, event: Event) {
        let route = read(&self.routes).get(app).cloned();
        if let Some(tx) = route {
            match tx.try_send(WorkerMsg::Event(event)) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(_)) => {
                    let mut dropped = lock(&self.dropped);
                    let n = dropped.entry(app.to_owned()).or_default();
                    *n += 1;
                    if n.is_power_of_two() {
                        tracing::warn!(app, dropped = *n, "mailbox full: events dropped");
                    }
                }
            }
        }
    }

    /// Publish to every matching app and host subscriber.
    pub fn publish(&self, from: &str, topic: &str, payload: &[u8]) {
        let targets: Vec<String> = read(&self.subs)
            .iter()
            .filter(|(_, s)| s.topics.iter().any(|p| topic_matches(p, topic)))
            .map(|(app, _)| app.clone())
            .collect();
        for app in targets {
            let event =
                Event::Message(crate::bindings::WitMessage { topic: topic.to_owned(), payload: payload.to_vec() });
            self.deliver(&app, event);
        }
        let mut host = lock(&self.host);
        host.retain(|(pattern, tx)| {
            !topic_matches(pattern, topic)
                || tx
                    .send(Message { topic: topic.to_owned(), payload: payload.to_vec(), from: from.to_owned() })
                    .is_ok()
        });
    }

    /// A host-side subscription (the CLI, tests).
    pub fn subscribe_host(&self, pattern: &str, tx: Sender<Message>) {
        lock(&self.host).push((pattern.to_owned(), tx));
        self.bus_interest_changed();
    }

    /// Apps subscribed to hot-plug events of `subsystem`.
    pub fn hotplug_subscribers(&self, subsystem: &str) -> Vec<String> {
        read(&self.subs)
            .iter()
            .filter(|(_, s)| s.hotplug.iter().any(|h| h == subsystem))
            .map(|(app, _)| app.clone())
            .collect()
    }

    /// Events dropped for `app` because its mailbox was full.
    pub fn dropped(&self, app: &str) -> u64 {
        lock(&self.dropped).get(app).copied().unwrap_or(0)
    }
}
