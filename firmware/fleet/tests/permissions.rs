//! A device's credential against a real `nats-server` (mutual TLS, each
//! certificate mapped to its user): it reads and watches only its own
//! desired state and its group's, reads releases, writes only its own
//! reported state and events, and nothing else.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use trellis_fleet::sim as support;

use async_nats::jetstream::{consumer, kv, stream};
use futures_util::StreamExt;
use std::time::Duration;
use support::{Client, Pki};
use trellis_fleet::link::{Entry, Link};
use trellis_fleet::names::{self, DESIRED, RELEASES, REPORTED, device_key, group_key, kv_stream, kv_subject};

async fn buckets(operator: &Client) {
    for bucket in [DESIRED, REPORTED, RELEASES] {
        operator
            .js
            .create_key_value(kv::Config { bucket: bucket.into(), history: 5, ..Default::default() })
            .await
            .unwrap();
    }
    operator
        .js
        .create_stream(stream::Config {
            name: names::EVENTS_STREAM.into(),
            subjects: vec![names::EVENTS_SUBJECTS.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let desired = operator.js.get_key_value(DESIRED).await.unwrap();
    for (key, release) in [
        (device_key("pi-1"), "r-1"),
        (device_key("pi-2"), "r-2"),
        (group_key("north"), "r-n"),
        (group_key("south"), "r-s"),
    ] {
        desired.put(key, format!("{{\"release\":\"{release}\"}}").into()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_reads_only_its_own_desired_state_and_writes_only_its_own_reports() {
    let pki = Pki::new();
    let server = support::single(&pki, &["operator"], &[("pi-1", "north"), ("pi-2", "south")]);
    let operator = Client::connect(&pki, &[server.addr()], "operator").await;
    buckets(&operator).await;
    let device = Client::connect(&pki, &[server.addr()], "pi-1").await;
    let link = Link::connect(&support::credentials(&pki, &[server.addr()], "pi-1"), Some("pi-1"), false).await.unwrap();

    // Its own desired state and its group's: readable, as the agent reads them.
    let value = |e: Entry| String::from_utf8(e.value.unwrap()).unwrap();
    assert_eq!(value(link.entry(DESIRED, &device_key("pi-1")).await.unwrap()), r#"{"release":"r-1"}"#);
    assert_eq!(value(link.entry(DESIRED, &group_key("north")).await.unwrap()), r#"{"release":"r-n"}"#);

    // Another device's, another group's: denied by the server.
    let desired = device.js.get_stream_no_info(kv_stream(DESIRED)).await.unwrap();
    let read = |key: String| desired.direct_get_last_for_subject(kv_subject(DESIRED, &key));
    assert!(read(device_key("pi-2")).await.is_err(), "read another device's desired state");
    assert!(device.was_denied(&kv_subject(DESIRED, &device_key("pi-2"))).await, "{:?}", device.errors);
    assert!(read(group_key("south")).await.is_err(), "read another group's desired state");

    // Nor which devices and groups there are: a stream's information lists
    // the keys it holds when asked with a subjects filter.
    for bucket in [DESIRED, REPORTED] {
        let info = device.js.get_stream(kv_stream(bucket)).await;
        assert!(info.is_err(), "asked for {bucket}'s stream information");
        assert!(device.was_denied(&format!("$JS.API.STREAM.INFO.{}", kv_stream(bucket))).await, "{:?}", device.errors);
        assert!(device.js.get_key_value(bucket).await.is_err(), "opened {bucket}, which asks for it");
    }

    // No desired state may be written, not even its own.
    assert!(link.put(DESIRED, &device_key("pi-1"), b"{}".to_vec()).await.is_err(), "wrote its own desired state");
    let forged = device.js.publish(kv_subject(DESIRED, &device_key("pi-1")), "{}".into()).await.unwrap();
    assert!(forged.await.is_err(), "wrote its own desired state");
    assert!(device.was_denied(&kv_subject(DESIRED, &device_key("pi-1"))).await);
    let unchanged = operator.js.get_key_value(DESIRED).await.unwrap().get(device_key("pi-1")).await.unwrap();
    assert_eq!(unchanged.unwrap().as_ref(), br#"{"release":"r-1"}"#);

    // Its reported state and events: writable; another device's: not.
    link.put(REPORTED, "pi-1", b"{\"healthy\":true}".to_vec()).await.unwrap();
    assert!(
        link.put(REPORTED, "pi-2", b"{\"healthy\":false}".to_vec()).await.is_err(),
        "wrote another device's report"
    );
    let ack = device.js.publish(names::events_subject("pi-1"), "{}".into()).await.unwrap();
    ack.await.unwrap();
    let forged = device.js.publish(names::events_subject("pi-2"), "{}".into()).await.unwrap();
    assert!(forged.await.is_err(), "published another device's event");
    let seen = operator.js.get_key_value(REPORTED).await.unwrap();
    assert!(seen.get("pi-2").await.unwrap().is_none());
    assert_eq!(seen.get("pi-1").await.unwrap().unwrap().as_ref(), b"{\"healthy\":true}");

    // Releases are readable, not writable.
    operator.js.get_key_value(RELEASES).await.unwrap().put("r-1", "{}".into()).await.unwrap();
    let releases = device.js.get_key_value(RELEASES).await.unwrap();
    assert!(releases.get("r-1").await.unwrap().is_some());
    assert!(releases.put("r-evil", "{}".into()).await.is_err(), "wrote a release");
}

/// Watching: a subscription to its own key's subject (and its group's)
/// hears each write; one to another device's key, or to the whole bucket,
/// is refused; and a device may create no consumer on the desired state nor
/// on the releases (a push consumer delivers wherever its maker says, and
/// someone else may listen there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_watches_only_its_own_key() {
    let pki = Pki::new();
    let server = support::single(&pki, &["operator"], &[("pi-1", "north"), ("pi-2", "south")]);
    let operator = Client::connect(&pki, &[server.addr()], "operator").await;
    buckets(&operator).await;
    let device = Client::connect(&pki, &[server.addr()], "pi-1").await;
    let mut mine = device.nats.subscribe(kv_subject(DESIRED, &device_key("pi-1"))).await.unwrap();
    let mut group = device.nats.subscribe(kv_subject(DESIRED, &group_key("north"))).await.unwrap();
    device.nats.flush().await.unwrap();
    let desired = operator.js.get_key_value(DESIRED).await.unwrap();
    desired.put(device_key("pi-2"), r#"{"release":"r-8"}"#.into()).await.unwrap();
    desired.put(device_key("pi-1"), r#"{"release":"r-9"}"#.into()).await.unwrap();
    desired.put(group_key("north"), r#"{"release":"r-7"}"#.into()).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), mine.next()).await.unwrap().unwrap();
    assert_eq!(next.payload.as_ref(), br#"{"release":"r-9"}"#, "only its own key's change");
    let next = tokio::time::timeout(Duration::from_secs(5), group.next()).await.unwrap().unwrap();
    assert_eq!(next.payload.as_ref(), br#"{"release":"r-7"}"#);

    for other in [kv_subject(DESIRED, &device_key("pi-2")), kv_subject(DESIRED, ">")] {
        let _denied = device.nats.subscribe(other.clone()).await.unwrap();
        device.nats.flush().await.unwrap();
        assert!(device.was_denied(&other).await, "subscribed to {other}: {:?}", device.errors);
    }

    let stream = device.js.get_stream_no_info(kv_stream(DESIRED)).await.unwrap();
    let own = consumer::push::OrderedConfig {
        name: Some("own".into()),
        filter_subject: kv_subject(DESIRED, &device_key("pi-1")),
        deliver_subject: device.nats.new_inbox(),
        ..Default::default()
    };
    assert!(stream.create_consumer(own).await.is_err(), "a consumer on its own key");
    let unfiltered = consumer::push::OrderedConfig { deliver_subject: device.nats.new_inbox(), ..Default::default() };
    assert!(stream.create_consumer(unfiltered).await.is_err(), "a consumer on the whole bucket");
    let releases = device.js.get_stream_no_info(kv_stream(RELEASES)).await.unwrap();
    let pushed = consumer::push::Config {
        name: Some("pushed".into()),
        deliver_subject: names::app_subject("pi-2", "x"),
        ..Default::default()
    };
    assert!(releases.create_consumer(pushed).await.is_err(), "a consumer on the releases, pushed to pi-2's subject");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_app_bus_a_device_publishes_only_as_itself() {
    let pki = Pki::new();
    let server = support::single(&pki, &["operator"], &[("pi-1", "north"), ("pi-2", "south")]);
    let operator = Client::connect(&pki, &[server.addr()], "operator").await;
    let pi1 = Client::connect(&pki, &[server.addr()], "pi-1").await;
    let pi2 = Client::connect(&pki, &[server.addr()], "pi-2").await;
    // A device may follow every device's apps (the apps' grants narrow it, in the runtime).
    let mut heard = pi2.nats.subscribe(names::APP_BUS_SUBJECTS).await.unwrap();
    let mut operator_heard = operator.nats.subscribe(names::APP_BUS_SUBJECTS).await.unwrap();
    pi2.nats.flush().await.unwrap();
    operator.nats.flush().await.unwrap();
    // A flush only empties the client's buffer: each subscription is in place
    // at the server once it has heard one of pi-1's markers (sent until it has).
    let ready = names::app_subject("pi-1", "ready");
    for sub in [&mut heard, &mut operator_heard] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            pi1.nats.publish(ready.clone(), "".into()).await.unwrap();
            pi1.nats.flush().await.unwrap();
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await
                && m.subject.ends_with(".ready")
            {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "a subscription never heard pi-1");
        }
    }

    // As itself: carried.
    pi1.nats.publish(names::app_subject("pi-1", "readings/t"), "21.5".into()).await.unwrap();
    // As another device: refused by the server, naming the subject.
    let forged = names::app_subject("pi-2", "readings/t");
    pi1.nats.publish(forged.clone(), "99".into()).await.unwrap();
    pi1.nats.flush().await.unwrap();
    assert!(pi1.was_denied(&forged).await, "{:?}", pi1.errors);
    // Nor outside the bus under a name that looks like it.
    pi1.nats.publish("trellis.apps.pi-1.x", "1".into()).await.unwrap();
    pi1.nats.flush().await.unwrap();
    assert!(pi1.was_denied("trellis.apps.pi-1.x").await);
    // The marker that ends the wait.
    pi1.nats.publish(names::app_subject("pi-1", "done"), "".into()).await.unwrap();
    for sub in [&mut heard, &mut operator_heard] {
        let mut subjects = Vec::new();
        while subjects.last().is_none_or(|s: &String| !s.ends_with(".done")) {
            let m = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap();
            if !m.subject.ends_with(".ready") {
                subjects.push(m.subject.to_string());
            }
        }
        assert_eq!(subjects, ["trellis.app.pi-1.readings.t", "trellis.app.pi-1.done"]);
    }
    // Subscribing beyond the bus and its inbox is refused.
    let _events = pi2.nats.subscribe("trellis.events.>").await.unwrap();
    pi2.nats.flush().await.unwrap();
    assert!(pi2.was_denied("trellis.events.>").await, "{:?}", pi2.errors);
}

/// pi-1 and pi-2 on one server whose buckets and events stream the client
/// library made with its defaults, then the fleet's setup on them.
async fn set_up_after_the_client_library() -> (Pki, support::Server, trellis_fleet::link::Link) {
    let pki = Pki::new();
    let server = support::single(&pki, &["operator"], &[("pi-1", "north"), ("pi-2", "south")]);
    buckets(&Client::connect(&pki, &[server.addr()], "operator").await).await;
    let operator = support::operator(&pki, &[server.addr()], 1).await;
    (pki, server, operator)
}

/// Nothing a device writes to its own report removes another's: a roll-up
/// (which would purge every other subject of the bucket's stream) is
/// refused, also in a bucket made before setup refused them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_wipe_the_other_devices_reports() {
    let (pki, server, operator) = set_up_after_the_client_library().await;
    operator.put(REPORTED, "pi-2", b"{\"healthy\":true}".to_vec()).await.unwrap();
    let device = Client::connect(&pki, &[server.addr()], "pi-1").await;
    for rollup in ["all", "sub"] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Rollup", rollup);
        let sent = device.js.publish_with_headers(kv_subject(REPORTED, "pi-1"), headers, "{}".into()).await.unwrap();
        assert!(sent.await.is_err(), "a roll-up ({rollup}) was stored");
    }
    let kept = operator.get(REPORTED, "pi-2").await.unwrap();
    assert_eq!(kept.as_deref(), Some(b"{\"healthy\":true}".as_slice()), "pi-2's report is gone");
}

/// One device cannot push the other devices' events out of the audit log:
/// the stream keeps at most `EVENTS_PER_DEVICE` of each device's (its
/// subject), so a flood drops the flooder's oldest, and refuses an event
/// larger than `EVENTS_MAX_SIZE`; also in a stream made before setup set
/// these limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_flooding_the_audit_log_drops_only_its_own_events() {
    use trellis_fleet::ops::{EVENTS_MAX_SIZE, EVENTS_PER_DEVICE};
    let (pki, server, operator) = set_up_after_the_client_library().await;
    let pi2 = Client::connect(&pki, &[server.addr()], "pi-2").await;
    pi2.js.publish(names::events_subject("pi-2"), "the one".into()).await.unwrap().await.unwrap();

    let pi1 = Client::connect(&pki, &[server.addr()], "pi-1").await;
    let mut acks = Vec::new();
    for n in 0..EVENTS_PER_DEVICE + 50 {
        acks.push(pi1.js.publish(names::events_subject("pi-1"), format!("{n}").into()).await.unwrap());
    }
    for ack in acks {
        ack.await.unwrap();
    }
    let events = operator.js.get_stream(names::EVENTS_STREAM).await.unwrap();
    let kept = events.get_last_raw_message_by_subject(&names::events_subject("pi-2")).await.unwrap();
    assert_eq!(kept.payload.as_ref(), b"the one", "pi-2's event was pushed out");
    let first = events.get_first_raw_message_by_subject(names::events_subject("pi-1"), 0).await.unwrap();
    assert_eq!(first.payload.as_ref(), b"50", "pi-1's oldest 50 are dropped");

    let large = vec![b'x'; usize::try_from(EVENTS_MAX_SIZE).unwrap() + 1];
    let sent = pi1.js.publish(names::events_subject("pi-1"), large.into()).await;
    assert!(sent.is_err() || sent.unwrap().await.is_err(), "an event larger than the limit was stored");
}

/// A device reads an artifact with requests alone (`trellis_fleet::object`):
/// an object the client library stored; one whose chunks lie among another
/// object's, with a deleted message among them; and it is told, by name,
/// of an object that is not there, one deleted, and one whose chunks are
/// missing. It may create no consumer on the artifacts' stream: a push
/// consumer would deliver chunks wherever the device said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_reads_artifacts_by_direct_gets_and_makes_no_consumer() {
    use trellis_fleet::object::{self, ObjectError, Reader};
    let pki = Pki::new();
    let server = support::single(&pki, &["operator"], &[("pi-1", "north"), ("pi-2", "south")]);
    let operator = support::operator(&pki, &[server.addr()], 1).await;
    let link = Link::connect(&support::credentials(&pki, &[server.addr()], "pi-1"), Some("pi-1"), false).await.unwrap();
    let read = |name: &'static str| {
        let link = link.clone();
        async move {
            let mut reader = Reader::open(&link, names::ARTIFACTS, name).await?;
            let mut bytes = Vec::new();
            while let Some(chunk) = reader.next_chunk().await? {
                bytes.extend_from_slice(&chunk);
            }
            assert_eq!(bytes.len() as u64, reader.size());
            Ok::<_, ObjectError>(bytes)
        }
    };

    // Stored by the client library: 128 KiB chunks, one after another.
    let big: Vec<u8> = (0..700_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let store = operator.artifacts().await.unwrap();
    store.put("big", &mut big.as_slice()).await.unwrap();
    assert!(read("big").await.unwrap() == big, "the library's object read back other bytes");

    // Chunks of "mixed" (nuid m) among those of "other" (nuid o), one of
    // which is deleted: the reader's guesses of the next sequence land on
    // another subject and on nothing, and it finds its way on.
    let publish = |subject: String, payload: Vec<u8>| {
        let js = operator.js.clone();
        async move { js.publish(subject, payload.into()).await.unwrap().await.unwrap().sequence }
    };
    let (mut mixed, mut gap) = (Vec::new(), 0);
    for (n, owner) in "mommmommmoommm".chars().enumerate() {
        let payload = format!("{owner}{n:03};").into_bytes();
        let subject = object::chunk_subject(names::ARTIFACTS, &owner.to_string());
        let seq = publish(subject, payload.clone()).await;
        if owner == 'm' {
            mixed.extend_from_slice(&payload);
        } else if n == 9 {
            gap = seq;
        }
    }
    let stream = operator.js.get_stream(names::object_stream(names::ARTIFACTS)).await.unwrap();
    assert!(stream.delete_message(gap).await.unwrap());
    let meta = |name: &str, nuid: &str, size: usize, chunks: usize| {
        let info = serde_json::json!({ "name": name, "bucket": names::ARTIFACTS, "nuid": nuid, "size": size, "chunks": chunks });
        publish(object::meta_subject(names::ARTIFACTS, name), serde_json::to_vec(&info).unwrap())
    };
    meta("mixed", "m", mixed.len(), 10).await;
    assert_eq!(String::from_utf8(read("mixed").await.unwrap()).unwrap(), String::from_utf8(mixed.clone()).unwrap());

    // Not there, deleted: the store says so, named.
    let missing = read("nothing").await.unwrap_err();
    assert!(
        matches!(missing, ObjectError::Missing { .. }) && missing.to_string().contains("nothing: not found"),
        "{missing}"
    );
    store.delete("big").await.unwrap();
    let deleted = read("big").await.unwrap_err();
    assert!(matches!(deleted, ObjectError::Missing { .. }) && deleted.to_string().contains("deleted"), "{deleted}");
    // Chunks the metadata counts and the stream's leader does not hold,
    // chunks that add up to more than the size, metadata that does not
    // parse: the store's copy is not whole, named.
    meta("short", "m", mixed.len() + 6, 11).await;
    let short = read("short").await.unwrap_err();
    assert!(
        matches!(short, ObjectError::Corrupt { .. })
            && short.to_string().contains("chunk 11 of 11 is not in the store"),
        "{short}"
    );
    meta("long", "m", mixed.len() - 1, 10).await;
    let long = read("long").await.unwrap_err();
    assert!(matches!(long, ObjectError::Corrupt { .. }) && long.to_string().contains("more than the"), "{long}");
    publish(object::meta_subject(names::ARTIFACTS, "garbled"), b"{not json".to_vec()).await;
    let garbled = read("garbled").await.unwrap_err();
    assert!(
        matches!(garbled, ObjectError::Corrupt { .. }) && garbled.to_string().contains("does not parse"),
        "{garbled}"
    );

    // No consumer, not even one delivering to the device's own inbox.
    let device = Client::connect(&pki, &[server.addr()], "pi-1").await;
    let artifacts = device.js.get_stream_no_info(names::object_stream(names::ARTIFACTS)).await.unwrap();
    for deliver_subject in [names::app_subject("pi-2", "x"), device.nats.new_inbox()] {
        let pushed = consumer::push::Config { deliver_subject, ..Default::default() };
        assert!(artifacts.create_consumer(pushed).await.is_err(), "a consumer on the artifacts");
    }
    let create = format!("$JS.API.CONSUMER.CREATE.{}", names::object_stream(names::ARTIFACTS));
    assert!(device.was_denied(&create).await, "{:?}", device.errors);
}

/// While a firmware update reaches the fleet (`server-config
/// --previous-agents`), a device may read artifacts as the agent before
/// this one did, through the client library's object store and its
/// consumer, as well as by direct gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_fleet_updates_a_device_may_read_artifacts_as_the_previous_agent_did() {
    use tokio::io::AsyncReadExt;
    let pki = Pki::new();
    let mut config = support::single_config(&pki, &["operator"], &[("pi-1", "north")]);
    config.previous_agents = true;
    let server = support::Server::start(pki.dir.path(), config);
    let operator = support::operator(&pki, &[server.addr()], 1).await;
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    operator.artifacts().await.unwrap().put("a", &mut bytes.as_slice()).await.unwrap();

    let device = Client::connect(&pki, &[server.addr()], "pi-1").await;
    let mut object = device.js.get_object_store(names::ARTIFACTS).await.unwrap().get("a").await.unwrap();
    let mut read = Vec::new();
    object.read_to_end(&mut read).await.unwrap();
    assert!(read == bytes, "the previous agent's read returned other bytes");

    let link = Link::connect(&support::credentials(&pki, &[server.addr()], "pi-1"), Some("pi-1"), false).await.unwrap();
    let mut reader = trellis_fleet::object::Reader::open(&link, names::ARTIFACTS, "a").await.unwrap();
    let mut read = Vec::new();
    while let Some(chunk) = reader.next_chunk().await.unwrap() {
        read.extend_from_slice(&chunk);
    }
    assert!(read == bytes, "the reader returned other bytes");
}

/// A server sends the answer to a request to whatever reply subject the
/// request names, as a message like any other: were the devices in the
/// fleet's account, a direct get of pi-1's own group's desired state, its
/// reply subject another group's key, would be stored as that group's
/// desired state (it was). The devices' requests reach the fleet's account
/// through service imports, whose answers come back to the devices'
/// account only: nothing of the fleet's changes. There, an answer sent to
/// another device's bus subject is dropped by that device's bus driver, and
/// one sent to its desired-state key only wakes its agent, which reads its
/// keys by direct get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_write_through_the_answer_to_its_request() {
    use std::sync::{Arc, Mutex};
    use trellis_fleet::bus::BusHandle;
    let pki = Pki::new();
    let server = support::single(&pki, &["operator"], &[("pi-1", "north"), ("pi-2", "south")]);
    let operator = Client::connect(&pki, &[server.addr()], "operator").await;
    buckets(&operator).await;
    let pi2 = Link::connect(&support::credentials(&pki, &[server.addr()], "pi-2"), Some("pi-2"), false).await.unwrap();
    let bus = BusHandle::default();
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let into = Arc::clone(&delivered);
    let driver = bus.driver(Arc::new(move |device, topic, payload| {
        into.lock().unwrap().push(format!("{device} {topic} {}", String::from_utf8_lossy(payload)));
    }));
    bus.set_interest(vec!["+/readings/#".into()]);
    tokio::spawn(driver.unwrap().run(pi2, "pi-2".into()));
    let pi1 = Client::connect(&pki, &[server.addr()], "pi-1").await;
    // pi-2's bus is listening once it hears pi-1.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while delivered.lock().unwrap().is_empty() {
        pi1.nats.publish(names::app_subject("pi-1", "readings/ready"), "".into()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(std::time::Instant::now() < deadline, "pi-2's bus never heard pi-1");
    }

    let own_group = format!("$JS.API.DIRECT.GET.{}.{}", kv_stream(DESIRED), kv_subject(DESIRED, &group_key("north")));
    let releases = format!("$JS.API.STREAM.INFO.{}", kv_stream(RELEASES));
    let targets = [
        kv_subject(DESIRED, &group_key("south")),
        kv_subject(DESIRED, &device_key("pi-2")),
        kv_subject(REPORTED, "pi-2"),
        names::events_subject("pi-2"),
        names::app_subject("pi-2", "readings/t"),
    ];
    for target in &targets {
        for request in [&own_group, &releases] {
            pi1.nats.publish_with_reply(request.clone(), target.clone(), "".into()).await.unwrap();
        }
    }
    // A stream's acknowledgement of pi-1's own report and event, and its
    // refusal of a report written after a revision that is not the last,
    // sent to pi-2's bus subject.
    let bus_of_pi2 = names::app_subject("pi-2", "readings/t");
    for subject in [kv_subject(REPORTED, "pi-1"), names::events_subject("pi-1")] {
        pi1.nats.publish_with_reply(subject, bus_of_pi2.clone(), "{}".into()).await.unwrap();
    }
    let mut stale = async_nats::HeaderMap::new();
    stale.insert("Nats-Expected-Last-Subject-Sequence", "999");
    pi1.nats
        .publish_with_reply_and_headers(kv_subject(REPORTED, "pi-1"), bus_of_pi2.clone(), stale, "{}".into())
        .await
        .unwrap();
    pi1.nats.publish(names::app_subject("pi-1", "readings/t"), "21.5".into()).await.unwrap();
    pi1.nats.flush().await.unwrap();
    // The answers went out: pi-1 hears one with its own inbox as the reply.
    let own = pi1.nats.new_inbox();
    let mut answer = pi1.nats.subscribe(own.clone()).await.unwrap();
    pi1.nats.publish_with_reply(own_group, own, "".into()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), answer.next()).await.unwrap().unwrap();
    assert_eq!(got.payload.as_ref(), br#"{"release":"r-n"}"#);

    let desired = operator.js.get_key_value(DESIRED).await.unwrap();
    assert_eq!(desired.get(group_key("south")).await.unwrap().unwrap().as_ref(), br#"{"release":"r-s"}"#);
    assert_eq!(desired.get(device_key("pi-2")).await.unwrap().unwrap().as_ref(), br#"{"release":"r-2"}"#);
    assert!(
        operator.js.get_key_value(REPORTED).await.unwrap().get("pi-2").await.unwrap().is_none(),
        "pi-2's report written"
    );
    let events = operator.js.get_stream(names::EVENTS_STREAM).await.unwrap();
    assert_eq!(events.cached_info().state.messages, 1, "only pi-1's own event stored");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !delivered.lock().unwrap().iter().any(|m| m == "pi-1 readings/t 21.5") {
        assert!(std::time::Instant::now() < deadline, "pi-2's bus never heard pi-1's reading");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Time for any answer still on its way.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let heard: Vec<String> =
        delivered.lock().unwrap().iter().filter(|m| !m.contains("readings/ready")).cloned().collect();
    assert_eq!(heard, ["pi-1 readings/t 21.5"], "pi-2's apps heard a server's answer as pi-2's");
}
