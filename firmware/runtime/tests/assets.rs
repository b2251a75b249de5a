//! Assets on demand, through the real runtime: an app reads an asset its
//! manifest names from an origin on loopback, block by block, verified.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod support;

use std::time::Duration;

use support::{boot, device, device_on_fake_clock_with, example, manifest, pack};
use trellis_assets::server::{Origin, OriginConfig, Server};
use trellis_runtime::config::AssetsConfig;

const SECS: Duration = Duration::from_secs(30);

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn weights(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31) ^ (i >> 9)) as u8).collect()
}

/// An origin on loopback serving 700,000 bytes of weights: its directory,
/// the bytes, the asset's id and the server.
fn weights_origin() -> (tempfile::TempDir, Vec<u8>, String, Server) {
    let dir = tempfile::tempdir().unwrap();
    let bytes = weights(700_000);
    std::fs::write(dir.path().join("weights.bin"), &bytes).unwrap();
    let origin = Origin::from_dir(dir.path(), OriginConfig::default()).unwrap();
    let id = origin.assets()[0].1.to_string();
    let server = Server::start(origin, "127.0.0.1:0".parse().unwrap()).unwrap();
    (dir, bytes, id, server)
}

/// The reader fixture with `[assets] weights = <id>`.
fn reader(id: &str) -> Vec<u8> {
    reader_version(id, "1.0.0")
}

fn reader_version(id: &str, version: &str) -> Vec<u8> {
    let mut m = manifest("reader");
    m.version = version.into();
    m.assets.insert("weights".into(), format!("sha256:{id}"));
    pack("reader", &m)
}

/// An asset stays on the device while an app on it names it (in its file,
/// its last good copy or the version running) and is removed once none
/// does: an update to weights of another hash does not leave the old ones
/// on the data partition for ever, nor does removing the app.
#[test]
fn an_asset_no_app_on_the_device_names_any_more_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("v1.bin"), weights(300_000)).unwrap();
    std::fs::write(dir.path().join("v2.bin"), weights(200_000)).unwrap();
    let origin = Origin::from_dir(dir.path(), OriginConfig::default()).unwrap();
    let id = |name: &str| origin.assets().into_iter().find(|(n, _)| n == name).unwrap().1.to_string();
    let (v1, v2) = (id("v1.bin"), id("v2.bin"));
    let server = Server::start(origin, "127.0.0.1:0".parse().unwrap()).unwrap();
    let origin_addr = server.addr().to_string();
    let (dev, clock) = device_on_fake_clock_with(&[("reader", reader_version(&v1, "1.0.0"))], |c| {
        c.assets = Some(AssetsConfig { origin: Some(origin_addr), ..AssetsConfig::default() });
    });
    let good_after = Duration::from_millis(trellis_runtime::CrashPolicy::default().good_after_ms);
    let stored = |id: &str| dev.state().join("assets").join(id).exists();
    let read_all = |len: usize| {
        let results = dev.runtime.subscribe("reader/result");
        dev.runtime.publish("reader/read", format!("weights 0 {len}").as_bytes());
        let answer = String::from_utf8(results.recv_timeout(SECS).expect("no answer from reader").payload).unwrap();
        assert!(answer.starts_with(&format!("ok {len} ")), "{answer}");
    };
    dev.wait_started("reader", "1.0.0");
    read_all(300_000);
    clock.advance(good_after);
    dev.runtime.tick();
    assert!(stored(&v1) && dev.state().join("last-good/reader.wasm").exists());

    // 2.0.0 reads other weights. Until it has run well, 1.0.0 is the version
    // to fall back to, and its weights stay.
    dev.install("reader", &reader_version(&v2, "2.0.0"));
    dev.wait_started("reader", "2.0.0");
    read_all(200_000);
    dev.runtime.tick();
    assert!(stored(&v1) && stored(&v2), "the last good version's asset was removed before its successor ran well");
    clock.advance(good_after);
    dev.runtime.tick();
    assert!(!stored(&v1), "no app names {v1} any more, yet it is still on the device");
    assert!(stored(&v2));
    // What else is in the store's directory is not an asset's: left alone.
    std::fs::write(dev.state().join("assets/README"), "mine").unwrap();

    // A broken 3.0.0 is refused; 2.0.0 runs on, with its weights.
    dev.install("reader", b"not an app");
    dev.wait_refused("reader");
    dev.runtime.tick();
    assert!(stored(&v2));
    read_all(200_000);

    // The app removed: nothing names its weights.
    dev.runtime.remove("reader").unwrap();
    dev.runtime.tick();
    assert!(!stored(&v2), "the removed app's asset is still on the device");
    assert!(dev.state().join("assets/README").exists());
}

