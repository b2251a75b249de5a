//! `trellis asset`: name an asset by its index's hash, and serve assets to
//! devices that read them on demand (docs/runtime.md, "Assets on demand").

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;
use trellis_assets::Index;
use trellis_assets::server::{Origin, OriginConfig, Server};

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
}

pub(crate) fn run(command: AssetCommand) -> Result<()> {
    match command {
        AssetCommand::Index { file, json } => index(&file, json),
        AssetCommand::Serve { dir, listen, push, state } => serve(&dir, listen, push, state),
    }
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
