//! Assets on demand over loopback: a real origin, and a hostile one written
//! here that sends blocks the publisher did not make.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;

use trellis_assets::server::{Origin, OriginConfig, Server};
use trellis_assets::{AssetError, AssetId, BLOCK_SIZE, BlockStore, Fetcher, Index};

mod common;

const LOOPBACK: &str = "127.0.0.1:0";

fn origin(dir: &Path, bytes: &[u8], push: u32) -> (Server, AssetId) {
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("assets/weights.bin"), bytes).unwrap();
    let config = OriginConfig { push, state_dir: Some(dir.to_owned()), ..OriginConfig::default() };
    let origin = Origin::from_dir(&dir.join("assets"), config).unwrap();
    let id = origin.assets()[0].1;
    (Server::start(origin, LOOPBACK.parse().unwrap()).unwrap(), id)
}

fn fetcher(server: SocketAddr, root: &Path, session: &str) -> Fetcher {
    Fetcher::new(Some(server.to_string()), root.to_owned(), session.into())
}

const BS: usize = BLOCK_SIZE as usize;

#[test]
fn reads_return_the_publishers_bytes_and_only_missing_blocks_are_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = common::noise(20 * BS + 123);
    let (server, id) = origin(dir.path(), &bytes, 0);
    assert_eq!(id, Index::of(&bytes).id(), "the id is the index's hash");
    let root = dir.path().join("device");
    let device = fetcher(server.addr(), &root, "dev-1/boot-1");
    assert_eq!(device.size(id).unwrap(), bytes.len() as u64);
    // A read across a block boundary fetches both blocks, and only those.
    assert_eq!(device.read(id, 3 * BS as u64 - 10, 20).unwrap(), bytes[3 * BS - 10..3 * BS + 10]);
    assert_eq!(device.stats.requests.load(Ordering::Relaxed), 2);
    assert_eq!(device.read(id, 3 * BS as u64, 100).unwrap(), bytes[3 * BS..3 * BS + 100]);
    assert_eq!(device.stats.requests.load(Ordering::Relaxed), 2, "a held block is not fetched again");
    // The last, short block.
    assert_eq!(device.read(id, bytes.len() as u64 - 5, 5).unwrap(), bytes[bytes.len() - 5..]);

    // After a restart the device reads what it holds without the origin.
    drop(device);
    drop(server);
    let offline = Fetcher::new(None, root.clone(), "dev-1/boot-2".into());
    assert_eq!(offline.read(id, 3 * BS as u64 - 10, 20).unwrap(), bytes[3 * BS - 10..3 * BS + 10]);
    let e = offline.read(id, 0, 1).unwrap_err().to_string();
    assert!(e.contains(&id.to_string()) && e.contains("no asset origin is configured"), "{e}");
}

#[test]
fn a_read_past_the_end_is_an_error_naming_the_asset_and_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = common::noise(BS + 1);
    let (server, id) = origin(dir.path(), &bytes, 0);
    let device = fetcher(server.addr(), &dir.path().join("device"), "d");
    let e = device.read(id, BS as u64, 2).unwrap_err();
    assert!(matches!(e, AssetError::PastEnd { .. }), "{e}");
    let e = e.to_string();
    assert!(e.contains("past the end") && e.contains(&format!("({} bytes)", BS + 1)), "{e}");
    assert!(matches!(device.read(id, u64::MAX, 2), Err(AssetError::PastEnd { .. })));
    assert_eq!(device.stats.requests.load(Ordering::Relaxed), 0, "nothing was fetched for it");
    // An asset the origin does not have.
    let e = device.size(AssetId([7; 32])).unwrap_err().to_string();
    assert!(e.contains("404") && e.contains(&AssetId([7; 32]).to_string()), "{e}");
}

#[test]
fn a_corrupt_block_is_refused_and_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = common::noise(4 * BS);
    let id = Index::of(&bytes).id();
    let (addr, _) = common::hostile(bytes.clone(), 2, 1);
    let device = fetcher(addr, dir.path(), "d");
    assert_eq!(device.read(id, 0, bytes.len() as u64).unwrap(), bytes);
    assert_eq!(device.stats.refused.load(Ordering::Relaxed), 1, "the corrupt copy was refused");
    assert_eq!(device.stats.requests.load(Ordering::Relaxed), 5, "block 2 was asked for twice");
    // What is stored is the publisher's, byte for byte.
    let mut stored = Vec::new();
    std::fs::File::open(dir.path().join(id.to_string()).join("data")).unwrap().read_to_end(&mut stored).unwrap();
    assert_eq!(stored, bytes);
}

#[test]
fn an_origin_that_keeps_lying_fails_the_read_and_nothing_corrupt_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = common::noise(3 * BS);
    let id = Index::of(&bytes).id();
    let (addr, served) = common::hostile(bytes.clone(), 1, u32::MAX);
    let device = fetcher(addr, dir.path(), "d");
    let e = device.read(id, 0, bytes.len() as u64).unwrap_err();
    assert!(matches!(e, AssetError::Corrupt { block: 1, attempts: 3, .. }), "{e}");
    let e = e.to_string();
    assert!(e.contains(&addr.to_string()) && e.contains("block 1"), "{e}");
    assert_eq!(served.load(Ordering::SeqCst), 3);
    drop(device);
    let index = Index::of(&bytes);
    let store = BlockStore::open(dir.path(), &id, &index).unwrap();
    assert!(store.has(0) && !store.has(1), "block 0 kept, block 1 never stored");
    assert!(store.read(BS as u64, 1).is_err());
}

