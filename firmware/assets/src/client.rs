//! The device's side: reads served from the block store, missing blocks
//! fetched from the origin as they are needed and verified before they are
//! kept.

use std::collections::{HashMap, HashSet};
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::download::PeerList;
use crate::server::{Origin, Server};
use crate::wire::{self, HAVE, SESSION, Timed};
use crate::{AssetError, AssetId, BlockStore, Index};

/// Copies of a block refused before the read fails.
const ATTEMPTS: u32 = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A peer is on the LAN: it answers at once or is not there.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a peer has for its whole answer to one request (a block is 64
/// KiB: half a second at 1 Mbit/s), however it dribbles it.
pub const PEER_DEADLINE: Duration = Duration::from_secs(10);
/// How long a peer that did not answer in time, or could not be reached,
/// is not asked (it may be restarting, or overloaded, or hostile).
pub const PEER_BENCH: Duration = Duration::from_secs(30);
/// Why a read failed when nothing on the device or at a peer had it.
pub(crate) const NO_ORIGIN: &str =
    "no asset origin is configured, and neither the device nor a peer holds what was asked";

/// Counters of what the reads cost.
#[derive(Debug, Default)]
pub struct FetchStats {
    /// Reads that had to wait for the network (a block they needed was missing).
    pub misses: AtomicU64,
    /// Block requests sent.
    pub requests: AtomicU64,
    /// Bytes received (indexes and frames).
    pub bytes: AtomicU64,
    /// Blocks the origin sent ahead that were stored.
    pub pushed: AtomicU64,
    /// Blocks refused because they did not match the index.
    pub refused: AtomicU64,
    /// Blocks a peer on the LAN sent (and matched the index).
    pub from_peers: AtomicU64,
    /// Blocks the origin sent, asked for or pushed ahead (and matched the index).
    pub from_origin: AtomicU64,
}

/// A kept connection to a server of assets (the origin or a peer).
pub(crate) struct Conn {
    reader: BufReader<Timed>,
    writer: TcpStream,
}

impl Conn {
    /// Another handle on this connection's socket (to shut it down from
    /// another thread).
    pub(crate) fn socket(&self) -> std::io::Result<TcpStream> {
        self.writer.try_clone()
    }

    /// One `GET` on this connection: the response's status and body, of at
    /// most `max` bytes (a longer one is refused before it is read).
    pub(crate) fn get(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, String)],
        max: usize,
    ) -> std::io::Result<(u16, Vec<u8>)> {
        self.writer.write_all(request(host, path, headers).as_bytes())?;
        wire::read_response(&mut self.reader, max)
    }

    /// [`Conn::get`] answered whole within `deadline`, however the bytes
    /// trickle in (a peer is not trusted to answer at a useful pace);
    /// `None`: no deadline, as [`Conn::get`] (the origin).
    pub(crate) fn get_within(
        &mut self,
        host: &str,
        path: &str,
        deadline: Option<Duration>,
        max: usize,
    ) -> std::io::Result<(u16, Vec<u8>)> {
        self.get_within_with(host, path, &[], deadline, max)
    }

    /// [`Conn::get_within`] with request `headers`.
    pub(crate) fn get_within_with(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, String)],
        deadline: Option<Duration>,
        max: usize,
    ) -> std::io::Result<(u16, Vec<u8>)> {
        self.reader.get_mut().until = deadline.map(|d| Instant::now() + d);
        let answer = self.get(host, path, headers, max);
        self.reader.get_mut().until = None;
        answer
    }
}

/// A `GET` request's head.
fn request(host: &str, path: &str, headers: &[(&str, String)]) -> String {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// Why a request with a deadline failed when its answer was not whole in time.
pub(crate) const OVERRAN: &str = "no whole answer in time";

/// An asset [`Fetcher::retain`] removed from the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The asset.
    pub id: AssetId,
    /// What its files took on the disk.
    pub bytes: u64,
}

/// Bytes the files directly in `dir` take on the disk (a block store's
/// data file is sparse until every block is there).
fn disk_usage(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).map(|m| m.blocks() * 512).sum())
        .unwrap_or(0)
}

