//! `trellis asset`: name an asset by its index's hash, serve assets to
//! devices that read them on demand (docs/runtime.md, "Assets on demand"),
//! and fetch one from several peers at once while sharing it (docs/fleet.md,
//! "Verified pieces from peers").

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Subcommand;
use trellis_assets::server::{Origin, OriginConfig, Server};
use trellis_assets::{AssetId, DownloadOptions, Index, Sources, Strategy, download};

#[derive(Debug, Subcommand)]
pub(crate) enum AssetCommand {
    /// Print the line a manifest's `[assets]` names FILE with (`NAME = "sha256:..."`).
    Index {
        /// The asset.
        file: PathBuf,
        /// Print JSON (id, size, blocks).
        #[arg(long)]
        json: bool,
    },
    /// Serve every file of DIR as an asset, recording how readers read and
    /// pushing the blocks a reader will want next.
    Serve {
        /// The directory of assets.
        dir: PathBuf,
        /// Where to listen.
        #[arg(long, default_value = "0.0.0.0:8470")]
        listen: SocketAddr,
        /// Blocks sent ahead of a read that follows a recorded order (0: none).
        #[arg(long, default_value_t = 16)]
        push: u32,
        /// Where the recorded read orders are kept across restarts.
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Fetch asset ID (a release's piece root, or an app's asset) into
    /// STORE from its peers and, for what no peer holds, the origin; every
    /// block verified. Goes on from what STORE already holds. Prints what
    /// came from where, as JSON.
    Fetch {
        /// The asset's id (64 hex digits, `sha256:` allowed in front).
        id: String,
        /// The store directory (one per device; the data partition's).
        #[arg(long)]
        store: PathBuf,
        /// The origin (`host:port`).
        #[arg(long)]
        origin: Option<String>,
        /// A peer's asset server (`host:port`), repeated.
        #[arg(long = "peer")]
        peers: Vec<String>,
        /// Share what the store holds on this address while fetching.
        #[arg(long)]
        share: Option<SocketAddr>,
        /// Keep sharing after the fetch, until stopped (with `--share`).
        #[arg(long, requires = "share")]
        linger: bool,
        /// Give up when no block has arrived for this many seconds.
        #[arg(long, default_value_t = 60)]
        stall_s: u64,
        /// Which block to ask a peer for next: rarest-first, in-order (for a
        /// consumer that reads the file as it arrives) or random.
        #[arg(long, default_value = "rarest-first")]
        strategy: Strategy,
    },
}

pub(crate) fn run(command: AssetCommand) -> Result<()> {
    match command {
        AssetCommand::Index { file, json } => index(&file, json),
        AssetCommand::Serve { dir, listen, push, state } => serve(&dir, listen, push, state),
        AssetCommand::Fetch { id, store, origin, peers, share, linger, stall_s, strategy } => {
            let options =
                DownloadOptions { stall: Duration::from_secs(stall_s), strategy, ..DownloadOptions::default() };
            fetch(&id, &store, &Sources { origin, peers }, share, linger, &options)
        }
    }
}

fn fetch(
    id: &str,
    root: &Path,
    sources: &Sources,
    share: Option<SocketAddr>,
    linger: bool,
    options: &DownloadOptions,
) -> Result<()> {
    let id: AssetId = id.trim_start_matches("sha256:").parse()?;
    let started = Instant::now();
    let (store, banned) = download::open(root, id, sources)?;
    let store = Arc::new(Mutex::new(store));
    let server = match share {
        Some(addr) => Some(
            Server::start(Origin::sharing(std::slice::from_ref(&store)), addr)
                .with_context(|| format!("sharing on {addr}"))?,
        ),
        None => None,
    };
    // A peer that sent a bad index is not asked for blocks either.
    let peers = sources.peers.iter().filter(|p| !banned.iter().any(|b| &b.peer == *p)).cloned().collect();
    let sources = Sources { origin: sources.origin.clone(), peers };
    let mut report = download::download(&store, &sources, options)?;
    report.banned.splice(0..0, banned);
    let from_peers: serde_json::Map<String, serde_json::Value> =
        report.from_peers.iter().map(|(p, n)| (p.clone(), (*n).into())).collect();
    let out = serde_json::json!({
        "id": id.to_string(),
        "seconds": started.elapsed().as_secs_f64(),
        "resumed": report.resumed,
        "from-origin": report.from_origin,
        "from-peers": from_peers,
        "banned": report.banned.iter().map(|b| serde_json::json!({"peer": b.peer, "sent": b.what})).collect::<Vec<_>>(),
        "lost": report.lost.iter().map(|(p, why)| serde_json::json!({"peer": p, "why": why})).collect::<Vec<_>>(),
    });
    println!("{out}");
    if linger && server.is_some() {
        loop {
            std::thread::park();
        }
    }
    Ok(())
}

fn index(file: &Path, json: bool) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let index = Index::of(&bytes);
    let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("asset");
    if json {
        let out = serde_json::json!({"id": index.id().to_string(), "size": index.size, "blocks": index.count(), "block-size": index.block_size});
        println!("{out}");
    } else {
        println!("{name} = \"sha256:{}\"", index.id());
    }
    Ok(())
}

fn serve(dir: &Path, listen: SocketAddr, push: u32, state: Option<PathBuf>) -> Result<()> {
    let origin = Origin::from_dir(dir, OriginConfig { push, state_dir: state })?;
    let assets = origin.assets();
    anyhow::ensure!(!assets.is_empty(), "{} holds no file to serve", dir.display());
    let server = Server::start(origin, listen).with_context(|| format!("listening on {listen}"))?;
    for (name, id) in assets {
        println!("{name} = \"sha256:{id}\"");
    }
    println!("serving on {}", server.addr());
    loop {
        std::thread::park();
    }
}
