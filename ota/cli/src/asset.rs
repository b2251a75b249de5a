//! `trellis asset`: name an asset by its index's hash, serve assets to
//! devices that read them on demand (docs/runtime.md, "Assets on demand"),
//! fetch one from several peers at once while sharing it, and fetch the
//! artifacts of signed releases, urgent ones first (docs/fleet.md,
//! "Verified pieces from peers").

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use trellis_api::mdns::{Announcer, MDNS_PORT, Watcher, join_pieces};
use trellis_appfmt::TrustList;
use trellis_assets::download::PeerList;
use trellis_assets::server::{Origin, OriginConfig, Server};
use trellis_assets::{AssetId, DownloadOptions, DownloadReport, Finished, Index, Queue, Sources, Strategy, download};
use trellis_fleet::Release;

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
        #[command(flatten)]
        swarm: Swarm,
        /// Keep sharing after the fetch, until stopped (with `--share`).
        #[arg(long, requires = "share")]
        linger: bool,
    },
    /// Fetch into STORE the artifacts of every signed release manifest in
    /// RELEASES, and of those that land there later (write them whole, then
    /// rename them in): from peers and the origin as `fetch` does, one
    /// artifact at a time, a critical release's before a normal one's
    /// (pausing a normal one, which then goes on from its verified blocks),
    /// each release's in its order. A manifest that is not signed by a
    /// trusted key is refused and nothing of it is fetched. A file
    /// `NAME.rolled-back` beside manifest `NAME.json`, holding why, says
    /// this device rolled that release back: its artifacts are no longer
    /// shared, and a peer that asks is told the release was rolled back and
    /// why. Prints a JSON line per artifact fetched, release refused or
    /// release rolled back; ends when every release found is fetched,
    /// unless `--linger`.
    Sync {
        /// The directory of release manifests (`NAME.json`, and `NAME.rolled-back`).
        #[arg(long)]
        releases: PathBuf,
        /// A release-signing public key, or a directory of them (repeatable).
        #[arg(long = "trust", required = true)]
        trust: Vec<PathBuf>,
        #[command(flatten)]
        swarm: Swarm,
        /// Keep watching RELEASES (and sharing) after every release is fetched, until stopped.
        #[arg(long)]
        linger: bool,
    },
}

/// Where `fetch` and `sync` keep blocks, where they get them, and how.
#[derive(Debug, Args)]
pub(crate) struct Swarm {
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
    /// Announce the blocks shared on `--share` on the LAN as NAME (mDNS,
    /// `_trellis-pieces._tcp`; the device's hostname), and ask the peers
    /// announced there too, as they appear.
    #[arg(long, value_name = "NAME")]
    lan: Option<String>,
    /// Give up a file when no block of it has arrived for this many seconds.
    #[arg(long, default_value_t = 60)]
    stall_s: u64,
    /// Which block to ask a peer for next: rarest-first, in-order (for a
    /// consumer that reads the file as it arrives) or random.
    #[arg(long, default_value = "rarest-first")]
    strategy: Strategy,
}

impl Swarm {
    /// The sources: the origin, the peers given, and with `--lan` those `found` there.
    fn sources(&self, found: &PeerList) -> Sources {
        let found = self.lan.is_some().then(|| found.clone());
        Sources { origin: self.origin.clone(), peers: self.peers.clone(), found }
    }

    /// With `--lan`: this device's share announced, and the peers announced
    /// added to `found` as they appear, until the guard is dropped.
    fn join_lan(&self, found: &PeerList) -> Result<Option<(Option<Announcer>, Watcher)>> {
        let Some(name) = &self.lan else { return Ok(None) };
        let list = found.clone();
        let joined = join_pieces(MDNS_PORT, name, self.share.map(|a| a.port()), move |peer, addr| {
            if list.add(addr) {
                tracing::info!(peer, addr, "found a peer on the LAN");
            }
        })?;
        Ok(Some(joined))
    }

    /// How to download, sharing on `server` if any (named to the origin).
    fn options(&self, server: Option<&Server>) -> DownloadOptions {
        DownloadOptions {
            stall: Duration::from_secs(self.stall_s),
            strategy: self.strategy,
            shared_on: server.map(Server::addr),
            ..DownloadOptions::default()
        }
    }

    /// `origin` served on `--share`, if given.
    fn share(&self, origin: Origin) -> Result<Option<Server>> {
        let Some(addr) = self.share else { return Ok(None) };
        Ok(Some(Server::start(origin, addr).with_context(|| format!("sharing on {addr}"))?))
    }
}

pub(crate) fn run(command: AssetCommand) -> Result<()> {
    match command {
        AssetCommand::Index { file, json } => index(&file, json),
        AssetCommand::Serve { dir, listen, push, state } => serve(&dir, listen, push, state),
        AssetCommand::Fetch { id, swarm, linger } => fetch(&id, &swarm, linger),
        AssetCommand::Sync { releases, trust, swarm, linger } => {
            sync(&releases, &TrustList::load(&trust)?, &swarm, linger)
        }
    }
}

