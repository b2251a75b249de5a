//! `trellis:app/log`: an app's log lines, tagged with the app, into the
//! device log and the runtime's event stream — at most as many as the
//! device's [`LogPolicy`] allows, each escaped so that an app can neither
//! forge a line of the device log nor send control sequences to a terminal.

use std::time::Duration;

use crate::bindings::trellis::app::log;
use crate::config::LogPolicy;
use crate::events::RuntimeEvent;
use crate::printable::escape_line;

use super::HostState;

impl log::Host for HostState {
    fn log(&mut self, level: log::LogLevel, message: String) {
        let now = self.services.epoch.elapsed();
        let dropped = match self.log_limit.admit(now) {
            Admit::Yes { dropped_before } => dropped_before,
            Admit::No => return,
        };
        if dropped > 0 {
            let note = format!(
                "{dropped} lines dropped: more than {} at once or {} per second",
                self.log_limit.policy.burst, self.log_limit.policy.per_second
            );
            emit(self, log::LogLevel::Warn, note);
        }
        emit(self, level, escape_line(&message, self.log_limit.policy.max_line_bytes));
    }
}

fn emit(state: &HostState, level: log::LogLevel, message: String) {
    let app = state.app.as_str();
    let level = match level {
        log::LogLevel::Trace => {
            tracing::trace!(target: "app", app, "{message}");
            "trace"
        }
        log::LogLevel::Debug => {
            tracing::debug!(target: "app", app, "{message}");
            "debug"
        }
        log::LogLevel::Info => {
            tracing::info!(target: "app", app, "{message}");
            "info"
        }
        log::LogLevel::Warn => {
            tracing::warn!(target: "app", app, "{message}");
            "warn"
        }
        log::LogLevel::Error => {
            tracing::error!(target: "app", app, "{message}");
            "error"
        }
    };
    state.services.events.emit(RuntimeEvent::Log { app: state.app.clone(), level, message });
}

/// Whether a line may go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Yes; `dropped_before` lines were dropped since the last one that went out.
    Yes { dropped_before: u64 },
    /// No: over the limit; it is counted.
    No,
}

/// A token bucket of lines: `burst` at most, refilled at `per-second`.
/// It is given the time, so it is tested without a clock.
#[derive(Debug, Clone)]
pub(crate) struct LogLimiter {
    pub policy: LogPolicy,
    tokens: f64,
    last: Duration,
    dropped: u64,
}

impl LogLimiter {
    pub fn new(policy: LogPolicy, now: Duration) -> Self {
        Self { policy, tokens: f64::from(policy.burst), last: now, dropped: 0 }
    }

    /// Take one line's token at time `now` (a token is also needed for the
    /// line that reports the drops: it goes out with the next admitted line).
    pub fn admit(&mut self, now: Duration) -> Admit {
        let elapsed = now.saturating_sub(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * f64::from(self.policy.per_second)).min(f64::from(self.policy.burst));
        let needed = if self.dropped > 0 { 2.0 } else { 1.0 };
        if self.tokens >= needed {
            self.tokens -= needed;
            Admit::Yes { dropped_before: std::mem::take(&mut self.dropped) }
        } else {
            self.dropped += 1;
            Admit::No
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LogPolicy {
        LogPolicy { burst: 10, per_second: 5, max_line_bytes: 16 }
    }

    #[test]
    fn a_flood_gets_the_burst_then_the_rate_and_is_counted() {
        let mut l = LogLimiter::new(policy(), Duration::ZERO);
        let t0 = Duration::from_secs(1);
        let passed = (0..10_000).filter(|_| l.admit(t0) != Admit::No).count();
        assert_eq!(passed, 10, "the burst, all at once");
        // One second later: 5 tokens; the first line out reports the 9,990 drops (2 tokens).
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(l.admit(t1), Admit::Yes { dropped_before: 9_990 });
        let more = (0..100).filter(|_| l.admit(t1) != Admit::No).count();
        assert_eq!(more, 3);
        // A long quiet spell refills only up to the burst.
        let t2 = t1 + Duration::from_secs(3600);
        let after = (0..100).filter(|_| l.admit(t2) != Admit::No).count();
        assert_eq!(after, 10 - 1, "the first one also carries the drop report");
    }

    #[test]
    fn a_steady_app_under_the_rate_loses_nothing() {
        let mut l = LogLimiter::new(policy(), Duration::ZERO);
        for i in 0..10_000u64 {
            assert_eq!(l.admit(Duration::from_millis(i * 200)), Admit::Yes { dropped_before: 0 }, "line {i}");
        }
    }

    #[test]
    fn time_going_backwards_grants_nothing() {
        let mut l = LogLimiter::new(LogPolicy { burst: 1, ..policy() }, Duration::from_secs(10));
        assert_ne!(l.admit(Duration::from_secs(10)), Admit::No);
        assert_eq!(l.admit(Duration::from_secs(5)), Admit::No);
    }
}
