//! Byte ranges of an asset, as RAUC's streaming mode reads a bundle: from the
//! origin's file, and from the device's loopback stream server, which
//! fetches and verifies the blocks a range covers first.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use trellis_assets::server::{Origin, OriginConfig, Server};
use trellis_assets::stream::Ticket;
use trellis_assets::{BLOCK_SIZE, Fetcher, Index, PeerList, StreamServer};

mod common;

const BS: u64 = BLOCK_SIZE as u64;

/// An answer: status, headers (lower-case names) and the body as far as it came.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    fn length(&self) -> u64 {
        self.header("content-length").unwrap().parse().unwrap()
    }
}

/// One request on a connection of its own; the body is read to its length
/// or to the end of the connection, whichever comes first.
fn ask(addr: SocketAddr, method: &str, path: &str, range: Option<&str>) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\n{range}\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h.trim().is_empty() {
            break;
        }
        let (n, v) = h.split_once(':').unwrap();
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let mut answer = Answer { status, headers, body: Vec::new() };
    if method != "HEAD" {
        let len = answer.length();
        r.take(len).read_to_end(&mut answer.body).unwrap_or_default();
    }
    answer
}

fn origin_of(dir: &std::path::Path, bytes: &[u8]) -> Server {
    std::fs::create_dir_all(dir.join("files")).unwrap();
    std::fs::write(dir.join("files/update.raucb"), bytes).unwrap();
    let origin = Origin::from_dir(&dir.join("files"), OriginConfig { push: 16, ..OriginConfig::default() }).unwrap();
    Server::start(origin, "127.0.0.1:0".parse().unwrap()).unwrap()
}

/// What both servers must answer alike for a file of `bytes` at `path`.
fn answers_ranges_as_http_says(addr: SocketAddr, path: &str, bytes: &[u8]) {
    let size = bytes.len() as u64;
    let a = ask(addr, "GET", path, Some("bytes=100-199"));
    assert_eq!((a.status, a.header("content-range")), (206, Some(&*format!("bytes 100-199/{size}"))));
    assert_eq!(a.body, bytes[100..200]);
    // Across blocks, open-ended, and the last n bytes (RAUC reads the signature's size so).
    let a = ask(addr, "GET", path, Some(&format!("bytes={}-", size - BS - 7)));
    assert_eq!(a.body, bytes[(size - BS - 7) as usize..]);
    let a = ask(addr, "GET", path, Some("bytes=-8"));
    assert_eq!((a.status, &a.body[..]), (206, &bytes[bytes.len() - 8..]));
    // Not in the file: 416 naming the size.
    let a = ask(addr, "GET", path, Some(&format!("bytes={size}-")));
    assert_eq!((a.status, a.header("content-range")), (416, Some(&*format!("bytes */{size}"))));
    // HEAD: the size, no body.
    let a = ask(addr, "HEAD", path, None);
    assert_eq!((a.status, a.length(), a.header("accept-ranges")), (200, size, Some("bytes")));
}

#[test]
fn the_origin_serves_ranges_of_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = common::noise(5 * BS as usize + 1000);
    let server = origin_of(dir.path(), &bytes);
    let id = Index::of(&bytes).id();
    answers_ranges_as_http_says(server.addr(), &format!("/v1/assets/{id}/data"), &bytes);
    let a = ask(server.addr(), "GET", &format!("/v1/assets/{id}/data"), None);
    assert_eq!((a.status, a.body == bytes), (200, true));
}

/// The path of a ticket's URL.
fn path_of(ticket: &Ticket) -> String {
    let (_, path) = ticket.url().split_once("/v1/").unwrap();
    format!("/v1/{path}")
}

fn stream_of(fetcher: &Arc<Fetcher>) -> StreamServer {
    StreamServer::start(fetcher.clone(), "127.0.0.1:0".parse().unwrap()).unwrap()
}