/// What a report says, as a JSON object (`trellis asset fetch` and `sync`).
fn report_json(report: &DownloadReport) -> serde_json::Value {
    let why = |pairs: &[(String, String)]| -> Vec<serde_json::Value> {
        pairs.iter().map(|(p, why)| serde_json::json!({"peer": p, "why": why})).collect()
    };
    serde_json::json!({
        "resumed": report.resumed,
        "from-origin": report.from_origin,
        "from-peers": report.from_peers,
        "banned": report.banned.iter().map(|b| serde_json::json!({"peer": b.peer, "sent": b.what})).collect::<Vec<_>>(),
        "lost": why(&report.lost),
        "rolled-back": why(&report.rolled_back),
    })
}

fn sync(dir: &Path, trust: &TrustList, swarm: &Swarm, linger: bool) -> Result<()> {
    let started = Instant::now();
    let found = PeerList::new();
    let server = swarm.share(Origin::sharing(&[]))?;
    let (sources, options) = (swarm.sources(&found), swarm.options(server.as_ref()));
    let _lan = swarm.join_lan(&found)?;
    let queue = Queue::new();
    let print = |mut line: serde_json::Value| {
        line["at-s"] = started.elapsed().as_secs_f64().into();
        println!("{line}");
    };
    // Each file is read once per version of it (its size and time).
    let mut seen: BTreeMap<PathBuf, (u64, SystemTime)> = BTreeMap::new();
    // The trusted releases read, by the name of their manifest.
    let mut known: BTreeMap<String, Release> = BTreeMap::new();
    let mut scan = || -> Result<()> {
        let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json" || e == "rolled-back"))
            .collect();
        // Manifests before the rollbacks that name them.
        files.sort_by_key(|p| (p.extension().is_some_and(|e| e == "rolled-back"), p.clone()));
        for path in files {
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            let version = (meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
            if seen.insert(path.clone(), version) == Some(version) {
                continue;
            }
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            if path.extension().is_some_and(|e| e == "rolled-back") {
                let Some(release) = known.get(&name) else { continue };
                let why = std::fs::read_to_string(&path).unwrap_or_default().trim().to_owned();
                let why = if why.is_empty() { "no reason given".to_owned() } else { why };
                let withdrawn: Vec<String> = release
                    .jobs()
                    .iter()
                    .filter(|job| server.as_ref().is_some_and(|s| s.origin().withdraw(&job.id, &why)))
                    .map(|job| job.name.clone())
                    .collect();
                tracing::info!(release = %release.id, "rolled back: {why}");
                print(serde_json::json!({"release": release.id, "rolled-back": why, "withdrawn": withdrawn}));
                continue;
            }
            let release = std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| Ok(Release::from_json(&bytes)?))
                .and_then(|r| r.verify(trust).map(|_| r).map_err(anyhow::Error::from));
            match release {
                Ok(release) => {
                    tracing::info!(release = %release.id, urgency = ?release.urgency, "queued");
                    queue.push(release.jobs());
                    known.insert(name, release);
                }
                Err(e) => print(serde_json::json!({"file": path.display().to_string(), "refused": format!("{e:#}")})),
            }
        }
        Ok(())
    };
    scan()?;
    std::thread::scope(|scope| -> Result<()> {
        let runner = scope.spawn(|| {
            queue.run(
                &swarm.store,
                &sources,
                &options,
                |store| {
                    if let Some(server) = &server {
                        server.origin().share(Arc::clone(store));
                    }
                },
                |Finished { job, paused, result }| {
                    let (release, artifact) = job.name.split_once('/').unwrap_or((&job.name, ""));
                    let mut line = match &result {
                        Ok(report) => report_json(report),
                        Err(e) => serde_json::json!({"error": e.to_string()}),
                    };
                    line["release"] = release.into();
                    line["artifact"] = artifact.into();
                    line["id"] = job.id.to_string().into();
                    line["urgent"] = job.urgent.into();
                    line["paused"] = paused.into();
                    print(line);
                },
            );
        });
        let watched = loop {
            std::thread::sleep(options.poll);
            if let Err(e) = scan() {
                break Err(e);
            }
            if !linger && queue.idle() {
                break Ok(());
            }
        };
        queue.close();
        drop(runner.join());
        watched
    })?;
    Ok(())
}

fn fetch(id: &str, swarm: &Swarm, linger: bool) -> Result<()> {
    let id: AssetId = id.trim_start_matches("sha256:").parse()?;
    let started = Instant::now();
    let found = PeerList::new();
    let sources = swarm.sources(&found);
    let (store, banned) = download::open_within(&swarm.store, id, &sources, &swarm.options(None))?;
    let store = Arc::new(Mutex::new(store));
    let server = swarm.share(Origin::sharing(std::slice::from_ref(&store)))?;
    let _lan = swarm.join_lan(&found)?;
    let mut report = download::download(&store, &sources.without(&banned), &swarm.options(server.as_ref()))?;
    report.banned.splice(0..0, banned);
    let mut out = report_json(&report);
    out["id"] = id.to_string().into();
    out["seconds"] = started.elapsed().as_secs_f64().into();
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
    let origin = Origin::from_dir(dir, OriginConfig { push, state_dir: state, ..OriginConfig::default() })?;
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
