//! Host bindings generated from `wit/` (the only place the WIT is read).

#![allow(missing_docs, missing_debug_implementations, clippy::all)]

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "app",
});

pub(crate) use trellis::app::events::{
    GpioEdge, HotplugAction as WitHotplugAction, HotplugEvent as WitHotplugEvent, Message as WitMessage,
};
pub(crate) use trellis::app::types::{Edge as WitEdge, Error as WitError, Level as WitLevel};
