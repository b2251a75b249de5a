//! A site's LAN in network namespaces this test makes: a bridge, an origin
//! (`trellis asset serve`) behind a 10 Mbit/s uplink (`tc` tbf), and eight
//! devices (`trellis asset fetch --share`) that take a 20 MiB release from
//! each other and from the origin only what no peer holds; devices that find
//! each other by announcement (mDNS) instead of being told; then devices
//! running `trellis asset sync` on signed releases, where an urgent release
//! overtakes a running one; and two runtimes (`trellis-runtime`) of one
//! host name, the second reading an app's asset from the first, found by
//! announcement, with the origin gone. Needs root (`ip netns`, `tc`), as
//! `make test` runs it. Everything made is removed when a test ends, failed or not
//! (`support/lan.rs`).

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod support {
    pub mod lan;
}

use std::path::Path;
use std::time::{Duration, Instant};

use support::lan::{DEADLINE, Lan, Node, device, fetched, holds, noise, origin, release_of, store};
use trellis_appfmt::{generate_key, write_key_pair};
use trellis_assets::{BlockStore, Index};
use trellis_fleet::{Release, Urgency};

/// The release: 20 MiB.
const SIZE: usize = 20 << 20;

fn release(dir: &Path) -> (Vec<u8>, String) {
    release_of(dir, SIZE)
}

#[test]
fn on_a_lan_eight_devices_share_a_release_and_ban_a_peer_that_serves_damaged_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, id) = release(dir.path());
    let blocks = u64::from(Index::of(&bytes).count());
    // Node 9 is hostile: it holds the whole release, then its data is
    // changed on disk behind its back, so every block it serves is damaged.
    let lan = Lan::new("share", 10);
    let _origin = origin(&lan, dir.path());
    {
        let index = Index::of(&bytes);
        let mut s = BlockStore::open(&store(dir.path(), 9), &index.id(), &index).unwrap();
        for n in 0..index.count() {
            let (start, len) = index.span(n).unwrap();
            let start = usize::try_from(start).unwrap();
            s.put_unsynced(n, &bytes[start..start + len]).unwrap();
        }
        s.commit().unwrap();
    }
    let hostile_args: Vec<String> = ["asset", "fetch", &id, "--share", &lan.addr(9), "--linger", "--store"]
        .map(String::from)
        .into_iter()
        .chain([store(dir.path(), 9).display().to_string()])
        .collect();
    let hostile = lan.start(9, &hostile_args);
    assert_eq!(hostile.report("the hostile peer")["resumed"].as_u64(), Some(blocks));
    let data = store(dir.path(), 9).join(&id).join("data");
    let mut raw = std::fs::read(&data).unwrap();
    for byte in raw.iter_mut().step_by(4096) {
        *byte ^= 0xa5;
    }
    std::fs::write(&data, raw).unwrap();

    let origin_before = lan.sent(0);
    let started = Instant::now();
    let devices: Vec<Node> = (1..=8).map(|k| device(&lan, k, &id, dir.path(), &[lan.addr(9)])).collect();
    let reports: Vec<_> = devices.iter().enumerate().map(|(i, d)| d.report(&format!("device {}", i + 1))).collect();
    let took = started.elapsed();
    let origin_sent = lan.sent(0) - origin_before;

    for (i, r) in reports.iter().enumerate() {
        let k = i + 1;
        holds(dir.path(), k, &bytes);
        assert_eq!(fetched(r), blocks, "device {k} fetched each block once: {r}");
        assert!(r["from-peers"].get(lan.addr(9)).is_none(), "nothing from the hostile peer was kept: {r}");
        for banned in r["banned"].as_array().unwrap() {
            assert_eq!(banned["peer"], lan.addr(9), "only the hostile peer is banned: {r}");
        }
    }
    let banned_by = reports.iter().filter(|r| !r["banned"].as_array().unwrap().is_empty()).count();
    assert!(banned_by >= 1, "a device that asked the hostile peer banned it: {reports:?}");
    // Eight copies went out; the origin sent about one (plus HTTP), not eight.
    let size = bytes.len() as u64;
    assert!(origin_sent < 2 * size, "the origin sent {origin_sent} bytes for a release of {size}");
    let from_origin: u64 = reports.iter().map(|r| r["from-origin"].as_u64().unwrap()).sum();
    eprintln!(
        "8 devices: {:.1} s (the origin alone at 10 Mbit/s: {:.1} s); origin sent {:.2} × F, {from_origin} of {} blocks fetched from it; banned by {banned_by}",
        took.as_secs_f64(),
        size as f64 * 8.0 / 10e6,
        origin_sent as f64 / size as f64,
        8 * blocks,
    );
}