/// Read every block of the asset in `order`, one small read each.
fn read_in(device: &Fetcher, id: AssetId, order: &[u32]) {
    for &b in order {
        device.read(id, u64::from(b) * BS as u64 + 17, 64).unwrap();
    }
}

#[test]
fn a_second_reader_following_a_recorded_order_gets_its_blocks_pushed_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = common::noise(32 * BS);
    let (server, id) = origin(dir.path(), &bytes, 8);
    // An order that is not sequential: what a model's loader might do.
    let order: Vec<u32> = (0..32).map(|i| (i * 13) % 32).collect();

    let first = fetcher(server.addr(), &dir.path().join("a"), "device-a/boot-1");
    read_in(&first, id, &order);
    assert_eq!(first.stats.misses.load(Ordering::Relaxed), 32, "no history: every block is a miss");
    assert_eq!(first.stats.pushed.load(Ordering::Relaxed), 0);

    // Another device reading the same way waits for the network 4 times in 32 reads.
    let second = fetcher(server.addr(), &dir.path().join("b"), "device-b/boot-1");
    read_in(&second, id, &order);
    assert_eq!(second.stats.misses.load(Ordering::Relaxed), 4);
    assert_eq!(second.stats.pushed.load(Ordering::Relaxed), 28);
    let pushed = server.origin().stats.pushed.load(Ordering::Relaxed);
    assert_eq!(pushed, 28, "nothing was pushed twice or in vain");

    // The recorded order survives the origin's restart.
    let addr_dir = dir.path().to_owned();
    drop(server);
    let origin = Origin::from_dir(
        &addr_dir.join("assets"),
        OriginConfig { push: 8, state_dir: Some(addr_dir.clone()), ..OriginConfig::default() },
    )
    .unwrap();
    let server = Server::start(origin, LOOPBACK.parse().unwrap()).unwrap();
    let third = fetcher(server.addr(), &addr_dir.join("c"), "device-c/boot-1");
    read_in(&third, id, &order);
    assert_eq!(third.stats.misses.load(Ordering::Relaxed), 4);

    // A reader that holds some blocks is not sent them.
    let fourth = fetcher(server.addr(), &addr_dir.join("a"), "device-a/boot-2");
    read_in(&fourth, id, &order);
    assert_eq!(fourth.stats.requests.load(Ordering::Relaxed), 0, "device a holds every block");
}

#[test]
fn a_whole_download_is_verified_and_kept_block_by_block() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = common::noise(5 * BS + 7);
    let (server, id) = origin(dir.path(), &bytes, 0);
    let root = dir.path().join("device");
    let device = fetcher(server.addr(), &root, "d");
    device.fetch_all(id).unwrap();
    assert_eq!(device.stats.requests.load(Ordering::Relaxed), 0);
    assert_eq!(device.read(id, 0, bytes.len() as u64).unwrap(), bytes);
    assert_eq!(device.stats.misses.load(Ordering::Relaxed), 0, "every block was there");
    assert_eq!(BlockStore::open(&root, &id, &Index::of(&bytes)).unwrap().held(), 6);
}

/// An origin of one block that closes a connection idle for `idle`.
fn idle_origin(dir: &Path, idle: std::time::Duration) -> (Server, AssetId) {
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("assets/weights.bin"), common::noise(BS)).unwrap();
    let origin = Origin::from_dir(&dir.join("assets"), OriginConfig { idle, ..OriginConfig::default() }).unwrap();
    let id = origin.assets()[0].1;
    (Server::start(origin, LOOPBACK.parse().unwrap()).unwrap(), id)
}

/// A client that asks and never takes its answers holds its connection's
/// thread (one of a bounded number) only until the origin's `idle` time
/// passes without its taking any: the origin hangs up instead of sending
/// everything it asked for.
#[test]
fn a_client_that_stops_reading_is_hung_up_on() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let idle = std::time::Duration::from_millis(500);
    let (server, id) = idle_origin(dir.path(), idle);
    let mut client = std::net::TcpStream::connect(server.addr()).unwrap();
    // 400 requests of one block each, about 26 MB of answers, more than the
    // sockets' buffers hold; none of it read for a while.
    let asks = 400;
    let request = format!("GET /v1/assets/{id}/blocks/0 HTTP/1.1\r\nHost: o\r\n\r\n");
    client.write_all(request.repeat(asks).as_bytes()).unwrap();
    std::thread::sleep(idle * 4);
    client.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let mut taken = 0;
    let mut buf = vec![0; 1 << 16];
    loop {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => taken += n,
        }
    }
    assert!(taken < asks * BS, "the origin sent {taken} bytes, every answer, to a client that did not read");
}

/// A client that trickles its request (a byte now and then, each well
/// inside the idle time) is hung up on once `idle` passes without the whole
/// request: it does not keep its connection's thread.
#[test]
fn a_client_that_trickles_its_request_is_hung_up_on() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = idle_origin(dir.path(), std::time::Duration::from_millis(500));
    let mut client = std::net::TcpStream::connect(server.addr()).unwrap();
    client.write_all(b"GET /v1/assets/").unwrap();
    let trickle = client.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut trickle = trickle;
        for _ in 0..50 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            if trickle.write_all(b"a").is_err() {
                return;
            }
        }
    });
    client.set_read_timeout(Some(std::time::Duration::from_secs(3))).unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0; 64];
    let read = client.read(&mut buf);
    assert!(
        matches!(read, Ok(0)) || read.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{read:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "hung up after {:?}", started.elapsed());
}
