//! The fleet bus between apps, NATS side (docs/fleet.md, "The app bus").
//!
//! The runtime holds a [`BusHandle`]: apps' threads hand it messages
//! ([`BusHandle::publish`], never blocking: a bounded queue, and a message
//! that does not fit is dropped and counted) and the broker tells it which
//! bus patterns its apps subscribe to ([`BusHandle::set_interest`]). A
//! [`BusDriver`], run on the fleet thread's executor over the device's own
//! [`Link`], publishes the queue on the device's subjects
//! (`trellis.app.<device>.<topic>`) and holds one NATS subscription per
//! filter the patterns need, handing what arrives to the runtime.
//!
//! Delivery is at most once, like NATS core: while the link is down the
//! queue holds what it can (at most [`QUEUE_MESSAGES`] messages and
//! [`QUEUE_BYTES`] bytes) and sends it when the link is back; beyond that,
//! messages are dropped and counted ([`BusStats::dropped`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::link::Link;
use crate::names;

/// Most messages queued for the bus (apps' publishes not yet handed to NATS).
pub const QUEUE_MESSAGES: usize = 1024;
/// Most payload bytes queued for the bus.
pub const QUEUE_BYTES: usize = 1 << 20;

/// How a message from the bus reaches the apps: device, topic (`a/b`), payload.
pub type Deliver = Arc<dyn Fn(&str, &str, &[u8]) + Send + Sync>;

/// What the bus has done since the runtime started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Messages apps published that went out to NATS.
    pub sent: u64,
    /// Messages from NATS handed to the apps' broker.
    pub received: u64,
    /// Messages apps published that never went out: the queue was full
    /// (the link down for long, or publishing faster than it carries), the
    /// device has no fleet configured, or NATS refused them.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
}

struct Outgoing {
    topic: String,
    payload: Vec<u8>,
}

/// What the handles and the driver share.
#[derive(Debug, Default)]
struct Shared {
    attached: AtomicBool,
    queued_bytes: AtomicUsize,
    counters: Counters,
}

/// The handles' side; when the last handle goes (the runtime stopped), the
/// queue and the interest close and the driver ends.
struct Inner {
    tx: mpsc::Sender<Outgoing>,
    rx: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    interest: watch::Sender<Vec<String>>,
    shared: Arc<Shared>,
}

/// The runtime's side of the bus (cheap to clone; every method is
/// non-blocking).
#[derive(Clone)]
pub struct BusHandle(Arc<Inner>);

impl std::fmt::Debug for BusHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusHandle").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl Default for BusHandle {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_MESSAGES);
        Self(Arc::new(Inner {
            tx,
            rx: Mutex::new(Some(rx)),
            interest: watch::Sender::new(Vec::new()),
            shared: Arc::default(),
        }))
    }
}

impl BusHandle {
    /// Queue `payload` for topic `topic` (`a/b`, checked by the caller) as
    /// this device's. Never blocks: when the queue is full, or no driver
    /// runs (the device has no fleet), the message is dropped and counted.
    pub fn publish(&self, topic: &str, payload: &[u8]) {
        let (inner, shared) = (&self.0, &self.0.shared);
        if !shared.attached.load(Ordering::Relaxed) {
            shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(topic, "fleet bus: no fleet configured, message dropped");
            return;
        }
        let len = payload.len();
        let fits = shared
            .queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| (q + len <= QUEUE_BYTES).then_some(q + len))
            .is_ok();
        let sent = fits
            && match inner.tx.try_send(Outgoing { topic: topic.to_owned(), payload: payload.to_vec() }) {
                Ok(()) => true,
                Err(_) => {
                    shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                    false
                }
            };
        if !sent {
            let n = shared.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "fleet bus queue full: messages dropped (is the fleet link down?)");
            }
        }
    }

    /// The bus patterns (`<device or +>/<topic pattern>`) the apps subscribe to now.
    pub fn set_interest(&self, mut patterns: Vec<String>) {
        patterns.sort();
        patterns.dedup();
        self.0.interest.send_if_modified(|now| {
            let changed = *now != patterns;
            if changed {
                *now = patterns;
            }
            changed
        });
    }

    /// What the bus has done so far.
    #[must_use]
    pub fn stats(&self) -> BusStats {
        let c = &self.0.shared.counters;
        BusStats {
            sent: c.sent.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
        }
    }

    /// The NATS side, once (`None` when it was taken already). From the moment
    /// it is taken, publishes are queued instead of dropped.
    #[must_use]
    pub fn driver(&self, deliver: Deliver) -> Option<BusDriver> {
        let rx = self.0.rx.lock().unwrap_or_else(PoisonError::into_inner).take()?;
        self.0.shared.attached.store(true, Ordering::Relaxed);
        Some(BusDriver { shared: self.0.shared.clone(), rx, interest: self.0.interest.subscribe(), deliver })
    }
}

