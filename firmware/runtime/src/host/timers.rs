//! `trellis:app/timers`: an app's timeouts and intervals ([`Timers`]), which
//! the worker fires between calls.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::bindings::trellis::app::timers;

use super::HostState;

const MAX_TIMERS: usize = 64;

struct Timer {
    due: Instant,
    period: Option<Duration>,
}

/// An app's timers; the worker fires them between calls.
#[derive(Default)]
pub(crate) struct Timers {
    next_id: u32,
    active: BTreeMap<u32, Timer>,
}

impl Timers {
    fn add(&mut self, delay: Duration, period: Option<Duration>) -> Option<u32> {
        if self.active.len() >= MAX_TIMERS {
            return None;
        }
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.active.insert(self.next_id, Timer { due: Instant::now() + delay, period });
        Some(self.next_id)
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.active.values().map(|t| t.due).min()
    }

    /// Timers due at `now`, in due order; intervals are rescheduled one period
    /// on (so a late tick is caught up, not skipped), timeouts removed.
    pub fn take_due(&mut self, now: Instant) -> Vec<u32> {
        let mut due: Vec<(Instant, u32)> =
            self.active.iter().filter(|(_, t)| t.due <= now).map(|(&id, t)| (t.due, id)).collect();
        due.sort_unstable();
        for &(_, id) in &due {
            let Some(t) = self.active.get_mut(&id) else { continue };
            match t.period {
                Some(p) => {
                    t.due += p;
                    // Far behind (the device was suspended, the app was stuck): resynchronise.
                    if now.saturating_duration_since(t.due) > p * 10 {
                        t.due = now + p;
                    }
                }
                None => {
                    self.active.remove(&id);
                }
            }
        }
        due.into_iter().map(|(_, id)| id).collect()
    }
}

impl timers::Host for HostState {
    fn set_timeout(&mut self, ms: u32) -> u32 {
        self.timers.add(Duration::from_millis(ms.into()), None).unwrap_or(0)
    }

    fn set_interval(&mut self, ms: u32) -> Result<u32, String> {
        if ms == 0 {
            return Err("interval must be at least 1 ms".into());
        }
        let period = Duration::from_millis(ms.into());
        self.timers.add(period, Some(period)).ok_or_else(|| format!("at most {MAX_TIMERS} timers per app"))
    }

    fn cancel(&mut self, id: u32) -> bool {
        self.timers.active.remove(&id).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_catch_up_and_timeouts_fire_once() {
        let mut t = Timers::default();
        let a = t.add(Duration::from_millis(10), Some(Duration::from_millis(10))).unwrap_or(0);
        let b = t.add(Duration::from_millis(15), None).unwrap_or(0);
        let start = Instant::now();
        assert!(t.take_due(start).is_empty());
        // 35 ms later: the interval is due (once per call, catching up) and the timeout too
        let later = start + Duration::from_millis(35);
        assert_eq!(t.take_due(later), vec![a, b]);
        assert_eq!(t.take_due(later), vec![a]);
        assert_eq!(t.take_due(later), vec![a]);
        assert!(t.take_due(later).is_empty());
        assert!(t.next_due() > Some(later));
        assert!(!t.active.contains_key(&b));
    }
}
