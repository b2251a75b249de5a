//! One asset from several sources over loopback: real servers sharing what
//! their stores hold (`Origin::sharing`), the origin for the rest, a peer
//! whose store was damaged behind its back, and a download cut short.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use trellis_assets::download::{self, Banned};
use trellis_assets::server::{Origin, OriginConfig, Server};
use trellis_assets::{AssetId, BLOCK_SIZE, BlockStore, DownloadOptions, Index, Sources};

mod common;

const LOOPBACK: &str = "127.0.0.1:0";
const BS: usize = BLOCK_SIZE as usize;
/// 40 blocks and a short last one.
const LEN: usize = 40 * BS + 777;

fn release() -> Vec<u8> {
    common::noise(LEN)
}

fn origin(dir: &Path, bytes: &[u8]) -> Server {
    std::fs::create_dir_all(dir.join("origin")).unwrap();
    std::fs::write(dir.join("origin/release.raucb"), bytes).unwrap();
    let origin = Origin::from_dir(&dir.join("origin"), OriginConfig::default()).unwrap();
    Server::start(origin, LOOPBACK.parse().unwrap()).unwrap()
}

/// The origin of [`origin`], on `addr` from `after` on (nothing listens
/// there before: an uplink that drops every packet).
fn origin_after(
    dir: &Path,
    bytes: &[u8],
    addr: std::net::SocketAddr,
    after: Duration,
) -> std::thread::JoinHandle<Server> {
    let (dir, bytes) = (dir.to_owned(), bytes.to_vec());
    std::thread::spawn(move || {
        std::thread::sleep(after);
        std::fs::create_dir_all(dir.join("origin")).unwrap();
        std::fs::write(dir.join("origin/release.raucb"), &bytes).unwrap();
        let origin = Origin::from_dir(&dir.join("origin"), OriginConfig::default()).unwrap();
        Server::start(origin, addr).unwrap()
    })
}

/// A device on the LAN holding `blocks` of the release, sharing them.
fn peer(root: &Path, bytes: &[u8], blocks: std::ops::Range<u32>) -> (Server, Arc<Mutex<BlockStore>>) {
    let index = Index::of(bytes);
    let mut store = BlockStore::open(root, &index.id(), &index).unwrap();
    for n in blocks {
        let (start, len) = index.span(n).unwrap();
        let start = usize::try_from(start).unwrap();
        assert!(store.put(n, &bytes[start..start + len]).unwrap());
    }
    let store = Arc::new(Mutex::new(store));
    let server = Server::start(Origin::sharing(std::slice::from_ref(&store)), LOOPBACK.parse().unwrap()).unwrap();
    (server, store)
}

fn options() -> DownloadOptions {
    DownloadOptions { poll: Duration::from_millis(50), stall: Duration::from_secs(20), ..DownloadOptions::default() }
}

fn held(store: &Mutex<BlockStore>) -> Vec<u8> {
    let s = store.lock().unwrap();
    s.read(0, s.index().size).unwrap()
}

#[test]
fn blocks_come_from_the_peers_and_from_the_origin_only_what_no_peer_holds() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let id = Index::of(&bytes).id();
    let origin = origin(dir.path(), &bytes);
    let (a, _) = peer(&dir.path().join("a"), &bytes, 0..20);
    let (b, _) = peer(&dir.path().join("b"), &bytes, 15..35);
    let sources = Sources {
        origin: Some(origin.addr().to_string()),
        peers: vec![a.addr().to_string(), b.addr().to_string()],
        found: None,
    };

    let (store, banned) = download::open(&dir.path().join("c"), id, &sources).unwrap();
    assert!(banned.is_empty());
    let store = Mutex::new(store);
    let report = download::download(&store, &sources, &options()).unwrap();
    assert_eq!(held(&store), bytes, "the device holds the publisher's bytes");
    // Blocks 35..41 are on no peer: those, and only those, came from the origin.
    assert_eq!(report.from_origin, 6, "{report:?}");
    assert_eq!(origin.origin().stats.requested.load(Ordering::Relaxed), 6);
    assert_eq!(report.from_peers.values().sum::<u32>(), 35, "{report:?}");
    assert_eq!(report.from_peers.len(), 2, "both peers served: {report:?}");
    assert!(report.banned.is_empty() && report.lost.is_empty(), "{report:?}");
}

#[test]
fn a_peer_that_sends_a_damaged_block_is_banned_and_nothing_damaged_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let id = Index::of(&bytes).id();
    let origin = origin(dir.path(), &bytes);
    // The hostile peer claims the whole release; its store's data was changed
    // on disk after it opened it, so every block it serves is damaged.
    let (bad, _) = peer(&dir.path().join("bad"), &bytes, 0..41);
    let data = dir.path().join("bad").join(id.to_string()).join("data");
    let mut raw = std::fs::read(&data).unwrap();
    for byte in raw.iter_mut().step_by(BS / 2) {
        *byte ^= 0x5a;
    }
    std::fs::write(&data, raw).unwrap();
    // The good peer lacks the last 11 blocks: the hostile one is asked for
    // them however fast the good one serves the rest (under load it could
    // otherwise serve every block before the hostile one is asked).
    let (good, _) = peer(&dir.path().join("good"), &bytes, 0..30);
    let sources = Sources {
        origin: Some(origin.addr().to_string()),
        peers: vec![bad.addr().to_string(), good.addr().to_string()],
        found: None,
    };

    let (store, _) = download::open(&dir.path().join("c"), id, &sources).unwrap();
    let store = Mutex::new(store);
    let report = download::download(&store, &sources, &options()).unwrap();
    assert_eq!(held(&store), bytes);
    assert_eq!(report.banned.len(), 1, "{report:?}");
    let Banned { peer, what } = &report.banned[0];
    assert_eq!(peer, &bad.addr().to_string());
    assert!(what.starts_with("block "), "{what}");
    assert!(report.banned[0].to_string().contains("does not match the asset's index"), "{}", report.banned[0]);
    assert_eq!(report.from_peers.get(&bad.addr().to_string()), None, "nothing from the banned peer was kept");
    assert_eq!(report.from_peers.get(&good.addr().to_string()), Some(&30));
    assert_eq!(report.from_origin, 11, "what only the banned peer held");
}