#[test]
fn on_a_lan_devices_finish_when_a_fifth_of_their_peers_die_and_a_restarted_one_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, id) = release(dir.path());
    let blocks = u64::from(Index::of(&bytes).count());
    let lan = Lan::new("churn", 9);
    let _origin = origin(&lan, dir.path());
    let mut devices: Vec<Node> = (1..=8).map(|k| device(&lan, k, &id, dir.path(), &[])).collect();

    // When device 1 holds a quarter of the release, two of the eight die and
    // device 1 restarts.
    let have = store(dir.path(), 1).join(&id).join("have");
    let end = Instant::now() + DEADLINE;
    while std::fs::read(&have).map_or(0, |b| b.iter().map(|x| u64::from(x.count_ones())).sum::<u64>()) < blocks / 4 {
        assert!(Instant::now() < end, "device 1 never held a quarter of the release");
        std::thread::sleep(Duration::from_millis(100));
    }
    devices[6].kill();
    devices[7].kill();
    devices[0].kill();
    let held_before = {
        let index = Index::of(&bytes);
        BlockStore::open(&store(dir.path(), 1), &index.id(), &index).unwrap().held()
    };
    assert!(held_before > 0, "device 1 held some blocks when it stopped");
    devices[0] = device(&lan, 1, &id, dir.path(), &[]);

    let restarted = devices[0].report("device 1, restarted");
    let resumed = restarted["resumed"].as_u64().unwrap();
    assert_eq!(resumed, u64::from(held_before), "{restarted}");
    assert_eq!(resumed + fetched(&restarted), blocks, "nothing verified was fetched again: {restarted}");
    holds(dir.path(), 1, &bytes);
    for k in 2..=6 {
        let r = devices[k - 1].report(&format!("device {k}"));
        assert_eq!(fetched(&r), blocks, "device {k}: {r}");
        holds(dir.path(), k, &bytes);
    }
}

/// Write release manifest `name` into `dir` as a writer should: whole, then renamed in.
fn drop_release(dir: &Path, name: &str, release: &Release) {
    std::fs::create_dir_all(dir).unwrap();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, release.to_json()).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{name}.json"))).unwrap();
}

