//! Full firmware updates streamed over HTTP in the twin: RAUC (built with
//! streaming, scripts/rauc-build.sh) reads the bundle from an origin on the
//! host with range requests through the kernel's network block device, so
//! nothing is stored on `/data`; its adaptive mode (`block-hash-index`) takes
//! every 4 KiB block the slots already hold from them and fetches only the
//! rest; over HTTPS the device and the origin authenticate each other (mutual
//! TLS: the device presents its certificate, trusts only the image's update
//! origin CA); and an install cut by the network, or by a power cut, is
//! started again by the runtime, fetching only what it had not written yet.
//! A bundle named by its piece root streams through the runtime from the
//! site's peer and the asset origin, every block verified on the way. A boot
//! slot already holding a bundle's boot files is skipped, and one an install
//! was cut while rewriting is never taken for the image it held before.
//! Needs `make bundle`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trellis_assets::server::{Origin as AssetOrigin, OriginConfig, Server};
use trellis_assets::{AssetId, BlockStore, Index};

use trellis_twin::ntp::NtpServer;
use trellis_twin::origin::{Origin, server_tls, test_ca};
use trellis_twin::{
    BOOT_TIMEOUT, EXAMPLES, Error, Guest, Outcome, SITE_ORIGIN_PORT, SITE_PEER_PORT, Twin, size_in_bundle,
    variant_bundle,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The 4 KiB chunks of the root filesystem in `bundle` that are neither all
/// zero nor anywhere in `old`: what RAUC's adaptive mode cannot take from a
/// slot holding `old`.
fn chunks_not_in(bundle: &Path, old: &Path) -> usize {
    let dir = tempfile::tempdir().expect("a directory");
    let o = Command::new("unsquashfs")
        .args(["-q", "-no-progress", "-d"])
        .arg(dir.path().join("b"))
        .arg(bundle)
        .arg("rootfs.squashfs")
        .output()
        .expect("unsquashfs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let new = std::fs::read(dir.path().join("b/rootfs.squashfs")).expect("the bundle's rootfs");
    let old = std::fs::read(old).expect("the image's rootfs");
    let have: std::collections::HashSet<&[u8]> = old.chunks_exact(4096).collect();
    new.chunks(4096).filter(|c| c.iter().any(|b| *b != 0) && !have.contains(c)).count()
}

/// RAUC's count of chunks it read from the bundle in the last install, from
/// its log on the console (`access stats for source_image: count=N`).
fn chunks_fetched(device: &mut Guest) -> Result<usize, Error> {
    let line = device.wait_for("access stats for source_image: count=", Duration::from_secs(900))?;
    Ok(line
        .text
        .split("count=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {:?}", line.text)))
}

/// Install `url` from the console and follow it to the trial boot's commit.
/// Returns the new boot and the chunks RAUC fetched.
fn install_and_commit(twin: &mut Twin, mut device: Guest, url: &str, version: &str) -> Result<(Guest, usize), Error> {
    device.type_line(&format!("trellis device update {url}"))?;
    // RAUC's HTTP side runs as its sandbox user, `rauc-fetch`.
    device.wait_for("running as UID 990, GID 990", Duration::from_secs(300))?;
    let fetched = chunks_fetched(&mut device)?;
    device.wait_for(&format!("installed {version} into slot"), Duration::from_secs(900))?;
    let device = twin.trial_committed(device, Duration::from_secs(120), version)?;
    Ok((device, fetched))
}

/// Nothing of a bundle was stored on the data partition.
fn nothing_stored(device: &mut Guest) -> Result<(), Error> {
    let found = device.sh("find /data -name '*.raucb*' | wc -l")?;
    assert_eq!(found.trim(), "0", "a bundle was stored on /data");
    Ok(())
}

/// Until the device's clock is within 5 s of the host's (chronyd steps it).
fn wait_clock(device: &mut Guest) -> Result<(), Error> {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let guest: i64 = device.sh("date +%s")?.trim().parse().expect("date +%s");
        let host = i64::try_from(std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_secs())).unwrap_or(0);
        if (guest - host).abs() <= 5 {
            return Ok(());
        }
        assert!(Instant::now() < deadline, "the device's clock never came from NTP: {guest}, the host's {host}");
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The site the twin's `[assets]` names, on the host: the asset origin
/// serving the files of `dir` (one bundle), and a peer holding every other
/// block of it, verified (in a store under `peer`).
/// Both servers and the bundle's piece root.
fn site(dir: &Path, peer: &Path) -> (Server, Server, AssetId) {
    let origin =
        AssetOrigin::from_dir(dir, OriginConfig { push: 16, ..OriginConfig::default() }).expect("the asset origin");
    let (name, id) = origin.assets().pop().expect("the bundle");
    let bytes = std::fs::read(dir.join(name)).expect("the bundle");
    let index = Index::of(&bytes);
    let mut store = BlockStore::open(peer, &id, &index).expect("the peer's store");
    for n in (0..index.count()).step_by(2) {
        let (start, len) = index.span(n).expect("a block");
        let start = usize::try_from(start).expect("an offset");
        assert!(store.put(n, &bytes[start..start + len]).expect("a block stored"), "block {n} is the bundle's");
    }
    let peer = AssetOrigin::sharing(&[Arc::new(Mutex::new(store))]);
    let loopback = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let origin = Server::start(origin, loopback(SITE_ORIGIN_PORT)).expect("the site's origin port");
    let peer = Server::start(peer, loopback(SITE_PEER_PORT)).expect("the site's peer port");
    (origin, peer, id)
}

/// Bytes an asset server sent.
fn sent(server: &Server) -> u64 {
    server.origin().stats.bytes.load(Ordering::Relaxed)
}

/// `trellis device update URL` on the console, to its end: what it printed.
fn refused_install(device: &mut Guest, url: &str) -> Result<String, Error> {
    device.sh_timeout(&format!("trellis device update {url} 2>&1; echo exit=$?"), Duration::from_secs(300))
}

#[test]
fn streamed_installs_fetch_only_what_changed_and_resume_after_cuts() -> Outcome {
    let mut twin = Twin::new("stream")?;
    let dir = twin.share().join("origin");
    std::fs::create_dir_all(&dir).expect("origin directory");
    let small = variant_bundle("small", &dir.join("small.raucb"), "2.1.0-small");
    let rebuilt = variant_bundle("rebuilt", &dir.join("rebuilt.raucb"), "2.2.0-rebuilt");
    let reblocked = variant_bundle("reblocked", &dir.join("reblocked.raucb"), "2.3.0-reblocked");
    let boot_tar = size_in_bundle(&dir.join("small.raucb"), "boot.tar");
    let changed = chunks_not_in(&dir.join("small.raucb"), &root().join("build/twin/rootfs.squashfs"));
    // The origins: over HTTPS with the image's update origin CA, taking the
    // development device CA's clients (the fleet's own origin), and over HTTP.
    let keys = root().join("build/keys/api");
    let (origin_ca, device_ca) = ((keys.join("origin-ca.pem"), keys.join("origin-ca.key")), keys.join("device-ca.pem"));
    let tls_dir = |name: &str| {
        let d = twin.share().join(name);
        std::fs::create_dir_all(&d).expect("a TLS directory");
        d
    };
    let tls = server_tls(&tls_dir("tls"), (&origin_ca.0, &origin_ca.1), &device_ca).expect("the origin's TLS");
    let https = Origin::start_tls(&dir, tls).expect("the HTTPS origin");
    let origin = Origin::start(&dir).expect("the HTTP origin");
    // Two that must be refused: one whose certificate the device does not
    // trust (anyone on the path), one that does not take the device's.
    // A CA of the test's own, which neither the device nor the origin trusts.
    let stranger = test_ca(&tls_dir("stranger"), "stranger-ca", "stranger CA").expect("a CA");
    let impostor = server_tls(&tls_dir("impostor"), (&stranger.0, &stranger.1), &device_ca).expect("impostor TLS");
    let impostor = Origin::start_tls(&dir, impostor).expect("the impostor");
    let picky = server_tls(&tls_dir("picky"), (&origin_ca.0, &origin_ca.1), &stranger.0).expect("picky TLS");
    let picky = Origin::start_tls(&dir, picky).expect("the origin taking other devices");

    // Certificates are checked against the device's clock: it comes from NTP
    // (until then it reads the image's build time, before these were made).
    let _ntp = NtpServer::start(0)?;
    let mut device = twin.boot()?;
    device.wait_apps_running(&EXAMPLES)?;
    device.wait_console()?;
    wait_clock(&mut device)?;

    // 0. Mutual TLS, refused both ways: the install fails at once, naming the
    // certificate, is not started again as a network failure would be, and
    // not a byte of the bundle is served.
    for (who, server) in [("the device refuses the origin", &impostor), ("the origin refuses the device", &picky)] {
        let started = Instant::now();
        let said = refused_install(&mut device, &server.url("small.raucb"))?;
        eprintln!("{who}: {said:?} in {:.0} s", started.elapsed().as_secs_f64());
        assert!(said.contains("exit=1") || said.contains("exit=2"), "{who}: {said}");
        // One attempt: RAUC's first request and its five retries, 1 s apart;
        // the runtime does not start it again.
        let refused = server.refused();
        let url = server.url("");
        let lines = device.lines();
        let retried: Vec<&str> =
            lines.iter().map(|l| l.text.as_str()).filter(|t| t.contains(&url) && t.contains("again in")).collect();
        assert!(
            (1..=6).contains(&refused) && server.served() == 0,
            "{who}: {refused} refused, {} served; the runtime's retries: {retried:#?}",
            server.served()
        );
        assert!(started.elapsed() < Duration::from_secs(40), "{who}: retried ({:?})", started.elapsed());
    }
    let s = device.sh("trellis device status; ls /run/trellis")?;
    assert!(s.contains("last update: failed"), "{s}");
    assert!(!s.contains("stream.key"), "the key's copy outlived the install: {s}");

    // 1. A small change (one line of one file), over HTTPS with the device's
    // certificate: RAUC finds all but a few of the root filesystem's blocks
    // in slot A and fetches the rest. The boot slot is skipped, boot.tar not
    // fetched: at first boot RAUC's status was made to name this build's
    // boot.tar for both boot slots, which hold its files as the image made
    // them (rauc-seed.sh).
    let seeded = device.sh("grep '^\\[slot\\.' /data/trellis/rauc.status")?;
    assert!(seeded.contains("[slot.boot.0]") && seeded.contains("[slot.boot.1]"), "seeded: {seeded}");
    let started = Instant::now();
    let (mut device, chunks) = install_and_commit(&mut twin, device, &https.url("small.raucb"), "2.1.0-small")?;
    let (fetched, distinct) = (https.served(), https.distinct("small.raucb"));
    eprintln!(
        "small change: {fetched} bytes fetched of a {small}-byte bundle ({:.1} %; {distinct} distinct, {:.1} %; \
         boot.tar {boot_tar} unpacked), root filesystem: {chunks} chunks of 4 KiB read from the bundle, {changed} \
         changed; {:.0} s to committed",
        100.0 * fetched as f64 / small as f64,
        100.0 * distinct as f64 / small as f64,
        started.elapsed().as_secs_f64()
    );
    assert!(chunks > 0 && chunks <= changed, "RAUC read {chunks} chunks of the root filesystem; {changed} changed");
    assert!(fetched < small / 20, "the small change fetched {fetched} bytes of a {small}-byte bundle (5 % or more)");
    nothing_stored(&mut device)?;

    // 1b. The same change named by its piece root (`asset:ID`), as a fleet
    // release names it: RAUC streams it from the runtime's loopback server,
    // which takes each block from the site's peer (on the host, holding
    // every other block) or else the asset origin (on the host too), and
    // checks it against the index whose hash is the id before RAUC reads a
    // byte of it. Into slot A this time, from slot B.
    let (pieces, started) = (twin.share().join("pieces"), Instant::now());
    std::fs::create_dir_all(&pieces).expect("the asset origin's directory");
    let small2 = variant_bundle("small", &pieces.join("small2.raucb"), "2.1.1-small");
    let (asset_origin, peer, id) = site(&pieces, &twin.share().join("peer"));
    let (mut device, chunks) = install_and_commit(&mut twin, device, &format!("asset:{id}"), "2.1.1-small")?;
    let (from_origin, from_peer) = (sent(&asset_origin), sent(&peer));
    eprintln!(
        "small change by its piece root: {from_peer} bytes from the peer, {from_origin} from the origin of a \
         {small2}-byte bundle ({:.1} %), root filesystem: {chunks} chunks of 4 KiB read; {:.0} s to committed",
        100.0 * (from_origin + from_peer) as f64 / small2 as f64,
        started.elapsed().as_secs_f64()
    );
    assert!(
        from_peer > 0 && from_origin > 0,
        "blocks came from both: {from_peer} from the peer, {from_origin} from the origin"
    );
    assert!(
        from_origin + from_peer < small2 / 4,
        "the small change by its root fetched {} bytes",
        from_origin + from_peer
    );
    // What RAUC read stays on the device, the written bundle's blocks only,
    // and is served to the device's own peers (`[assets] share`): a device
    // of the site with no origin reads the bundle's first and last blocks
    // (RAUC read both: the signature and the squashfs superblock) from the
    // twin, each checked against the root.
    let kept = device.sh("ls /data/trellis/bundles")?;
    assert_eq!(kept.trim(), id.to_string(), "the installed bundle's blocks, and nothing else, are kept");
    drop((asset_origin, peer));
    let twin_peer = trellis_assets::PeerList::new();
    twin_peer.add(&format!("127.0.0.1:{}", twin.ports().share));
    let next =
        trellis_assets::Fetcher::new(None, twin.share().join("next-device"), String::new()).with_peers(twin_peer);
    let bytes = std::fs::read(pieces.join("small2.raucb")).expect("the bundle");
    let len = bytes.len() as u64;
    assert_eq!(next.read(id, 0, 4096).expect("the first block from the twin"), bytes[..4096]);
    assert_eq!(next.read(id, len - 8, 8).expect("the last block from the twin"), bytes[bytes.len() - 8..]);
    assert_eq!(next.stats.from_peers.load(Ordering::Relaxed), 2, "both from the twin");
    nothing_stored(&mut device)?;

    // 1c. One line changed again (against what both slots hold now), into
    // slot B, whose boot slot still holds this build's boot files: RAUC
    // skips it (install-same=false), so what crosses the network is the
    // root filesystem's changed blocks and RAUC's reads of the manifest,
    // signature and block index.
    let tweaked = variant_bundle("tweaked", &dir.join("tweaked.raucb"), "2.1.2-tweaked");
    let (base, started) = (https.served(), Instant::now());
    let (mut device, chunks) = install_and_commit(&mut twin, device, &https.url("tweaked.raucb"), "2.1.2-tweaked")?;
    let fetched = https.served() - base;
    eprintln!(
        "one line changed, boot slot unchanged: {fetched} bytes fetched of a {tweaked}-byte bundle ({:.2} %), \
         root filesystem: {chunks} chunks of 4 KiB read; {:.0} s to committed",
        100.0 * fetched as f64 / tweaked as f64,
        started.elapsed().as_secs_f64()
    );
    assert!(chunks > 0, "the changed line was read from the bundle");
    assert!(
        fetched < tweaked / 20,
        "a one-line change fetched {fetched} bytes of a {tweaked}-byte bundle (5 % or more)"
    );
    nothing_stored(&mut device)?;
    let left = device.sh("ls /data/trellis/bundles | wc -l")?;
    assert_eq!(left.trim(), "0", "the blocks of the bundle written before outlived the next install");

    // 2. A root filesystem with no block in common: fetched whole, and cut at
    // 10 %, 50 % and 90 % of the bundle (boot.tar, the same as slot A's, is
    // skipped). The origin stays down until the install has failed (after
    // RAUC's own retries, 5 × 1 s) and 1 s more, so the runtime starts it
    // again once it is back; the root filesystem's blocks already written stay.
    assert_eq!(https.refused(), 0, "the device's certificate was taken");
    let base = origin.served();
    device.type_line(&format!("trellis device update {}", origin.url("rebuilt.raucb")))?;
    for percent in [10, 50, 90] {
        origin.cut_at(base + rebuilt * percent / 100);
        let deadline = Instant::now() + Duration::from_secs(900);
        while !origin.is_down() {
            assert!(Instant::now() < deadline, "the install never reached {percent} %");
            std::thread::sleep(Duration::from_millis(200));
        }
        device.wait_for("failed on the network", Duration::from_secs(300))?;
        std::thread::sleep(Duration::from_secs(1));
        origin.restore();
        eprintln!("cut at {percent} %: {} bytes fetched so far", origin.served() - base);
    }
    device.wait_for("installed 2.2.0-rebuilt into slot", Duration::from_secs(900))?;
    let fetched = origin.served() - base;
    eprintln!(
        "rebuilt, cut three times: {fetched} bytes fetched for a {rebuilt}-byte bundle ({:.2}×)",
        fetched as f64 / rebuilt as f64
    );
    // Started over each time it would be about 1.8 bundles (0.1 + 0.4 + 0.4
    // before the cuts, then a whole one less boot.tar, which is skipped). Resumed, it is one, plus what each cut
    // attempt read and had not written yet (1.45 when each attempt fetched
    // boot.tar again).
    assert!(fetched < rebuilt * 12 / 10, "{fetched} bytes fetched for a {rebuilt}-byte bundle cut three times");
    let mut device = twin.trial_committed(device, Duration::from_secs(120), "2.2.0-rebuilt")?;
    nothing_stored(&mut device)?;

    // 3. A power cut at 60 % of a bundle that shares no block with either
    // slot, over HTTPS: the old slot keeps booting, and the runtime there
    // starts the install again by itself (should its clock not be set yet,
    // a certificate not yet valid is retried like a cut); RAUC takes the blocks that reached the target
    // slot before the cut. The kernel writes them back at once here, as a
    // device's flash would keep what was written.
    device.sh("echo 65536 > /proc/sys/vm/dirty_background_bytes")?;
    let base = https.served();
    device.type_line(&format!("trellis device update {}", https.url("reblocked.raucb")))?;
    let deadline = Instant::now() + Duration::from_secs(900);
    while https.served() < base + reblocked * 6 / 10 {
        assert!(Instant::now() < deadline, "the install never reached 60 %");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut device = twin.power_cycle(device)?;
    device.wait_for("was interrupted (reboot or power cut); starting it again", BOOT_TIMEOUT)?;
    let mut device = twin.restarted(device, Duration::from_secs(900))?;
    device.wait_apps_running(&EXAMPLES)?;
    device.seen("phase=Committed", BOOT_TIMEOUT)?;
    device.wait_console()?;
    let fetched = https.served() - base;
    eprintln!(
        "reblocked, power cut at 60 %: {fetched} bytes fetched for a {reblocked}-byte bundle ({:.2}×)",
        fetched as f64 / reblocked as f64
    );
    // Started over it would be about 1.5 bundles; resumed, one, plus what had not
    // reached the slot before the cut.
    assert!(fetched < reblocked * 12 / 10, "{fetched} bytes fetched for a {reblocked}-byte bundle cut by a power cut");
    let s = device.sh("trellis device status")?;
    assert!(s.contains("last update: committed: 2.3.0-reblocked"), "{s}");
    nothing_stored(&mut device)?;

    // 4. An install cut while it rewrites a boot slot, then the slot's former
    // image installed again: RAUC must not take the half-written slot for
    // that image and skip it (install-same=false). Its status stops naming
    // the image when the rewrite begins (pending, no checksum: what a power
    // cut leaves) and says the slot failed when the install does; RAUC 1.8
    // kept the old checksum, and the trial boot would have found the slot's
    // files half unpacked. A bundle whose boot files differ (one file added)
    // is cut at 5 %, in its boot.tar, the origin down until the runtime has
    // given the install up.
    let bootfile = variant_bundle("bootfile", &dir.join("bootfile.raucb"), "2.4.0-bootfile");
    let base = origin.served();
    origin.cut_at(base + bootfile / 20);
    let said = refused_install(&mut device, &origin.url("bootfile.raucb"))?;
    let given_up = said.contains("exit=1") || said.contains("exit=2");
    assert!(given_up && origin.is_down(), "the install was cut and given up: {said}");
    let status = device.sh("sed -n '/^\\[slot.boot.0\\]/,/^\\[/p' /data/trellis/rauc.status")?;
    assert!(
        status.contains("status=failed") || (status.contains("status=pending") && !status.contains("sha256=")),
        "boot.0, cut while rewritten, is named as holding an image: {status}"
    );
    origin.restore();
    // The bundle slot B runs (its root filesystem comes from B, nothing of
    // it is fetched), into A: the boot slot's former boot.tar.
    let (mut device, _) = install_and_commit(&mut twin, device, &origin.url("reblocked.raucb"), "2.3.0-reblocked")?;
    nothing_stored(&mut device)?;

    // 5. The status made at first boot names a boot slot only when it holds
    // this image's boot files. Both do here: A as RAUC wrote it from this
    // build's boot.tar in step 4 (its hook gave it its own cmdline.txt), B as
    // the image made it (skipped since); with RAUC's status gone, both are
    // named. With a file added to boot slot B, boot.0 alone is.
    let seed =
        "rm /data/trellis/rauc.status && /usr/lib/trellis/rauc-seed.sh 2>&1; grep '^\\[slot' /data/trellis/rauc.status";
    let said = device.sh(seed)?;
    assert!(
        said.contains("boot.0 holds this image's boot files: named")
            && said.contains("boot.1 holds this image's boot files: named")
            && said.contains("[slot.boot.0]")
            && said.contains("[slot.boot.1]"),
        "{said}"
    );
    let said = device.sh(&format!(
        "mkdir -p /run/t && mount -t vfat /dev/rootdisk0p3 /run/t && echo x >/run/t/extra.txt && umount /run/t && {seed}"
    ))?;
    assert!(
        said.contains("boot.0 holds this image's boot files: named")
            && said.contains("boot.1 does not hold this image's boot files: not named")
            && said.contains("[slot.boot.0]")
            && !said.contains("[slot.boot.1]"),
        "{said}"
    );
    Ok(())
}
