//! The device on the local network by name: the API announced over mDNS /
//! DNS-SD as `_trellis._tcp.local.` (instance: the hostname, `trellis-XXXXXX`),
//! and the operator's side that finds the devices announcing it. Pure Rust
//! (`mdns-sd`), no avahi on the device.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};

/// The service type.
pub const SERVICE: &str = "_trellis._tcp.local.";
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
    let daemon = ServiceDaemon::new_with_port(mdns_port).map_err(err)?;
    let properties: Vec<(&str, &str)> = txt.to_vec();
    let info = ServiceInfo::new(SERVICE, instance, &format!("{instance}.local."), "", port, &properties[..])
        .map_err(err)?
        .enable_addr_auto();
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

/// The devices that answer within `wait`.
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
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(event) = events.recv_timeout(left) else { break };
        if let ServiceEvent::ServiceResolved(s) = event {
            let name = s.get_fullname().strip_suffix(&format!(".{SERVICE}")).unwrap_or(s.get_fullname()).to_owned();
            let mut ips: Vec<std::net::IpAddr> = s.get_addresses().iter().map(mdns_sd::ScopedIp::to_ip_addr).collect();
            ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
            let port = s.get_port();
            let addresses = ips
                .iter()
                .map(|ip| if ip.is_ipv6() { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") })
                .collect();
            let txt = s.get_properties().iter().map(|p| (p.key().to_owned(), p.val_str().to_owned())).collect();
            found.insert(name.clone(), Found { name, addresses, txt });
        }
    }
    let _ = daemon.stop_browse(SERVICE);
    let _ = daemon.shutdown();
    Ok(found.into_values().collect())
}
