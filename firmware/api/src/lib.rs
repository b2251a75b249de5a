//! The device's management API: HTTPS with mutual TLS, served by the
//! runtime. The device trusts operator certificates signed by the CA in its
//! image and presents its own; requests are parsed under strict limits
//! (`http`), routed to the one device interface ([`trellis_control::Device`],
//! which the runtime implements): status, apps (upload, removal), firmware
//! (upload, then RAUC's progress), reboot, logs (server-sent events), metrics.
//! [`client`] is the operator's side, used by the `trellis` CLI. docs/api.md.

pub mod apps;
pub mod client;
pub mod firmware;
pub mod http;
mod limits;
pub mod mdns;
pub mod routes;
pub mod server;
pub mod tls;

pub use routes::{Answer, Response, Routes, Stream};
pub use server::{ApiConfig, ApiError, Server, serve};
