//! Trellis fleets on NATS JetStream (see `docs/fleet.md`).
//!
//! This crate is the fleet's data model, shared by the device agent, the
//! controller and the operator's CLI: the name of every bucket, stream and
//! subject ([`names`]), signed releases ([`release`]), desired and reported
//! state and events ([`state`]), and the `nats-server` configuration that
//! gives each device exactly its own keys ([`server`]); the device agent
//! ([`agent`]), rollouts ([`rollout`], stepped by the [`controller`]) and what
//! an operator does ([`ops`]), all over one connection type ([`link`]); the
//! fleet bus between apps, NATS side ([`bus`]).

pub mod agent;
pub mod bus;
pub mod clock;
pub mod controller;
pub mod error;
pub mod link;
pub mod names;
pub mod object;
pub mod ops;
pub mod release;
pub mod rollout;
pub mod server;
#[cfg(feature = "sim")]
pub mod sim;
pub mod state;
pub mod window;

pub use error::FleetError;
pub use release::{AppRef, FirmwareRef, Release, ReleaseError, Signature, Urgency};
pub use state::{DesiredState, Event, EventKind, ReportedApp, ReportedState};