#[test]
fn a_download_cut_short_goes_on_without_fetching_its_verified_blocks_again() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let id = Index::of(&bytes).id();
    let root = dir.path().join("c");
    let (half, _) = peer(&dir.path().join("half"), &bytes, 0..25);
    let first = Sources { origin: None, peers: vec![half.addr().to_string()], found: None };

    // The only source holds 25 blocks: the download stops, named, with those kept.
    let (store, _) = download::open(&root, id, &first).unwrap();
    let store = Mutex::new(store);
    let quick = DownloadOptions { stall: Duration::from_secs(1), ..options() };
    let e = download::download(&store, &first, &quick).unwrap_err().to_string();
    assert!(e.contains("16 of 41 blocks missing") && e.contains(&half.addr().to_string()), "{e}");
    drop(store);
    drop(half);

    // The device restarts: what it verified is on the data partition.
    let origin = origin(dir.path(), &bytes);
    let then = Sources { origin: Some(origin.addr().to_string()), peers: Vec::new(), found: None };
    let (store, _) = download::open(&root, id, &then).unwrap();
    let store = Mutex::new(store);
    let report = download::download(&store, &then, &options()).unwrap();
    assert_eq!(held(&store), bytes);
    assert_eq!(report.resumed, 25, "{report:?}");
    assert_eq!(report.from_origin, 16);
    assert_eq!(origin.origin().stats.requested.load(Ordering::Relaxed), 16, "no verified block fetched again");
}

#[test]
fn when_every_peer_is_gone_and_there_is_no_origin_the_download_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let index = Index::of(&bytes);
    let id: AssetId = index.id();
    // A store with the index, and a peer address where nothing listens.
    let store = Mutex::new(BlockStore::open(&dir.path().join("c"), &id, &index).unwrap());
    let closed = std::net::TcpListener::bind(LOOPBACK).unwrap().local_addr().unwrap();
    let sources = Sources { origin: None, peers: vec![closed.to_string()], found: None };
    let quick = DownloadOptions { peer_retry: Duration::from_millis(500), ..options() };
    let report = download::download(&store, &sources, &quick);
    let e = report.unwrap_err().to_string();
    assert!(e.contains("every peer is gone and there is no origin") && e.contains("41 of 41 blocks missing"), "{e}");
}

#[test]
fn a_device_shares_a_store_it_opens_later_and_stops_serving_one_it_unshares_or_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let id = Index::of(&bytes).id();
    let server = Server::start(Origin::sharing(&[]), LOOPBACK.parse().unwrap()).unwrap();
    let only_it = Sources { origin: None, peers: vec![server.addr().to_string()], found: None };
    let e = download::open(&dir.path().join("a"), id, &only_it).unwrap_err().to_string();
    assert!(e.contains("no source sent its index") && e.contains("404"), "{e}");

    // A store it opens (a download that begins) is served from then on.
    let (_other, store) = peer(&dir.path().join("peer"), &bytes, 0..10);
    server.origin().share(Arc::clone(&store));
    let origin = origin(dir.path(), &bytes);
    let sources = Sources { origin: Some(origin.addr().to_string()), ..only_it.clone() };
    let mine = Mutex::new(download::open(&dir.path().join("b"), id, &sources).unwrap().0);
    let report = download::download(&mine, &sources, &options()).unwrap();
    assert_eq!(report.from_peers.get(&server.addr().to_string()), Some(&10), "{report:?}");
    assert_eq!(held(&mine), bytes);

    // Unshared: nothing of it is served.
    assert!(server.origin().unshare(&id));
    assert!(!server.origin().unshare(&id));
    let e = download::open(&dir.path().join("c"), id, &only_it).unwrap_err().to_string();
    assert!(e.contains("no source sent its index"), "{e}");

    // Withdrawn (the device rolled it back): a peer that asks is told why,
    // and does not ask again; shared again (another attempt), it is served.
    server.origin().share(Arc::clone(&store));
    assert!(server.origin().withdraw(&id, "its trial boot failed"));
    let e = download::open(&dir.path().join("d"), id, &only_it).unwrap_err().to_string();
    assert!(e.contains("410") && e.contains("rolled back: its trial boot failed"), "{e}");
    let fresh = Mutex::new(download::open(&dir.path().join("d"), id, &sources).unwrap().0);
    let report = download::download(&fresh, &sources, &options()).unwrap();
    let told = vec![(server.addr().to_string(), "its trial boot failed".to_owned())];
    assert_eq!((report.rolled_back, report.from_origin), (told, 41), "every block from the origin");
    server.origin().share(store);
    assert!(download::open(&dir.path().join("e"), id, &only_it).is_ok(), "served again");
}

#[test]
fn a_paused_download_keeps_its_blocks_and_goes_on_from_them() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let origin = origin(dir.path(), &bytes);
    let sources = Sources { origin: Some(origin.addr().to_string()), peers: Vec::new(), found: None };
    let (store, _) = download::open(&dir.path().join("device"), Index::of(&bytes).id(), &sources).unwrap();
    let store = Mutex::new(store);
    // Paused from the start: it stops within `poll` and says so.
    let pause = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let paused = download::download(&store, &sources, &DownloadOptions { pause: Some(pause), ..options() }).unwrap();
    assert!(paused.paused, "{paused:?}");
    let kept = store.lock().unwrap().held();
    assert_eq!(paused.from_origin, kept, "what it fetched before it stopped is kept");
    let done = download::download(&store, &sources, &options()).unwrap();
    assert!(!done.paused);
    assert_eq!((done.resumed, done.resumed + done.from_origin), (kept, Index::of(&bytes).count()), "{done:?}");
    assert_eq!(held(&store), bytes);
}

#[test]
fn a_peer_found_while_the_download_runs_is_asked_too() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let id = Index::of(&bytes).id();
    // The only source at the start holds the first 20 blocks; the rest are
    // on a peer announced a moment later.
    let (first, _a) = peer(&dir.path().join("a"), &bytes, 0..20);
    let (later, _b) = peer(&dir.path().join("b"), &bytes, 20..41);
    let found = trellis_assets::download::PeerList::new();
    let sources = Sources { origin: None, peers: vec![first.addr().to_string()], found: Some(found.clone()) };
    let store = Mutex::new(download::open(&dir.path().join("device"), id, &sources).unwrap().0);
    let announce = std::thread::spawn({
        let (found, later) = (found.clone(), later.addr().to_string());
        move || {
            std::thread::sleep(Duration::from_millis(300));
            assert!(found.add(&later));
            assert!(!found.add(&later), "a peer found twice is listed once");
        }
    });
    let report = download::download(&store, &sources, &options()).unwrap();
    announce.join().unwrap();
    assert_eq!(report.from_peers.get(&first.addr().to_string()), Some(&20), "{report:?}");
    assert_eq!(report.from_peers.get(&later.addr().to_string()), Some(&21), "{report:?}");
    assert_eq!(held(&store), bytes);
}

