//! A 3-node `nats-server` cluster with the fleet's buckets replicated on all
//! three: with one server killed, a device's reports still land and are read
//! back from the others, and the killed server's replica catches up when it
//! returns.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use trellis_fleet::sim as support;

use async_nats::jetstream::kv;
use std::time::{Duration, Instant};
use support::{Client, Pki};
use trellis_fleet::link::Link;
use trellis_fleet::names::{REPORTED, kv_stream, kv_subject};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_survive_a_killed_server() {
    let pki = Pki::new();
    let mut servers = support::cluster(&pki, &["operator"], &[("pi-1", "north")]);
    let addrs: Vec<_> = servers.iter().map(|s| s.addr()).collect();
    let operator = Client::connect(&pki, &addrs, "operator").await;
    // The cluster elects its meta leader after the routes are up: retry the first create.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let made = operator
            .js
            .create_key_value(kv::Config { bucket: REPORTED.into(), history: 5, num_replicas: 3, ..Default::default() })
            .await;
        match made {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => {
                let logs: Vec<String> = servers.iter().map(|s| format!("--- {}:\n{}", s.name, s.log_text())).collect();
                panic!("no bucket on the cluster: {e}\n{}", logs.join("\n"));
            }
        }
    }
    // The server the device is connected to is the one killed.
    let device = Link::connect(&support::credentials(&pki, &addrs, "pi-1"), Some("pi-1"), false).await.unwrap();
    device.put(REPORTED, "pi-1", b"1".to_vec()).await.unwrap();

    let killed = device.nats.server_info().port;
    let index = servers.iter().position(|s| s.addr().port() == killed).unwrap();
    servers[index].kill();
    // The client reconnects to another server and the write lands on the two left.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match device.put(REPORTED, "pi-1", b"2".to_vec()).await {
            Ok(_) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "no write with one server down: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    let others: Vec<_> = addrs.iter().copied().filter(|a| a.port() != killed).collect();
    let reader = Client::connect(&pki, &others, "operator").await;
    let value = reader.js.get_key_value(REPORTED).await.unwrap().get("pi-1").await.unwrap().unwrap();
    assert_eq!(value.as_ref(), b"2");

    // Back, its replica catches up. A direct get is answered by a replica on
    // the server the client is connected to first (a queue group's local
    // member): right after the restart it answers the stale "1" it held, then
    // "2" once it has caught up.
    servers[index].restart();
    let back = Client::connect(&pki, &[addrs[index]], "operator").await;
    let subject = format!("$JS.API.DIRECT.GET.{}.{}", kv_stream(REPORTED), kv_subject(REPORTED, "pi-1"));
    let read = || async { back.nats.request(subject.clone(), "".into()).await.ok().map(|m| m.payload) };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = read().await;
        if got.as_deref() == Some(b"2".as_slice()) {
            break;
        }
        assert!(Instant::now() < deadline, "the restarted server's replica did not catch up: {got:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A deploy right after a publish, through another server: the buckets allow
/// direct gets, which the replica on the reader's server answers, and a
/// replica that was not in the write's quorum may not hold it yet. The
/// operator's reads go to the bucket's leader, so each release (and its
/// rollout) is there the moment its write is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_reads_what_was_just_written_whichever_server_it_asks() {
    use trellis_fleet::{ops, rollout::Plan, sim};
    let pki = Pki::new();
    let servers = support::cluster(&pki, &["operator"], &[("pi-1", "north")]);
    let addrs: Vec<_> = servers.iter().map(|s| s.addr()).collect();
    let writer = support::operator(&pki, &addrs[..1], 3).await;
    let readers = [support::operator(&pki, &addrs[1..2], 3).await, support::operator(&pki, &addrs[2..], 3).await];
    ops::register(&writer, "pi-1", "north", sim::BOARD).await.unwrap();
    let key = trellis_appfmt::generate_key();
    for i in 0..40 {
        let id = format!("thermostat-1.{i}.0");
        let (release, artifacts) = sim::release(&id, &key, &[("thermostat", &format!("1.{i}.0"))]);
        ops::publish(&writer, &release, &artifacts).await.unwrap();
        for reader in &readers {
            let read = ops::release(reader, &id).await;
            assert_eq!(
                read.map(|r| r.id).map_err(|e| e.to_string()),
                Ok(id.clone()),
                "server {}",
                reader.nats.server_info().port
            );
        }
        assert!(ops::releases(&readers[0]).await.unwrap().iter().any(|r| r.id == id), "{id} listed");
    }
    // The last one deployed through one server, its rollout read at once through another.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let r = ops::deploy(&readers[0], "thermostat-1.39.0", "north", Plan::default(), u64::try_from(now).unwrap())
        .await
        .unwrap();
    let (read, _) = ops::rollout(&readers[1], &r.id).await.unwrap();
    assert_eq!(read.release, "thermostat-1.39.0");
}