/// The NATS side of the bus: run it on an executor with [`BusDriver::run`].
pub struct BusDriver {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Outgoing>,
    interest: watch::Receiver<Vec<String>>,
    deliver: Deliver,
}

impl std::fmt::Debug for BusDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusDriver").finish_non_exhaustive()
    }
}

/// Whether a message on the bus is a server's answer to a request rather
/// than an app's message. A server sends its answer wherever the request's
/// reply subject says, so a device can have one arrive on the bus under
/// another device's subject (in the devices' account; it reaches no stream,
/// see `server::ServerConfig`). The answers a device can ask for are
/// JetStream's: a direct get's carries the stored message's `Nats-` headers,
/// an error a status, the API's JSON its type, and a stream's acknowledgement
/// of a published message (a report, an event) is a JSON object of
/// [`ACK_FIELDS`] only. A device's bus driver publishes an app's bytes,
/// with no headers: only an app's message shaped exactly like one of these
/// would be taken for an answer.
fn from_the_server(message: &async_nats::Message) -> bool {
    message.status.is_some()
        || message
            .headers
            .as_ref()
            .is_some_and(|h| h.iter().any(|(name, _)| AsRef::<str>::as_ref(name).starts_with("Nats-")))
        || message.payload.starts_with(br#"{"type":"io.nats.jetstream.api.v1."#)
        || is_publish_ack(&message.payload)
}

/// The fields of a stream's acknowledgement of a published message,
/// `{"stream":"KV_trellis-reported","seq":7}`, or of its refusal,
/// `{"error":{…},"stream":…,"seq":0}`.
const ACK_FIELDS: [&str; 5] = ["stream", "seq", "domain", "duplicate", "error"];

fn is_publish_ack(payload: &[u8]) -> bool {
    if !payload.starts_with(b"{") {
        return false;
    }
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return false;
    };
    (fields.contains_key("stream") || fields.contains_key("error"))
        && fields.keys().all(|k| ACK_FIELDS.contains(&k.as_str()))
}

/// Whether NATS subject `subject` matches `filter` (`*` one token, `>` the rest).
fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) | (None, None) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

