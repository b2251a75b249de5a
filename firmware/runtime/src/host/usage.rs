//! What an app uses ([`Usage`], read live by the status) and the memory limit
//! wasmtime enforces on it ([`MemoryLimiter`], raising [`MemoryLimitExceeded`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The error a memory limit raises inside wasmtime (becomes a trap).
#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded: asked for {requested} bytes, limit is {limit} bytes")]
pub(crate) struct MemoryLimitExceeded {
    pub requested: usize,
    pub limit: usize,
}

/// What an app uses, read live by the status: its linear memory now, and the
/// time and number of calls into it since the runtime started it.
#[derive(Debug, Default)]
pub struct Usage {
    memory: AtomicU64,
    busy_ns: AtomicU64,
    calls: AtomicU64,
}

impl Usage {
    /// Bytes of linear memory of the running instance.
    #[must_use]
    pub fn memory_bytes(&self) -> u64 {
        self.memory.load(Ordering::Relaxed)
    }

    /// Time spent in calls into the app (its handlers, host calls included).
    #[must_use]
    pub fn cpu_time(&self) -> Duration {
        Duration::from_nanos(self.busy_ns.load(Ordering::Relaxed))
    }

    /// Calls into the app.
    #[must_use]
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub(crate) fn called(&self, took: Duration) {
        self.busy_ns.fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts every linear memory of the app against one limit.
pub(crate) struct MemoryLimiter {
    limit: usize,
    total: usize,
    usage: Arc<Usage>,
}

impl MemoryLimiter {
    /// A limiter allowing `limit` bytes in all, recording into `usage`.
    pub(super) fn new(limit: usize, usage: Arc<Usage>) -> Self {
        Self { limit, total: 0, usage }
    }

    /// Where the app's usage is recorded.
    pub(super) fn usage(&self) -> &Usage {
        &self.usage
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let requested = self.total - current.min(self.total) + desired;
        if requested > self.limit {
            return Err(wasmtime::Error::new(MemoryLimitExceeded { requested, limit: self.limit }));
        }
        self.total = requested;
        self.usage.memory.store(requested as u64, Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
