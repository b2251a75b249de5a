//! What the runtime tells its observers: [`RuntimeEvent`] and the [`EventBus`]
//! that fans each one out to every subscriber (logs, tests, the CLI, the API).

use std::sync::Mutex;

use crossbeam_channel::{Receiver, Sender, unbounded};

use crate::error::Fault;
use crate::sync::lock;

/// Something that happened, for logs, tests and the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeEvent {
    /// A version is running (first load, swap, restart or fallback).
    Started {
        /// App name.
        app: String,
        /// Its version.
        version: String,
        /// The version it replaced, if any.
        replaced: Option<String>,
    },
    /// A file was not loaded; whatever ran before keeps running.
    Refused {
        /// App name (from the file name), if it has one.
        app: Option<String>,
        /// Why.
        reason: String,
    },
    /// A call into the app faulted.
    Crashed {
        /// App name.
        app: String,
        /// What happened.
        fault: Fault,
    },
    /// A crash loop made the runtime go back to the last good version.
    FellBack {
        /// App name.
        app: String,
        /// The version now running.
        version: String,
    },
    /// The app is not running any more.
    Stopped {
        /// App name.
        app: String,
        /// Why.
        reason: String,
    },
    /// A host call was refused for lack of a permission.
    Denied {
        /// App name.
        app: String,
        /// What was refused.
        reason: String,
    },
    /// The app logged a line.
    Log {
        /// App name.
        app: String,
        /// `trace`..`error`.
        level: &'static str,
        /// The line.
        message: String,
    },
}

/// Fan-out of [`RuntimeEvent`]s (or of other news to observers).
pub(crate) struct EventBus<T = RuntimeEvent>(Mutex<Vec<Sender<T>>>);

impl<T> Default for EventBus<T> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<T: Clone> EventBus<T> {
    pub fn emit(&self, event: T) {
        lock(&self.0).retain(|tx| tx.send(event.clone()).is_ok());
    }
    pub fn subscribe(&self) -> Receiver<T> {
        let (tx, rx) = unbounded();
        lock(&self.0).push(tx);
        rx
    }
}