#[test]
fn a_block_a_peer_fetches_from_the_origin_is_not_asked_of_the_origin_again_and_a_stale_claim_expires() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let id = Index::of(&bytes).id();
    let origin = origin(dir.path(), &bytes);
    // The peer holds blocks 0..20 and says it is fetching block 40 from the
    // origin, and never does: the device takes 20..40 from the origin and
    // leaves 40 to the peer until the claim is `claim_ttl` old.
    let (claimer, store) = peer(&dir.path().join("a"), &bytes, 0..20);
    store.lock().unwrap().fetching_from_origin(Some(40));
    let sources =
        Sources { origin: Some(origin.addr().to_string()), peers: vec![claimer.addr().to_string()], found: None };
    let device = Mutex::new(download::open(&dir.path().join("device"), id, &sources).unwrap().0);
    let ttl = Duration::from_millis(1500);
    let started = std::time::Instant::now();
    let report = download::download(&device, &sources, &DownloadOptions { claim_ttl: ttl, ..options() }).unwrap();
    let took = started.elapsed();
    assert_eq!(held(&device), bytes);
    assert_eq!((report.from_peers.values().sum::<u32>(), report.from_origin), (20, 21), "{report:?}");
    assert!(took >= ttl, "block 40 waited for the claim to expire: {took:?}");
    assert!(took < ttl * 4, "and no longer than that: {took:?}");
}

/// Behind a slow uplink a block from the origin takes longer than
/// `claim_ttl`: a peer's claim on a block counts for twice the longest
/// block this device has had from the origin, so it is not asked for a
/// block a peer is still fetching from it (with 32 devices sharing a
/// 2 Mbit/s uplink, a block took 8 s and claims of 5 s made a sixth of
/// the origin's blocks copies); a claim that is never made good still
/// expires.
#[test]
fn a_claim_lasts_as_long_as_a_block_from_the_origin_takes() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let id = Index::of(&bytes).id();
    let origin = origin(dir.path(), &bytes);
    let delay = Duration::from_millis(800);
    let slow = common::delaying(origin.addr(), delay);
    // The peer holds blocks 0..39 and claims block 40; the device takes
    // block 39 from the origin (800 ms), then leaves 40 to the peer
    // until its claim is twice that old, then takes it (800 ms more).
    let (claimer, store) = peer(&dir.path().join("a"), &bytes, 0..39);
    store.lock().unwrap().fetching_from_origin(Some(40));
    let sources = Sources { origin: Some(slow.to_string()), peers: vec![claimer.addr().to_string()], found: None };
    let device = Mutex::new(download::open(&dir.path().join("device"), id, &sources).unwrap().0);
    let started = std::time::Instant::now();
    let options = DownloadOptions { claim_ttl: Duration::from_millis(100), ..options() };
    let report = download::download(&device, &sources, &options).unwrap();
    let took = started.elapsed();
    assert_eq!(held(&device), bytes);
    assert_eq!(report.from_origin, 2, "{report:?}");
    // (The index came from the peer, before `started`.)
    assert!(
        took >= delay * 3,
        "block 40 was asked of the origin while the claim was younger than 2 × 800 ms: {took:?}"
    );
    assert!(took < delay * 6, "and no longer than that: {took:?}");
}

/// Another device of the site asks the origin for block `n`, naming
/// itself `to`, and takes the answer; the connection it keeps open.
fn asked_by(origin: &Server, id: trellis_assets::AssetId, n: u32, to: &str) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(origin.addr()).unwrap();
    write!(conn, "GET /v1/assets/{id}/blocks/{n} HTTP/1.1\r\nHost: origin\r\nTrellis-Peer: {to}\r\n\r\n").unwrap();
    let mut head = [0; 12];
    conn.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "the first to name itself is sent the block");
    conn
}

/// Where a device shares its blocks, on every address: it names itself
/// to the origin by its end of the connection.
fn sharing_on() -> Option<std::net::SocketAddr> {
    Some("0.0.0.0:8471".parse().unwrap())
}

/// A device that shares its blocks names itself to the origin; a block the
/// origin is sending to a peer of the device, which the device did not
/// know of, is left to that peer while the peer says it fetches it, and the
/// origin sends it once.
#[test]
fn a_block_the_origin_sends_a_peer_is_taken_from_the_peer_not_sent_twice() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let index = Index::of(&bytes);
    let origin = origin(dir.path(), &bytes);
    let (peer, store) = peer(&dir.path().join("a"), &bytes, 0..0);
    let peer_addr = peer.addr().to_string();
    // The device lacks block 5 alone; its requests reach the origin 1 s late.
    let slow = common::delaying_requests(origin.addr(), Duration::from_secs(1));
    let sources = Sources { origin: Some(slow.to_string()), peers: vec![peer_addr.clone()], found: None };
    let mut lacking = download::open(&dir.path().join("device"), index.id(), &sources).unwrap().0;
    for n in (0..index.count()).filter(|&n| n != 5) {
        let (start, len) = index.span(n).unwrap();
        let start = usize::try_from(start).unwrap();
        assert!(lacking.put_unsynced(n, &bytes[start..start + len]).unwrap());
    }
    lacking.commit().unwrap();
    let device = Mutex::new(lacking);
    let ttl = Duration::from_secs(8);
    let options = DownloadOptions { shared_on: sharing_on(), claim_ttl: ttl, ..options() };
    let started = std::time::Instant::now();
    let report = std::thread::scope(|scope| {
        scope.spawn(|| {
            // Once the device asked the peer what it holds and the origin for
            // block 5, the peer starts fetching block 5, and says so...
            std::thread::sleep(Duration::from_millis(300));
            store.lock().unwrap().fetching_from_origin(Some(5));
            let _to_peer = asked_by(&origin, index.id(), 5, &peer_addr);
            // ...and holds it a while after the origin told the device.
            let told = std::time::Instant::now();
            while origin.origin().stats.on_its_way.load(Ordering::Relaxed) == 0 && told.elapsed() < ttl {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(300));
            let (start, len) = index.span(5).unwrap();
            let start = usize::try_from(start).unwrap();
            let mut store = store.lock().unwrap();
            assert!(store.put(5, &bytes[start..start + len]).unwrap());
            store.fetching_from_origin(None);
        });
        download::download(&device, &sources, &options).unwrap()
    });
    let took = started.elapsed();
    assert_eq!(held(&device), bytes);
    assert_eq!(origin.origin().stats.on_its_way.load(Ordering::Relaxed), 1, "the origin said block 5 is on its way");
    assert_eq!(report.from_peers.get(&peer.addr().to_string()), Some(&1), "block 5 came from the peer: {report:?}");
    assert_eq!(report.from_origin, 0, "{report:?}");
    let requested = origin.origin().stats.requested.load(Ordering::Relaxed);
    assert_eq!(requested, 1, "the origin sent block 5 once (to the peer)");
    assert!(took < ttl, "the block came when the peer held it, not when its claim ran out: {took:?}");
}

