//! The supervisor's clock: back-off, crash windows and "good after" are
//! counted on it, so tests run them on a [`FakeClock`] they advance by hand
//! instead of sleeping.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sync::lock;

/// Monotonic time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Time since the clock's origin.
    fn now(&self) -> Duration;
}

/// The real monotonic clock.
#[derive(Debug)]
pub struct SystemClock(Instant);

impl SystemClock {
    /// A clock starting now, to hand to the runtime.
    #[must_use]
    pub fn shared() -> Arc<dyn Clock> {
        Arc::new(Self(Instant::now()))
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// A clock that moves only when told to ([`FakeClock::advance`]); after
/// advancing it, [`crate::Runtime::tick`] lets the supervisor act on the new time.
#[derive(Debug, Default)]
pub struct FakeClock(Mutex<Duration>);

impl FakeClock {
    /// Move the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        *lock(&self.0) += d;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Duration {
        *lock(&self.0)
    }
}
