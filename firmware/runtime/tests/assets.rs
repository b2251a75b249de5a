//! Assets on demand, through the real runtime: an app reads an asset its
//! manifest names from an origin on loopback, block by block, verified.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod support;

use std::time::Duration;

use support::{boot, device, device_on_fake_clock_with, manifest, pack};
use trellis_assets::server::{Origin, OriginConfig, Server};
use trellis_runtime::config::AssetsConfig;

const SECS: Duration = Duration::from_secs(30);

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn weights(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31) ^ (i >> 9)) as u8).collect()
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
        c.assets = Some(AssetsConfig { origin: origin_addr });
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
    let dir = tempfile::tempdir().unwrap();
    let bytes = weights(700_000);
    std::fs::write(dir.path().join("weights.bin"), &bytes).unwrap();
    let origin = Origin::from_dir(dir.path(), OriginConfig::default()).unwrap();
    let id = origin.assets()[0].1.to_string();
    let server = Server::start(origin, "127.0.0.1:0".parse().unwrap()).unwrap();
    let origin_addr = server.addr().to_string();
    let dev = device(&[("reader", reader(&id))], |c| c.assets = Some(AssetsConfig { origin: origin_addr }));
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