/// Reads assets for the apps of one device.
pub struct Fetcher {
    origin: Option<String>,
    root: PathBuf,
    session: String,
    stores: Mutex<HashMap<AssetId, Arc<Mutex<BlockStore>>>>,
    conn: Mutex<Option<Conn>>,
    /// Peers asked for a block (and an index) before the origin.
    peers: PeerList,
    /// Peers that sent something the index does not vouch for: not asked again.
    banned: Mutex<HashSet<String>>,
    /// Peers that rolled an asset back (`410 Gone`): not asked for it again.
    withdrawn: Mutex<HashSet<(String, AssetId)>>,
    /// Peers that did not answer in time or could not be reached, and until
    /// when they are not asked.
    /// (A peer benched for one asset only has that asset's id beside it.)
    benched: Mutex<HashMap<(String, Option<AssetId>), Instant>>,
    /// For each peer and asset, since when and how long its answers
    /// without the block asked for have taken ([`Fetcher::ask_peer`]).
    misses: Mutex<HashMap<(String, AssetId), (Instant, Duration)>>,
    /// A peer's time for one answer, and how long one that overran it is
    /// not asked.
    peer_deadline: Duration,
    peer_bench: Duration,
    /// The blocks this device holds, served to its peers (a server of its
    /// own, or another fetcher's: [`Fetcher::sharing_through`]).
    server: Option<Arc<Server>>,
    /// Every asset opened is served ([`Fetcher::share`]); else only those
    /// named ([`Fetcher::share_asset`]).
    share_opened: bool,
    /// What the reads cost.
    pub stats: FetchStats,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher").field("origin", &self.origin).field("root", &self.root).finish_non_exhaustive()
    }
}

impl Fetcher {
    /// Assets kept under `root`, missing blocks fetched from `origin`
    /// (`host:port`; `None`: only what is already on the device can be
    /// read). `session` names this reader to the origin (the device and the
    /// boot), so it can follow how this run reads.
    #[must_use]
    pub fn new(origin: Option<String>, root: PathBuf, session: String) -> Self {
        Self {
            origin,
            root,
            session,
            stores: Mutex::new(HashMap::new()),
            conn: Mutex::new(None),
            peers: PeerList::new(),
            banned: Mutex::new(HashSet::new()),
            withdrawn: Mutex::new(HashSet::new()),
            benched: Mutex::new(HashMap::new()),
            misses: Mutex::new(HashMap::new()),
            peer_deadline: PEER_DEADLINE,
            peer_bench: PEER_BENCH,
            server: None,
            share_opened: false,
            stats: FetchStats::default(),
        }
    }

    /// Ask `peers` (each a peer's asset server, `host:port`; the list may
    /// grow while the device runs, as peers are found on the LAN) for a
    /// missing block, and for an index, before the origin. What a peer
    /// sends is checked like the origin's; a peer whose block or index does
    /// not match is never asked again.
    #[must_use]
    pub fn with_peers(mut self, peers: PeerList) -> Self {
        self.peers = peers;
        self
    }

    /// Give a peer `deadline` for its whole answer to one request (an index
    /// or a block; [`PEER_DEADLINE`] unless set); one that overruns it, or
    /// cannot be reached, is not asked for `bench` ([`PEER_BENCH`]), so a
    /// slow or stalling peer costs one deadline, not one per block.
    #[must_use]
    pub fn with_peer_deadline(mut self, deadline: Duration, bench: Duration) -> Self {
        self.peer_deadline = deadline;
        self.peer_bench = bench;
        self
    }

    /// The peers asked before the origin (the list the LAN adds to).
    #[must_use]
    pub fn peers(&self) -> PeerList {
        self.peers.clone()
    }

    /// Serve the blocks this device holds to its peers on `addr` (the
    /// assets already on the device, then each one as it is first read);
    /// an asset [`Fetcher::retain`] removes is no longer served.
    ///
    /// The address it listens on.
    ///
    /// # Errors
    /// The address cannot be listened on.
    pub fn share(&mut self, addr: SocketAddr) -> Result<SocketAddr, AssetError> {
        let server = Server::start(Origin::sharing(&[]), addr).map_err(|source| AssetError::Listen { addr, source })?;
        let bound = server.addr();
        self.server = Some(Arc::new(server));
        self.share_opened = true;
        for id in self.on_device() {
            if let Err(e) = self.store_here(id) {
                tracing::warn!("not shared: {e}");
            }
        }
        Ok(bound)
    }

