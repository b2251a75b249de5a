//! An app version's mailbox: [`WorkerMsg`], what the broker and the supervisor
//! send the worker thread running it.

use crossbeam_channel::Sender;

use crate::bindings::Event;
use crate::error::Fault;

/// What a worker is sent.
pub(crate) enum WorkerMsg {
    /// Deliver an event.
    Event(Event),
    /// Call `state.save`, reply, then pause until `Resume` or `Stop`.
    SaveState(Sender<Result<Option<Vec<u8>>, Fault>>),
    /// Call `update.consent(release)` and reply with its answer (`None`
    /// without a hook); a fault is replied, then ends the worker like any other.
    Consent { release: String, reply: Sender<Result<Option<u32>, Fault>> },
    /// The swap that asked for the state failed: carry on.
    Resume,
    /// Retire: call the shutdown handler, pass queued events on, exit.
    Stop,
}