#[test]
fn the_stream_server_fetches_only_the_blocks_a_range_covers_and_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = common::noise(40 * BS as usize + 1000);
    let origin = origin_of(dir.path(), &bytes);
    let id = Index::of(&bytes).id();
    // No session: nothing is pushed ahead of what the reader asks.
    let fetcher = Arc::new(Fetcher::new(Some(origin.addr().to_string()), dir.path().join("device"), String::new()));
    let stream = stream_of(&fetcher);
    let ticket = stream.open(&id).unwrap();
    let path = path_of(&ticket);
    let token = path.strip_prefix("/v1/streams/").unwrap();
    assert!(token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit()), "{path}");
    assert_eq!(ticket.url(), format!("http://{}{path}", stream.addr()));
    assert_ne!(path_of(&stream.open(&id).unwrap()), path, "each reader has a ticket of its own");

    answers_ranges_as_http_says(stream.addr(), &path, &bytes);
    // Block 0 (100-199), the last two (the open range) and the last again.
    assert_eq!(fetcher.stats.requests.load(Ordering::Relaxed), 3, "only the blocks the ranges cover");
    assert_eq!(origin.origin().stats.pushed.load(Ordering::Relaxed), 0);

    // Asked again (a retried request), it comes from the device.
    let a = ask(stream.addr(), "GET", &path, Some("bytes=65000-65600"));
    assert_eq!(a.body, bytes[65000..65601]);
    assert_eq!(fetcher.stats.requests.load(Ordering::Relaxed), 4, "block 1 only: block 0 is on the device");
    let a = ask(stream.addr(), "GET", &path, Some("bytes=0-1048575"));
    assert_eq!(a.body, bytes[..1 << 20]);
    assert_eq!(fetcher.stats.requests.load(Ordering::Relaxed), 18, "blocks 2 to 15");

    // Closed: the URL answers no more.
    drop(ticket);
    let a = ask(stream.addr(), "GET", &path, Some("bytes=0-0"));
    assert_eq!(a.status, 404);
    assert!(String::from_utf8_lossy(&a.body).contains("not open"));

    // Offline (a restart with no source), what is on the device still
    // streams. A range whose first part cannot be had is an error; one
    // whose later part cannot ends short, after what could.
    drop(stream);
    let offline = Arc::new(Fetcher::new(None, dir.path().join("device"), String::new()));
    let stream = stream_of(&offline);
    let ticket = stream.open(&id).unwrap();
    let path = path_of(&ticket);
    let a = ask(stream.addr(), "GET", &path, Some("bytes=65536-131071"));
    assert_eq!(a.body, bytes[65536..131_072]);
    let a = ask(stream.addr(), "GET", &path, Some(&format!("bytes=0-{}", 20 * BS - 1)));
    assert_eq!((a.status, a.length()), (206, 20 * BS));
    assert_eq!(a.body, bytes[..1 << 20], "the first MiB, then the end: block 16 is not on the device");
    let a = ask(stream.addr(), "GET", &path, Some(&format!("bytes={}-", 20 * BS)));
    let body = String::from_utf8_lossy(&a.body);
    assert_eq!(a.status, 404, "no source holds block 20: {body}");
    assert!(body.contains("no asset origin is configured"), "{body}");
}

#[test]
fn a_corrupt_origin_never_gets_a_byte_to_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = common::noise(4 * BS as usize);
    let id = Index::of(&bytes).id();
    let (liar, _) = common::hostile(bytes.clone(), 0, u32::MAX);
    let fetcher = Arc::new(Fetcher::new(Some(liar.to_string()), dir.path().join("device"), String::new()));
    let stream = stream_of(&fetcher);
    let ticket = stream.open(&id).unwrap();
    let a = ask(stream.addr(), "GET", &path_of(&ticket), Some("bytes=0-99"));
    let body = String::from_utf8_lossy(&a.body);
    assert_eq!(a.status, 502, "{body}");
    assert!(body.contains("did not match the index"), "only the reason was sent: {body}");
    assert_eq!(fetcher.stats.refused.load(Ordering::Relaxed), 3, "three copies were refused");
}