#[test]
fn an_app_reads_verified_blocks_of_a_named_asset_and_nothing_else() {
    let (_dir, bytes, id, server) = weights_origin();
    let origin_addr = server.addr().to_string();
    let dev = device(&[("reader", reader(&id))], |c| {
        c.assets = Some(AssetsConfig { origin: Some(origin_addr), ..AssetsConfig::default() })
    });
    dev.wait_started("reader", "1.0.0");
    let results = dev.runtime.subscribe("reader/result");
    let ask = |payload: &str| {
        dev.runtime.publish("reader/read", payload.as_bytes());
        String::from_utf8(results.recv_timeout(SECS).expect("no answer from reader").payload).unwrap()
    };

    assert_eq!(ask("weights size"), format!("ok {}", bytes.len()));
    // A read spanning blocks, and the whole asset in 256 KiB reads.
    assert_eq!(ask("weights 65000 2000"), format!("ok 2000 {:016x}", fnv1a(&bytes[65000..67000])));
    assert_eq!(ask(&format!("weights 0 {}", bytes.len())), format!("ok {} {:016x}", bytes.len(), fnv1a(&bytes)));

    // Past the end: an error naming the asset and its size, and the app runs on.
    let past = ask(&format!("weights {} 10", bytes.len() - 5));
    assert!(
        past.starts_with("err Error::Invalid(") && past.contains("past the end") && past.contains("700000 bytes"),
        "{past}"
    );
    // An asset the manifest does not name is denied, whatever the origin holds.
    let denied = ask("other size");
    assert!(
        denied.starts_with("err Error::Denied(") && denied.contains("other\\\" is not in the manifest's [assets]"),
        "{denied}"
    );

    // The blocks are kept on the data partition: after a restart without
    // the origin, the app still reads what it read before.
    drop(server);
    let support::TestRuntime { dir: state, runtime, .. } = dev;
    runtime.shutdown();
    let dev = boot(state, |c| c.assets = None);
    dev.wait_started("reader", "1.0.0");
    let results = dev.runtime.subscribe("reader/result");
    dev.runtime.publish("reader/read", format!("weights 0 {}", bytes.len()).as_bytes());
    let again = String::from_utf8(results.recv_timeout(SECS).unwrap().payload).unwrap();
    assert_eq!(again, format!("ok {} {:016x}", bytes.len(), fnv1a(&bytes)));
}

#[test]
fn a_manifest_naming_an_asset_badly_is_refused_by_name() {
    let mut m = manifest("reader");
    m.assets.insert("weights".into(), "sha256:1234".into());
    let err = m.validate().unwrap_err().to_string();
    assert!(err.contains("`assets`") && err.contains("weights"), "{err}");
}

/// A peer that serves the asset's real index and, for every block, bytes
/// that are not the block; it counts the blocks it was asked for.
fn lying_peer(index: Vec<u8>) -> (String, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let count = asked.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split(' ').nth(1).unwrap_or("").to_owned();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {}
            let body = match path.rsplit_once("/blocks/") {
                Some((_, n)) => {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let n: u32 = n.trim().parse().unwrap_or(0);
                    let mut frame = n.to_le_bytes().to_vec();
                    frame.extend(65_536u32.to_le_bytes());
                    frame.extend(vec![0x5a; 65_536]);
                    frame
                }
                None => index.clone(),
            };
            let mut out = stream;
            let _ = write!(out, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = out.write_all(&body);
        }
    });
    (addr, asked)
}

