//! The origin: serves the assets of a directory by id, block by block, and
//! pushes the blocks a reader will want next from a recorded read order.
//! The same server lets a device share with its LAN peers the blocks it
//! holds ([`Origin::sharing`]): it serves only those, and says which they
//! are (`GET /v1/assets/<id>/have`: the bitmap in hex, then, while the
//! device fetches one from the origin, a line `origin N` naming that block).
//!
//! Every file in the directory is an asset (its index is computed at start).
//! For each asset the origin keeps a *recorded order*: the longest sequence
//! of blocks one reader (`Trellis-Session`) was sent, in the order it was
//! sent them. When a reader asks for block `b` and `b` is in the recorded
//! order, the response carries `b` and then up to `push` blocks that follow
//! `b` in that order, skipping those the reader's bitmap says it holds and
//! those it was already sent. The recorded orders are kept in `traces.json`
//! under the state directory, if one is given, so a restarted origin still
//! predicts.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use trellis_limits::{Budget, PerPeer};

use crate::wire::{self, HAVE, ROLLED_BACK, SESSION, WANT_HAVE};
use crate::{AssetError, AssetId, BlockStore, Index};

/// Most connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Most connections at once from one peer to a device sharing its blocks:
/// a peer's download keeps one, its reads open one each at a time.
pub const MAX_PER_PEER: usize = 16;
/// A connection idle this long is closed ([`OriginConfig::idle`]).
const IDLE: Duration = Duration::from_secs(30);
/// Most readers whose order is followed at once (the oldest are forgotten).
const MAX_SESSIONS: usize = 4096;

/// How the origin behaves.
#[derive(Debug, Clone)]
pub struct OriginConfig {
    /// Blocks pushed ahead of a read that matches a recorded order (0: no prediction).
    pub push: u32,
    /// Where the recorded orders are kept across restarts (`traces.json`), if anywhere.
    pub state_dir: Option<PathBuf>,
    /// A connection that sends no whole request, or takes none of its
    /// answer, for this long is closed: a client that stops reading, or
    /// trickles its requests, does not hold its thread and its slot.
    pub idle: Duration,
    /// Most connections at once from one address (none: only the total,
    /// [`MAX_CONNECTIONS`]). An origin leaves it unset, since a site's
    /// devices may reach it through one address; a device sharing with its
    /// peers on the LAN ([`Origin::sharing`]) sets [`MAX_PER_PEER`], so one
    /// host cannot take every connection from the others.
    pub max_per_peer: Option<usize>,
}

impl Default for OriginConfig {
    fn default() -> Self {
        Self { push: 16, state_dir: None, idle: IDLE, max_per_peer: None }
    }
}

/// Counters of what the origin sent.
#[derive(Debug, Default)]
pub struct OriginStats {
    /// Response body bytes sent (indexes and frames).
    pub bytes: AtomicU64,
    /// Blocks sent because a reader asked for them.
    pub requested: AtomicU64,
    /// Blocks sent ahead of a reader's request.
    pub pushed: AtomicU64,
}

struct Asset {
    name: String,
    backing: Backing,
    index: Index,
    encoded: Vec<u8>,
}

/// Where an asset's blocks are read from.
enum Backing {
    /// A whole file (the origin).
    File { path: PathBuf, file: File },
    /// A device's store: only the blocks it holds, verified.
    Store(Arc<Mutex<BlockStore>>),
}

impl Asset {
    /// Block `n`'s bytes; `None` when this server does not hold it.
    fn block(&self, n: u32) -> std::io::Result<Option<Vec<u8>>> {
        let Some((start, len)) = self.index.span(n) else { return Ok(None) };
        match &self.backing {
            Backing::File { file, .. } => {
                let mut data = vec![0; len];
                file.read_exact_at(&mut data, start)?;
                Ok(Some(data))
            }
            Backing::Store(store) => {
                let store = store.lock().unwrap_or_else(PoisonError::into_inner);
                if !store.has(n) {
                    return Ok(None);
                }
                store.read(start, len as u64).map(Some).map_err(std::io::Error::other)
            }
        }
    }

    /// The bitmap of the blocks it holds, as hex (every block, for a file).
    fn have_hex(&self) -> String {
        match &self.backing {
            Backing::File { .. } => {
                let count = self.index.count() as usize;
                let mut bits = vec![0xff_u8; count.div_ceil(8)];
                if !count.is_multiple_of(8)
                    && let Some(last) = bits.last_mut()
                {
                    *last = (1 << (count % 8)) - 1;
                }
                hex::encode(bits)
            }
            // A second line names the block the device is fetching from the origin.
            Backing::Store(store) => {
                let store = store.lock().unwrap_or_else(PoisonError::into_inner);
                match store.from_origin() {
                    Some(n) => format!("{}\norigin {n}", store.bitmap_hex()),
                    None => store.bitmap_hex(),
                }
            }
        }
    }