#[test]
fn bad_requests_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let fetcher = Arc::new(Fetcher::new(None, dir.path().join("device"), String::new()));
    let e = StreamServer::start(fetcher.clone(), "0.0.0.0:0".parse().unwrap()).unwrap_err();
    assert!(e.to_string().contains("loopback only"), "{e}");
    let stream = stream_of(&fetcher);
    let id = Index::of(b"x").id();
    // Not opened: an asset's id is no URL.
    for path in [format!("/v1/assets/{id}/data"), "/v1/streams/nope".into()] {
        let a = ask(stream.addr(), "GET", &path, None);
        assert_eq!(a.status, 404, "{path}");
        assert!(String::from_utf8_lossy(&a.body).contains("no such stream"), "{path}");
    }
    let ticket = stream.open(&id).unwrap();
    let a = ask(stream.addr(), "GET", &path_of(&ticket), Some("bytes=0-0"));
    let body = String::from_utf8_lossy(&a.body);
    assert_eq!(a.status, 404, "no source holds it: {body}");
    assert!(body.contains(&id.to_string()) && body.contains("no asset origin is configured"), "{body}");
    // Peers that do not hold it yet may: a 502, asked again.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let peers = PeerList::new();
    peers.add(&gone.to_string());
    let fetcher = Arc::new(Fetcher::new(None, dir.path().join("d1"), String::new()).with_peers(peers));
    let stream = stream_of(&fetcher);
    let ticket = stream.open(&id).unwrap();
    let a = ask(stream.addr(), "GET", &path_of(&ticket), Some("bytes=0-0"));
    assert_eq!(a.status, 502, "{}", String::from_utf8_lossy(&a.body));
    // An origin without it: a 404, naming the origin's answer.
    let origin = origin_of(dir.path(), b"another file");
    let fetcher = Arc::new(Fetcher::new(Some(origin.addr().to_string()), dir.path().join("d2"), String::new()));
    let stream = stream_of(&fetcher);
    let ticket = stream.open(&id).unwrap();
    let a = ask(stream.addr(), "GET", &path_of(&ticket), Some("bytes=0-0"));
    assert_eq!(a.status, 404, "{}", String::from_utf8_lossy(&a.body));
    // An origin that cannot be reached may be back: a 502, asked again.
    drop(origin);
    let fetcher = Arc::new(Fetcher::new(Some(gone.to_string()), dir.path().join("d3"), String::new()));
    let stream = stream_of(&fetcher);
    let ticket = stream.open(&id).unwrap();
    let a = ask(stream.addr(), "GET", &path_of(&ticket), Some("bytes=0-0"));
    assert_eq!(a.status, 502, "{}", String::from_utf8_lossy(&a.body));
}

/// Reads `ranges` of `id` through `stream` and checks them against `bytes`.
fn read_ranges(stream: &StreamServer, id: &trellis_assets::AssetId, ranges: &[String], bytes: &[u8]) {
    let ticket = stream.open(id).unwrap();
    for range in ranges {
        let a = ask(stream.addr(), "GET", &path_of(&ticket), Some(range));
        let (first, last) = trellis_assets::byte_range(range, bytes.len() as u64).unwrap();
        assert_eq!((a.status, a.body == bytes[first as usize..=last as usize]), (206, true), "{range}");
    }
}

