//! Per-app rate limits for outgoing traffic (`limits.net-kbit`), enforced by
//! the kernel: an HTB queueing discipline on the shaped interface, one class
//! per limited app, chosen by the firewall mark the runtime puts on every
//! socket the app's requests use (`SO_MARK`).
//!
//! ```text
//! tc qdisc replace dev eth0 root handle 1: htb default 1        (once)
//! tc class replace dev eth0 parent 1: classid 1:1 htb rate 10gbit   (everything else)
//! tc class replace dev eth0 parent 1: classid 1:101 htb rate 2000kbit ceil 2000kbit burst 5000b cburst 5000b
//! tc filter replace dev eth0 parent 1: protocol all prio 1 handle 257 fw classid 1:101
//! ```
//!
//! The commands go through [`TrafficControl`], so what the runtime asks of
//! the kernel is tested as a trace without one.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::sync::lock;

/// The first mark handed out (0x100; lower marks are left to the system).
const FIRST_MARK: u32 = 0x100;
/// HTB class ids are 16 bits: at most this many limited apps at once.
const LAST_MARK: u32 = 0xffff;

/// Why a limit could not be set.
#[derive(Debug, thiserror::Error)]
pub enum ShapingError {
    /// `tc` failed.
    #[error("tc {args} on {device}: {reason}")]
    Tc {
        /// The interface.
        device: String,
        /// The command's arguments.
        args: String,
        /// What it said.
        reason: String,
    },
    /// More limited apps than HTB class ids.
    #[error("no traffic class left for app {0}")]
    Exhausted(String),
}

/// Runs `tc` with arguments.
pub trait TrafficControl: Send + Sync {
    /// Run `tc args…`.
    ///
    /// # Errors
    /// What `tc` printed, when it failed or could not start.
    fn tc(&self, args: &[String]) -> Result<(), String>;
}

/// The real `tc` (iproute2).
#[derive(Debug)]
pub struct Tc;

impl TrafficControl for Tc {
    fn tc(&self, args: &[String]) -> Result<(), String> {
        let out = std::process::Command::new(trellis_layout::paths::TC)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", trellis_layout::paths::TC))?;
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()) }
    }
}

/// The bytes a class may send at once: 20 ms at its rate, at least two
/// full frames. HTB's default (one timer tick's worth) is too little when the
/// kernel's timers fire late (a busy or emulated CPU): the class then falls
/// below its rate. The long-run rate is the same either way.
fn burst_bytes(kbit: u32) -> u64 {
    (u64::from(kbit) * 1000 / 8 / 50).max(2 * 1514)
}

#[derive(Debug, Clone, Copy)]
struct Class {
    mark: u32,
    kbit: u32,
}

/// The shaped interface and the class of each limited app.
pub struct Shaper {
    device: String,
    tc: Box<dyn TrafficControl>,
    apps: Mutex<BTreeMap<String, Class>>,
}

impl std::fmt::Debug for Shaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shaper").field("device", &self.device).finish_non_exhaustive()
    }
}

impl Shaper {
    /// Put the HTB root on `device`, with everything unmarked in a class
    /// that is not limited.
    ///
    /// # Errors
    /// `tc` failed (no such interface, no HTB in the kernel, no `tc`).
    pub fn setup(device: &str, tc: Box<dyn TrafficControl>) -> Result<Self, ShapingError> {
        let shaper = Self { device: device.to_owned(), tc, apps: Mutex::new(BTreeMap::new()) };
        shaper.run(&["qdisc", "replace", "dev", device, "root", "handle", "1:", "htb", "default", "1"])?;
        shaper.run(&["class", "replace", "dev", device, "parent", "1:", "classid", "1:1", "htb", "rate", "10gbit"])?;
        Ok(shaper)
    }