    fn describe(&self) -> String {
        match &self.backing {
            Backing::File { path, .. } => path.display().to_string(),
            Backing::Store(_) => format!("the store of {}", self.name),
        }
    }
}

#[derive(Default)]
struct Session {
    sent: Vec<u32>,
    sent_set: HashSet<u32>,
}

#[derive(Default)]
struct Recorder {
    orders: HashMap<AssetId, Vec<u32>>,
    sessions: HashMap<(AssetId, String), Session>,
    arrival: Vec<(AssetId, String)>,
}

impl Recorder {
    /// Block `block` was asked for: what to send after it.
    fn asked(&mut self, id: AssetId, reader: &str, block: u32, holds: &dyn Fn(u32) -> bool, push: u32) -> Vec<u32> {
        let key = (id, reader.to_owned());
        if !self.sessions.contains_key(&key) {
            if self.arrival.len() >= MAX_SESSIONS {
                let old = self.arrival.remove(0);
                self.sessions.remove(&old);
            }
            self.arrival.push(key.clone());
        }
        let session = self.sessions.entry(key).or_default();
        let mut ahead = Vec::new();
        if let Some(order) = self.orders.get(&id)
            && let Some(p) = order.iter().position(|&b| b == block)
        {
            ahead = order[p + 1..]
                .iter()
                .copied()
                .filter(|&b| b != block && !holds(b) && !session.sent_set.contains(&b))
                .take(push as usize)
                .collect();
        }
        for &b in std::iter::once(&block).chain(&ahead) {
            if session.sent_set.insert(b) {
                session.sent.push(b);
            }
        }
        ahead
    }

    /// The reader's order, if it is longer than the recorded one: it becomes the recorded one.
    fn record(&mut self, id: AssetId, reader: &str) -> bool {
        let Some(session) = self.sessions.get(&(id, reader.to_owned())) else { return false };
        let longer = self.orders.get(&id).is_none_or(|o| session.sent.len() > o.len());
        if longer {
            self.orders.insert(id, session.sent.clone());
        }
        longer
    }
}

/// The assets of a directory, ready to serve.
pub struct Origin {
    assets: RwLock<HashMap<AssetId, Arc<Asset>>>,
    /// Assets this device rolled back, with why: `410 Gone` and the reason.
    withdrawn: RwLock<HashMap<AssetId, String>>,
    config: OriginConfig,
    /// The read orders (none on a device sharing with its peers: it pushes
    /// nothing, so a peer's session header costs it nothing).
    recorder: Option<Mutex<Recorder>>,
    /// What was sent.
    pub stats: OriginStats,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin").field("assets", &self.read().len()).field("config", &self.config).finish()
    }
}