/// A device that shares its blocks keeps what a written bundle's install
/// fetched (across a restart, as in the trial boot) and serves it to the
/// site's next device, which reads the same ranges (same firmware before:
/// same adaptive reads) from it alone; the next bundle written, or a
/// rollback, and it is gone; a device that does not share keeps nothing.
#[test]
fn a_written_bundles_blocks_are_served_to_the_peers_until_the_next_one_or_a_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = common::noise(20 * BS as usize + 100);
    let next = common::noise_from(3 * BS as usize, 7);
    std::fs::create_dir_all(dir.path().join("files")).unwrap();
    std::fs::write(dir.path().join("files/next.raucb"), &next).unwrap();
    let origin = origin_of(dir.path(), &bytes);
    let (id, next_id) = (Index::of(&bytes).id(), Index::of(&next).id());
    let ranges = ["bytes=0-99".to_owned(), format!("bytes={}-{}", 5 * BS, 8 * BS - 1), "bytes=-8".to_owned()];
    let kept = dir.path().join("a/bundles").join(id.to_string());
    // The first device: its bundles shared beside its apps' assets.
    let device_a = |port: u16| {
        let mut apps = Fetcher::new(None, dir.path().join("a/assets"), String::new());
        let shared = apps.share(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
        let bundles = Fetcher::new(Some(origin.addr().to_string()), dir.path().join("a/bundles"), String::new())
            .sharing_through(&apps);
        (apps, shared, stream_of(&Arc::new(bundles)))
    };
    let block =
        |at: SocketAddr, id: &trellis_assets::AssetId| ask(at, "GET", &format!("/v1/assets/{id}/blocks/0"), None);
    let (apps, shared, stream_a) = device_a(0);
    read_ranges(&stream_a, &id, &ranges, &bytes);
    assert_eq!(block(shared, &id).status, 404, "not offered while no slot holds it");
    stream_a.installed(&id);
    assert!(kept.exists(), "kept for the peers");
    assert_eq!(block(shared, &id).status, 200);
    let asked = origin.origin().stats.requested.load(Ordering::Relaxed);
    assert_eq!(asked, 5, "blocks 0, 5, 6, 7 and 20");
    // Restarted (the trial boot): offered again once the lifecycle says it
    // is the bundle written (`Rauc::settled` at start).
    drop((stream_a, apps));
    // On another port: the one before may not be free yet (its listener
    // closes on a thread of its own).
    let (_apps, shared, stream_a) = device_a(0);
    assert_eq!(block(shared, &id).status, 404, "not offered before it is said to be written");
    stream_a.installed(&id);

    // The second device: no origin, the first as its peer.
    let peers = PeerList::new();
    peers.add(&shared.to_string());
    let second = Arc::new(Fetcher::new(None, dir.path().join("b/bundles"), String::new()).with_peers(peers));
    let stream_b = stream_of(&second);
    read_ranges(&stream_b, &id, &ranges, &bytes);
    assert_eq!(second.stats.from_peers.load(Ordering::Relaxed), 5, "every block from the peer");
    assert_eq!(origin.origin().stats.requested.load(Ordering::Relaxed), asked, "none from the origin");
    // A device that does not share keeps nothing.
    stream_b.installed(&id);
    assert!(!dir.path().join("b/bundles").join(id.to_string()).exists());

    // The next bundle written: the first one's blocks go.
    read_ranges(&stream_a, &next_id, &["bytes=0-9".to_owned()], &next);
    stream_a.installed(&next_id);
    assert!(!kept.exists(), "only the bundle written last is kept");
    assert_eq!((block(shared, &id).status, block(shared, &next_id).status), (404, 200));
    // Rolled back: gone, and a peer that asks is told why.
    stream_a.rolled_back(&next_id, "its trial boot failed");
    assert!(!dir.path().join("a/bundles").join(next_id.to_string()).exists());
    let a = block(shared, &next_id);
    assert_eq!(a.status, 410);
    assert!(String::from_utf8_lossy(&a.body).contains("its trial boot failed"));
    // A device told so asks it no more: the next source (the origin, asked
    // as a peer) serves the index and both blocks, one request each.
    let peers = PeerList::new();
    peers.add(&shared.to_string());
    peers.add(&origin.addr().to_string());
    let third = Fetcher::new(None, dir.path().join("c"), String::new()).with_peers(peers);
    assert_eq!(third.read(next_id, 0, 10).unwrap(), next[..10]);
    assert_eq!(third.read(next_id, BS, 10).unwrap(), next[BS as usize..BS as usize + 10]);
    assert_eq!(third.stats.requests.load(Ordering::Relaxed), 2, "the device that rolled it back was asked again");
}
