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
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use trellis_limits::{Budget, PerPeer};

use crate::wire::{self, HAVE, ON_ITS_WAY, PEER, ROLLED_BACK, SESSION, WANT_HAVE};
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
    /// Block requests answered that the block is on its way to another
    /// device of the site (`409`).
    pub on_its_way: AtomicU64,
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
    /// The blocks on their way to devices that named themselves
    /// ([`PEER`]), by the network they go to.
    sending: Mutex<HashMap<(AssetId, u32, IpAddr), Sent>>,
    /// The connections served so far.
    connections: AtomicU64,
    /// What was sent.
    pub stats: OriginStats,
}

/// How long after a block has reached a device that named itself
/// ([`PEER`]) another device asking for it is told it is with that one:
/// a device's word on what it holds reaches its peers within this
/// ([`crate::download`] asks each at least this often).
pub const SENT_GRACE: Duration = crate::download::HAVE_MOST;

/// The most blocks the origin keeps track of at once (on their way to a
/// device that named itself, or sent within [`SENT_GRACE`]); beyond, a
/// block is sent as to a device that did not name itself. A site of 32
/// devices needs a few dozen.
const SENDING_MAX: usize = 1024;

/// A block on its way to a device, or sent to it lately.
struct Sent {
    /// The device's address, as it named itself.
    to: String,
    /// The connection sending it.
    conn: u64,
    /// When its answer was taken (the device asked for its next block, or hung up).
    done: Option<Instant>,
}

/// The network a device asks from, as the origin sees it: the address's
/// /24 (IPv4) or /64 (IPv6). A site's devices behind one NAT share its
/// address, and those the origin reaches directly on one LAN its /24;
/// another site's devices, naming the same private addresses, are apart.
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(v4.to_bits() & !0xff)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => network(IpAddr::V4(v4)),
            None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

/// What a connection sends to a device that named itself: the block on its
/// way, done when the device asks for its next one or the connection ends.
struct Serving<'o> {
    origin: &'o Origin,
    /// This connection's number.
    conn: u64,
    /// The network it comes from (`None`: unknown, nothing is tracked).
    net: Option<IpAddr>,
    block: Option<(AssetId, u32, IpAddr)>,
}

impl<'o> Serving<'o> {
    fn new(origin: &'o Origin, from: Option<SocketAddr>) -> Self {
        let conn = origin.connections.fetch_add(1, Ordering::Relaxed);
        Self { origin, conn, net: from.map(|a| network(a.ip())), block: None }
    }

    /// The device took the block whole (or the connection ended).
    fn done(&mut self) {
        if let Some(key) = self.block.take()
            && let Some(sent) = self.origin.lock_sending().get_mut(&key)
            && sent.conn == self.conn
        {
            sent.done.get_or_insert_with(Instant::now);
        }
    }