/// Two devices on a LAN: the first reads the weights from the origin and
/// shares what it holds; the origin goes away; the second reads every block
/// from its peers, each checked against the index. A peer that sends a
/// block that does not match is refused at once and never asked again, and
/// the app reads the publisher's bytes.
#[test]
fn a_device_reads_an_asset_from_a_peer_and_a_lying_peer_is_asked_once() {
    let (_dir, bytes, id, server) = weights_origin();
    let origin_addr = server.addr().to_string();
    let assets = |peers: Vec<String>| AssetsConfig {
        origin: Some(origin_addr.clone()),
        peers,
        share: Some("127.0.0.1:0".parse().unwrap()),
        lan: false,
    };
    let read_all = |dev: &support::TestRuntime| {
        let results = dev.runtime.subscribe("reader/result");
        dev.runtime.publish("reader/read", format!("weights 0 {}", bytes.len()).as_bytes());
        String::from_utf8(results.recv_timeout(SECS).expect("no answer from reader").payload).unwrap()
    };
    let whole = format!("ok {} {:016x}", bytes.len(), fnv1a(&bytes));

    let first = device(&[("reader", reader(&id))], |c| c.assets = Some(assets(Vec::new())));
    first.wait_started("reader", "1.0.0");
    assert_eq!(read_all(&first), whole);
    let shared = first.runtime.assets_shared_on().expect("the first device shares its blocks").to_string();
    drop(server);

    let (liar, asked) = lying_peer(trellis_assets::Index::of(&bytes).encode());
    let second = device(&[("reader", reader(&id))], |c| c.assets = Some(assets(vec![liar, shared])));
    second.wait_started("reader", "1.0.0");
    assert_eq!(read_all(&second), whole, "the second device, its origin gone, did not read the weights from its peers");
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1, "the lying peer was asked again");
    // What it keeps is the publisher's: read again after a restart with no peer and no origin.
    let support::TestRuntime { dir: state, runtime, .. } = second;
    runtime.shutdown();
    let again = boot(state, |c| c.assets = None);
    again.wait_started("reader", "1.0.0");
    assert_eq!(read_all(&again), whole);
}

/// One ranged GET of `url` (`http://host:port/path`): the status and the body.
fn get_range(url: &str, range: &str) -> (u16, Vec<u8>) {
    use std::io::{BufRead, Read, Write};
    let (addr, path) = url.strip_prefix("http://").unwrap().split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET /{path} HTTP/1.1\r\nHost: x\r\nRange: {range}\r\n\r\n").unwrap();
    let mut r = std::io::BufReader::new(s);
    let (mut line, mut len) = (String::new(), 0);
    r.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (status, body)
}

/// A device with no apps whose asset origin is `origin`, sharing its blocks
/// on loopback; and its configuration.
fn sharing_device(origin: &Server) -> (support::TestRuntime, trellis_runtime::RuntimeConfig) {
    let assets = AssetsConfig {
        origin: Some(origin.addr().to_string()),
        peers: Vec::new(),
        share: Some("127.0.0.1:0".parse().unwrap()),
        lan: false,
    };
    let dev = device(&[], |c| c.assets = Some(assets.clone()));
    let mut config = trellis_runtime::RuntimeConfig::new(dev.apps(), dev.state());
    config.assets = Some(assets);
    (dev, config)
}

/// A device with no apps whose asset origin is `origin` and whose LAN peer
/// is `peer`, and its state directory.
fn device_with_peer(origin: &Server, peer: &str) -> (trellis_runtime::device::RuntimeDevice, tempfile::TempDir) {
    let assets =
        AssetsConfig { origin: Some(origin.addr().to_string()), peers: vec![peer.into()], share: None, lan: false };
    let dev = device(&[], |c| c.assets = Some(assets.clone()));
    let mut config = trellis_runtime::RuntimeConfig::new(dev.apps(), dev.state());
    config.assets = Some(assets);
    let support::TestRuntime { runtime, dir, .. } = dev;
    (trellis_runtime::device::RuntimeDevice::new(std::sync::Arc::new(runtime), config), dir)
}

