//! Locking that survives a panicked holder: the one poison-tolerant `lock`
//! every module of the runtime uses.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Lock `m`, taking the data even if a thread panicked while holding it.
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