    /// The block was not sent after all (an error, a block not held).
    fn forget(&mut self) {
        if let Some(key) = self.block.take() {
            let mut sending = self.origin.lock_sending();
            if sending.get(&key).is_some_and(|sent| sent.conn == self.conn) {
                sending.remove(&key);
            }
        }
    }
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        self.done();
    }
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
            sending: Mutex::default(),
            connections: AtomicU64::new(0),
            stats: OriginStats::default(),
        })
    }

    fn lock_sending(&self) -> std::sync::MutexGuard<'_, HashMap<(AssetId, u32, IpAddr), Sent>> {
        self.sending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Block `n` of `id` goes to the device at `to` on `serving`'s
    /// connection now, unless it is on its way to another device of the same
    /// network, or reached one within [`SENT_GRACE`]: then that one's
    /// address.
    fn send_to(&self, id: AssetId, n: u32, to: &str, serving: &mut Serving<'_>) -> Result<(), String> {
        let Some(net) = serving.net else { return Ok(()) };
        let key = (id, n, net);
        let mut sending = self.lock_sending();
        sending.retain(|_, sent| sent.done.is_none_or(|at| at.elapsed() < SENT_GRACE));
        if let Some(sent) = sending.get(&key)
            && sent.to != to
        {
            return Err(sent.to.clone());
        }
        if sending.len() < SENDING_MAX || sending.contains_key(&key) {
            sending.insert(key, Sent { to: to.to_owned(), conn: serving.conn, done: None });
            serving.block = Some(key);
        }
        Ok(())
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
            sending: Mutex::default(),
            connections: AtomicU64::new(0),
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

    fn respond(&self, req: &wire::Request, serving: &mut Serving<'_>) -> (u16, Vec<u8>) {
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
                self.blocks(asset_id, &asset, n, req, serving)
            }
            _ => (404, format!("no such path {}", req.path).into_bytes()),
        }
    }

    fn blocks(
        &self,
        id: AssetId,
        asset: &Asset,
        n: u32,
        req: &wire::Request,
        serving: &mut Serving<'_>,
    ) -> (u16, Vec<u8>) {
        // A device of a site that names itself is not sent a block that is
        // on its way to another: it takes it from that one.
        let named = req.header(PEER).filter(|to| !to.is_empty() && to.len() <= wire::PEER_MAX && !req.is_head());
        if let Some(to) = named
            && let Err(other) = self.send_to(id, n, to, serving)
        {
            self.stats.on_its_way.fetch_add(1, Ordering::Relaxed);
            return (409, format!("{ON_ITS_WAY}{other}").into_bytes());
        }
        let answer = self.block_answer(id, asset, n, req);
        if answer.0 != 200 {
            serving.forget();
        }
        answer
    }

    /// The answer to a request for block `n`: it and the blocks pushed ahead.
    fn block_answer(&self, id: AssetId, asset: &Asset, n: u32, req: &wire::Request) -> (u16, Vec<u8>) {
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
        let mut serving = Serving::new(self, writer.get_ref().peer_addr().ok());
        loop {
            // Each request whole within `idle` of the last answer, however
            // its bytes trickle in.
            reader.get_mut().until = Some(Instant::now() + idle);
            let Some(req) = wire::read_request(&mut reader)? else { break };
            // The device took the last answer whole: it asks again.
            serving.done();
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
            let (status, body) = self.respond(&req, &mut serving);
            if !req.is_head() {
                self.stats.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
            }
            if let Err(e) = wire::write_response(&mut writer, &req, status, &body) {
                // The device did not get it.
                serving.forget();
                return Err(e);
            }
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

    /// A site's devices that name themselves are sent each block once: the
    /// others of the same network are told which device it is on its way
    /// to, while it is and for [`SENT_GRACE`] after.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_block_on_its_way_to_a_device_that_named_itself_is_not_sent_to_another() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..4 * crate::BLOCK_SIZE).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("release"), &bytes).unwrap();
        let origin = Origin::from_dir(dir.path(), OriginConfig::default()).unwrap();
        let id = Index::of(&bytes).id();
        let request = |method: &str, n: u32, me: Option<&str>| wire::Request {
            method: method.into(),
            path: format!("/v1/assets/{id}/blocks/{n}"),
            headers: me.map(|me| vec![(PEER.into(), me.into())]).unwrap_or_default(),
        };
        let ask = |n, me, serving: &mut Serving<'_>| {
            let (status, body) = origin.respond(&request("GET", n, me), serving);
            (status, if status == 200 { String::new() } else { String::from_utf8(body).unwrap() })
        };
        let ok = (200, String::new());
        let on_its_way = |to: &str| (409, format!("on its way to {to}"));
        let site = |host: u8| Some(SocketAddr::from(([192, 168, 1, host], 40000)));
        let net = network(site(2).unwrap().ip());
        let (a, b, c) = (Some("10.0.0.2:8471"), Some("10.0.0.3:8471"), Some("10.0.0.4:8471"));
        let mut to_a = Serving::new(&origin, site(2));
        assert_eq!(ask(1, a, &mut to_a), ok);
        let mut to_b = Serving::new(&origin, site(3));
        assert_eq!(ask(1, b, &mut to_b), on_its_way("10.0.0.2:8471"));
        assert_eq!(origin.stats.on_its_way.load(Ordering::Relaxed), 1);
        // Another site's device (naming the same private address) and a
        // reader that does not name itself are sent it; another block goes
        // to b.
        let elsewhere = Some(SocketAddr::from(([203, 0, 113, 9], 40000)));
        assert_eq!(ask(1, b, &mut Serving::new(&origin, elsewhere)), ok);
        assert_eq!(ask(1, None, &mut Serving::new(&origin, site(4))), ok);
        assert_eq!(ask(2, b, &mut to_b), ok);
        assert_eq!(ask(2, c, &mut Serving::new(&origin, site(4))), on_its_way("10.0.0.3:8471"));
        // A HEAD sends no block, and marks none.
        let head = origin.respond(&request("HEAD", 0, b), &mut Serving::new(&origin, site(3)));
        assert_eq!(head.0, 200);
        assert_eq!(ask(0, c, &mut Serving::new(&origin, site(4))), ok);
        // Taken whole (a asks for its next block): still with a for a while...
        to_a.done();
        assert_eq!(ask(1, c, &mut Serving::new(&origin, site(4))), on_its_way("10.0.0.2:8471"));
        // ...and not once that is over.
        let long_ago = Instant::now().checked_sub(SENT_GRACE).unwrap();
        origin.lock_sending().get_mut(&(id, 1, net)).unwrap().done = Some(long_ago);
        assert_eq!(ask(1, c, &mut Serving::new(&origin, site(4))), ok);
        // A device asking again on a new connection (the old one broke)
        // takes the block over: the old connection's end does not end it.
        let e = Some("10.0.0.5:8471");
        let mut broken = Serving::new(&origin, site(5));
        assert_eq!(ask(3, e, &mut broken), ok);
        let mut again = Serving::new(&origin, site(5));
        assert_eq!(ask(3, e, &mut again), ok);
        drop(broken);
        assert!(origin.lock_sending()[&(id, 3, net)].done.is_none(), "another connection ended the block");
        drop(again);
        assert!(origin.lock_sending()[&(id, 3, net)].done.is_some(), "a connection that ended sends no more");
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
            assert_eq!(sharing.respond(&get(n), &mut Serving::new(&sharing, None)).0, 200);
        }
        let kept = sharing.recorder.as_ref().map_or(0, |r| r.lock().unwrap().sessions.len());
        assert_eq!(kept, 0, "a peer's session is kept");
    }
}