    /// Serve, on `other`'s sharing server, the assets of this fetcher it
    /// is told to ([`Fetcher::share_asset`]), each under its id beside
    /// `other`'s: one address for a device's peers, whatever the blocks are
    /// for (its apps' assets, a firmware bundle it streamed). Nothing is
    /// served when `other` does not share. Removing an asset
    /// ([`Fetcher::retain`], [`Fetcher::remove`]) stops serving its id
    /// (whichever fetcher served it).
    #[must_use]
    pub fn sharing_through(mut self, other: &Fetcher) -> Self {
        self.server = other.server.clone();
        self.share_opened = false;
        self
    }

    /// Serve asset `id` to the peers from now on, with the blocks of it on
    /// the device (and those read later). Whether it is served: not when
    /// this fetcher has no sharing server, or `id` is not on the device.
    ///
    /// # Errors
    /// Its store on the device cannot be opened (named).
    pub fn share_asset(&self, id: AssetId) -> Result<bool, AssetError> {
        let Some(server) = &self.server else { return Ok(false) };
        let Some(store) = self.store_here(id)? else { return Ok(false) };
        server.origin().share(store);
        Ok(true)
    }

    /// Where this device serves its blocks to its peers ([`Fetcher::share`]).
    #[must_use]
    pub fn shared_on(&self) -> Option<SocketAddr> {
        self.server.as_deref().map(Server::addr)
    }

    /// The assets on the device whose index is in the store, with their
    /// sizes in bytes (however many of their blocks are there).
    #[must_use]
    pub fn held(&self) -> Vec<(AssetId, u64)> {
        let mut held: Vec<_> = self
            .on_device()
            .into_iter()
            .filter_map(|id| Some((id, BlockStore::cached_index(&self.root, &id)?.size)))
            .collect();
        held.sort_by_key(|(id, _)| id.0);
        held
    }

    /// The assets whose directory is in the store.
    fn on_device(&self) -> Vec<AssetId> {
        let entries = std::fs::read_dir(&self.root).into_iter().flatten().filter_map(Result::ok);
        entries.filter_map(|e| e.file_name().to_str()?.parse().ok()).collect()
    }

