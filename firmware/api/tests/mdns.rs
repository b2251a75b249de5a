//! mDNS on this machine's interfaces (a port of its own, not 5353, so the
//! machine's own responder is not involved): an announced device is found
//! with its address, port and TXT record, and is gone once withdrawn; a
//! watch sees a device that announces the pieces it shares; two devices that
//! share pieces under the same host name find each other, never themselves.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::time::Duration;

use trellis_api::mdns::{PIECES_SERVICE, announce_service_via, announce_via, browse_via, join_pieces, watch_via};

#[test]
fn an_announced_device_is_found_and_a_withdrawn_one_is_not() {
    let port = 20_000 + u16::try_from(std::process::id() % 20_000).unwrap();
    let announcer = announce_via(port, "trellis-test01", 8443, &[("version", "1.2.3"), ("board", "twin")]).unwrap();
    assert_eq!(announcer.fullname(), "trellis-test01._trellis._tcp.local.");
    let found = browse_via(port, Duration::from_secs(3)).unwrap();
    let d = found.iter().find(|d| d.name == "trellis-test01").unwrap_or_else(|| panic!("not found: {found:?}"));
    assert!(d.addresses.iter().all(|a| a.ends_with(":8443")) && !d.addresses.is_empty(), "{d:?}");
    assert_eq!(d.txt.get("version").map(String::as_str), Some("1.2.3"));
    assert_eq!(d.txt.get("board").map(String::as_str), Some("twin"));
    drop(announcer);
    std::thread::sleep(Duration::from_millis(500));
    let after = browse_via(port, Duration::from_secs(2)).unwrap();
    assert!(after.iter().all(|d| d.name != "trellis-test01"), "withdrawn: {after:?}");
}

#[test]
fn a_watch_sees_a_device_that_announces_its_pieces_after_the_watch_began() {
    let port = 20_000 + u16::try_from((std::process::id() + 1) % 20_000).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let _watcher = watch_via(port, PIECES_SERVICE, move |found| drop(tx.send(found.clone()))).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _announcer = announce_service_via(port, PIECES_SERVICE, "trellis-pieces01", 8470, &[]).unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let found = loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        let found = rx.recv_timeout(left).unwrap_or_else(|e| panic!("the announced device was not seen: {e}"));
        if found.name == "trellis-pieces01" {
            break found;
        }
    };
    assert!(!found.addresses.is_empty() && found.addresses.iter().all(|a| a.ends_with(":8470")), "{found:?}");
}

/// Devices of one image may share a host name: mDNS then renames the later
/// one's announcement (`trellis (2)`). Each still finds the other, and never
/// takes its own announcement for a peer's.
#[test]
fn two_devices_with_one_host_name_find_each_other_and_not_themselves() {
    let port = 20_000 + u16::try_from((std::process::id() + 2) % 20_000).unwrap();
    let join = |share: u16| {
        let (tx, rx) = std::sync::mpsc::channel();
        let joined = join_pieces(port, "trellis-same", Some(share), move |_, addr| drop(tx.send(addr.to_owned())));
        (joined.unwrap(), rx)
    };
    let (_a, seen_by_a) = join(18_471);
    let (_b, seen_by_b) = join(18_472);
    for (seen, me, other) in [(&seen_by_a, ":18471", ":18472"), (&seen_by_b, ":18472", ":18471")] {
        let end = std::time::Instant::now() + Duration::from_secs(6);
        let mut found = Vec::new();
        while let Ok(addr) = seen.recv_timeout(end.saturating_duration_since(std::time::Instant::now())) {
            found.push(addr);
        }
        assert!(found.iter().any(|a| a.ends_with(other)), "the other device is found: {found:?}");
        assert!(!found.iter().any(|a| a.ends_with(me)), "never itself: {found:?}");
    }
}
