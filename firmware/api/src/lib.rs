//! The device's management API (issue 6, in progress): HTTPS with mutual TLS,
//! served by the runtime. The device trusts operator certificates signed by
//! the CA in its image and presents its own; requests are parsed under strict
//! limits (`http`), routed to a [`routes::Device`] the runtime implements.
//!
//! Done: TLS with client verification, request parsing, status, metrics,
//! app list/upload/removal (checked, temporary name, renamed into place,
//! one upload per app at a time, size and free space checked first),
//! connection limits; the runtime serves it when configured
//! (`firmware/runtime/src/api.rs`). Not yet: firmware upload, reboot, logs
//! (server-sent events), certificates in the image, the CLI side, mDNS,
//! networking.

pub mod apps;
pub mod http;
pub mod routes;
pub mod server;
pub mod tls;

pub use routes::{Answer, Device, Routes, Verdict};
pub use server::{ApiConfig, ApiError, Server, serve};