    fn banned(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.banned.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The peers to ask for asset `id`: not banned, nor having rolled it
    /// back, nor benched, in the order they were found.
    fn trusted_peers(&self, id: AssetId) -> Vec<String> {
        let banned = self.banned();
        let withdrawn = self.withdrawn.lock().unwrap_or_else(PoisonError::into_inner);
        let mut benched = self.benched.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        benched.retain(|_, until| *until > now);
        self.peers
            .peers()
            .into_iter()
            .filter(|p| {
                !banned.contains(p)
                    && !withdrawn.contains(&(p.clone(), id))
                    && !benched.contains_key(&(p.clone(), None))
                    && !benched.contains_key(&(p.clone(), Some(id)))
            })
            .collect()
    }

    /// Until when one read may ask peers before it goes to the origin: a
    /// peer deadline in all, however many peers there are (anyone on the LAN
    /// can announce some that never answer). With no origin, every peer is
    /// asked.
    fn peers_until(&self) -> Option<Instant> {
        self.origin.as_ref().map(|_| Instant::now() + self.peer_deadline)
    }

    /// One request to `peer` within the peer deadline and before `until`,
    /// if half its deadline is left at least (`None` otherwise). A peer that
    /// cannot be reached, does not answer in time, or answers with an error
    /// (other than not holding it, 404, or having rolled it back, 410) is
    /// benched. So, for this asset only, is one whose answers without the
    /// block have taken more than half its deadline in all since the first
    /// of them, within one bench's time: one slow to say it holds nothing
    /// would otherwise cost every read, each answer just under any limit set
    /// on one.
    fn ask_peer(
        &self,
        peer: &str,
        id: AssetId,
        path: &str,
        max: usize,
        until: Option<Instant>,
    ) -> Option<std::io::Result<(u16, Vec<u8>)>> {
        let deadline = match until {
            Some(until) => until.saturating_duration_since(Instant::now()).min(self.peer_deadline),
            None => self.peer_deadline,
        };
        if deadline < self.peer_deadline / 2 {
            return None;
        }
        let asked = Instant::now();
        let answer = peer_get(peer, path, deadline, max);
        let failed = match &answer {
            Err(e) => Some((format!("it did not answer ({e})"), None)),
            Ok((status, body)) if !matches!(status, 200 | 404 | 410) => {
                Some((format!("it answered {status}: {}", crate::download::brief(body)), None))
            }
            Ok((200, _)) => None,
            Ok((status, _)) => self.missed(peer, id, asked.elapsed()).map(|spent| {
                (format!("its answers without the block ({status}) took {:.1} s", spent.as_secs_f32()), Some(id))
            }),
        };
        if let Some((why, only)) = failed {
            tracing::info!(asset = %id, peer, "{why}: not asked for {} s", self.peer_bench.as_secs_f32());
            self.benched
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert((peer.to_owned(), only), Instant::now() + self.peer_bench);
        }
        Some(answer)
    }

    /// Count `took` against `peer`'s answers without a block of asset `id`,
    /// and the time they have taken if that is more than half its deadline
    /// (the count starts again after a bench's time, and after a bench).
    fn missed(&self, peer: &str, id: AssetId, took: Duration) -> Option<Duration> {
        let mut misses = self.misses.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        misses.retain(|_, (since, _)| now.saturating_duration_since(*since) < self.peer_bench);
        let key = (peer.to_owned(), id);
        let (_, spent) = misses.entry(key.clone()).or_insert((now, Duration::ZERO));
        *spent += took;
        let spent = *spent;
        (spent > self.peer_deadline / 2).then(|| {
            misses.remove(&key);
            spent
        })
    }

    /// Whether `answer` says `peer` rolled asset `id` back (`410 Gone`);
    /// then it is not asked for it again.
    fn gone(&self, peer: &str, id: AssetId, answer: &std::io::Result<(u16, Vec<u8>)>) -> bool {
        let Ok((410, why)) = answer else { return false };
        let why = crate::download::rolled_back_reason(why);
        tracing::info!(asset = %id, peer, "the peer rolled it back ({why}): not asked for it again");
        self.withdrawn.lock().unwrap_or_else(PoisonError::into_inner).insert((peer.to_owned(), id));
        true
    }

    fn ban(&self, peer: &str, id: AssetId, what: &str) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(asset = %id, peer, "a peer sent {what} that does not match: not asked again");
        self.banned().insert(peer.to_owned());
    }

    /// The index of `id` from the first peer that has it and whose copy is
    /// the asset's.
    fn index_from_peers(&self, id: AssetId) -> Option<Index> {
        let until = self.peers_until();
        for peer in self.trusted_peers(id) {
            let answer = self.ask_peer(&peer, id, &format!("/v1/assets/{id}/index"), wire::MAX_BODY, until)?;
            if self.gone(&peer, id, &answer) {
                continue;
            }
            let Ok((200, body)) = answer else { continue };
            self.stats.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
            match Index::decode(&body, &id) {
                Ok(index) => return Some(index),
                Err(_) => self.ban(&peer, id, "an index"),
            }
        }
        None
    }

    /// Block `n` from the first peer that holds it; whether one did. A
    /// peer that does not hold it answers 404 and the next one is asked.
    fn block_from_peers(&self, store: &mut BlockStore, n: u32) -> Result<bool, AssetError> {
        let id = store.id();
        let until = self.peers_until();
        let max = wire::block_answer_max(store.index().block_size as usize, store.index().count(), false);
        for peer in self.trusted_peers(id) {
            let Some(answer) = self.ask_peer(&peer, id, &format!("/v1/assets/{id}/blocks/{n}"), max, until) else {
                break;
            };
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            if self.gone(&peer, id, &answer) {
                continue;
            }
            let Ok((200, body)) = answer else { continue };
            self.stats.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
            let block = wire::frames(&body).ok().and_then(|f| f.into_iter().find(|(b, _)| *b == n).map(|(_, d)| d));
            match block {
                Some(data) if store.put(n, data)? => {
                    self.stats.from_peers.fetch_add(1, Ordering::Relaxed);
                    return Ok(true);
                }
                _ => self.ban(&peer, id, &format!("block {n}")),
            }
        }
        Ok(false)
    }