impl Origin {
    /// Every regular file in `dir` as an asset.
    ///
    /// # Errors
    /// The directory or a file cannot be read.
    pub fn from_dir(dir: &Path, config: OriginConfig) -> Result<Self, AssetError> {
        let err = |path: &Path| {
            let path = path.to_owned();
            move |source| AssetError::Store { path, source }
        };
        let mut assets = HashMap::new();
        let mut entries: Vec<_> =
            std::fs::read_dir(dir).map_err(err(dir))?.collect::<Result<_, _>>().map_err(err(dir))?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let path = entry.path();
            if !entry.file_type().map_err(err(&path))?.is_file() {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(err(&path))?;
            let index = Index::of(&bytes);
            let file = File::open(&path).map_err(err(&path))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let encoded = index.encode();
            assets.insert(index.id(), Arc::new(Asset { name, backing: Backing::File { path, file }, index, encoded }));
        }
        let mut recorder = Recorder::default();
        if let Some(traces) = config.state_dir.as_ref().map(|d| d.join("traces.json"))
            && let Ok(text) = std::fs::read_to_string(&traces)
        {
            let saved: HashMap<String, Vec<u32>> = serde_json::from_str(&text).unwrap_or_default();
            recorder.orders = saved.into_iter().filter_map(|(k, v)| Some((k.parse().ok()?, v))).collect();
        }
        Ok(Self {
            assets: RwLock::new(assets),
            withdrawn: RwLock::default(),
            config,
            recorder: Some(Mutex::new(recorder)),
            stats: OriginStats::default(),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<AssetId, Arc<Asset>>> {
        self.assets.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, id: &AssetId) -> Option<Arc<Asset>> {
        self.read().get(id).cloned()
    }

    /// A device sharing with its peers the blocks its stores hold: each
    /// asset's index, the blocks held (a block it does not hold is a 404),
    /// and which those are. Nothing is pushed and no order is recorded.
    /// The stores stay the caller's: a block that a download adds to one
    /// is served from then on. [`Self::share`] adds a store later,
    /// [`Self::unshare`] stops serving one.
    #[must_use]
    pub fn sharing(stores: &[Arc<Mutex<BlockStore>>]) -> Self {
        let config = OriginConfig { push: 0, max_per_peer: Some(MAX_PER_PEER), ..OriginConfig::default() };
        let origin = Self {
            assets: RwLock::default(),
            withdrawn: RwLock::default(),
            config,
            recorder: None,
            stats: OriginStats::default(),
        };
        for store in stores {
            origin.share(store.clone());
        }
        origin
    }

    /// Serve what `store` holds from now on (a download that starts).
    pub fn share(&self, store: Arc<Mutex<BlockStore>>) {
        let (id, index) = {
            let s = store.lock().unwrap_or_else(PoisonError::into_inner);
            (s.id(), s.index().clone())
        };
        let encoded = index.encode();
        let asset = Asset { name: id.to_string(), backing: Backing::Store(store), index, encoded };
        self.withdrawn.write().unwrap_or_else(PoisonError::into_inner).remove(&id);
        self.assets.write().unwrap_or_else(PoisonError::into_inner).insert(id, Arc::new(asset));
    }

    /// Stop serving asset `id` because this device rolled it back: from now
    /// on its index, blocks and bitmap answer `410 Gone` with `reason`, so
    /// the peers that ask see the rollback and stop asking (the first line
    /// of `reason`, at most 1000 characters). Sharing it again
    /// ([`Origin::share`]: a sync's new attempt, a bundle written again)
    /// ends that. Whether it was served.
    pub fn withdraw(&self, id: &AssetId, reason: &str) -> bool {
        // Its first line, as long as a peer reads it.
        let reason: String = reason.lines().next().unwrap_or("").chars().take(wire::GONE_REASON_MAX).collect();
        self.withdrawn.write().unwrap_or_else(PoisonError::into_inner).insert(*id, reason);
        self.unshare(id)
    }

    /// Stop serving asset `id` (one the device no longer keeps): its index,
    /// blocks and bitmap are a 404 from now on ([`Origin::withdraw`] says
    /// why instead). Whether it was served.
    pub fn unshare(&self, id: &AssetId) -> bool {
        self.assets.write().unwrap_or_else(PoisonError::into_inner).remove(id).is_some()
    }

    /// The assets served: name and id.
    #[must_use]
    pub fn assets(&self) -> Vec<(String, AssetId)> {
        let mut out: Vec<_> = self.read().iter().map(|(id, a)| (a.name.clone(), *id)).collect();
        out.sort();
        out
    }

    /// Forget every recorded order (benchmarks: a run without history).
    pub fn forget(&self) {
        if let Some(recorder) = &self.recorder {
            *recorder.lock().unwrap_or_else(PoisonError::into_inner) = Recorder::default();
        }
    }

    fn withdrawn_reason(&self, id: &AssetId) -> Option<String> {
        self.withdrawn.read().unwrap_or_else(PoisonError::into_inner).get(id).cloned()
    }

    /// The asset a `GET /v1/assets/<id>/data` asks for.
    fn whole(&self, req: &wire::Request) -> Option<Arc<Asset>> {
        let id = req.path.strip_prefix("/v1/assets/")?.strip_suffix("/data")?;
        self.get(&id.parse().ok()?).filter(|a| matches!(a.backing, Backing::File { .. }))
    }

    fn respond(&self, req: &wire::Request) -> (u16, Vec<u8>) {
        let parts: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
        let (id, rest) = match parts.as_slice() {
            ["v1", "assets", id, rest @ ..] => (*id, rest),
            _ => return (404, format!("no such path {}", req.path).into_bytes()),
        };
        let Ok(asset_id) = id.parse::<AssetId>() else { return (404, format!("no asset {id}").into_bytes()) };
        if let Some(reason) = self.withdrawn_reason(&asset_id) {
            return (410, format!("{ROLLED_BACK}{reason}").into_bytes());
        }
        let Some(asset) = self.get(&asset_id) else { return (404, format!("no asset {id}").into_bytes()) };
        match rest {
            ["index"] => (200, asset.encoded.clone()),
            ["have"] => (200, asset.have_hex().into_bytes()),
            ["blocks", n] => {
                let Some(n) = n.parse::<u32>().ok().filter(|&n| n < asset.index.count()) else {
                    return (404, format!("asset {id} has no block {n} ({} blocks)", asset.index.count()).into_bytes());
                };
                self.blocks(asset_id, &asset, n, req)
            }
            _ => (404, format!("no such path {}", req.path).into_bytes()),
        }
    }

    fn blocks(&self, id: AssetId, asset: &Asset, n: u32, req: &wire::Request) -> (u16, Vec<u8>) {
        let have = req.header(HAVE).and_then(|h| hex::decode(h).ok()).unwrap_or_default();
        let holds = |b: u32| wire::holds(&have, b);
        let reader = req.header(SESSION).filter(|s| !s.is_empty() && s.len() <= 256);
        let ahead = match reader.zip(self.recorder.as_ref()) {
            Some((reader, recorder)) => {
                let mut r = recorder.lock().unwrap_or_else(PoisonError::into_inner);
                let ahead = r.asked(id, reader, n, &holds, self.config.push);
                if r.record(id, reader) {
                    self.save(&r);
                }
                ahead
            }
            None => Vec::new(),
        };
        let mut body = Vec::new();
        for &b in std::iter::once(&n).chain(&ahead) {
            match asset.block(b) {
                Ok(Some(data)) => wire::frame(&mut body, b, &data),
                Ok(None) if b == n => return (404, format!("asset {id}: block {n} is not held here").into_bytes()),
                Ok(None) => {}
                Err(e) => return (500, format!("reading {}: {e}", asset.describe()).into_bytes()),
            }
        }
        if req.header(WANT_HAVE).is_some() {
            wire::frame(&mut body, wire::HAVE_FRAME, asset.have_hex().as_bytes());
        }
        self.stats.requested.fetch_add(1, Ordering::Relaxed);
        self.stats.pushed.fetch_add(ahead.len() as u64, Ordering::Relaxed);
        (200, body)
    }

    fn save(&self, r: &Recorder) {
        let Some(dir) = &self.config.state_dir else { return };
        let saved: HashMap<String, &Vec<u32>> = r.orders.iter().map(|(k, v)| (k.to_string(), v)).collect();
        let path = dir.join("traces.json");
        let written = serde_json::to_vec(&saved)
            .map_err(std::io::Error::other)
            .and_then(|json| trellis_layout::write_atomic(&path, &json).map_err(|e| e.into_io()));
        if let Err(e) = written {
            tracing::warn!("recorded read orders not saved to {}: {e}", path.display());
        }
    }

    fn serve_connection(&self, stream: TcpStream) -> std::io::Result<()> {
        stream.set_write_timeout(Some(self.config.idle))?;
        stream.set_nodelay(true)?;
        let idle = self.config.idle;
        let overran = "no whole request in time";
        let mut reader = BufReader::new(wire::Timed { stream: stream.try_clone()?, until: None, most: idle, overran });
        let mut writer = BufWriter::new(stream);
        loop {
            // Each request whole within `idle` of the last answer, however
            // its bytes trickle in.
            reader.get_mut().until = Some(Instant::now() + idle);
            let Some(req) = wire::read_request(&mut reader)? else { break };
            if let Some(asset) = self.whole(&req)
                && let Backing::File { file, .. } = &asset.backing
            {
                // The whole asset, or the range asked for, streamed from the file.
                let size = asset.index.size;
                let Some((first, last)) = wire::write_data_head(&mut writer, wire::wanted(&req, size), size)? else {
                    continue;
                };
                if req.is_head() {
                    writer.flush()?;
                    continue;
                }
                let mut buf = vec![0; asset.index.block_size as usize];
                let mut at = first;
                while at <= last {
                    let n = usize::try_from((last - at + 1).min(buf.len() as u64)).unwrap_or(buf.len());
                    file.read_exact_at(&mut buf[..n], at)?;
                    // Counted before it is sent, as the other answers are.
                    self.stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    writer.write_all(&buf[..n])?;
                    at += n as u64;
                }
                writer.flush()?;
                continue;
            }
            let (status, body) = self.respond(&req);
            if !req.is_head() {
                self.stats.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
            }
            wire::write_response(&mut writer, &req, status, &body)?;
        }
        Ok(())
    }
}

/// An accept loop on its own thread: each connection served on a thread of
/// its own by `serve`, at most `max` at once and, with `per_peer`, at most
/// that many from one address (more are closed at once), until the
/// [`Listener`] is dropped.
pub(crate) struct Listener {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Listener {
    /// Listen on `addr` (port 0: any free port); threads named `name`.
    pub(crate) fn start(
        addr: SocketAddr,
        name: &str,
        max: usize,
        per_peer: Option<usize>,
        serve: impl Fn(TcpStream) -> std::io::Result<()> + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let budget = Budget::new(max);
        let per_peer = per_peer.map(PerPeer::new);
        let serve = Arc::new(serve);
        let conn_name = format!("{name}-conn");
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new().name(name.into()).spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    // Slots are given back when the connection's thread ends,
                    // or at once when there is none.
                    let Some(slot) = budget.take() else { continue };
                    let peer_slot = match (&per_peer, stream.peer_addr()) {
                        (None, _) => None,
                        (Some(per_peer), Ok(peer)) => match per_peer.take(peer.ip()) {
                            Some(s) => Some(s),
                            None => {
                                tracing::debug!("{peer}: more than {} connections at once: closed", per_peer.max());
                                continue;
                            }
                        },
                        (Some(_), Err(_)) => continue,
                    };
                    let serve = serve.clone();
                    let spawned = std::thread::Builder::new().name(conn_name.clone()).spawn(move || {
                        let _slots = (slot, peer_slot);
                        if let Err(e) = serve(stream) {
                            tracing::debug!("connection ended: {e}");
                        }
                    });
                    if spawned.is_err() {
                        tracing::warn!("no thread for a connection");
                    }
                }
            })?
        };
        Ok(Self { addr, stop, thread: Some(thread) })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        drop(TcpStream::connect(self.addr));
        if let Some(t) = self.thread.take() {
            drop(t.join());
        }
    }
}