impl BusDriver {
    /// Carry apps' messages out as `device`'s, and the bus's in, over `link`,
    /// until the runtime goes away (its last [`BusHandle`] is dropped).
    pub async fn run(mut self, link: Link, device: String) {
        // One subscription per filter; a message that matches several is
        // handed on by the first (in order) of those it matches, so once.
        let filters: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let mut subscriptions: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        let mut interest_open = true;
        // What the apps subscribed to before the driver ran counts too.
        self.interest.mark_changed();
        'run: loop {
            tokio::select! {
                changed = self.interest.changed(), if interest_open => {
                    if changed.is_err() {
                        interest_open = false;
                        continue;
                    }
                    let patterns = self.interest.borrow_and_update().clone();
                    let wanted: BTreeSet<String> = patterns.iter().flat_map(|p| names::app_filters(p)).collect();
                    *filters.lock().unwrap_or_else(PoisonError::into_inner) = wanted.clone();
                    subscriptions.retain(|filter, task| {
                        let keep = wanted.contains(filter);
                        if !keep {
                            task.abort();
                        }
                        keep
                    });
                    for filter in wanted {
                        if subscriptions.contains_key(&filter) {
                            continue;
                        }
                        match link.nats.subscribe(filter.clone()).await {
                            Ok(sub) => {
                                let task = self.forward(sub, filter.clone(), filters.clone());
                                subscriptions.insert(filter, task);
                            }
                            Err(e) => tracing::warn!("fleet bus: subscribing to {filter}: {e}"),
                        }
                    }
                    tracing::debug!(filters = ?subscriptions.keys().collect::<Vec<_>>(), "fleet bus subscriptions");
                }
                out = self.rx.recv() => {
                    let Some(out) = out else { break };
                    // Hold the queue while the link is down (bounded by the queue).
                    while link.nats.connection_state() != async_nats::connection::State::Connected {
                        if self.rx.is_closed() {
                            break 'run;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    self.shared.queued_bytes.fetch_sub(out.payload.len(), Ordering::AcqRel);
                    let subject = names::app_subject(&device, &out.topic);
                    match link.nats.publish(subject, out.payload.into()).await {
                        Ok(()) => {
                            self.shared.counters.sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!("fleet bus: publishing {}: {e}", out.topic);
                        }
                    }
                }
            }
        }
        for task in subscriptions.into_values() {
            task.abort();
        }
    }

    fn forward(
        &self,
        mut sub: async_nats::Subscriber,
        filter: String,
        filters: Arc<Mutex<BTreeSet<String>>>,
    ) -> tokio::task::JoinHandle<()> {
        let (deliver, shared) = (self.deliver.clone(), self.shared.clone());
        tokio::spawn(async move {
            while let Some(message) = sub.next().await {
                let subject = message.subject.as_str();
                let first = filters
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .find(|f| subject_matches(f, subject))
                    .is_some_and(|f| *f == filter);
                if !first {
                    continue;
                }
                if from_the_server(&message) {
                    tracing::debug!(subject, "fleet bus: a server's answer sent to the bus, dropped");
                    continue;
                }
                if let Some((device, topic)) = names::app_topic(subject) {
                    shared.counters.received.fetch_add(1, Ordering::Relaxed);
                    deliver(device, &topic, &message.payload);
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_servers_answer_is_told_from_an_apps_message() {
        let message = |payload: &'static [u8], header: Option<&str>, status: Option<u16>| async_nats::Message {
            subject: "trellis.app.pi-2.readings.t".into(),
            reply: None,
            payload: payload.into(),
            headers: header.map(|h| {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(h, "x");
                headers
            }),
            status: status.map(|s| async_nats::StatusCode::from_u16(s).unwrap()),
            description: None,
            length: 0,
        };
        assert!(!from_the_server(&message(b"21.5", None, None)));
        assert!(!from_the_server(&message(br#"{"t":21.5}"#, Some("App-Header"), None)));
        assert!(from_the_server(&message(br#"{"release":"r-n"}"#, Some("Nats-Stream"), None)));
        assert!(from_the_server(&message(b"", None, Some(404))));
        assert!(from_the_server(&message(
            br#"{"type":"io.nats.jetstream.api.v1.stream_info_response","config":{}}"#,
            None,
            None
        )));
        assert!(from_the_server(&message(br#"{"stream":"KV_trellis-reported","seq":7}"#, None, None)));
        assert!(from_the_server(&message(
            br#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 3"},"stream":"KV_trellis-reported","seq":0}"#,
            None,
            None
        )));
        assert!(!from_the_server(&message(br#"{"stream":"river","flow":2.5}"#, None, None)));
    }

    #[test]
    fn subjects_match_filters() {
        assert!(subject_matches("trellis.app.*.readings.>", "trellis.app.pi-1.readings.t"));
        assert!(!subject_matches("trellis.app.*.readings.>", "trellis.app.pi-1.readings"));
        assert!(subject_matches("trellis.app.*.readings", "trellis.app.pi-1.readings"));
        assert!(!subject_matches("trellis.app.pi-2.>", "trellis.app.pi-1.readings"));
        assert!(!subject_matches("trellis.app.*.a", "trellis.app.pi-1.a.b"));
    }

    #[test]
    fn without_a_driver_publishes_are_dropped_and_counted() {
        let bus = BusHandle::default();
        bus.publish("readings/t", b"21.5");
        assert_eq!(bus.stats(), BusStats { sent: 0, received: 0, dropped: 1 });
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let bus = BusHandle::default();
        let _driver = bus.driver(Arc::new(|_, _, _| {})).expect("the driver");
        assert!(bus.driver(Arc::new(|_, _, _| {})).is_none(), "taken once");
        for _ in 0..QUEUE_MESSAGES + 10 {
            bus.publish("readings/t", b"1");
        }
        assert_eq!(bus.stats().dropped, 10);
        // Bytes bound it too.
        let bus = BusHandle::default();
        let _driver = bus.driver(Arc::new(|_, _, _| {})).expect("the driver");
        let big = vec![0u8; 64 * 1024];
        for _ in 0..20 {
            bus.publish("readings/t", &big);
        }
        assert_eq!(bus.stats().dropped, 20 - (QUEUE_BYTES / big.len()) as u64);
    }
}