/// The origin's word that a block is on its way elsewhere is believed once
/// per block, and of a peer only while the peer says it fetches it: a
/// block on its way to a device that is not a peer, or to one with a
/// peer's address that the peer says it is not fetching (another site's),
/// is not held back; one that the peer says it fetches and never holds is
/// left to it until the claim runs out. Then it is asked for without naming
/// the device, and the origin sends it.
#[test]
fn a_block_on_its_way_elsewhere_or_to_a_peer_that_never_holds_it_comes_from_the_origin() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let id = Index::of(&bytes).id();
    let (peer, store) = peer(&dir.path().join("a"), &bytes, 0..0);
    // (whom the origin names, whether the peer says it fetches block 5, the claims' time)
    let cases = [
        ("10.9.9.9:8471".to_owned(), false, Duration::from_secs(8)),
        (peer.addr().to_string(), false, Duration::from_secs(8)),
        (peer.addr().to_string(), true, Duration::from_millis(1500)),
    ];
    for (k, (to, claims, ttl)) in cases.into_iter().enumerate() {
        store.lock().unwrap().fetching_from_origin(claims.then_some(5));
        let origin = origin(&dir.path().join(format!("origin-{k}")), &bytes);
        let sources =
            Sources { origin: Some(origin.addr().to_string()), peers: vec![peer.addr().to_string()], found: None };
        let _elsewhere = asked_by(&origin, id, 5, &to);
        let device = Mutex::new(download::open(&dir.path().join(format!("device-{k}")), id, &sources).unwrap().0);
        let options = DownloadOptions { shared_on: sharing_on(), claim_ttl: ttl, ..options() };
        let started = std::time::Instant::now();
        let report = download::download(&device, &sources, &options).unwrap();
        let took = started.elapsed();
        assert_eq!(held(&device), bytes);
        assert_eq!(origin.origin().stats.on_its_way.load(Ordering::Relaxed), 1, "said once, of {to}");
        assert_eq!(report.from_origin, 41, "on its way to {to}: {report:?}");
        if claims {
            assert!(took >= ttl, "the peer's block waited for its claim to run out: {took:?}");
            assert!(took < ttl * 3 + Duration::from_secs(5), "and not much longer: {took:?}");
        } else {
            assert!(took < ttl, "a block on its way to {to}, which the peer does not fetch, waited: {took:?}");
        }
    }
}

#[test]
fn an_origin_that_does_not_answer_at_first_is_asked_again_until_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let id = Index::of(&bytes).id();
    // Nothing listens on the origin's address for the first second (an
    // uplink that drops every packet); the peer holds the first 20 blocks.
    let addr = std::net::TcpListener::bind(LOOPBACK).unwrap().local_addr().unwrap();
    let (peer, _store) = peer(&dir.path().join("a"), &bytes, 0..20);
    let sources = Sources { origin: Some(addr.to_string()), peers: vec![peer.addr().to_string()], found: None };
    let device = Mutex::new(
        download::open(&dir.path().join("device"), id, &Sources { origin: None, ..sources.clone() }).unwrap().0,
    );
    let late = origin_after(dir.path(), &bytes, addr, Duration::from_secs(1));
    let report = download::download(&device, &sources, &options()).unwrap();
    let _origin = late.join().unwrap();
    assert_eq!((report.from_peers.values().sum::<u32>(), report.from_origin), (20, 21), "{report:?}");
    assert_eq!(held(&device), bytes);
}

/// An origin whose handshake never completes (a saturated uplink drops it;
/// here a listener whose queue is full) holds back no block a peer has:
/// the device does not take a block to fetch from the origin before it is
/// connected, and the download ends when the peer has sent every block
/// instead of when the origin's handshake gives up. (32 devices behind a
/// 10 Mbit/s uplink: the devices whose first handshake with the origin was
/// dropped each waited out several 5 s handshakes for one block the others
/// all held; docs/benchmarks.md.)
#[test]
fn an_origin_that_cannot_be_reached_holds_back_no_block_a_peer_has() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let index = Index::of(&bytes);
    let (_listener, _queued, addr) = dropping_handshakes();
    // A peer that holds nothing yet, and every block a moment after the download starts.
    let (peer, store) = peer(&dir.path().join("a"), &bytes, 0..0);
    let sources = Sources { origin: Some(addr.to_string()), peers: vec![peer.addr().to_string()], found: None };
    let device = Mutex::new(
        download::open(&dir.path().join("device"), index.id(), &Sources { origin: None, ..sources.clone() }).unwrap().0,
    );
    let filled = {
        let bytes = bytes.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            let mut store = store.lock().unwrap();
            for n in 0..index.count() {
                let (start, len) = index.span(n).unwrap();
                let start = usize::try_from(start).unwrap();
                assert!(store.put(n, &bytes[start..start + len]).unwrap());
            }
        })
    };
    let started = std::time::Instant::now();
    let report = download::download(&device, &sources, &options()).unwrap();
    let took = started.elapsed();
    filled.join().unwrap();
    assert_eq!((report.from_peers.values().sum::<u32>(), report.from_origin), (41, 0), "{report:?}");
    assert_eq!(held(&device), bytes);
    // A handshake with the origin gives up after 5 s.
    assert!(took < Duration::from_secs(4), "the download took {took:?}: it waited for the origin's handshake");
}

/// A listener on loopback whose handshakes are all dropped (a host that is
/// gone, a link that drops every packet): its one place in the queue
/// (Linux queues backlog + 1) is taken.
fn dropping_handshakes() -> (socket2::Socket, std::net::TcpStream, std::net::SocketAddr) {
    let listener = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener.bind(&LOOPBACK.parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let queued = std::net::TcpStream::connect(addr).unwrap();
    (listener, queued, addr)
}

/// A peer given that does not answer the handshake (switched off) holds
/// the origin back for a peer's connection timeout on the LAN (1 s), not
/// the origin's (5 s): the origin waits for the peers given to say what
/// they hold, or to fail.
#[test]
fn a_peer_that_drops_the_handshake_holds_the_origin_back_for_a_lan_timeout_only() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let id = Index::of(&bytes).id();
    let origin = origin(dir.path(), &bytes);
    let (_listener, _queued, gone) = dropping_handshakes();
    let sources = Sources { origin: Some(origin.addr().to_string()), peers: vec![gone.to_string()], found: None };
    let device = Mutex::new(
        download::open(&dir.path().join("device"), id, &Sources { peers: vec![], ..sources.clone() }).unwrap().0,
    );
    let started = std::time::Instant::now();
    let report = download::download(&device, &sources, &options()).unwrap();
    let took = started.elapsed();
    assert_eq!(held(&device), bytes);
    assert_eq!(report.from_origin, 41, "{report:?}");
    assert!(took < Duration::from_secs(3), "the download waited {took:?} for the peer's handshake");
}