#[test]
fn on_a_lan_an_urgent_release_overtakes_a_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A normal firmware release of 20 MiB, and a critical app fix of 2 MiB.
    let (firmware, _) = release(d);
    let fix = noise(2 << 20, 0x2545_F491_4F6C_DD1D);
    std::fs::write(d.join("origin/fix.wasm"), &fix).unwrap();
    std::fs::create_dir_all(d.join("keys")).unwrap();
    let key = generate_key();
    let (_, public) = write_key_pair(&key, &d.join("keys"), "release").unwrap();
    let normal = Release::new("os-2.0.0", "qemu-aarch64", "0.1.2").with_firmware("2.0.0", &firmware).signed(&key);
    let mut urgent = Release::new("fix-1.0.1", "qemu-aarch64", "0.1.2").with_app("fix", "1.0.1", &fix);
    urgent.urgency = Urgency::Critical;
    let urgent = urgent.signed(&key);
    let (blocks, fix_blocks) = (u64::from(Index::of(&firmware).count()), u64::from(Index::of(&fix).count()));

    let lan = Lan::new("urgent", 9);
    let _origin = origin(&lan, d);
    let releases = |k: usize| d.join(format!("releases-{k}"));
    // Device 1 also finds a release signed by a key it does not trust: refused, nothing fetched.
    let forged_bytes = noise(1 << 20, 7);
    let forged = Release::new("os-9.9.9", "qemu-aarch64", "0.1.2").with_firmware("9.9.9", &forged_bytes);
    let forged = forged.signed(&generate_key());
    drop_release(&releases(1), "os-9.9.9", &forged);
    let devices: Vec<Node> = (1..=8)
        .map(|k| {
            drop_release(&releases(k), "os-2.0.0", &normal);
            let mut args: Vec<String> =
                ["asset", "sync", "--origin", &lan.addr(0), "--share", &lan.addr(k), "--linger"]
                    .map(String::from)
                    .into();
            for (flag, path) in [("--releases", releases(k)), ("--trust", public.clone()), ("--store", store(d, k))] {
                args.extend([flag.into(), path.display().to_string()]);
            }
            for j in (1..=8).filter(|&j| j != k) {
                args.extend(["--peer".into(), lan.addr(j)]);
            }
            lan.start(k, &args)
        })
        .collect();
    let refused = devices[0].report("device 1's refusal");
    assert!(refused["file"].as_str().unwrap().ends_with("os-9.9.9.json"), "{refused}");
    assert!(refused["refused"].as_str().unwrap().contains("not in the trust list"), "{refused}");

    // When device 1 holds a quarter of the firmware, the urgent release lands on every device.
    let have = store(d, 1).join(normal.pieces("firmware").unwrap().to_string()).join("have");
    let end = Instant::now() + DEADLINE;
    while std::fs::read(&have).map_or(0, |b| b.iter().map(|x| u64::from(x.count_ones())).sum::<u64>()) < blocks / 4 {
        assert!(Instant::now() < end, "device 1 never held a quarter of the firmware");
        std::thread::sleep(Duration::from_millis(100));
    }
    for k in 1..=8 {
        drop_release(&releases(k), "fix-1.0.1", &urgent);
    }
    for (i, device) in devices.iter().enumerate() {
        let k = i + 1;
        let first = device.report(&format!("device {k}'s first release"));
        let second = device.report(&format!("device {k}'s second release"));
        assert_eq!(
            (first["release"].as_str(), first["urgent"].as_bool()),
            (Some("fix-1.0.1"), Some(true)),
            "device {k}: {first}"
        );
        assert_eq!(second["release"], "os-2.0.0", "device {k}: the normal release ends after the urgent one: {second}");
        assert!(first["at-s"].as_f64() < second["at-s"].as_f64(), "device {k}: {first} {second}");
        assert_eq!(fetched(&first), fix_blocks, "device {k}: {first}");
        // The firmware was paused, and went on from its verified blocks: each fetched once.
        assert_eq!(second["paused"], 1, "device {k}: {second}");
        assert_eq!(fetched(&second), blocks, "device {k} fetched each firmware block once: {second}");
        holds(d, k, &firmware);
        let index = Index::of(&fix);
        let s = BlockStore::open(&store(d, k), &index.id(), &index).unwrap();
        assert!(s.read(0, index.size).unwrap() == fix, "device {k} holds the fix's bytes");
    }
    assert!(!store(d, 1).join(Index::of(&forged_bytes).id().to_string()).exists(), "nothing of the forged release");
}

#[test]
fn on_a_lan_devices_find_their_peers_by_announcement() {
    let dir = tempfile::tempdir().unwrap();
    // 8 MiB: what is tested is finding the peers.
    let (bytes, id) = release_of(dir.path(), 8 << 20);
    let blocks = u64::from(Index::of(&bytes).count());
    let lan = Lan::new("mdns", 5);
    let _origin = origin(&lan, dir.path());
    let (origin_before, started) = (lan.sent(0), Instant::now());
    // No device is told of another: each announces its share and watches for theirs (mDNS).
    let devices: Vec<Node> = (1..=4)
        .map(|k| {
            let (name, store) = (format!("trellis-dev{k}"), store(dir.path(), k).display().to_string());
            let args = ["asset", "fetch", &id, "--origin", &lan.addr(0), "--share", &lan.addr(k), "--lan", &name];
            let args: Vec<String> =
                args.iter().chain(&["--linger", "--store", &store]).map(|s| (*s).to_owned()).collect();
            lan.start(k, &args)
        })
        .collect();
    let reports: Vec<_> = devices.iter().enumerate().map(|(i, d)| d.report(&format!("device {}", i + 1))).collect();
    let origin_sent = lan.sent(0) - origin_before;
    for (i, r) in reports.iter().enumerate() {
        let k = i + 1;
        holds(dir.path(), k, &bytes);
        assert_eq!(fetched(r), blocks, "device {k} fetched each block once: {r}");
        let peers = r["from-peers"].as_object().unwrap();
        assert!(!peers.is_empty(), "device {k} found peers on the LAN and took blocks from them: {r}");
        for peer in peers.keys() {
            assert!((1..=4).any(|j| j != k && *peer == lan.addr(j)), "device {k}: {peer} is another device: {r}");
        }
    }
    let size = bytes.len() as u64;
    assert!(origin_sent < 2 * size, "the origin sent {origin_sent} bytes for a release of {size}");
    eprintln!(
        "4 devices finding each other by mDNS: {:.1} s; origin sent {:.2} × F",
        started.elapsed().as_secs_f64(),
        origin_sent as f64 / size as f64
    );
}