    fn fetch_err(&self, id: AssetId, reason: impl std::fmt::Display) -> AssetError {
        AssetError::Fetch {
            id,
            server: self.origin.clone().unwrap_or_else(|| "(no origin)".into()),
            reason: reason.to_string(),
        }
    }

    /// One request to the origin on the kept connection (made again when it broke).
    fn get(&self, id: AssetId, path: &str, headers: &[(&str, String)]) -> Result<Vec<u8>, AssetError> {
        let Some(origin) = &self.origin else {
            return Err(self.fetch_err(id, NO_ORIGIN));
        };
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let mut last = String::new();
        // A kept connection the origin closed fails once; then a new one is made.
        for _ in 0..2 {
            if conn.is_none() {
                *conn = Some(connect(origin).map_err(|e| self.fetch_err(id, format!("connecting: {e}")))?);
            }
            let Some(c) = conn.as_mut() else { continue };
            match c.get(origin, path, headers, wire::MAX_BODY) {
                Ok((200, body)) => {
                    self.stats.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                    return Ok(body);
                }
                Ok((status, body)) => {
                    return Err(self.fetch_err(id, format!("{status}: {}", String::from_utf8_lossy(&body))));
                }
                Err(e) => {
                    last = e.to_string();
                    *conn = None;
                }
            }
        }
        Err(self.fetch_err(id, last))
    }

    /// The store of asset `id` if it is open or on the device; nothing is
    /// fetched.
    fn store_here(&self, id: AssetId) -> Result<Option<Arc<Mutex<BlockStore>>>, AssetError> {
        if let Some(s) = self.stores.lock().unwrap_or_else(PoisonError::into_inner).get(&id) {
            return Ok(Some(s.clone()));
        }
        let Some(index) = BlockStore::cached_index(&self.root, &id) else { return Ok(None) };
        self.opened(id, &index).map(Some)
    }

    /// The store of asset `id`: opened from the device, or its index fetched first.
    fn store(&self, id: AssetId) -> Result<Arc<Mutex<BlockStore>>, AssetError> {
        if let Some(s) = self.store_here(id)? {
            return Ok(s);
        }
        let index = match self.index_from_peers(id) {
            Some(index) => index,
            None => Index::decode(&self.get(id, &format!("/v1/assets/{id}/index"), &[])?, &id)?,
        };
        self.opened(id, &index)
    }

    /// Open the store of asset `id` with `index`, and keep it (served to the
    /// peers when every store opened is).
    fn opened(&self, id: AssetId, index: &Index) -> Result<Arc<Mutex<BlockStore>>, AssetError> {
        let store = Arc::new(Mutex::new(BlockStore::open(&self.root, &id, index)?));
        let store = self.stores.lock().unwrap_or_else(PoisonError::into_inner).entry(id).or_insert(store).clone();
        if let Some(server) = self.server.as_ref().filter(|_| self.share_opened) {
            server.origin().share(store.clone());
        }
        Ok(store)
    }