/// Nothing listens on the origin's address for the first 3.5 s (a
/// saturated uplink dropping every packet): the device asks again every
/// second until it answers, within `stall`, and gets the index.
#[test]
fn an_index_is_asked_for_again_until_the_origin_answers() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let id = Index::of(&bytes).id();
    let addr = std::net::TcpListener::bind(LOOPBACK).unwrap().local_addr().unwrap();
    let late = origin_after(dir.path(), &bytes, addr, Duration::from_millis(3500));
    let sources = Sources { origin: Some(addr.to_string()), peers: Vec::new(), found: None };
    let (store, _) = download::open_within(&dir.path().join("device"), id, &sources, &options()).unwrap();
    assert_eq!(store.index().size, bytes.len() as u64);
    let _origin = late.join().unwrap();
    // And gives up once `stall` has passed.
    let dead = Sources {
        origin: Some(std::net::TcpListener::bind(LOOPBACK).unwrap().local_addr().unwrap().to_string()),
        ..sources
    };
    let started = std::time::Instant::now();
    let stall = Duration::from_secs(2);
    let e = download::open_within(&dir.path().join("other"), id, &dead, &DownloadOptions { stall, ..options() });
    assert!(e.unwrap_err().to_string().contains("no source sent its index"));
    assert!(started.elapsed() >= stall && started.elapsed() < stall * 3, "{:?}", started.elapsed());
    // A peer that is down is asked three rounds in all, whatever `stall`:
    // the origin answered (it does not hold the asset).
    let empty = Server::start(Origin::sharing(&[]), LOOPBACK.parse().unwrap()).unwrap();
    let down = std::net::TcpListener::bind(LOOPBACK).unwrap().local_addr().unwrap().to_string();
    let sources = Sources { origin: Some(empty.addr().to_string()), peers: vec![down], found: None };
    let started = std::time::Instant::now();
    let e = download::open_within(&dir.path().join("third"), id, &sources, &options()).unwrap_err().to_string();
    assert!(e.contains("404"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(6), "a peer that is down held it {:?}", started.elapsed());
}

/// A peer that says it holds every block and then trickles them would hold
/// the block it was asked for, from every other source, for as long as it
/// pleased: it has `peer_deadline` for a whole answer, is dropped from the
/// download when it overruns it with a block, and the rest come from the
/// good peer and the origin.
#[test]
fn a_peer_that_trickles_its_blocks_is_dropped_and_the_download_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let id = Index::of(&bytes).id();
    let origin = origin(dir.path(), &bytes);
    let (trickler, asked) = common::trickling(41);
    let (good, _) = peer(&dir.path().join("good"), &bytes, 0..30);
    let sources = Sources {
        origin: Some(origin.addr().to_string()),
        peers: vec![trickler.to_string(), good.addr().to_string()],
        found: None,
    };
    let options = DownloadOptions { peer_deadline: Duration::from_millis(300), ..options() };

    let (store, banned) = download::open_within(&dir.path().join("c"), id, &sources, &options).unwrap();
    assert!(banned.is_empty(), "a slow index is no lie: {banned:?}");
    assert_eq!(asked.load(Ordering::SeqCst), 1, "its index was asked for, and taken from the next source");
    let store = Mutex::new(store);
    let report = download::download(&store, &sources, &options).unwrap();
    assert_eq!(held(&store), bytes);
    let lost: Vec<_> = report.lost.iter().filter(|(p, _)| p == &trickler.to_string()).collect();
    assert_eq!(lost.len(), 1, "{report:?}");
    assert!(lost[0].1.contains("no whole answer in time"), "{}", lost[0].1);
    assert_eq!(asked.load(Ordering::SeqCst), 2, "it was asked for one block, and dropped");
    assert_eq!(report.from_peers.get(&trickler.to_string()), None);
    assert_eq!(report.from_peers.get(&good.addr().to_string()), Some(&30));
}

/// A device reading an asset block by block asks a peer that trickled an
/// answer no more until its bench is over: one slow peer costs one
/// deadline, not one per block; then it is asked again (it may have been
/// busy).
#[test]
fn a_reader_asks_a_peer_that_trickled_again_only_after_its_bench() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let id = Index::of(&bytes).id();
    let origin = origin(dir.path(), &bytes);
    let (trickler, asked) = common::trickling(41);
    let peers = trellis_assets::PeerList::new();
    peers.add(&trickler.to_string());
    let bench = Duration::from_secs(1);
    let device = trellis_assets::Fetcher::new(Some(origin.addr().to_string()), dir.path().join("c"), String::new())
        .with_peers(peers)
        .with_peer_deadline(Duration::from_millis(300), bench);

    let first = std::time::Instant::now();
    assert_eq!(device.read(id, 0, 20 * u64::from(BLOCK_SIZE)).unwrap(), bytes[..20 * BS]);
    assert_eq!(asked.load(Ordering::SeqCst), 1, "asked for the index only, then benched");
    // Its trickle would last 10 s: the read waited for its deadline only.
    assert!(first.elapsed() < Duration::from_secs(5), "the trickling peer held the read {:?}", first.elapsed());
    // Its bench began when its index overran, before the read ended.
    std::thread::sleep(bench + Duration::from_millis(100));
    assert_eq!(
        device.read(id, 20 * u64::from(BLOCK_SIZE), 2 * u64::from(BLOCK_SIZE)).unwrap(),
        bytes[20 * BS..22 * BS]
    );
    assert_eq!(asked.load(Ordering::SeqCst), 2, "asked again once its bench was over, for one block");
    assert_eq!(device.stats.from_peers.load(Ordering::Relaxed), 0);
}

