//! Sharing a release among the devices of one site (design decision 14):
//! which pieces a device holds ([`Bitfield`]), how many of its peers hold
//! each ([`Availability`]), which piece to ask a peer for next ([`Picker`]:
//! rarest first, in order for a consumer that streams, or at random), the
//! lower bound on the time until every device holds a release
//! ([`kumar_ross`]), and a discrete-event simulation of a site's swarm that
//! runs the same picker ([`sim`]).
//!
//! No I/O and no clock: the transport drives the picker, and the simulation
//! keeps its own time.

mod bitfield;
mod bound;
mod picker;
mod rng;
pub mod sim;

pub use bitfield::Bitfield;
pub use bound::{Capacity, jain_index, kumar_ross};
pub use picker::{Availability, Picker, Strategy};
pub use rng::Rng;
