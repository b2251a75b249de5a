//! Maintenance windows, evaluated on the device's own clock (UTC), so they
//! hold while it is offline.

use crate::state::Window;

const DAY_MS: u64 = 86_400_000;
const MINUTE_MS: u64 = 60_000;
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Whether an update may start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Now.
    Open,
    /// Not before this time (Unix milliseconds).
    ClosedUntil(u64),
}

fn minutes(hhmm: &str) -> Option<u64> {
    let (h, m) = hhmm.split_once(':')?;
    let (h, m): (u64, u64) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && hhmm.len() == 5).then_some(h * 60 + m)
}

/// Monday = 0 of the day `day` (days since 1970-01-01, a Thursday).
fn weekday(day: u64) -> usize {
    usize::try_from((day + 3) % 7).unwrap_or(0)
}

impl Window {
    /// Check the days and times.
    ///
    /// # Errors
    /// The field that is not a day name or an `HH:MM` time, named.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(d) = self.days.iter().find(|d| !DAYS.contains(&d.as_str())) {
            return Err(format!("window day {d:?} is not one of mon, tue, wed, thu, fri, sat, sun"));
        }
        for t in [&self.start, &self.end] {
            if minutes(t).is_none() {
                return Err(format!("window time {t:?} is not HH:MM (00:00 to 23:59)"));
            }
        }
        if self.start == self.end {
            return Err(format!("window {}-{} is empty", self.start, self.end));
        }
        Ok(())
    }

    fn day_allowed(&self, day: u64) -> bool {
        self.days.is_empty() || self.days.iter().any(|d| d == DAYS[weekday(day)])
    }

    /// Whether `now_ms` (Unix milliseconds, UTC) is inside the window, or when
    /// it next opens. A window that crosses midnight belongs to the day it opens.
    /// An invalid window never opens (the device reports why).
    #[must_use]
    pub fn gate(&self, now_ms: u64) -> Gate {
        let (Some(start), Some(end)) = (minutes(&self.start), minutes(&self.end)) else {
            return Gate::ClosedUntil(u64::MAX);
        };
        let (start, end) = (start * MINUTE_MS, end * MINUTE_MS);
        let today = now_ms / DAY_MS;
        let into = now_ms % DAY_MS;
        let open = |day: u64, from: u64, to: u64| self.day_allowed(day) && into >= from && into < to;
        if start < end {
            if open(today, start, end) {
                return Gate::Open;
            }
        } else if open(today, start, DAY_MS) || (today > 0 && self.day_allowed(today - 1) && into < end) {
            return Gate::Open;
        }
        // The next opening: today's, if still ahead, or a later allowed day's.
        (0..=7)
            .map(|ahead| today + ahead)
            .filter(|&day| self.day_allowed(day))
            .map(|day| day * DAY_MS + start)
            .find(|&at| at > now_ms)
            .map_or(Gate::ClosedUntil(u64::MAX), Gate::ClosedUntil)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn window(days: &[&str], start: &str, end: &str) -> Window {
        Window { days: days.iter().map(|d| (*d).to_owned()).collect(), start: start.into(), end: end.into() }
    }

    /// 2026-12-02 (a Wednesday) at `hh:mm` UTC.
    fn wed(hh: u64, mm: u64) -> u64 {
        1_796_169_600_000 + (hh * 60 + mm) * MINUTE_MS
    }

    #[test]
    fn the_reference_day_is_a_wednesday() {
        assert_eq!(DAYS[weekday(wed(0, 0) / DAY_MS)], "wed");
    }

    #[test]
    fn inside_and_outside_a_window() {
        let w = window(&[], "02:00", "05:00");
        assert_eq!(w.gate(wed(3, 0)), Gate::Open);
        assert_eq!(w.gate(wed(1, 59)), Gate::ClosedUntil(wed(2, 0)));
        assert_eq!(w.gate(wed(5, 0)), Gate::ClosedUntil(wed(2, 0) + DAY_MS));
    }

    #[test]
    fn windows_across_midnight_and_on_some_days() {
        let night = window(&["wed"], "22:00", "02:00");
        assert_eq!(night.gate(wed(23, 0)), Gate::Open);
        assert_eq!(night.gate(wed(1, 0)), Gate::ClosedUntil(wed(22, 0)), "Tuesday's window is not allowed");
        assert_eq!(night.gate(wed(1, 0) + DAY_MS), Gate::Open, "Wednesday's window runs into Thursday");
        let weekend = window(&["sat", "sun"], "10:00", "12:00");
        assert_eq!(weekend.gate(wed(11, 0)), Gate::ClosedUntil(wed(10, 0) + 3 * DAY_MS));
    }

    #[test]
    fn bad_windows_are_named() {
        assert!(window(&["wednesday"], "02:00", "03:00").validate().unwrap_err().contains("wednesday"));
        assert!(window(&[], "2:00", "03:00").validate().unwrap_err().contains("2:00"));
        assert!(window(&[], "24:00", "03:00").validate().is_err());
        assert_eq!(window(&[], "x", "03:00").gate(0), Gate::ClosedUntil(u64::MAX));
    }
}