/// A running origin.
#[derive(Debug)]
pub struct Server {
    origin: Arc<Origin>,
    listener: Listener,
}

impl Server {
    /// Serve `origin` on `addr` (port 0: any free port).
    ///
    /// # Errors
    /// The address cannot be bound.
    pub fn start(origin: Origin, addr: SocketAddr) -> std::io::Result<Self> {
        let origin = Arc::new(origin);
        let serving = origin.clone();
        let per_peer = origin.config.max_per_peer;
        let listener = Listener::start(addr, "asset-origin", MAX_CONNECTIONS, per_peer, move |stream| {
            serving.serve_connection(stream)
        })?;
        Ok(Self { origin, listener })
    }

    /// Where it listens.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.listener.addr()
    }

    /// The origin it serves.
    #[must_use]
    pub fn origin(&self) -> &Origin {
        &self.origin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_order_predicts_what_a_later_reader_wants() {
        let id = AssetId([1; 32]);
        let mut r = Recorder::default();
        let none = |_| false;
        // The first reader has no history to follow: nothing is pushed.
        for b in [5, 2, 9, 3, 7] {
            assert!(r.asked(id, "a", b, &none, 2).is_empty());
            r.record(id, "a");
        }
        // A second reader starting the same way gets the next two of the order...
        assert_eq!(r.asked(id, "b", 5, &none, 2), vec![2, 9]);
        // ...but never what it holds, nor what it was already sent.
        assert_eq!(r.asked(id, "b", 2, &|b| b == 3, 2), vec![7]);
        // A block outside the order pushes nothing.
        assert!(r.asked(id, "b", 40, &none, 2).is_empty());
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_device_sharing_with_its_peers_records_no_read_order() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 251) as u8).collect();
        let index = Index::with_block_size(&bytes, 4096);
        let mut store = BlockStore::open(dir.path(), &index.id(), &index).unwrap();
        for n in 0..3u32 {
            let at = n as usize * 4096;
            assert!(store.put(n, &bytes[at..at + 4096]).unwrap());
        }
        let get = |n: u32| wire::Request {
            method: "GET".into(),
            path: format!("/v1/assets/{}/blocks/{n}", index.id()),
            headers: vec![(SESSION.into(), "a peer".into())],
        };
        let sharing = Origin::sharing(&[Arc::new(Mutex::new(store))]);
        for n in [2, 0, 1] {
            assert_eq!(sharing.respond(&get(n)).0, 200);
        }
        let kept = sharing.recorder.as_ref().map_or(0, |r| r.lock().unwrap().sessions.len());
        assert_eq!(kept, 0, "a peer's session is kept");
    }
}
