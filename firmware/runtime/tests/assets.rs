//! Assets on demand, through the real runtime: an app reads an asset its
//! manifest names from an origin on loopback, block by block, verified.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod support;

use std::time::Duration;

use support::{boot, device, manifest, pack};
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
    let mut m = manifest("reader");
    m.assets.insert("weights".into(), format!("sha256:{id}"));
    pack("reader", &m)
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
