//! The storage quota (`limits.storage-kib`): one quota over everything an app
//! writes to the data partition. Reaching it is an error for that app's
//! write, and nothing else: the app runs on, what it stored is intact, other
//! apps keep writing, and the bytes on disk stay within the quota.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod support;

use std::time::Duration;

use support::{boot, device, example, manifest, pack};

const SECS: Duration = Duration::from_secs(30);

fn fill(kib: u32) -> Vec<u8> {
    let mut m = manifest("fill");
    m.limits.storage_kib = kib;
    pack("fill", &m)
}

#[test]
fn a_full_quota_fails_the_write_and_nothing_else() {
    let dev = device(&[("fill", fill(4)), ("counter", example("counter"))], |_| {});
    dev.wait_started("fill", "1.0.0");
    dev.wait_started("counter", "1.0.0");
    let results = dev.runtime.subscribe("fill/result");
    let counts = dev.runtime.subscribe("counter/value");
    let set = |key: &str, bytes: usize| {
        dev.runtime.publish("fill/set", format!("{key} {bytes}").as_bytes());
        String::from_utf8(results.recv_timeout(SECS).expect("no answer from fill").payload).unwrap()
    };

    // 4 KiB: 40 bytes of header and checksum, 8 + key + value per entry.
    assert_eq!(set("a", 2000), "ok");
    assert_eq!(set("b", 2000), "ok");
    let refused = set("c", 100);
    assert!(
        refused.starts_with("err Error::QuotaExceeded(")
            && refused.contains("limits.storage-kib")
            && refused.contains("4096 allowed"),
        "{refused}"
    );
    // Replacing a value within the quota still works; growing past it does not.
    assert_eq!(set("b", 1900), "ok");
    assert!(set("b", 2100).starts_with("err Error::QuotaExceeded("));

    // The file on disk is within the quota and holds what was accepted.
    let file = dev.state().join("kv/fill.db");
    let on_disk = std::fs::metadata(&file).unwrap().len();
    assert_eq!(on_disk, 40 + (8 + 1 + 2000) + (8 + 1 + 1900), "{}", file.display());

    // The app runs on, and other apps keep writing their own stores.
    assert_eq!(dev.running_version("fill").as_deref(), Some("1.0.0"));
    let before: u64 = String::from_utf8(counts.recv_timeout(SECS).unwrap().payload).unwrap().parse().unwrap();
    let after: u64 = String::from_utf8(counts.recv_timeout(SECS).unwrap().payload).unwrap().parse().unwrap();
    assert!(after > before, "the counter stopped counting");
    // Freeing space makes room again.
    dev.runtime.publish("fill/delete", b"a");
    assert_eq!(String::from_utf8(results.recv_timeout(SECS).unwrap().payload).unwrap(), "ok");
    assert_eq!(set("c", 100), "ok");

    // After a restart the store holds exactly what was accepted.
    let support::TestRuntime { dir, runtime, .. } = dev;
    runtime.shutdown();
    let dev = boot(dir, |_| {});
    dev.wait_started("fill", "1.0.0");
    let results = dev.runtime.subscribe("fill/result");
    dev.runtime.publish("fill/set", b"d 2100");
    let answer = String::from_utf8(results.recv_timeout(SECS).unwrap().payload).unwrap();
    assert!(answer.starts_with("err Error::QuotaExceeded("), "b (1900) and c (100) are still there: {answer}");
}

#[test]
fn a_smaller_quota_in_a_new_version_refuses_growth_but_keeps_the_data() {
    let dev = device(&[("fill", fill(8))], |_| {});
    dev.wait_started("fill", "1.0.0");
    let results = dev.runtime.subscribe("fill/result");
    let set = |key: &str, bytes: usize| {
        dev.runtime.publish("fill/set", format!("{key} {bytes}").as_bytes());
        String::from_utf8(results.recv_timeout(SECS).expect("no answer from fill").payload).unwrap()
    };
    assert_eq!(set("a", 6000), "ok");
    let mut m = manifest("fill");
    m.version = "1.1.0".into();
    m.limits.storage_kib = 4;
    dev.install("fill", &pack("fill", &m));
    dev.wait_started("fill", "1.1.0");
    let answer = set("b", 10);
    assert!(answer.starts_with("err Error::QuotaExceeded("), "{answer}");
    assert_eq!(set("a", 3000), "ok", "shrinking to within the new quota is allowed");
}