/// A firmware bundle named by its piece root streams through the runtime
/// from the origin, and once it is written what the install read is served
/// to the device's peers on the address its apps' assets are shared on.
#[test]
fn a_written_bundles_blocks_are_shared_beside_the_apps_assets() {
    let (_dir, bytes, id, server) = weights_origin();
    let (dev, config) = sharing_device(&server);
    let stream = dev.runtime.bundle_stream(&config).expect("an origin is named: bundles stream");
    let id: trellis_assets::AssetId = id.parse().unwrap();
    let ticket = stream.open(&id).unwrap();
    assert_eq!(get_range(ticket.url(), "bytes=100-199"), (206, bytes[100..200].to_vec()));
    drop(ticket);
    drop(server);

    let shared = dev.runtime.assets_shared_on().unwrap().to_string();
    let peers = trellis_assets::PeerList::new();
    peers.add(&shared);
    let peer = tempfile::tempdir().unwrap();
    let next = trellis_assets::Fetcher::new(None, peer.path().to_path_buf(), String::new()).with_peers(peers);
    assert!(next.read(id, 100, 100).is_err(), "offered before it was written");
    stream.installed(&id);
    assert_eq!(next.read(id, 100, 100).unwrap(), bytes[100..200], "from the first device, the origin gone");
    assert_eq!(next.stats.from_peers.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// A release's apps fetched by their piece root come from the device's
/// asset sources, each block checked; their pieces are served to the peers
/// only once the device runs those very files, beside the apps' assets.
/// While the attempt runs, what it fetched stays whatever else is installed
/// (a release of two apps keeps both); once it ends, pieces of a refused
/// install or of an attempt that installed nothing go, and so does a
/// version another replaced, and everything when the device has no asset
/// sources any more. A size other than the release's is refused.
#[test]
fn apps_fetched_by_their_root_are_shared_while_they_run() {
    use std::sync::Arc;
    use trellis_control::Device;
    use trellis_runtime::device::RuntimeDevice;
    let dir = tempfile::tempdir().unwrap();
    let mut v2 = manifest("counter");
    v2.version = "2.0.0".into();
    let (v1, v2, blinky) = (example("counter"), pack("counter", &v2), example("blinky"));
    for (name, bytes) in [("counter-1", &v1), ("counter-2", &v2), ("blinky", &blinky)] {
        std::fs::write(dir.path().join(format!("{name}.tpk")), bytes).unwrap();
    }
    let origin = Origin::from_dir(dir.path(), OriginConfig::default()).unwrap();
    let root = |bytes: &[u8]| trellis_assets::Index::of(bytes).id();
    let (r1, r2, rb) = (root(&v1), root(&v2), root(&blinky));
    let _server = Server::start(origin, "127.0.0.1:0".parse().unwrap()).unwrap();
    let (dev, config) = sharing_device(&_server);
    let shared = dev.runtime.assets_shared_on().unwrap().to_string();
    let support::TestRuntime { runtime, dir: _state, .. } = dev;
    let runtime = Arc::new(runtime);
    let device = RuntimeDevice::new(Arc::clone(&runtime), config.clone());
    let kept = |id: trellis_assets::AssetId| config.state_dir.join("artifacts").join(id.to_string()).exists();
    let peers = trellis_assets::PeerList::new();
    peers.add(&shared);
    // Another device of the site, the first its only source: whether it reads `id` from it.
    let served = |id: trellis_assets::AssetId, bytes: &[u8]| {
        let peer = tempfile::tempdir().unwrap();
        let fetcher = trellis_assets::Fetcher::new(None, peer.path().to_path_buf(), String::new());
        fetcher.with_peers(peers.clone()).read(id, 0, bytes.len() as u64).is_ok_and(|read| read == bytes)
    };
    let by_root =
        |id: trellis_assets::AssetId, size: usize| device.fetch_by_root(&id.to_string(), size as u64).unwrap();

    // A release of two apps: both fetched, then installed one after the other.
    let too_long = by_root(r1, v1.len() + 1).unwrap_err();
    assert!(too_long.contains(&format!("asset:{r1} is {} bytes, the release names", v1.len())), "{too_long}");
    let (counter, blinky_fetched) = (by_root(r1, v1.len()).unwrap(), by_root(rb, blinky.len()).unwrap());
    assert_eq!((&counter.bytes, &blinky_fetched.bytes), (&v1, &blinky));
    let blocks = |bytes: &[u8]| (bytes.len() as u64).div_ceil(64 * 1024);
    assert_eq!((counter.fetched, counter.from_peers), (blocks(&v1), 0), "every block from the origin");
    assert_eq!(counter.sources(), format!("0 of {} blocks from LAN peers", blocks(&v1)));
    let again = by_root(r1, v1.len()).unwrap();
    assert_eq!((again.bytes.len(), again.sources().as_str()), (v1.len(), "on the device already"));
    let (counter, blinky_fetched) = (counter.bytes, blinky_fetched.bytes);
    assert!(!served(r1, &v1), "offered before it runs");
    device.install_app("counter", &counter).unwrap();
    assert!(kept(rb), "the release's other app, fetched and not installed yet, stays");
    assert!(!served(rb, &blinky), "and is not offered");
    device.install_app("blinky", &blinky_fetched).unwrap();
    device.fetches_done();
    assert!(served(r1, &v1) && served(rb, &blinky), "both served from the device while they run");

    // Fetched, then refused (the file is counter's, installed as another app): gone once the attempt ends.
    let fetched = by_root(r2, v2.len()).unwrap().bytes;
    assert!(device.install_app("other", &fetched).is_err());
    device.fetches_done();
    assert!(!kept(r2), "a refused app's pieces are removed");
    assert!(kept(r1) && kept(rb), "the running apps' stay");
    // Fetched, and the attempt ends before installing it: gone.
    by_root(r2, v2.len()).unwrap();
    device.fetches_done();
    assert!(!kept(r2), "an attempt that installed nothing keeps nothing");
    // Fetched and running: the version it replaced goes, and is no longer served.
    device.install_app("counter", &by_root(r2, v2.len()).unwrap().bytes).unwrap();
    device.fetches_done();
    assert!(kept(r2) && !kept(r1) && kept(rb));
    assert!(!served(r1, &v1), "the replaced version is no longer served");
    assert!(served(r2, &v2));

    // A device of the same site whose peer is the first: every block from it, and it says so.
    let (neighbour, _its_state) = device_with_peer(&_server, &shared);
    let got = neighbour.fetch_by_root(&r2.to_string(), v2.len() as u64).unwrap().unwrap();
    assert_eq!(got.bytes, v2);
    assert_eq!((got.fetched, got.from_peers), (blocks(&v2), blocks(&v2)), "{}", got.sources());

    // The same device without asset sources keeps nothing.
    let mut plain = config.clone();
    plain.assets = None;
    let device = RuntimeDevice::new(runtime, plain);
    assert!(device.fetch_by_root(&r2.to_string(), v2.len() as u64).is_none());
    assert!(!config.state_dir.join("artifacts").exists(), "what was kept is removed");
}

/// What a device keeps of its apps' pieces follows the apps directory, not
/// only its own installs: a version fetched by its root and then replaced
/// by a file copied in by hand goes and is no longer served, and an app's
/// pieces go when its file is removed from the directory, or replaced by a
/// file that is refused or (the app stopped on request) not run; the others
/// stay.
#[test]
fn pieces_follow_apps_replaced_or_removed_in_the_apps_directory() {
    use std::sync::Arc;
    use trellis_control::Device;
    let dir = tempfile::tempdir().unwrap();
    let mut v2 = manifest("counter");
    v2.version = "2.0.0".into();
    let (v1, v2, blinky) = (example("counter"), pack("counter", &v2), example("blinky"));
    std::fs::write(dir.path().join("counter-2.tpk"), &v2).unwrap();
    std::fs::write(dir.path().join("blinky.tpk"), &blinky).unwrap();
    let origin = Origin::from_dir(dir.path(), OriginConfig::default()).unwrap();
    let (r2, rb) = (trellis_assets::Index::of(&v2).id(), trellis_assets::Index::of(&blinky).id());
    let server = Server::start(origin, "127.0.0.1:0".parse().unwrap()).unwrap();
    let (dev, config) = sharing_device(&server);
    let shared = dev.runtime.assets_shared_on().unwrap().to_string();
    let support::TestRuntime { runtime, dir: _state, .. } = dev;
    let device = trellis_runtime::device::RuntimeDevice::new(Arc::new(runtime), config.clone());
    let kept = |id: trellis_assets::AssetId| config.state_dir.join("artifacts").join(id.to_string()).exists();
    let served = |id: trellis_assets::AssetId, bytes: &[u8]| {
        let (peers, peer) = (trellis_assets::PeerList::new(), tempfile::tempdir().unwrap());
        peers.add(&shared);
        let fetcher = trellis_assets::Fetcher::new(None, peer.path().to_path_buf(), String::new()).with_peers(peers);
        fetcher.read(id, 0, bytes.len() as u64).is_ok_and(|read| read == bytes)
    };
    // The pass runs beside the runtime's swap: wait for it, bounded.
    let gone = |id: trellis_assets::AssetId, what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while kept(id) {
            assert!(std::time::Instant::now() < deadline, "{what}: its pieces are still kept");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    for (name, id, bytes) in [("counter", r2, &v2), ("blinky", rb, &blinky)] {
        let fetched = device.fetch_by_root(&id.to_string(), bytes.len() as u64).unwrap().unwrap();
        device.install_app(name, &fetched.bytes).unwrap();
    }
    device.fetches_done();
    assert!(served(r2, &v2) && served(rb, &blinky), "both served while they run");

    // Counter 1.0.0 copied over the fetched 2.0.0 by hand: the runtime swaps, the pieces of 2.0.0 go.
    support::install(&config.apps_dir, "counter", &v1);
    gone(r2, "counter 2.0.0, replaced in the apps directory");
    assert!(!served(r2, &v2), "the replaced version is no longer served");
    assert!(kept(rb) && served(rb, &blinky), "blinky's stay");

    // Blinky's file removed from the apps directory: its pieces go.
    std::fs::remove_file(trellis_layout::AppsDir::new(&config.apps_dir).path("blinky")).unwrap();
    gone(rb, "blinky, removed from the apps directory");
    assert!(!served(rb, &blinky));

    // Counter 2.0.0 fetched and installed again, then a broken file copied over it: refused, 2.0.0
    // runs on, but the app's file is no longer that version, so its pieces go.
    let fetched = device.fetch_by_root(&r2.to_string(), v2.len() as u64).unwrap().unwrap();
    device.install_app("counter", &fetched.bytes).unwrap();
    device.fetches_done();
    assert!(served(r2, &v2));
    support::install(&config.apps_dir, "counter", &v2[..v2.len() / 2]);
    gone(r2, "counter 2.0.0, its file replaced by a broken one");

    // The same for an app stopped on request: a file copied in is put in place, not run, and counts.
    let fetched = device.fetch_by_root(&rb.to_string(), blinky.len() as u64).unwrap().unwrap();
    device.install_app("blinky", &fetched.bytes).unwrap();
    device.fetches_done();
    device.stop_app("blinky").unwrap();
    assert!(served(rb, &blinky), "a stopped app's file is still that very file");
    let mut other = manifest("blinky");
    other.version = "9.0.0".into();
    support::install(&config.apps_dir, "blinky", &pack("blinky", &other));
    gone(rb, "blinky, stopped, its file replaced");
}