/// A read spends one peer deadline in all on peers before it goes to the
/// origin, however many are listed that never answer; and a peer that
/// answers a block request with an error is benched as one that does not
/// answer is, not asked again for every block.
#[test]
fn a_reader_spends_one_deadline_on_peers_and_benches_one_that_answers_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let id = Index::of(&bytes).id();
    // A second asset at the origin, for a peer benched for the first only.
    let other = common::noise_from(2 * BS, 7);
    std::fs::create_dir_all(dir.path().join("origin")).unwrap();
    std::fs::write(dir.path().join("origin/other.bin"), &other).unwrap();
    let origin = origin(dir.path(), &bytes);
    let (silent, contacted) = silent_peers(10);
    let peers = trellis_assets::PeerList::new();
    for peer in &silent {
        peers.add(peer);
    }
    let deadline = Duration::from_millis(500);
    let device = trellis_assets::Fetcher::new(Some(origin.addr().to_string()), dir.path().join("c"), String::new())
        .with_peers(peers)
        .with_peer_deadline(deadline, Duration::from_secs(60));
    let started = std::time::Instant::now();
    assert_eq!(device.read(id, 0, u64::from(BLOCK_SIZE)).unwrap(), bytes[..BS]);
    // The index and the block: a deadline each on the peers (one each
    // would take 10 deadlines for the index alone).
    assert!(started.elapsed() < 5 * deadline, "the silent peers held the read {:?}", started.elapsed());
    // Each had one peer's full deadline, and maybe one more peer what was left.
    let asked = contacted.load(Ordering::SeqCst);
    assert!((2..=4).contains(&asked), "{asked} silent peers asked");

    let (withholding, asked) = common::withholding(41, Duration::from_millis(50));
    let peers = trellis_assets::PeerList::new();
    peers.add(&withholding.to_string());
    let device = trellis_assets::Fetcher::new(Some(origin.addr().to_string()), dir.path().join("d"), String::new())
        .with_peers(peers)
        .with_peer_deadline(deadline, Duration::from_secs(60));
    assert_eq!(device.read(id, 0, 20 * u64::from(BLOCK_SIZE)).unwrap(), bytes[..20 * BS]);
    assert_eq!(asked.load(Ordering::SeqCst), 1, "asked for one block, answered 503, and benched");

    // How often a peer that says 404 after `delay` is asked while 20 blocks are read.
    let asks = |delay: Duration, store: &str| {
        let (slow, asked) = common::answering_late(41, delay, b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno");
        let peers = trellis_assets::PeerList::new();
        peers.add(&slow.to_string());
        let device =
            trellis_assets::Fetcher::new(Some(origin.addr().to_string()), dir.path().join(store), String::new())
                .with_peers(peers)
                .with_peer_deadline(deadline, Duration::from_secs(60));
        assert_eq!(device.read(id, 0, 20 * u64::from(BLOCK_SIZE)).unwrap(), bytes[..20 * BS]);
        (asked, device)
    };
    // Slow to say it does not hold a block (after 60 % of the deadline): benched too.
    let (asked, _) = asks(deadline * 6 / 10, "e");
    assert_eq!(asked.load(Ordering::SeqCst), 1, "asked for one block, slow to answer 404, and benched");
    // Just under any limit on one answer (30 % of the deadline): benched
    // once its answers have taken more than half the deadline in all...
    let (asked, device) = asks(deadline * 3 / 10, "f");
    assert_eq!(asked.load(Ordering::SeqCst), 2, "asked for two blocks, 404 each time, and benched");
    // ...for that asset only: it is asked for another.
    assert_eq!(device.read(Index::of(&other).id(), 0, 1).unwrap(), other[..1]);
    assert_eq!(asked.load(Ordering::SeqCst), 3, "not asked for another asset");
}

/// A peer that keeps saying it holds every block and answers their requests
/// with errors is dropped even while others wait their turn: it does not
/// make room for them and come back (its word would keep those blocks from
/// the origin for ever).
#[test]
fn peers_that_break_their_word_are_dropped_not_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let id = Index::of(&bytes).id();
    let origin = origin(dir.path(), &bytes);
    // 41 blocks take 4 s or more from the origin: longer than the three
    // need to be dropped, two at a time, a second each.
    let uplink = common::delaying(origin.addr(), Duration::from_millis(100));
    let liars: Vec<_> = (0..3).map(|_| common::withholding(41, Duration::from_millis(50)).0.to_string()).collect();
    let sources = Sources { origin: Some(uplink.to_string()), peers: liars.clone(), found: None };
    let options = DownloadOptions {
        max_peers: 2,
        peer_retry: Duration::from_secs(1),
        stall: Duration::from_secs(8),
        ..options()
    };
    let (store, _) = download::open_within(&dir.path().join("device"), id, &sources, &options).unwrap();
    let store = Mutex::new(store);
    let report = download::download(&store, &sources, &options).unwrap();
    assert_eq!(report.from_origin, 41, "{report:?}");
    let mut lost: Vec<&String> = report.lost.iter().map(|(p, _)| p).collect();
    lost.sort();
    let mut all: Vec<&String> = liars.iter().collect();
    all.sort();
    assert_eq!(lost, all, "{report:?}");
}

