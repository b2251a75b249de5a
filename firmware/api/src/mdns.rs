//! The device on the local network by name: the API announced over mDNS /
//! DNS-SD as `_trellis._tcp.local.` (instance: the hostname, `trellis-XXXXXX`),
//! and the operator's side that finds the devices announcing it. Devices that
//! share the pieces of releases announce `_trellis-pieces._tcp.local.` and
//! watch for each other ([`watch_via`]). Pure Rust (`mdns-sd`), no avahi on
//! the device.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};

/// The service type.
pub const SERVICE: &str = "_trellis._tcp.local.";
/// The service of a device sharing the pieces it holds (the asset protocol:
/// `GET /v1/assets/<id>/have` says which).
pub const PIECES_SERVICE: &str = "_trellis-pieces._tcp.local.";
/// mDNS's port.
pub const MDNS_PORT: u16 = 5353;

/// What went wrong with mDNS.
#[derive(Debug, thiserror::Error)]
#[error("mDNS: {0}")]
pub struct MdnsError(String);

fn err(e: impl std::fmt::Display) -> MdnsError {
    MdnsError(e.to_string())
}

/// An announcement; it is withdrawn when dropped.
pub struct Announcer {
    daemon: ServiceDaemon,
    fullname: String,
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announcer").field("fullname", &self.fullname).finish_non_exhaustive()
    }
}

impl Announcer {
    /// The announced instance's full name (`trellis-1a2b3c._trellis._tcp.local.`).
    #[must_use]
    pub fn fullname(&self) -> &str {
        &self.fullname
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        let _ = self.daemon.unregister(&self.fullname);
        let _ = self.daemon.shutdown();
    }
}

/// Announce the API of `instance` (the hostname) on `port`, with `txt`
/// (version, board), on every interface, following address changes (DHCP).
///
/// # Errors
/// The mDNS sockets cannot be opened.
pub fn announce(instance: &str, port: u16, txt: &[(&str, &str)]) -> Result<Announcer, MdnsError> {
    announce_via(MDNS_PORT, instance, port, txt)
}

/// [`announce`] with mDNS on another port than 5353 (tests).
///
/// # Errors
/// As [`announce`].
pub fn announce_via(mdns_port: u16, instance: &str, port: u16, txt: &[(&str, &str)]) -> Result<Announcer, MdnsError> {
    announce_service_via(mdns_port, SERVICE, instance, port, txt)
}

/// Announce `service` (such as [`PIECES_SERVICE`]) of `instance` on `port`,
/// as [`announce_via`] does the API.
///
/// # Errors
/// As [`announce`].
pub fn announce_service_via(
    mdns_port: u16,
    service: &str,
    instance: &str,
    port: u16,
    txt: &[(&str, &str)],
) -> Result<Announcer, MdnsError> {
    announce_on_host(mdns_port, service, instance, &format!("{instance}.local."), port, txt)
}

/// [`announce_service_via`] with the addresses under host name `host`.
fn announce_on_host(
    mdns_port: u16,
    service: &str,
    instance: &str,
    host: &str,
    port: u16,
    txt: &[(&str, &str)],
) -> Result<Announcer, MdnsError> {
    let daemon = ServiceDaemon::new_with_port(mdns_port).map_err(err)?;
    let properties: Vec<(&str, &str)> = txt.to_vec();
    let info = ServiceInfo::new(service, instance, host, "", port, &properties[..]).map_err(err)?.enable_addr_auto();
    let fullname = info.get_fullname().to_owned();
    daemon.register(info).map_err(err)?;
    Ok(Announcer { daemon, fullname })
}

/// A device that announces itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Found {
    /// Its instance name (the hostname).
    pub name: String,
    /// Where its API is: `address:port`, IPv4 first.
    pub addresses: Vec<String>,
    /// The TXT record.
    pub txt: BTreeMap<String, String>,
}

/// The devices that answer within `wait`, each with every address it was
/// resolved at: a device answers on each of its interfaces (on the device
/// itself, over `lo` with 127.0.0.1 as well as over `eth0`), one resolution
/// each, in no set order.
///
/// # Errors
/// The mDNS sockets cannot be opened.
pub fn browse(wait: Duration) -> Result<Vec<Found>, MdnsError> {
    browse_via(MDNS_PORT, wait)
}

/// [`browse`] with mDNS on another port than 5353 (tests).
///
/// # Errors
/// As [`browse`].
pub fn browse_via(mdns_port: u16, wait: Duration) -> Result<Vec<Found>, MdnsError> {
    let daemon = ServiceDaemon::new_with_port(mdns_port).map_err(err)?;
    let events = daemon.browse(SERVICE).map_err(err)?;
    let deadline = Instant::now() + wait;
    let mut found = Resolutions::default();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(event) = events.recv_timeout(left) else { break };
        found.event(SERVICE, &event);
    }
    let _ = daemon.stop_browse(SERVICE);
    let _ = daemon.shutdown();
    Ok(found.devices())
}

