//! Large assets for apps, delivered on demand.
//!
//! An app's manifest names the assets it reads (`[assets] weights = "<id>"`)
//! by their [`AssetId`]: the SHA-256 of the asset's block [`Index`]. The
//! device does not need an asset before the app starts: the first read of a
//! block fetches it from the origin ([`Fetcher`]), checks it against the
//! index and keeps it in a [`BlockStore`] on the data partition; later reads,
//! also after a reboot, come from there.
//!
//! The origin ([`server`]) records the order in which a reader asks for
//! blocks after it starts. When a later reader (a restart, another device)
//! asks for a block of a recorded order, the origin sends, with it, the
//! blocks that came next in that order and that the reader does not hold: a
//! run that reads the way an earlier one did finds most of its blocks on the
//! device before it asks (SYSFLOW's recorded "action").
//!
//! The same blocks travel among the devices of one site: a device shares
//! what its stores hold ([`server::Origin::sharing`]), and [`download`]
//! fetches a whole file (a release's artifact, named in the signed release
//! by the same kind of id) from several peers at once, rarest first, with
//! the origin only for what no peer holds; a peer that sends a block that
//! does not match is banned. A [`Queue`] fetches a device's artifacts one
//! after another, an urgent release's first (pausing a normal one, which
//! then goes on from its verified blocks).
//!
//! A firmware bundle named by such an id streams to RAUC from the same
//! sources ([`StreamServer`]): RAUC asks a loopback server for byte ranges,
//! and the blocks they cover come from the device, its peers or the origin,
//! each verified before it is passed on; the origin answers ranges of a
//! whole file too (`GET /v1/assets/<id>/data` with `Range`).

mod client;
pub mod download;
mod index;
pub mod queue;
pub mod relay;
pub mod server;
mod store;
pub mod stream;
mod wire;

pub use client::{FetchStats, Fetcher, PEER_BENCH, PEER_DEADLINE, Removed};
pub use download::{DownloadOptions, DownloadReport, PeerList, Sources};
pub use index::{AssetId, BLOCK_SIZE, Index, MAX_SIZE};
pub use queue::{Finished, Job, Queue};
pub use store::BlockStore;
pub use stream::StreamServer;
/// How a download chooses its next block (re-exported for its options).
pub use trellis_swarm::Strategy;
pub use wire::byte_range;

/// What went wrong with an asset. Every message names the asset (and the
/// block, file or server) concerned.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// Not 64 hex digits.
    #[error("asset id {0:?} is not 64 hex digits (the SHA-256 of the asset's index)")]
    BadId(String),
    /// An index that does not hash to the id, or is malformed.
    #[error("index of asset {id}: {reason}")]
    BadIndex {
        /// The asset.
        id: AssetId,
        /// What is wrong.
        reason: String,
    },
    /// A read beyond the asset's end.
    #[error("read of {len} bytes at offset {offset} is past the end of asset {id} ({size} bytes)")]
    PastEnd {
        /// The asset.
        id: AssetId,
        /// Where the read began.
        offset: u64,
        /// How much it asked for.
        len: u64,
        /// The asset's size.
        size: u64,
    },
    /// The store on the device failed.
    #[error("asset store {path}: {source}")]
    Store {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The origin could not be reached, or answered with an error.
    #[error("asset {id} from {server}: {reason}")]
    Fetch {
        /// The asset.
        id: AssetId,
        /// The server asked.
        server: String,
        /// What went wrong.
        reason: String,
    },
    /// The device cannot serve its blocks to its peers.
    #[error("sharing assets on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The origin kept sending a block that does not match the index.
    #[error("asset {id} block {block} from {server}: {attempts} copies did not match the index; none was stored")]
    Corrupt {
        /// The asset.
        id: AssetId,
        /// The block.
        block: u32,
        /// The server.
        server: String,
        /// How many copies were refused.
        attempts: u32,
    },
}
