//! What keeps hostile clients from holding a server's connections: budgets
//! of connections whose slots come back when their guard is dropped (so a
//! panic or an early return never leaks one), and a count per peer address.
//! The management API (`trellis-api`) and the asset servers
//! (`trellis-assets`: the origin and a device sharing with its peers) take
//! a slot of each for every connection they serve.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// At most `max` connections at once.
#[derive(Debug, Clone)]
pub struct Budget {
    used: Arc<AtomicUsize>,
    max: usize,
}

/// One slot of a [`Budget`], given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Budget {
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self { used: Arc::new(AtomicUsize::new(0)), max }
    }

    /// A slot, or `None` when all `max` are taken.
    #[must_use]
    pub fn take(&self) -> Option<Slot> {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < self.max).then_some(n + 1))
            .ok()
            .map(|_| Slot(Arc::clone(&self.used)))
    }

    #[must_use]
    pub const fn max(&self) -> usize {
        self.max
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// At most `max` connections at once from one address (IPv4-mapped IPv6
/// addresses count as the IPv4 address).
#[derive(Debug, Clone)]
pub struct PerPeer {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max: usize,
}

/// One connection counted for its address, uncounted when dropped.
#[derive(Debug)]
pub struct PeerSlot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PerPeer {
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self { counts: Arc::default(), max }
    }

    /// A slot for `ip`, or `None` when it already has `max`.
    #[must_use]
    pub fn take(&self, ip: IpAddr) -> Option<PeerSlot> {
        let ip = ip.to_canonical();
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(PeerSlot { counts: Arc::clone(&self.counts), ip })
    }

    #[must_use]
    pub const fn max(&self) -> usize {
        self.max
    }

    /// The addresses with a connection counted (to check nothing leaks).
    #[cfg(test)]
    fn peers(&self) -> usize {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn slots_come_back_when_dropped_even_in_a_panic() {
        let budget = Budget::new(2);
        let (a, b) = (budget.take().unwrap(), budget.take().unwrap());
        assert!(budget.take().is_none());
        drop(a);
        let c = budget.take().unwrap();
        let moved = budget.clone();
        let _ = std::thread::spawn(move || {
            let _slot = moved.take();
            panic!("a connection thread panics");
        })
        .join();
        drop((b, c));
        assert_eq!(budget.used.load(Ordering::SeqCst), 0);

        let peers = PerPeer::new(1);
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let first = peers.take(one).unwrap();
        assert!(peers.take(one).is_none());
        assert!(peers.take("::ffff:192.0.2.1".parse().unwrap()).is_none(), "the same IPv4 address");
        let other = peers.take("192.0.2.2".parse().unwrap()).unwrap();
        drop((first, other));
        assert_eq!(peers.peers(), 0, "no address left behind");
        assert!(peers.take(one).is_some());
    }
}