/// A browse that goes on until dropped ([`watch_via`]).
pub struct Watcher {
    daemon: ServiceDaemon,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Shutting the daemon down closes the events' channel: the thread ends.
        let _ = self.daemon.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Watch for instances of `service` (mDNS on `mdns_port`): `found` gets each
/// one every time it is resolved (when it appears, and again when its
/// announcement changes), with every address it was resolved at so far.
///
/// # Errors
/// The mDNS sockets cannot be opened, or the thread cannot be started.
pub fn watch_via(mdns_port: u16, service: &str, found: impl Fn(&Found) + Send + 'static) -> Result<Watcher, MdnsError> {
    let daemon = ServiceDaemon::new_with_port(mdns_port).map_err(err)?;
    let events = daemon.browse(service).map_err(err)?;
    let service = service.to_owned();
    let thread = std::thread::Builder::new()
        .name("mdns-watch".into())
        .spawn(move || {
            let mut seen = Resolutions::default();
            while let Ok(event) = events.recv() {
                if let Some(device) = seen.event(&service, &event).and_then(|name| seen.device(&name)) {
                    found(&device);
                }
            }
        })
        .map_err(err)?;
    Ok(Watcher { daemon, thread: Some(thread) })
}

/// The TXT key of the tag a device announces its pieces with.
const SELF_TAG: &str = "tag";

/// A tag no other process on the LAN has: 64 bits from the standard
/// library's per-process random hash keys, the process and the time.
fn self_tag() -> String {
    use std::hash::BuildHasher;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{:016x}", std::collections::hash_map::RandomState::new().hash_one((std::process::id(), now)))
}

/// Join a LAN's sharing of pieces as `name`: announce this device's piece
/// server on `port` as [`PIECES_SERVICE`] (none: it only asks), as
/// `NAME-TAG` (TAG: 8 hex digits of a random tag, which its TXT record
/// carries whole), and call `found` with each other device's name and
/// address (`ip:port`, its first IPv4 address that is not a loopback one)
/// as it appears, never with its own. Both last until the guards are
/// dropped.
///
/// # Errors
/// The mDNS sockets cannot be opened, or the thread cannot be started.
pub fn join_pieces(
    mdns_port: u16,
    name: &str,
    port: Option<u16>,
    found: impl Fn(&str, &str) + Send + 'static,
) -> Result<(Option<Announcer>, Watcher), MdnsError> {
    // Devices of one image may share a host name: the instance and its
    // addresses are named with a random tag as well, so no two devices'
    // announcements collide (mDNS would rename one, and resolve the name
    // to either), and its own announcement is known by the tag.
    let tag = self_tag();
    let instance = format!("{name}-{}", &tag[..8]);
    let host = format!("{instance}.local.");
    let announcer = port
        .map(|port| announce_on_host(mdns_port, PIECES_SERVICE, &instance, &host, port, &[(SELF_TAG, &tag)]))
        .transpose()?;
    let watcher = watch_via(mdns_port, PIECES_SERVICE, move |peer| {
        if peer.txt.get(SELF_TAG) == Some(&tag) {
            return;
        }
        if let Some(addr) = peer.addresses.iter().find(|a| !a.starts_with('[') && !a.starts_with("127.")) {
            found(&peer.name, addr);
        }
    })?;
    Ok((announcer, watcher))
}

/// The resolutions a browse received, per instance: the union of their
/// addresses (IPv4 first), the latest port and TXT record.
#[derive(Debug, Default)]
struct Resolutions(BTreeMap<String, Resolved>);

/// One instance's resolutions so far.
#[derive(Debug, Default)]
struct Resolved {
    /// `IpAddr` orders every IPv4 address before any IPv6 one.
    ips: BTreeSet<IpAddr>,
    port: u16,
    txt: BTreeMap<String, String>,
}

impl Resolutions {
    /// Take in a browse's event; the instance's name if it resolved one.
    fn event(&mut self, service: &str, event: &ServiceEvent) -> Option<String> {
        let ServiceEvent::ServiceResolved(s) = event else { return None };
        let fullname = s.get_fullname();
        let name = fullname.strip_suffix(&format!(".{service}")).unwrap_or(fullname).to_owned();
        let ips = s.get_addresses().iter().map(mdns_sd::ScopedIp::to_ip_addr);
        let txt = s.get_properties().iter().map(|p| (p.key().to_owned(), p.val_str().to_owned())).collect();
        self.add(&name, ips, s.get_port(), txt);
        Some(name)
    }

    fn add(&mut self, name: &str, ips: impl IntoIterator<Item = IpAddr>, port: u16, txt: BTreeMap<String, String>) {
        let entry = self.0.entry(name.to_owned()).or_default();
        entry.ips.extend(ips);
        entry.port = port;
        entry.txt = txt;
    }

    /// Instance `name` as resolved so far.
    fn device(&self, name: &str) -> Option<Found> {
        let r = self.0.get(name)?;
        Some(Found { name: name.to_owned(), addresses: addresses(&r.ips, r.port), txt: r.txt.clone() })
    }

    fn devices(self) -> Vec<Found> {
        self.0
            .into_iter()
            .map(|(name, Resolved { ips, port, txt })| Found { name, addresses: addresses(&ips, port), txt })
            .collect()
    }
}

/// `address:port` for each address, IPv4 first.
fn addresses(ips: &BTreeSet<IpAddr>, port: u16) -> Vec<String> {
    ips.iter().map(|ip| if ip.is_ipv6() { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") }).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_device_resolved_on_two_interfaces_is_listed_with_both_addresses_in_either_order() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let eth0: IpAddr = "10.0.2.15".parse().unwrap();
        let v6: IpAddr = "fe80::1".parse().unwrap();
        for order in [[vec![eth0, v6], vec![lo]], [vec![lo], vec![v6, eth0]]] {
            let mut found = Resolutions::default();
            for ips in order {
                found.add("trellis-123456", ips, 8443, BTreeMap::from([("board".into(), "qemu-aarch64".into())]));
            }
            let devices = found.devices();
            assert_eq!(devices.len(), 1);
            assert_eq!(devices[0].name, "trellis-123456");
            assert_eq!(devices[0].addresses, ["10.0.2.15:8443", "127.0.0.1:8443", "[fe80::1]:8443"]);
            assert_eq!(devices[0].txt["board"], "qemu-aarch64");
        }
    }
}