    /// Remove from the device every asset not in `keep` (the assets the
    /// installed apps name) and forget its open store. What is in the
    /// store's directory and is not an asset's (a name that is not 64 hex
    /// digits) is left alone. A removed asset that an app names again later
    /// is fetched again, as on first use.
    ///
    /// # Errors
    /// The directory cannot be listed, or an asset's cannot be removed (named).
    pub fn retain(&self, keep: &HashSet<AssetId>) -> Result<Vec<Removed>, AssetError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(AssetError::Store { path: self.root.clone(), source }),
        };
        let mut removed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| AssetError::Store { path: self.root.clone(), source })?;
            let Some(id) = entry.file_name().to_str().and_then(|n| n.parse::<AssetId>().ok()) else { continue };
            if !keep.contains(&id) {
                removed.extend(self.remove(id)?);
            }
        }
        removed.sort_by_key(|r| r.id.0);
        Ok(removed)
    }

    /// Remove asset `id` from the device (no longer served to the peers)
    /// and forget its open store; a read still running on it finishes
    /// first. What was removed, `None` when it was not on the device.
    ///
    /// # Errors
    /// Its directory cannot be removed (named).
    pub fn remove(&self, id: AssetId) -> Result<Option<Removed>, AssetError> {
        if let Some(server) = &self.server {
            server.origin().unshare(&id);
        }
        let open = self.stores.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        let _finished = open.as_ref().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner));
        let path = self.root.join(id.to_string());
        let bytes = disk_usage(&path);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => Ok(Some(Removed { id, bytes })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(AssetError::Store { path, source }),
        }
    }

    /// Remove asset `id` from the device because this device rolled it
    /// back: its peers asking for it from now on are told so, with `why`
    /// (`410 Gone`), and stop asking. What was removed.
    ///
    /// # Errors
    /// Its directory cannot be removed (named).
    pub fn withdraw(&self, id: AssetId, why: &str) -> Result<Option<Removed>, AssetError> {
        if let Some(server) = &self.server {
            server.origin().withdraw(&id, why);
        }
        self.remove(id)
    }

    /// The asset's size in bytes (its index is fetched if it is not on the device).
    ///
    /// # Errors
    /// The index could not be fetched or is not the asset's.
    pub fn size(&self, id: AssetId) -> Result<u64, AssetError> {
        let store = self.store(id)?;
        Ok(store.lock().unwrap_or_else(PoisonError::into_inner).index().size)
    }

    /// `len` bytes of asset `id` at `offset`: blocks not on the device are
    /// fetched, verified and kept first.
    ///
    /// # Errors
    /// The read goes past the end, a block could not be fetched, or the
    /// origin kept sending blocks that do not match the index.
    pub fn read(&self, id: AssetId, offset: u64, len: u64) -> Result<Vec<u8>, AssetError> {
        let store = self.store(id)?;
        let mut store = store.lock().unwrap_or_else(PoisonError::into_inner);
        let size = store.index().size;
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(AssetError::PastEnd { id, offset, len, size });
        }
        let mut missed = false;
        for n in store.index().blocks_for(offset, len) {
            if !store.has(n) {
                missed = true;
                self.fetch_block(&mut store, n)?;
            }
        }
        if missed {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
        }
        store.read(offset, len)
    }

    /// Fetch the whole asset in one response, before anything reads it (for
    /// an app that wants all of it): each block is checked as it arrives and
    /// kept if it matches; the first that does not ends the download.
    ///
    /// # Errors
    /// The origin could not be reached, or sent a block that does not match.
    pub fn fetch_all(&self, id: AssetId) -> Result<(), AssetError> {
        let store = self.store(id)?;
        let mut store = store.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(origin) = &self.origin else {
            return Err(self.fetch_err(id, "no asset origin is configured"));
        };
        let mut c = connect(origin).map_err(|e| self.fetch_err(id, format!("connecting: {e}")))?;
        let req = format!("GET /v1/assets/{id}/data HTTP/1.1\r\nHost: {origin}\r\n\r\n");
        c.writer.write_all(req.as_bytes()).map_err(|e| self.fetch_err(id, e))?;
        let (status, len) = wire::read_response_head(&mut c.reader).map_err(|e| self.fetch_err(id, e))?;
        let size = store.index().size;
        if status != 200 || len != size {
            return Err(self.fetch_err(id, format!("{status}, {len} bytes for an asset of {size}")));
        }
        let mut buf = vec![0; store.index().block_size as usize];
        for n in 0..store.index().count() {
            let (_, len) = store.index().span(n).unwrap_or((0, 0));
            c.reader.read_exact(&mut buf[..len]).map_err(|e| self.fetch_err(id, format!("block {n}: {e}")))?;
            self.stats.bytes.fetch_add(len as u64, Ordering::Relaxed);
            if !store.put_unsynced(n, &buf[..len])? {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                store.commit()?;
                return Err(AssetError::Corrupt { id, block: n, server: origin.clone(), attempts: 1 });
            }
            self.stats.from_origin.fetch_add(1, Ordering::Relaxed);
            if n % 16 == 15 {
                store.commit()?;
            }
        }
        store.commit()
    }

    /// Fetch block `n` from a peer, or else from the origin (and keep what
    /// the origin pushes with it).
    fn fetch_block(&self, store: &mut BlockStore, n: u32) -> Result<(), AssetError> {
        if self.block_from_peers(store, n)? {
            return Ok(());
        }
        let id = store.id();
        let path = format!("/v1/assets/{id}/blocks/{n}");
        for attempt in 1..=ATTEMPTS {
            // A reader with no session is sent nothing ahead: what it holds does
            // not matter to the origin (and a large file's bitmap is long).
            let headers = if self.session.is_empty() {
                Vec::new()
            } else {
                vec![(SESSION, self.session.clone()), (HAVE, store.bitmap_hex())]
            };
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let body = self.get(id, &path, &headers)?;
            let frames = wire::frames(&body).map_err(|e| self.fetch_err(id, format!("block {n}: {e}")))?;
            for (i, (block, data)) in frames.into_iter().enumerate() {
                if i == 0 && block != n {
                    return Err(self.fetch_err(id, format!("asked for block {n}, was sent block {block}")));
                }
                // What the server holds, were it to say (this reader does not ask).
                if block == wire::HAVE_FRAME || store.has(block) {
                    continue;
                }
                if store.put_unsynced(block, data)? {
                    self.stats.from_origin.fetch_add(1, Ordering::Relaxed);
                    if i > 0 {
                        self.stats.pushed.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        asset = %id, block, attempt, server = self.origin.as_deref().unwrap_or(""),
                        "refused a block that does not match the asset's index"
                    );
                }
            }
            store.commit()?;
            if store.has(n) {
                return Ok(());
            }
        }
        Err(AssetError::Corrupt { id, block: n, server: self.origin.clone().unwrap_or_default(), attempts: ATTEMPTS })
    }
}