/// The runtime (`trellis-runtime`) beside `trellis`, as cargo builds both.
fn runtime_binary() -> std::path::PathBuf {
    let path = Path::new(support::lan::TRELLIS).with_file_name("trellis-runtime");
    assert!(path.exists(), "{}: build it first (cargo build -p trellis-runtime)", path.display());
    path
}

/// The reader fixture reading all of asset `weights` (id `id`, `len` bytes) as it starts.
fn reader_app(id: &str, len: usize) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let code = std::fs::read(root.join("wasm-apps/target/wasm32-wasip2/release/reader.wasm"))
        .expect("the reader fixture: make apps");
    let text = std::fs::read_to_string(root.join("wasm-apps/fixtures/reader/trellis.toml")).unwrap();
    let mut manifest = trellis_appfmt::Manifest::from_toml(&text).unwrap();
    manifest.assets.insert("weights".into(), format!("sha256:{id}"));
    manifest.config.insert("read-at-start".into(), format!("weights 0 {len}"));
    manifest.limits.call_ms = 60_000;
    trellis_appfmt::pack(&code, &manifest).unwrap()
}

/// Runtime `k` of the LAN (`trellis-runtime`, no hardware): asset sources
/// the origin and the peers it finds by mDNS, its blocks shared on its
/// address; its apps and state under `dir`. Every runtime has this
/// machine's host name, as devices of one image may.
fn runtime_node(lan: &Lan, k: usize, dir: &Path) -> Node {
    let home = dir.join(format!("runtime-{k}"));
    std::fs::create_dir_all(home.join("apps")).unwrap();
    let config = format!(
        "apps-dir = {:?}\nstate-dir = {:?}\n\n[assets]\norigin = {:?}\nshare = \"{}:8471\"\nlan = true\n",
        home.join("apps"),
        home.join("state"),
        lan.addr(0),
        lan.ip(k)
    );
    std::fs::write(home.join("runtime.toml"), config).unwrap();
    let args = ["--config", &home.join("runtime.toml").display().to_string(), "--board", "none"].map(String::from);
    lan.start_program(k, &runtime_binary(), &args)
}

/// Apps' assets on a LAN, through the runtime: a device whose app read its
/// weights from the origin serves them; another device of the same host
/// name, finding it by announcement (`[assets] lan = true`, mDNS; never
/// itself) with the origin gone, reads them from it, verified, byte for byte.
#[test]
fn on_a_lan_a_runtime_reads_an_apps_asset_from_a_peer_it_found_by_announcement() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, id) = release_of(dir.path(), 1 << 20);
    let fnv = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    let read = format!("read at start: ok {} {fnv:016x}", bytes.len());
    let app = reader_app(&id, bytes.len());
    let lan = Lan::new("apps", 3);
    let mut origin = origin(&lan, dir.path());

    std::fs::create_dir_all(dir.path().join("runtime-1/apps")).unwrap();
    std::fs::write(dir.path().join("runtime-1/apps/reader.wasm"), &app).unwrap();
    let first = runtime_node(&lan, 1, dir.path());
    first.wait_containing(&read, "runtime 1 reads the weights from the origin");
    origin.kill();

    let sent_before = lan.sent(1);
    let second = runtime_node(&lan, 2, dir.path());
    let found = second.wait_containing("found a peer on the LAN", "runtime 2 finds runtime 1");
    assert!(found.contains(&format!("{}:8471", lan.ip(1))), "{found}");
    let apps = dir.path().join("runtime-2/apps");
    std::fs::write(apps.join("reader.tmp"), &app).unwrap();
    std::fs::rename(apps.join("reader.tmp"), apps.join("reader.wasm")).unwrap();
    second.wait_containing(&read, "runtime 2 reads the weights from runtime 1, the origin gone");
    let served = lan.sent(1) - sent_before;
    assert!(served >= bytes.len() as u64, "runtime 1 sent {served} bytes for weights of {}", bytes.len());
    drop(first);
}