    fn run(&self, args: &[&str]) -> Result<(), ShapingError> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        self.tc.tc(&args).map_err(|reason| ShapingError::Tc {
            device: self.device.clone(),
            args: args.join(" "),
            reason,
        })
    }

    /// The mark `app`'s sockets carry (given once, kept while the app exists).
    ///
    /// # Errors
    /// Every class id is taken.
    pub fn mark(&self, app: &str) -> Result<u32, ShapingError> {
        let mut apps = lock(&self.apps);
        if let Some(c) = apps.get(app) {
            return Ok(c.mark);
        }
        let mark = (FIRST_MARK..=LAST_MARK)
            .find(|m| apps.values().all(|c| c.mark != *m))
            .ok_or_else(|| ShapingError::Exhausted(app.to_owned()))?;
        apps.insert(app.to_owned(), Class { mark, kbit: 0 });
        Ok(mark)
    }

    /// Limit `app`'s marked traffic to `kbit` kbit/s (0: no limit).
    ///
    /// # Errors
    /// `tc` failed; the app's previous limit stays.
    pub fn limit(&self, app: &str, kbit: u32) -> Result<(), ShapingError> {
        if kbit == 0 && !lock(&self.apps).contains_key(app) {
            return Ok(());
        }
        let mark = self.mark(app)?;
        let previous = lock(&self.apps).get(app).map_or(0, |c| c.kbit);
        if previous == kbit {
            return Ok(());
        }
        let (dev, classid, handle) = (self.device.as_str(), format!("1:{mark:x}"), mark.to_string());
        if kbit == 0 {
            self.unclassify(dev, &classid, &handle)?;
        } else {
            let rate = format!("{kbit}kbit");
            let burst = format!("{}b", burst_bytes(kbit));
            let class = ["class", "replace", "dev", dev, "parent", "1:", "classid", &classid, "htb"];
            self.run(&[&class[..], &["rate", &rate, "ceil", &rate, "burst", &burst, "cburst", &burst]].concat())?;
            let filter = ["filter", "replace", "dev", dev, "parent", "1:", "protocol", "all", "prio", "1"];
            self.run(&[&filter[..], &["handle", &handle, "fw", "classid", &classid]].concat())?;
        }
        if let Some(c) = lock(&self.apps).get_mut(app) {
            c.kbit = kbit;
        }
        Ok(())
    }

    fn unclassify(&self, dev: &str, classid: &str, handle: &str) -> Result<(), ShapingError> {
        let filter = ["filter", "del", "dev", dev, "parent", "1:", "protocol", "all", "prio", "1"];
        self.run(&[&filter[..], &["handle", handle, "fw"]].concat())?;
        self.run(&["class", "del", "dev", dev, "classid", classid])
    }

    /// `app` is gone: remove its class and give its mark back.
    ///
    /// # Errors
    /// `tc` failed.
    pub fn remove(&self, app: &str) -> Result<(), ShapingError> {
        let Some(class) = lock(&self.apps).remove(app) else { return Ok(()) };
        if class.kbit == 0 {
            return Ok(());
        }
        self.unclassify(&self.device, &format!("1:{:x}", class.mark), &class.mark.to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use super::*;

    #[derive(Default, Clone)]
    struct Trace(Arc<Mutex<Vec<String>>>, Option<&'static str>);

    impl TrafficControl for Trace {
        fn tc(&self, args: &[String]) -> Result<(), String> {
            let line = args.join(" ");
            if self.1.is_some_and(|fail| line.contains(fail)) {
                return Err("RTNETLINK answers: No such file or directory".into());
            }
            lock(&self.0).push(line);
            Ok(())
        }
    }

    fn take(t: &Trace) -> Vec<String> {
        std::mem::take(&mut *lock(&t.0))
    }

    #[test]
    fn limits_are_htb_classes_chosen_by_mark() {
        let trace = Trace::default();
        let shaper = Shaper::setup("eth0", Box::new(trace.clone())).unwrap();
        assert_eq!(
            take(&trace),
            [
                "qdisc replace dev eth0 root handle 1: htb default 1",
                "class replace dev eth0 parent 1: classid 1:1 htb rate 10gbit",
            ]
        );
        assert_eq!(shaper.mark("a").unwrap(), 0x100);
        assert_eq!(shaper.mark("b").unwrap(), 0x101);
        assert_eq!(shaper.mark("a").unwrap(), 0x100, "an app keeps its mark");
        assert!(take(&trace).is_empty(), "a mark alone changes nothing");

        shaper.limit("b", 2000).unwrap();
        assert_eq!(
            take(&trace),
            [
                "class replace dev eth0 parent 1: classid 1:101 htb rate 2000kbit ceil 2000kbit burst 5000b cburst 5000b",
                "filter replace dev eth0 parent 1: protocol all prio 1 handle 257 fw classid 1:101",
            ]
        );
        shaper.limit("b", 2000).unwrap();
        assert!(take(&trace).is_empty(), "the same limit again (a swap to an equal version)");
        shaper.limit("b", 0).unwrap();
        assert_eq!(
            take(&trace),
            ["filter del dev eth0 parent 1: protocol all prio 1 handle 257 fw", "class del dev eth0 classid 1:101",]
        );
        shaper.limit("a", 500).unwrap();
        take(&trace);
        shaper.remove("a").unwrap();
        assert_eq!(
            take(&trace),
            ["filter del dev eth0 parent 1: protocol all prio 1 handle 256 fw", "class del dev eth0 classid 1:100",]
        );
        shaper.remove("b").unwrap();
        assert!(take(&trace).is_empty(), "b had no class left");
        assert_eq!(shaper.mark("c").unwrap(), 0x100, "marks are given back");
    }

    #[test]
    fn a_failing_tc_names_the_interface_and_keeps_the_old_limit() {
        let trace = Trace(Arc::default(), Some("rate 300kbit"));
        let shaper = Shaper::setup("eth0", Box::new(trace.clone())).unwrap();
        shaper.limit("a", 100).unwrap();
        let err = shaper.limit("a", 300).unwrap_err().to_string();
        assert!(err.contains("eth0") && err.contains("1:100") && err.contains("No such file"), "{err}");
        take(&trace);
        shaper.limit("a", 100).unwrap();
        assert!(take(&trace).is_empty(), "100 kbit/s is still what is set");
    }
}