/// An urgent job pushed while a normal one waits for its index (the origin
/// does not answer) goes first: the wait ends before the next source is
/// asked, and the normal job comes back after it.
#[test]
fn an_urgent_job_does_not_wait_behind_an_index_that_does_not_come() {
    use trellis_assets::{Job, Queue};
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let urgent_id = Index::of(&bytes).id();
    // The LAN peer holds the urgent release; nothing answers on the origin's address.
    let (lan_peer, _store) = peer(&dir.path().join("peer"), &bytes, 0..41);
    let nowhere = std::net::TcpListener::bind(LOOPBACK).unwrap().local_addr().unwrap().to_string();
    let sources = Sources { origin: Some(nowhere), peers: vec![lan_peer.addr().to_string()], found: None };
    let queue = Arc::new(Queue::new());
    queue.push([Job { name: "normal".into(), id: AssetId([7; 32]), urgent: false }]);
    // Without the pause, the normal job would wait this long for its index.
    let stall = Duration::from_secs(8);
    let options = DownloadOptions { stall, ..options() };
    let started = std::time::Instant::now();
    let runner = std::thread::spawn({
        let (queue, root) = (Arc::clone(&queue), dir.path().join("device"));
        move || {
            let mut ended = Vec::new();
            queue.run(
                &root,
                &sources,
                &options,
                |_| {},
                |f| ended.push((f.job.name, f.result.is_ok(), started.elapsed())),
            );
            ended
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    queue.push([Job { name: "urgent".into(), id: urgent_id, urgent: true }]);
    queue.close();
    let ended = runner.join().unwrap();
    let order: Vec<(&str, bool)> = ended.iter().map(|(n, ok, _)| (n.as_str(), *ok)).collect();
    assert_eq!(order, [("urgent", true), ("normal", false)], "{ended:?}");
    assert!(ended[0].2 < stall / 2, "the urgent job waited: {ended:?}");
    assert!(dir.path().join("device").join(urgent_id.to_string()).exists());
}

/// A peer's answer with a block says what it holds too, so a device busy
/// taking blocks from it does not also ask it every `poll`: taking 41
/// blocks from one peer, each answer 20 ms on the way, with `poll` at 1 ms,
/// the device asks it what it holds at the start and not once a block.
#[test]
fn a_busy_peer_says_what_it_holds_with_its_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let id = Index::of(&bytes).id();
    let (full, _) = peer(&dir.path().join("a"), &bytes, 0..41);
    let (relay, asked) = common::counting(common::delaying(full.addr(), Duration::from_millis(20)), "/have");
    let sources = Sources { origin: None, peers: vec![relay.to_string()], found: None };
    let options = DownloadOptions { poll: Duration::from_millis(1), ..options() };

    let (store, _) = download::open_within(&dir.path().join("c"), id, &sources, &options).unwrap();
    let store = Mutex::new(store);
    let report = download::download(&store, &sources, &options).unwrap();
    assert_eq!(held(&store), bytes);
    assert_eq!(report.from_peers.get(&relay.to_string()), Some(&41), "{report:?}");
    let asked = asked.load(Ordering::SeqCst);
    // Once at the start; a loaded machine may make it ask again once or twice.
    assert!(asked <= 4, "asked what it holds {asked} times while taking its 41 blocks");
}

/// A peer that says it holds every block and answers each request for one
/// with an error, each just inside its deadline, would keep them from the
/// origin for as long as it kept that up: it is dropped once no block has
/// come from it for `peer_retry`, and the origin sends the rest.
#[test]
fn a_peer_that_says_it_holds_blocks_and_never_sends_them_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let id = Index::of(&bytes).id();
    let origin = origin(dir.path(), &bytes);
    // An uplink on which each block takes 100 ms: while the liar's word
    // counts, the origin gets a block now and then at most.
    let uplink = common::delaying(origin.addr(), Duration::from_millis(100));
    let (liar, asked) = common::withholding(41, Duration::from_millis(600));
    let sources = Sources { origin: Some(uplink.to_string()), peers: vec![liar.to_string()], found: None };
    let options =
        DownloadOptions { peer_retry: Duration::from_secs(1), peer_deadline: Duration::from_secs(2), ..options() };

    let started = std::time::Instant::now();
    let (store, _) = download::open_within(&dir.path().join("device"), id, &sources, &options).unwrap();
    let store = Mutex::new(store);
    let report = download::download(&store, &sources, &options).unwrap();
    let took = started.elapsed();
    assert_eq!(held(&store), bytes);
    assert_eq!(report.from_origin, 41, "{report:?}");
    let lost: Vec<&(String, String)> = report.lost.iter().filter(|(p, _)| *p == liar.to_string()).collect();
    assert!(lost.iter().any(|(_, why)| why.contains("503") && why.contains("no block for 1 s")), "{report:?}");
    // Two requests of 600 ms each, then the origin alone (41 blocks of 100 ms).
    let asked = asked.load(Ordering::SeqCst);
    assert!(asked <= 3, "asked the liar for {asked} blocks");
    assert!(took < Duration::from_secs(12), "took {took:?}");
}

/// A peer's answer to a block request can be no longer than the block (and
/// what the peer holds): one that says it is 64 MiB is refused before a
/// byte of it is read.
#[test]
fn a_peer_answer_longer_than_a_block_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let id = Index::of(&bytes).id();
    let origin = origin(dir.path(), &bytes);
    let (flood, asked, sent) = common::flooding(41);
    let sources = Sources { origin: Some(origin.addr().to_string()), peers: vec![flood.to_string()], found: None };

    let (store, _) = download::open_within(&dir.path().join("device"), id, &sources, &options()).unwrap();
    let store = Mutex::new(store);
    let report = download::download(&store, &sources, &options()).unwrap();
    assert_eq!(held(&store), bytes);
    assert_eq!(report.from_origin, 41, "{report:?}");
    let (asked, sent) = (asked.load(Ordering::SeqCst), sent.load(Ordering::SeqCst));
    assert!(asked >= 1, "the peer was never asked for a block");
    // What the sockets' buffers took before the device hung up, not 64 MiB an answer.
    assert!(sent < u64::from(asked) * (16 << 20), "the peer got {sent} bytes out for {asked} answers");
}

/// Listeners on loopback that take connections and requests and never
/// answer; how many of them were connected to.
fn silent_peers(n: usize) -> (Vec<String>, Arc<std::sync::atomic::AtomicUsize>) {
    let contacted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let addrs = (0..n)
        .map(|_| {
            let silent = std::net::TcpListener::bind(LOOPBACK).unwrap();
            let addr = silent.local_addr().unwrap().to_string();
            let contacted = Arc::clone(&contacted);
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for stream in silent.incoming().flatten() {
                    if held.is_empty() {
                        contacted.fetch_add(1, Ordering::SeqCst);
                    }
                    held.push(stream);
                }
            });
            addr
        })
        .collect();
    (addrs, contacted)
}

/// Anyone on the LAN can announce peers: a download asks a few at a time
/// (`max_peers`), not one thread for each, and the list of those found
/// keeps the first `MAX_FOUND`.
#[test]
fn a_flood_of_peers_announced_on_the_lan_is_asked_a_few_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let id = Index::of(&bytes).id();
    let origin = origin(dir.path(), &bytes);
    // 41 blocks take about 1.2 s from the origin.
    let uplink = common::delaying(origin.addr(), Duration::from_millis(30));
    let (silent, contacted) = silent_peers(40);
    let found = download::PeerList::new();
    for peer in &silent {
        assert!(found.add(peer));
    }
    let sources = Sources { origin: Some(uplink.to_string()), peers: Vec::new(), found: Some(found.clone()) };
    let options = DownloadOptions {
        max_peers: 4,
        peer_retry: Duration::from_secs(60),
        peer_deadline: Duration::from_secs(60),
        ..options()
    };
    let (store, _) = download::open_within(&dir.path().join("device"), id, &sources, &options).unwrap();
    let store = Mutex::new(store);
    let report = download::download(&store, &sources, &options).unwrap();
    assert_eq!(report.from_origin, 41, "{report:?}");
    assert_eq!(held(&store), bytes);
    let asked = contacted.load(Ordering::SeqCst);
    assert!((1..=4).contains(&asked), "{asked} of the 40 silent peers were asked at once");

    // The list keeps the last MAX_FOUND added: the oldest make room.
    let flood: Vec<String> = (0..download::MAX_FOUND).map(|n| format!("127.0.0.1:{}", 10_000 + n)).collect();
    for peer in &flood {
        assert!(found.add(peer));
    }
    assert_eq!(found.peers(), flood);
    assert!(found.add(&silent[0]));
    assert_eq!(found.peers().len(), download::MAX_FOUND);
    assert_eq!(found.peers()[..download::MAX_FOUND - 1], flood[1..]);
    assert_eq!(found.peers().last(), Some(&silent[0]));
}