/// One `GET` to a peer, on a connection of its own, answered whole within
/// `deadline` (the connection included).
fn peer_get(peer: &str, path: &str, deadline: Duration, max: usize) -> std::io::Result<(u16, Vec<u8>)> {
    let until = Instant::now() + deadline;
    let mut conn = connect_within(peer, PEER_CONNECT_TIMEOUT.min(deadline))?;
    conn.get_within(peer, path, Some(until.saturating_duration_since(Instant::now())), max)
}

/// Connect to a server of assets (`host:port`), with the client's timeouts.
pub(crate) fn connect(origin: &str) -> std::io::Result<Conn> {
    connect_within(origin, CONNECT_TIMEOUT)
}

/// A connection to a peer on the LAN ([`PEER_CONNECT_TIMEOUT`]).
pub(crate) fn connect_peer(peer: &str) -> std::io::Result<Conn> {
    connect_within(peer, PEER_CONNECT_TIMEOUT)
}

fn connect_within(origin: &str, timeout: Duration) -> std::io::Result<Conn> {
    let mut last = std::io::Error::other(format!("{origin} resolves to no address"));
    for addr in origin.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                s.set_nodelay(true)?;
                let reader = Timed { stream: s.try_clone()?, until: None, most: IO_TIMEOUT, overran: OVERRAN };
                return Ok(Conn { reader: BufReader::new(reader), writer: s });
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc;

    #[test]
    fn a_body_sent_in_pieces_is_read_whole_and_the_next_short_answer_is_not_held_back() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        // Several blocks long, in uneven pieces, the last one short.
        let big: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(7) % 251) as u8).collect();
        let sent = big.clone();
        let (done, end) = mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut r = std::io::BufReader::new(s.try_clone().unwrap());
            wire::read_request(&mut r).unwrap().unwrap();
            write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", sent.len()).unwrap();
            for piece in sent.chunks(70_001) {
                s.write_all(piece).unwrap();
                std::thread::sleep(Duration::from_millis(30));
            }
            wire::read_request(&mut r).unwrap().unwrap();
            s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nnope.").unwrap();
            // The connection stays open: the reader must not wait for more.
            let _ = end.recv_timeout(Duration::from_secs(10));
        });
        let mut c = connect(&addr).unwrap();
        let started = Instant::now();
        assert_eq!(c.get(&addr, "/big", &[], wire::MAX_BODY).unwrap(), (200, big));
        // Five pieces 30 ms apart: no read waits for its timeout.
        assert!(started.elapsed() < Duration::from_secs(2), "the long answer took {:?}", started.elapsed());
        let started = Instant::now();
        let (status, body) = c.get_within(&addr, "/small", Some(Duration::from_secs(3)), wire::MAX_BODY).unwrap();
        assert_eq!((status, body.as_slice()), (404, &b"nope."[..]));
        assert!(started.elapsed() < Duration::from_secs(1), "the short answer took {:?}", started.elapsed());
        done.send(()).unwrap();
        server.join().unwrap();
    }
}