/// A peer that answers but has nothing to give (it holds nothing, or says
/// so) makes room after `peer_retry` for one that waits its turn, and
/// waits its turn again.
#[test]
fn a_peer_with_nothing_to_give_makes_room_for_one_waiting_its_turn() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let id = Index::of(&bytes).id();
    let (empty_a, _a) = peer(&dir.path().join("a"), &bytes, 0..0);
    let (empty_b, _b) = peer(&dir.path().join("b"), &bytes, 0..0);
    let (holder, _) = peer(&dir.path().join("holder"), &bytes, 0..41);
    let peers = vec![empty_a.addr().to_string(), empty_b.addr().to_string(), holder.addr().to_string()];
    let sources = Sources { origin: None, peers, found: None };
    let options = DownloadOptions {
        max_peers: 2,
        peer_retry: Duration::from_secs(1),
        stall: Duration::from_secs(8),
        ..options()
    };
    let (store, _) = download::open_within(&dir.path().join("device"), id, &sources, &options).unwrap();
    let store = Mutex::new(store);
    let report = download::download(&store, &sources, &options).unwrap();
    assert_eq!(report.from_peers.get(&holder.addr().to_string()), Some(&41), "{report:?}");
    assert!(report.lost.is_empty(), "nobody was dropped: {report:?}");
    assert_eq!(held(&store), bytes);
}

/// A peer that waits its turn is asked once one asked before it is dropped.
#[test]
fn a_peer_waiting_its_turn_is_asked_when_one_before_it_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let id = Index::of(&bytes).id();
    let (silent, contacted) = silent_peers(2);
    let (holder, _) = peer(&dir.path().join("holder"), &bytes, 0..41);
    let mut peers = silent.clone();
    peers.push(holder.addr().to_string());
    let sources = Sources { origin: None, peers, found: None };
    let options = DownloadOptions {
        max_peers: 2,
        peer_retry: Duration::from_secs(1),
        peer_deadline: Duration::from_millis(300),
        ..options()
    };
    let (store, _) = download::open_within(&dir.path().join("device"), id, &sources, &options).unwrap();
    let store = Mutex::new(store);
    let report = download::download(&store, &sources, &options).unwrap();
    assert_eq!(report.from_peers.get(&holder.addr().to_string()), Some(&41), "{report:?}");
    assert_eq!(contacted.load(Ordering::SeqCst), 2);
    assert_eq!(held(&store), bytes);
}

/// A peer announced on the LAN while the download runs is asked, but the
/// origin does not wait for it to say what it holds: anyone can announce
/// one, and one that never answers would hold the origin for a deadline.
/// Nor does the end of the download wait for its answer.
#[test]
fn the_origin_does_not_wait_for_a_peer_found_later_that_never_answers() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let id = Index::of(&bytes).id();
    let origin = origin(dir.path(), &bytes);
    // Takes connections and requests, and never answers.
    let (silent, _) = silent_peers(1);
    let found = download::PeerList::new();
    found.add(&silent[0]);
    let sources = Sources { origin: Some(origin.addr().to_string()), peers: Vec::new(), found: Some(found) };
    let options = DownloadOptions { peer_deadline: Duration::from_secs(5), ..options() };

    let (store, _) = download::open_within(&dir.path().join("device"), id, &sources, &options).unwrap();
    let store = Mutex::new(store);
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        let running = scope.spawn(|| download::download(&store, &sources, &options).unwrap());
        // Every block, long before the silent peer's deadline.
        while store.lock().unwrap().held() < 41 {
            assert!(started.elapsed() < Duration::from_secs(3), "held {} blocks", store.lock().unwrap().held());
            std::thread::sleep(Duration::from_millis(20));
        }
        let report = running.join().unwrap();
        assert_eq!(report.from_origin, 41, "{report:?}");
        // And the download ends then: it hangs up on the peer it still waits for.
        assert!(started.elapsed() < Duration::from_secs(3), "returned after {:?}", started.elapsed());
    });
    assert_eq!(held(&store), bytes);
}

/// A connection to `to` from `ip` (another loopback address stands for
/// another host on the LAN).
fn connect_from(ip: &str, to: std::net::SocketAddr) -> std::net::TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: std::net::SocketAddr = format!("{ip}:0").parse().unwrap();
    socket.bind(&from.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    stream
}

/// The status line of the answer to `GET path` on `stream`; none when the
/// server closed the connection instead.
fn status_of(stream: &mut std::net::TcpStream, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let request = format!("GET {path} HTTP/1.1\r\nHost: peer\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// One host on the LAN cannot take a sharing device's connections from its
/// other peers: it is served on `MAX_PER_PEER` at once, one more is closed
/// at once, another host is still served, and the host's slots come back
/// when it hangs up.
#[test]
fn one_host_cannot_hold_every_connection_of_a_sharing_device() {
    use trellis_assets::server::MAX_PER_PEER;
    let dir = tempfile::tempdir().unwrap();
    let bytes = release();
    let id = Index::of(&bytes).id();
    let (server, _store) = peer(dir.path(), &bytes, 0..41);
    let path = format!("/v1/assets/{id}/blocks/3");
    let ok = Some("HTTP/1.1 200".to_owned());

    let mut held: Vec<_> = (0..MAX_PER_PEER).map(|_| connect_from("127.0.0.1", server.addr())).collect();
    assert_eq!(status_of(&mut held[0], &path), ok, "a connection within the limit is served");
    assert_eq!(status_of(&mut held[MAX_PER_PEER - 1], &path), ok);
    let mut extra = connect_from("127.0.0.1", server.addr());
    assert_eq!(status_of(&mut extra, &path), None, "one more from the same host was served");
    let mut other = connect_from("127.0.0.2", server.addr());
    assert_eq!(status_of(&mut other, &path), ok, "another host is not served");

    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if status_of(&mut connect_from("127.0.0.1", server.addr()), &path) == ok {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the host's slots did not come back");
        std::thread::sleep(Duration::from_millis(50));
    }
}
