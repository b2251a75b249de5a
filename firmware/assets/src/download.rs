//! One asset from several sources at once: the peers on the device's LAN
//! that hold some of its blocks, and the origin for the blocks no peer has.
//!
//! Every source speaks the origin's protocol ([`crate::server`]); a peer
//! says which blocks it holds (`/have`) and is asked again when it has
//! nothing this device lacks, since it may be downloading too. One thread
//! per source asks it for a block at a time, chosen by a
//! [`trellis_swarm::Picker`] (rarest first by default) among the blocks
//! that source holds, this device lacks and no other thread is fetching.
//! The origin is asked only for blocks no reachable peer holds or is
//! fetching from the origin itself (chosen by the same picker: devices that
//! start together ask it for different blocks, then share them). A device
//! says which block it is fetching from the origin in its `/have`; such a
//! claim counts for [`DownloadOptions::claim_ttl`] or twice the longest a
//! block from the origin has taken this device (a slow uplink shared by
//! many; at most half of [`DownloadOptions::stall`]), whichever is longer,
//! so a peer that claims a block and never fetches it delays that block by
//! no more than that. A device that shares its blocks
//! ([`DownloadOptions::shared_on`]) names itself to the origin, which
//! answers a request for a block on its way to another device that named
//! itself with that device's address: a peer of this one is then left the
//! block as if it had claimed it, until the peer says it neither fetches
//! nor holds it; once per block, so a device that names another delays a
//! block by no more than a claim does.
//!
//! Every block is checked against the asset's index before it is kept (the
//! index against the asset's id, which the publisher signed), in a
//! [`BlockStore`]: a download cut by a lost link or a reboot goes on from
//! the verified blocks on the device. A peer that sends a block (or an
//! index) that does not match is banned for the rest of the download and
//! named in the [`DownloadReport`]; nothing it sent is kept. A peer that
//! cannot be reached or breaks off is asked again (it may be starting or
//! restarting); its blocks come from the others meanwhile, and it is
//! dropped when it has not answered for [`DownloadOptions::peer_retry`],
//! or when the blocks it says it holds have not come for that long however
//! it answers (it would keep them from the origin).
//! An origin that cannot be reached is asked again every poll until no
//! block has arrived for [`DownloadOptions::stall`] (connected before a
//! block is taken for it, so that a handshake a saturated uplink drops
//! keeps no block from the peers); one that answers with
//! anything but the block three times ends the download. A peer that rolled
//! the asset back says so (`410 Gone`): it is not asked again, and the
//! report names it ([`DownloadReport::rolled_back`]).

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use trellis_swarm::{Availability, Bitfield, Picker, Strategy};

use crate::client::{Conn, connect, connect_peer};
use crate::{AssetError, AssetId, BlockStore, Index, wire};

/// Copies of a block the origin may send that do not match before the
/// download fails (a peer gets one).
const ORIGIN_ATTEMPTS: u32 = 3;

/// Rounds over the sources [`open`] makes while a peer does not answer (the
/// origin is asked again for up to `stall`).
const PEER_ROUNDS: u32 = 3;

/// Each peer is asked what it holds every [`DownloadOptions::poll`] or every
/// this times the number of peers, whichever is longer: every device asks
/// every peer, N² requests a round in all, so on a large site a device asks
/// all its peers together about 30 times a second at most. (32 devices on
/// two cores, with blocks carrying what the peer holds: 20 MiB in
/// 26.3–28.3 s, against 32.1–32.7 s with every peer asked every 200 ms;
/// docs/benchmarks.md.)
const HAVE_SPACING: Duration = Duration::from_millis(32);

/// The longest [`HAVE_SPACING`] makes a peer wait to be asked again (from
/// 63 peers on), so that a large site still learns within seconds what a
/// peer newly holds; and never more than a quarter of
/// [`DownloadOptions::stall`].
pub(crate) const HAVE_MOST: Duration = Duration::from_secs(2);

/// Up to this many blocks (a bitmap of 1 KiB in hex, a 256 MiB asset), a
/// peer's every block comes with what it holds; beyond, only when it is
/// about due to be asked again ([`HAVE_SPACING`]).
const HAVE_EVERY_BLOCK: u32 = 4096;

/// How long a peer's word on what it holds stands, on a site of `peers`.
fn have_spacing(options: &DownloadOptions, peers: usize) -> Duration {
    let peers = u32::try_from(peers).unwrap_or(u32::MAX);
    let spaced = HAVE_SPACING.saturating_mul(peers).min(HAVE_MOST).min(options.stall / 4);
    options.poll.max(spaced)
}

/// How many peers a download asks at once unless told
/// ([`DownloadOptions::max_peers`]); as many as BitTorrent clients keep
/// connections to for one torrent, and more than a 32-device site needs.
pub const MAX_PEERS: usize = 32;

/// How many peers found on the LAN a [`PeerList`] keeps (the last ones
/// added), and how many of them one download takes: what a list announced
/// by a hostile host may cost.
pub const MAX_FOUND: usize = 256;

/// Why [`open_within`] gave up when its `pause` was set.
pub const PAUSED: &str = "paused before its index arrived";

/// How a download behaves.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// How a peer's next block is chosen.
    pub strategy: Strategy,
    /// How often a peer is asked again what it holds, or every 32 ms times
    /// the number of peers when that is longer (at most 2 s), and how often an
    /// idle source looks for work.
    pub poll: Duration,
    /// The download fails when no block has arrived for this long.
    pub stall: Duration,
    /// A peer that does not answer (not up yet, restarting, gone) is asked
    /// again every `poll` and dropped when it has not answered for this long;
    /// so is one whose answers to block requests have not been the block
    /// for this long, since the first of them was asked.
    pub peer_retry: Duration,
    /// How long a peer has for its whole answer to one request (what it
    /// holds, the index, a block). One that overruns it with a block is
    /// dropped from the download: it held that block from the other
    /// sources for that long, and a hostile peer would hold it for ever.
    pub peer_deadline: Duration,
    /// How long a peer's word that it is fetching a block from the origin
    /// keeps this device from asking the origin for the same block, at
    /// least: twice the longest a block from the origin has taken this
    /// download, when that is longer.
    pub claim_ttl: Duration,
    /// Seeds the pickers' tie-breaking (each source's picker gets its own):
    /// random unless set, so that devices starting together with the same
    /// view ask the origin for different blocks.
    pub seed: u64,
    /// Set (from another thread) to pause the download: its sources stop
    /// within `poll`, the blocks verified so far stay in the store, and
    /// [`download`] returns a report that says [`DownloadReport::paused`].
    /// A later download of the same store goes on from there
    /// ([`crate::queue`] pauses a download for an urgent one).
    pub pause: Option<Arc<AtomicBool>>,
    /// At most this many peers are asked at once (a thread each), in the
    /// order they were given and found; another takes the place of each
    /// one dropped, and of each that has sent no block for `peer_retry`
    /// (it waits its turn again). Anyone on the LAN can announce peers, and
    /// a thread for each would let them have as many as they like.
    pub max_peers: usize,
    /// Where this device shares its blocks: its block requests to the
    /// origin name it (an unspecified address, `0.0.0.0`, as the address
    /// of the device's end of the connection), and the origin tells it when
    /// a block is on its way to another device of the site that did so
    /// ([`crate::server::SENT_GRACE`]). `None`: the origin sends every block
    /// asked for.
    pub shared_on: Option<SocketAddr>,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self {
            strategy: Strategy::RarestFirst,
            poll: Duration::from_millis(200),
            stall: Duration::from_secs(60),
            peer_retry: Duration::from_secs(10),
            peer_deadline: crate::client::PEER_DEADLINE,
            claim_ttl: Duration::from_secs(5),
            seed: {
                use std::hash::BuildHasher;
                // Random keys per process (from the OS) and per call.
                std::collections::hash_map::RandomState::new().hash_one(0_u8)
            },
            pause: None,
            max_peers: MAX_PEERS,
            shared_on: None,
        }
    }
}

/// Where an asset can come from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The fleet's origin (`host:port`), if one is reachable.
    pub origin: Option<String>,
    /// Peers on the LAN (`host:port` of their asset servers).
    pub peers: Vec<String>,
    /// Peers found while the download runs (announced on the LAN): each one
    /// added is asked too from then on.
    pub found: Option<PeerList>,
}

/// Peers found on the LAN, shared by whoever finds them (an mDNS browse)
/// and the downloads that ask them: a download given the list
/// ([`Sources::found`]) looks at it every [`DownloadOptions::poll`].
#[derive(Debug, Clone, Default)]
pub struct PeerList(Arc<Mutex<Vec<String>>>);

impl PeerList {
    /// An empty list.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `peer` (`host:port`); whether it was new. The list keeps the
    /// last [`MAX_FOUND`] peers added: the one added longest ago makes room
    /// (an address no longer in use, or one of a flood; a peer still there
    /// announces itself again).
    pub fn add(&self, peer: &str) -> bool {
        let mut list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if list.iter().any(|p| p == peer) {
            return false;
        }
        if list.len() >= MAX_FOUND {
            let old = list.remove(0);
            tracing::debug!(peer, "{MAX_FOUND} peers known: {old} makes room");
        }
        list.push(peer.to_owned());
        true
    }

    /// The peers found so far, in the order they were.
    #[must_use]
    pub fn peers(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Sources {
    /// The same without the peers `banned` names (those whose index did not
    /// match, from [`open`]): they are not asked for blocks either.
    #[must_use]
    pub fn without(&self, banned: &[Banned]) -> Self {
        let peers = self.peers.iter().filter(|p| !banned.iter().any(|b| &b.peer == *p)).cloned().collect();
        Self { origin: self.origin.clone(), peers, found: self.found.clone() }
    }
}

/// A peer that sent something that does not match the asset's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Banned {
    /// The peer.
    pub peer: String,
    /// What it sent: `block N` or `index`.
    pub what: String,
}

impl std::fmt::Display for Banned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "peer {} sent a {} that does not match the asset's index", self.peer, self.what)
    }
}

/// What a download did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownloadReport {
    /// Blocks on the device before it began (verified; not fetched again).
    pub resumed: u32,
    /// Blocks from the origin.
    pub from_origin: u32,
    /// Blocks from each peer.
    pub from_peers: BTreeMap<String, u32>,
    /// Peers banned for sending what does not match.
    pub banned: Vec<Banned>,
    /// Peers dropped because they could not be reached or broke off, with why.
    pub lost: Vec<(String, String)>,
    /// Peers that said they rolled the asset back (`410 Gone`), with why:
    /// not asked again (what they sent before was verified and stays).
    pub rolled_back: Vec<(String, String)>,
    /// Paused ([`DownloadOptions::pause`]) before it held every block.
    pub paused: bool,
}

/// The store of asset `id` under `root`, with its index from the device,
/// else from the first peer whose index matches the id, else the origin.
/// Peers whose index does not match are returned, to be banned. While a
/// source does not answer at all, every source is asked again a second
/// later ([`open_within`], with the default options).
///
/// # Errors
/// No source sent an index that matches, or the store cannot be made.
pub fn open(root: &Path, id: AssetId, sources: &Sources) -> Result<(BlockStore, Vec<Banned>), AssetError> {
    open_within(root, id, sources, &DownloadOptions::default())
}

/// [`open`] with `options`: a peer has [`DownloadOptions::peer_deadline`]
/// for the index; while the origin does not answer at all the sources are
/// asked again every second for up to [`DownloadOptions::stall`], as a
/// download asks an origin that does not answer (32 devices starting at
/// once behind a saturated uplink: one's connection to the origin timed out
/// three times in a row); while only a peer does not, three rounds in all.
/// Set, [`DownloadOptions::pause`] ends it before the next source is asked,
/// with [`PAUSED`].
///
/// # Errors
/// As [`open`].
pub fn open_within(
    root: &Path,
    id: AssetId,
    sources: &Sources,
    options: &DownloadOptions,
) -> Result<(BlockStore, Vec<Banned>), AssetError> {
    let mut banned = Vec::new();
    if let Some(index) = BlockStore::cached_index(root, &id) {
        return Ok((BlockStore::open(root, &id, &index)?, banned));
    }
    let mut last = String::from("no source to ask");
    let started = Instant::now();
    let paused = || options.pause.as_ref().is_some_and(|p| p.load(Ordering::Relaxed));
    // A source that does not answer at all is asked again a second later:
    // a peer (it may be starting) three rounds in all, the origin (a
    // saturated uplink drops packets) until `stall` has passed.
    for round in 1.. {
        let (mut unanswered, mut origin_unanswered) = (false, false);
        let all = sources.peers.iter().map(|p| (p, true)).chain(sources.origin.iter().map(|o| (o, false)));
        for (source, is_peer) in all {
            if paused() {
                return Err(AssetError::Fetch { id, server: describe(sources), reason: PAUSED.into() });
            }
            if banned.iter().any(|b| &b.peer == source) || (round > 1 && started.elapsed() >= options.stall) {
                continue;
            }
            let path = format!("/v1/assets/{id}/index");
            let got = connect(source).and_then(|mut c| {
                c.get_within(source, &path, is_peer.then_some(options.peer_deadline), wire::MAX_BODY)
            });
            match got {
                Ok((200, body)) => match Index::decode(&body, &id) {
                    Ok(index) => return Ok((BlockStore::open(root, &id, &index)?, banned)),
                    Err(e) if is_peer => {
                        tracing::warn!(asset = %id, peer = %source, "banned: {e}");
                        banned.push(Banned { peer: source.clone(), what: "index".into() });
                    }
                    Err(e) => last = e.to_string(),
                },
                Ok((status, body)) => last = format!("{source}: {status}: {}", brief(&body)),
                Err(e) => {
                    unanswered = true;
                    origin_unanswered |= !is_peer;
                    last = format!("{source}: {e}");
                }
            }
        }
        let again = (unanswered && round < PEER_ROUNDS) || (origin_unanswered && started.elapsed() < options.stall);
        if !again {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Err(AssetError::Fetch { id, server: describe(sources), reason: format!("no source sent its index ({last})") })
}

fn describe(sources: &Sources) -> String {
    let mut all: Vec<&str> = sources.peers.iter().map(String::as_str).collect();
    all.extend(sources.origin.as_deref());
    if all.is_empty() { "(no source)".into() } else { all.join(", ") }
}

struct State {
    mine: Bitfield,
    in_flight: Bitfield,
    availability: Availability,
    /// What each peer holds, as far as it last said (`None` until it has said).
    theirs: Vec<Option<Bitfield>>,
    /// Peers dropped or banned.
    gone: usize,
    /// Peers that said what they hold, or are gone: the origin waits for
    /// every one, so it is not asked for a block a peer holds.
    heard: Vec<bool>,
    /// The block each peer said it is fetching from the origin, and since
    /// when it has said so.
    claims: Vec<Option<(u32, Instant)>>,
    /// Each peer's address, by its number.
    addrs: Vec<String>,
    /// The blocks the origin said were on their way to another device (a
    /// peer of this one: its number and since when, a claim until that peer
    /// says otherwise; not a peer: `None`). Each is asked for again without
    /// naming this device.
    told: HashMap<u32, Option<(usize, Instant)>>,
    /// Why the origin did not answer, while it does not.
    origin_unreachable: Option<String>,
    /// The longest a block from the origin has taken.
    origin_block: Duration,
    report: DownloadReport,
    last_block: Instant,
    failed: Option<AssetError>,
    done: bool,
    /// How many peers wait their turn to be asked.
    waiting: usize,
    /// Peers that made room for those waiting, to wait their turn again.
    rotated: Vec<usize>,
}

struct Shared<'a> {
    id: AssetId,
    store: &'a Mutex<BlockStore>,
    state: Mutex<State>,
    wake: Condvar,
    options: &'a DownloadOptions,
    /// The connection each source's thread uses (a peer by its number, the
    /// origin as [`ORIGIN_CONN`]), to hang up on when the download ends: a
    /// thread waiting for an answer then returns at once instead of when
    /// its request runs out. `None` once hung up: no more connections.
    conns: Mutex<Option<HashMap<usize, TcpStream>>>,
}

/// The origin's key in [`Shared::conns`].
const ORIGIN_CONN: usize = usize::MAX;

/// A source a thread asks: its key in [`Shared::conns`] (a peer's number,
/// or [`ORIGIN_CONN`]) and its address.
#[derive(Clone, Copy)]
struct Source<'s> {
    key: usize,
    addr: &'s str,
}

impl Shared<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keep block `n` if it matches; `Ok(false)` if it does not.
    fn keep(&self, n: u32, data: &[u8], from: Option<&str>) -> Result<bool, AssetError> {
        let kept = self.store.lock().unwrap_or_else(PoisonError::into_inner).put(n, data)?;
        let mut s = self.lock();
        s.in_flight.clear(n);
        if kept {
            s.mine.set(n);
            s.last_block = Instant::now();
            match from {
                Some(peer) => *s.report.from_peers.entry(peer.to_owned()).or_default() += 1,
                None => s.report.from_origin += 1,
            }
            if s.mine.is_full() {
                s.done = true;
            }
        }
        drop(s);
        self.wake.notify_all();
        Ok(kept)
    }

    fn fail(&self, e: AssetError) {
        let mut s = self.lock();
        s.failed.get_or_insert(e);
        s.done = true;
        drop(s);
        self.wake.notify_all();
    }

    /// Peer `i` is gone: its blocks no longer count, the one it was sending is free.
    fn drop_peer(&self, i: usize, n: Option<u32>) {
        self.heard(i, None, None, None);
        let mut s = self.lock();
        s.gone += 1;
        if let Some(n) = n {
            s.in_flight.clear(n);
        }
        drop(s);
        self.wake.notify_all();
    }

    /// Peer `i` said what it holds (`Some`, in answer to a request sent at
    /// `asked`) and which block it is fetching from the origin, or did not
    /// answer (`None`: its blocks do not count until it does).
    fn heard(&self, i: usize, held: Option<Bitfield>, claim: Option<u32>, asked: Option<Instant>) {
        let mut s = self.lock();
        s.claims[i] = match (s.claims[i], claim) {
            (Some((old, since)), Some(n)) if old == n => Some((n, since)),
            (_, claim) => claim.map(|n| (n, Instant::now())),
        };
        if let Some(old) = s.theirs[i].take() {
            s.availability.remove(&old);
        }
        // The origin said a block was on its way to this peer: an answer
        // asked for since that neither claims nor holds it says it is not
        // (a device of another site with the same address), and the block
        // is not left to the peer any longer.
        if let (Some(held), Some(asked)) = (&held, asked) {
            for (&n, told) in &mut s.told {
                if told.is_some_and(|(peer, since)| peer == i && since < asked && !held.has(n) && claim != Some(n)) {
                    *told = None;
                }
            }
        }
        if let Some(held) = held {
            s.availability.add(&held);
            s.theirs[i] = Some(held);
        }
        s.heard[i] = true;
        drop(s);
        self.wake.notify_all();
    }

    /// Peer `i` has sent no block for `peer_retry`: if others wait their
    /// turn, it makes room (its word on what it holds no longer counts, its
    /// connection is closed) and waits its turn again; whether it did.
    fn rotate(&self, i: usize) -> bool {
        {
            // One peer waiting makes room for one peer only.
            let mut s = self.lock();
            if s.waiting == 0 {
                return false;
            }
            s.waiting -= 1;
        }
        self.heard(i, None, None, None);
        if let Some(conns) = self.conns.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            conns.remove(&i);
        }
        self.lock().rotated.push(i);
        self.wake.notify_all();
        true
    }

    /// `conn`, kept under `key` to hang up on at the end; an error once the
    /// download has ended.
    fn register(&self, key: usize, conn: Conn) -> std::io::Result<Conn> {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(conns) = conns.as_mut() else { return Err(std::io::Error::other("the download has ended")) };
        conns.insert(key, conn.socket()?);
        Ok(conn)
    }

    /// A connection to `source`, kept to hang up on at the end: made on a
    /// thread of its own and waited for while the download goes on; `None`
    /// when it ended first. A handshake that is dropped (a saturated uplink,
    /// a peer that is gone) is given up only after the client's connection
    /// timeout (the origin's, or a peer's on the LAN), and a download that
    /// meanwhile got every block does not wait for that.
    fn connect(&self, source: Source<'_>) -> Option<std::io::Result<Conn>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let addr = source.addr.to_owned();
        let peer = source.key != ORIGIN_CONN;
        let spawned = std::thread::Builder::new()
            .name("asset-connect".into())
            .spawn(move || drop(tx.send(if peer { connect_peer(&addr) } else { connect(&addr) })));
        if let Err(e) = spawned {
            return Some(Err(e));
        }
        loop {
            match rx.recv_timeout(self.options.poll) {
                Ok(conn) => return Some(conn.and_then(|c| self.register(source.key, c))),
                Err(RecvTimeoutError::Timeout) if self.lock().done => return None,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Some(Err(std::io::Error::other("the connecting thread ended")));
                }
            }
        }
    }

    /// Hang up every source's connection: the download has ended.
    fn hang_up(&self) {
        let conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner).take();
        for socket in conns.into_iter().flat_map(HashMap::into_values) {
            drop(socket.shutdown(std::net::Shutdown::Both));
        }
    }

    /// The longest answer to a block request (with what the server holds,
    /// or not) and to `/have`, for this asset.
    fn answers_max(&self) -> (impl Fn(bool) -> usize + use<>, usize) {
        let store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        let (block, blocks) = (usize::try_from(store.index().block_size).unwrap_or(usize::MAX), store.index().count());
        (move |with_have| wire::block_answer_max(block, blocks, with_have), wire::have_answer_max(blocks))
    }

    /// How long a peer's word on what it holds stands before it is asked
    /// again ([`HAVE_SPACING`]).
    fn have_every(&self, s: &State) -> Duration {
        have_spacing(self.options, s.theirs.len().saturating_sub(s.gone + s.waiting))
    }

    /// Wait until something changes or `poll` passes.
    fn idle<'g>(&self, s: std::sync::MutexGuard<'g, State>) -> std::sync::MutexGuard<'g, State> {
        self.wake.wait_timeout(s, self.options.poll).unwrap_or_else(PoisonError::into_inner).0
    }
}

/// Download the blocks of `store`'s asset that it lacks, from `sources`,
/// until it holds every one.
///
/// # Errors
/// The origin kept sending blocks that do not match, no block arrived for
/// [`DownloadOptions::stall`], no source is left that holds a missing
/// block, or the store could not be written.
pub fn download(
    store: &Mutex<BlockStore>,
    sources: &Sources,
    options: &DownloadOptions,
) -> Result<DownloadReport, AssetError> {
    let (id, count, mine) = {
        let s = store.lock().unwrap_or_else(PoisonError::into_inner);
        let count = s.index().count();
        let mut mine = Bitfield::empty(count);
        for n in (0..count).filter(|&n| s.has(n)) {
            mine.set(n);
        }
        (s.id(), count, mine)
    };
    let report = DownloadReport { resumed: mine.count(), ..DownloadReport::default() };
    if mine.is_full() {
        return Ok(report);
    }
    let state = State {
        mine,
        in_flight: Bitfield::empty(count),
        availability: Availability::new(count),
        theirs: vec![None; sources.peers.len()],
        gone: 0,
        // Those asked at once are waited for; those that wait their turn are not.
        heard: (0..sources.peers.len()).map(|i| i >= options.max_peers.max(1)).collect(),
        claims: vec![None; sources.peers.len()],
        addrs: sources.peers.clone(),
        told: HashMap::new(),
        origin_unreachable: None,
        origin_block: Duration::ZERO,
        report,
        last_block: Instant::now(),
        failed: None,
        done: false,
        waiting: 0,
        rotated: Vec::new(),
    };
    let shared = Shared {
        id,
        store,
        state: Mutex::new(state),
        wake: Condvar::new(),
        options,
        conns: Mutex::new(Some(HashMap::new())),
    };
    std::thread::scope(|scope| {
        if let Some(origin) = &sources.origin {
            let shared = &shared;
            scope.spawn(move || from_origin(shared, origin));
        }
        watch(&shared, sources, |i, peer| {
            let shared = &shared;
            scope.spawn(move || from_peer(shared, i, &peer));
        });
        shared.hang_up();
    });
    let s = shared.state.into_inner().unwrap_or_else(PoisonError::into_inner);
    match s.failed {
        Some(e) => Err(e),
        None => Ok(s.report),
    }
}

/// Wait for the end: every block, a failure, a stall, or no source left.
/// Meanwhile each peer given or added to [`Sources::found`] is handed to
/// `ask` with its number (a thread that asks it), at most
/// [`DownloadOptions::max_peers`] at a time: each peer is asked, waits its
/// turn, or is gone.
fn watch(shared: &Shared<'_>, sources: &Sources, mut ask: impl FnMut(usize, String)) {
    let mut known = sources.peers.clone();
    let mut seen: std::collections::HashSet<String> = known.iter().cloned().collect();
    let mut waiting: std::collections::VecDeque<(usize, String)> = known.iter().cloned().enumerate().collect();
    let mut s = shared.lock();
    while !s.done {
        for peer in sources.found.as_ref().map(PeerList::peers).unwrap_or_default() {
            // However many a flood announces, one download takes MAX_FOUND of them.
            if known.len() - sources.peers.len() >= MAX_FOUND {
                break;
            }
            if seen.insert(peer.clone()) {
                known.push(peer.clone());
                s.theirs.push(None);
                // The origin does not wait for a peer found later to say what it
                // holds: anyone on the LAN can announce one (and one that never
                // answers would hold the origin for a deadline each).
                s.heard.push(true);
                s.claims.push(None);
                s.addrs.push(peer.clone());
                waiting.push_back((known.len() - 1, peer));
            }
        }
        for i in std::mem::take(&mut s.rotated) {
            tracing::debug!(asset = %shared.id, peer = known[i], "no block from the peer for a while: it waits its turn");
            waiting.push_back((i, known[i].clone()));
        }
        while s.theirs.len() - s.gone - waiting.len() < shared.options.max_peers.max(1)
            && let Some((i, peer)) = waiting.pop_front()
        {
            if i >= sources.peers.len() {
                tracing::debug!(asset = %shared.id, peer, "asking a peer found on the LAN");
            }
            ask(i, peer);
        }
        s.waiting = waiting.len();
        if shared.options.pause.as_ref().is_some_and(|p| p.load(Ordering::SeqCst)) {
            s.report.paused = true;
            s.done = true;
            break;
        }
        let missing = s.mine.len() - s.mine.count();
        let reason = if s.last_block.elapsed() >= shared.options.stall {
            let origin = s.origin_unreachable.as_ref().map(|why| format!(" (the origin: {why})")).unwrap_or_default();
            Some(format!("no block arrived for {} s{origin}", shared.options.stall.as_secs()))
        } else if sources.origin.is_none() && sources.found.is_none() && s.gone == s.theirs.len() {
            Some("every peer is gone and there is no origin".into())
        } else {
            None
        };
        if let Some(reason) = reason {
            let e = AssetError::Fetch {
                id: shared.id,
                server: describe(sources),
                reason: format!("{reason}; {missing} of {} blocks missing", s.mine.len()),
            };
            s.failed.get_or_insert(e);
            s.done = true;
            break;
        }
        s = shared.idle(s);
    }
    drop(s);
    shared.wake.notify_all();
}

/// The bitmap a server sent, as a [`Bitfield`] of `len` blocks.
fn bitfield(hex_bits: &str, len: u32) -> Option<Bitfield> {
    let bytes = hex::decode(hex_bits.trim()).ok()?;
    let mut b = Bitfield::empty(len);
    for n in (0..len).filter(|&n| wire::holds(&bytes, n)) {
        b.set(n);
    }
    Some(b)
}

/// A peer's `/have`: the blocks it holds and the one it says it is fetching
/// from the origin (a line `origin N`; other lines are for later versions).
fn have(body: &[u8], len: u32) -> Option<(Bitfield, Option<u32>)> {
    let text = std::str::from_utf8(body).ok()?;
    let mut lines = text.lines();
    let held = bitfield(lines.next().unwrap_or(""), len)?;
    let claim = lines
        .filter_map(|l| l.strip_prefix("origin "))
        .find_map(|n| n.trim().parse::<u32>().ok())
        .filter(|&n| n < len && !held.has(n));
    Some((held, claim))
}

/// Longest reason for a rollback a peer's `410 Gone` is believed to give.
const REASON_MAX: usize = 200;

/// Why a peer says it rolled the asset back: the first line of its answer,
/// without the protocol's prefix, at most [`REASON_MAX`] characters (a peer
/// is not trusted with the size of its report).
pub(crate) fn rolled_back_reason(body: &[u8]) -> String {
    let line = first_line(body);
    let why = line.strip_prefix(wire::ROLLED_BACK).unwrap_or(&line);
    why.chars().take(REASON_MAX).collect()
}

/// What a server's answer says, for a report or a log: its first line, at
/// most [`REASON_MAX`] characters.
pub(crate) fn brief(body: &[u8]) -> String {
    first_line(body).chars().take(REASON_MAX).collect()
}

/// The first line of an answer (of its first few hundred characters).
fn first_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(8 * REASON_MAX)]);
    text.lines().next().unwrap_or("").trim().to_owned()
}

/// What a server answered a request for a block with.
enum Answer {
    /// The block, and what the server holds when asked and it said.
    Block(Vec<u8>, Option<Vec<u8>>),
    /// The origin, to a device that named itself: the block is on its way
    /// to the device at this address.
    OnItsWay(String),
}

impl Answer {
    /// The block and what the server holds; that the block is on its way
    /// elsewhere is not an answer a peer gives.
    fn block(self) -> Result<(Vec<u8>, Option<Vec<u8>>), String> {
        match self {
            Self::Block(data, held) => Ok((data, held)),
            Self::OnItsWay(to) => Err(format!("{}{to}", wire::ON_ITS_WAY)),
        }
    }
}

/// Block `n` from the origin, naming this device if `named`.
fn fetch(
    shared: &Shared<'_>,
    source: Source<'_>,
    conn: &mut Option<Conn>,
    n: u32,
    named: Option<&str>,
    max: usize,
) -> Result<Answer, String> {
    fetch_asking(shared, source, conn, n, None, false, named, max)
}

/// Block `n` within `deadline`, with `want_have` what the server holds
/// when it says (the body of a `/have` answer, unchecked; a peer that does
/// not say answers the block alone); with `named`, naming this device to
/// the origin ([`wire::PEER`]).
#[allow(clippy::too_many_arguments)]
fn fetch_asking(
    shared: &Shared<'_>,
    source: Source<'_>,
    conn: &mut Option<Conn>,
    n: u32,
    deadline: Option<Duration>,
    want_have: bool,
    named: Option<&str>,
    max: usize,
) -> Result<Answer, String> {
    let id = shared.id;
    if conn.is_none() {
        let connected = shared.connect(source).unwrap_or_else(|| Err(std::io::Error::other("the download has ended")));
        *conn = Some(connected.map_err(|e| format!("connecting: {e}"))?);
    }
    let Some(c) = conn.as_mut() else { return Err("no connection".into()) };
    let path = format!("/v1/assets/{id}/blocks/{n}");
    let mut headers = Vec::new();
    if want_have {
        headers.push((wire::WANT_HAVE, "1".to_owned()));
    }
    if let Some(me) = named {
        headers.push((wire::PEER, me.to_owned()));
    }
    let (status, body) = c.get_within_with(source.addr, &path, &headers, deadline, max).map_err(|e| {
        *conn = None;
        e.to_string()
    })?;
    if status == 409
        && named.is_some()
        && let Some(to) = first_line(&body).strip_prefix(wire::ON_ITS_WAY)
        && to.len() <= wire::PEER_MAX
    {
        return Ok(Answer::OnItsWay(to.to_owned()));
    }
    if status != 200 {
        return Err(format!("block {n}: {status}: {}", brief(&body)));
    }
    let frames = wire::frames(&body).map_err(|e| format!("block {n}: {e}"))?;
    let held = frames.iter().find(|(b, _)| want_have && *b == wire::HAVE_FRAME).map(|(_, text)| text.to_vec());
    match frames.first() {
        Some((b, data)) if *b == n => Ok(Answer::Block(data.to_vec(), held)),
        Some((b, _)) => Err(format!("asked for block {n}, was sent block {b}")),
        None => Err(format!("block {n}: an empty response")),
    }
}

/// This device as its LAN peers reach it, for the origin ([`wire::PEER`]):
/// where it shares, its address the one of its end of `conn` when it
/// shares on every address.
fn named(conn: &Conn, shared_on: SocketAddr) -> Option<String> {
    if !shared_on.ip().is_unspecified() {
        return Some(shared_on.to_string());
    }
    let local = conn.socket().ok()?.local_addr().ok()?;
    Some(SocketAddr::new(local.ip(), shared_on.port()).to_string())
}

/// Whether two `host:port` name the same address.
fn same_addr(a: &str, b: &str) -> bool {
    match (a.parse::<SocketAddr>(), b.parse::<SocketAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn from_peer(shared: &Shared<'_>, i: usize, peer: &str) {
    let id = shared.id;
    let mut picker = Picker::new(shared.options.strategy, shared.options.seed.wrapping_add(i as u64 + 1));
    let mut conn: Option<Conn> = None;
    let mut asked: Option<Instant> = None;
    let blocks = shared.lock().mine.len();
    // The longest answers it may give (an answer that says it is longer is refused unread).
    let (block_max, have_max) = shared.answers_max();
    let have_path = format!("/v1/assets/{id}/have");
    // Since when the peer has not answered (it may not be up yet, or be restarting).
    let mut down_since: Option<Instant> = None;
    // Since when the blocks asked of it have not come (since the first of
    // them was asked): it says it holds them, which keeps them from the origin.
    let mut failing_since: Option<Instant> = None;
    // Since when no block has come from it: with nothing to give for
    // `peer_retry`, it makes room for a peer that waits its turn.
    let mut useful_since = Instant::now();
    'peer: loop {
        // Only a peer that answers and keeps its word makes room: one that
        // does not is dropped below.
        if failing_since.is_none()
            && down_since.is_none()
            && useful_since.elapsed() >= shared.options.peer_retry
            && shared.rotate(i)
        {
            return;
        }
        let failure = 'round: {
            // What the peer holds: at the start, after a failure, and when its last word (an answer
            // or a bitmap with a block) is older than `every`.
            let every = shared.have_every(&shared.lock());
            if asked.is_none_or(|at| at.elapsed() >= every) {
                asked = Some(Instant::now());
                let len = shared.lock().mine.len();
                if conn.is_none() {
                    match shared.connect(Source { key: i, addr: peer }) {
                        Some(Ok(c)) => conn = Some(c),
                        Some(Err(e)) => break 'round (format!("connecting: {e}"), None),
                        None => return,
                    }
                }
                let Some(c) = conn.as_mut() else { break 'round ("no connection".into(), None) };
                let held = match c.get_within(peer, &have_path, Some(shared.options.peer_deadline), have_max) {
                    Ok((200, body)) => have(&body, len),
                    // It does not hold the asset (yet: it may be about to fetch it too).
                    Ok((404, _)) => Some((Bitfield::empty(len), None)),
                    // It rolled the asset back: it will not serve it again.
                    Ok((410, body)) => {
                        let why = rolled_back_reason(&body);
                        tracing::info!(asset = %id, peer, "the peer rolled the asset back: {why}");
                        shared.lock().report.rolled_back.push((peer.to_owned(), why));
                        return shared.drop_peer(i, None);
                    }
                    Ok((status, body)) => {
                        break 'round (format!("{status}: {}", brief(&body)), None);
                    }
                    Err(e) => break 'round (e.to_string(), None),
                };
                let Some((held, claim)) = held else { break 'round ("its bitmap is not hex".into(), None) };
                down_since = None;
                shared.heard(i, Some(held), claim, asked);
            }
            let n = {
                let mut s = shared.lock();
                loop {
                    if s.done {
                        return;
                    }
                    let State { theirs, mine, in_flight, availability, .. } = &mut *s;
                    let Some(theirs) = theirs[i].as_ref() else { break None };
                    if let Some(n) = picker.pick(theirs, mine, in_flight, availability) {
                        in_flight.set(n);
                        break Some(n);
                    }
                    if asked.is_some_and(|at| at.elapsed() >= shared.have_every(&s)) {
                        break None;
                    }
                    s = shared.idle(s);
                }
            };
            let Some(n) = n else { continue 'peer };
            let asked_at = Instant::now();
            // What it holds, with every block while its bitmap is small beside a block; for a
            // larger asset when it is about due (a 4 GiB asset's with every block would make
            // each answer a quarter longer).
            let due = blocks <= HAVE_EVERY_BLOCK || asked.is_none_or(|at| at.elapsed() >= every / 2);
            let source = Source { key: i, addr: peer };
            let deadline = Some(shared.options.peer_deadline);
            match fetch_asking(shared, source, &mut conn, n, deadline, due, None, block_max(due))
                .and_then(Answer::block)
            {
                Ok((data, held)) => match shared.keep(n, &data, Some(peer)) {
                    Ok(true) => {
                        failing_since = None;
                        useful_since = Instant::now();
                        // What it holds came with the block: no need to ask for a while.
                        let len = shared.lock().mine.len();
                        if let Some((held, claim)) = held.and_then(|text| have(&text, len)) {
                            shared.heard(i, Some(held), claim, Some(asked_at));
                            asked = Some(Instant::now());
                        }
                        continue 'peer;
                    }
                    Ok(false) => {
                        let banned = Banned { peer: peer.to_owned(), what: format!("block {n}") };
                        tracing::warn!(asset = %id, "banned: {banned}");
                        shared.lock().report.banned.push(banned);
                        return shared.drop_peer(i, Some(n));
                    }
                    Err(e) => return shared.fail(e),
                },
                Err(reason) if asked_at.elapsed() >= shared.options.peer_deadline => {
                    let reason = format!("block {n}: {reason} ({} s)", shared.options.peer_deadline.as_secs_f32());
                    tracing::info!(asset = %id, peer, "peer dropped: {reason}");
                    shared.lock().report.lost.push((peer.to_owned(), reason));
                    return shared.drop_peer(i, Some(n));
                }
                Err(reason) => {
                    failing_since.get_or_insert(asked_at);
                    (reason, Some(n))
                }
            }
        };
        // Not answering: its blocks do not count until it does; dropped
        // when it has not answered for `peer_retry`.
        let (reason, n) = failure;
        conn = None;
        // Asked again what it holds, after a `poll`.
        asked = None;
        shared.heard(i, None, None, None);
        if let Some(n) = n {
            shared.lock().in_flight.clear(n);
        }
        // A peer that answers what it holds but not with the blocks it says it
        // holds (an error, a wrong block, each just inside the deadline) would
        // hold them from the origin for as long as it kept that up.
        if failing_since.is_some_and(|since| since.elapsed() >= shared.options.peer_retry) {
            let reason = format!("{reason}; no block for {} s", shared.options.peer_retry.as_secs_f32());
            tracing::info!(asset = %id, peer, "peer dropped: {reason}");
            shared.lock().report.lost.push((peer.to_owned(), reason));
            return shared.drop_peer(i, None);
        }
        if down_since.get_or_insert_with(Instant::now).elapsed() >= shared.options.peer_retry {
            tracing::info!(asset = %id, peer, "peer dropped: {reason}");
            shared.lock().report.lost.push((peer.to_owned(), reason));
            return shared.drop_peer(i, None);
        }
        let s = shared.lock();
        if s.done {
            return;
        }
        drop(shared.wake.wait_timeout_while(s, shared.options.poll, |s| !s.done));
    }
}

fn from_origin(shared: &Shared<'_>, origin: &str) {
    let id = shared.id;
    let mut conn: Option<Conn> = None;
    // This device, named to the origin (a connection's end, the port it shares on).
    let mut me: Option<String> = None;
    let mut refused = 0;
    let mut errors = 0;
    let mut picker = Picker::new(shared.options.strategy, shared.options.seed);
    let (block_max, _) = shared.answers_max();
    loop {
        // A block no reachable peer holds and nobody is fetching (here or,
        // as a peer said, from the origin), chosen by the picker: at random
        // for rarest first, so that devices starting together ask the origin
        // for different blocks and then share them. None while one is due
        // and the origin is not connected: a block is taken only once it is.
        let picked = {
            let mut s = shared.lock();
            loop {
                if s.done {
                    return;
                }
                if s.heard.iter().all(|&h| h) {
                    let mut nowhere = Bitfield::empty(s.mine.len());
                    for n in (0..s.mine.len()).filter(|&n| s.availability.count(n) == 0) {
                        nowhere.set(n);
                    }
                    // A peer's fetch from the origin takes about as long as ours
                    // (never counted for more than half of `stall`).
                    let ttl = shared.options.claim_ttl.max((s.origin_block * 2).min(shared.options.stall / 2));
                    // What the origin said is on its way to a peer counts as that peer's claim.
                    let told = s.told.iter().filter_map(|(&n, told)| told.map(|(_, since)| (n, since)));
                    for (n, since) in s.claims.iter().flatten().copied().chain(told) {
                        if since.elapsed() < ttl {
                            nowhere.clear(n);
                        }
                    }
                    let State { mine, in_flight, availability, .. } = &mut *s;
                    if let Some(n) = picker.pick(&nowhere, mine, in_flight, availability) {
                        if conn.is_none() {
                            break None;
                        }
                        in_flight.set(n);
                        break Some(n);
                    }
                }
                s = shared.idle(s);
            }
        };
        // Connected before a block is taken: while a handshake the uplink
        // dropped waits for its timeout, the peers may send every block.
        let Some(n) = picked else {
            match shared.connect(Source { key: ORIGIN_CONN, addr: origin }) {
                None => return,
                Some(Ok(c)) => {
                    me = shared.options.shared_on.and_then(|at| named(&c, at));
                    conn = Some(c);
                    shared.lock().origin_unreachable = None;
                }
                Some(Err(e)) => origin_silent(shared, origin, None, format!("connecting: {e}")),
            }
            continue;
        };
        // Once per block: a device that names another is believed once.
        let named = me.as_deref().filter(|_| !shared.lock().told.contains_key(&n));
        let claim = |n| shared.store.lock().unwrap_or_else(PoisonError::into_inner).fetching_from_origin(n);
        claim(Some(n));
        let asked = Instant::now();
        // The claim stands until the block is kept: between the two, a peer
        // reading `/have` would see it neither claimed nor held, and ask the
        // origin for it too.
        let fetched = fetch(shared, Source { key: ORIGIN_CONN, addr: origin }, &mut conn, n, named, block_max(false));
        claim(None);
        let fetched = match fetched {
            Ok(Answer::Block(data, _)) => Ok(shared.keep(n, &data, None)),
            // Left to the peer it goes to, as if that one had claimed it,
            // until the peer says otherwise; one that is not a peer of this
            // device does not share it: the block is not held back.
            Ok(Answer::OnItsWay(to)) => {
                let mut s = shared.lock();
                s.in_flight.clear(n);
                // A peer that is asked (not gone, not waiting its turn).
                let peer = s.addrs.iter().zip(&s.theirs).position(|(a, held)| held.is_some() && same_addr(a, &to));
                let is_peer = peer.is_some();
                tracing::debug!(asset = %id, block = n, to, is_peer, "the origin says the block is on its way to another device");
                s.told.insert(n, peer.map(|i| (i, Instant::now())));
                drop(s);
                shared.wake.notify_all();
                continue;
            }
            Err(e) => Err(e),
        };
        match fetched {
            Ok(kept) => match kept {
                Ok(true) => {
                    errors = 0;
                    let mut s = shared.lock();
                    s.origin_unreachable = None;
                    s.origin_block = s.origin_block.max(asked.elapsed());
                }
                Ok(false) => {
                    refused += 1;
                    tracing::warn!(asset = %id, block = n, origin, "refused a block from the origin that does not match");
                    if refused >= ORIGIN_ATTEMPTS {
                        let server = origin.to_owned();
                        return shared.fail(AssetError::Corrupt { id, block: n, server, attempts: refused });
                    }
                }
                Err(e) => return shared.fail(e),
            },
            // Not reached, or the connection broke (a saturated uplink drops
            // packets): asked again every `poll`, the peers meanwhile; the
            // download fails only when no block arrives for `stall`.
            Err(reason) if conn.is_none() => origin_silent(shared, origin, Some(n), reason),
            // It answered, and not with the block.
            Err(reason) => {
                shared.lock().in_flight.clear(n);
                errors += 1;
                if errors >= ORIGIN_ATTEMPTS {
                    return shared.fail(AssetError::Fetch { id, server: origin.to_owned(), reason });
                }
                std::thread::sleep(shared.options.poll);
            }
        }
    }
}

/// The origin did not answer (`reason`; block `n` was asked, if any): the
/// block is free for the peers, the reason goes into a stall's message, and
/// the origin is asked again after a `poll`, or not once the download ends.
fn origin_silent(shared: &Shared<'_>, origin: &str, n: Option<u32>, reason: String) {
    tracing::debug!(asset = %shared.id, origin, "the origin did not answer: {reason}");
    let mut s = shared.lock();
    if let Some(n) = n {
        s.in_flight.clear(n);
        shared.wake.notify_all();
    }
    s.origin_unreachable = Some(reason);
    drop(shared.wake.wait_timeout_while(s, shared.options.poll, |s| !s.done));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A small site's peers are asked every `poll`; a larger one's less
    /// often, in step with their number; a very large one's still every
    /// 2 s at most, and never so seldom that a download would stall.
    #[test]
    fn peers_are_asked_less_often_on_a_larger_site_within_bounds() {
        let options = DownloadOptions::default();
        let ms = |peers| have_spacing(&options, peers).as_millis();
        assert_eq!((ms(0), ms(1), ms(6)), (200, 200, 200));
        assert_eq!((ms(7), ms(15), ms(31)), (224, 480, 992));
        assert_eq!((ms(63), ms(200), ms(100_000)), (2000, 2000, 2000));
        let short = DownloadOptions { stall: Duration::from_secs(4), ..DownloadOptions::default() };
        assert_eq!(have_spacing(&short, 200), Duration::from_secs(1));
    }

    /// Devices of a site start a download together with the same view
    /// (nothing held, nothing claimed): with one seed they would all ask
    /// the origin for the same first block (a 32-device site took a tenth
    /// of the release from it twice over).
    #[test]
    fn devices_left_to_the_defaults_ask_the_origin_for_different_blocks() {
        let (nothing, all) = (Bitfield::empty(320), Availability::new(320));
        let mut nowhere = Bitfield::empty(320);
        for n in 0..320 {
            nowhere.set(n);
        }
        let first: std::collections::HashSet<u32> = (0..32)
            .map(|_| {
                let options = DownloadOptions::default();
                Picker::new(options.strategy, options.seed).pick(&nowhere, &nothing, &nothing, &all).unwrap()
            })
            .collect();
        assert!(first.len() > 16, "32 devices' first picks: {first:?}");
    }

    #[test]
    fn a_bitmap_from_a_server_is_read_bit_by_bit_and_bad_hex_is_refused() {
        let b = bitfield("0581\n", 12).unwrap();
        let held: Vec<u32> = (0..12).filter(|&n| b.has(n)).collect();
        assert_eq!(held, vec![0, 2, 8]);
        assert!(bitfield("zz", 12).is_none());
        // A short bitmap holds nothing past its end.
        assert_eq!(bitfield("ff", 12).unwrap().count(), 8);
    }

    #[test]
    fn a_peers_reason_for_a_rollback_is_its_first_line_cut_short() {
        assert_eq!(rolled_back_reason(b"rolled back: its trial boot failed\n"), "its trial boot failed");
        assert_eq!(rolled_back_reason(b"no prefix\nsecond line"), "no prefix");
        let long = format!("rolled back: {}", "x".repeat(10_000));
        assert_eq!(rolled_back_reason(long.as_bytes()).len(), REASON_MAX);
    }

    #[test]
    fn a_peers_have_names_the_block_it_fetches_from_the_origin_and_only_one_it_lacks() {
        let (held, claim) = have(b"0581\norigin 5", 12).unwrap();
        assert_eq!((held.count(), claim), (3, Some(5)));
        // Without the line, with a block out of range, one it holds, or no number: no claim.
        for body in ["0581", "0581\norigin 12", "0581\norigin 2", "0581\norigin x", "0581\nlater 5"] {
            assert_eq!(have(body.as_bytes(), 12).unwrap().1, None, "{body:?}");
        }
        assert!(have(b"zz\norigin 5", 12).is_none(), "a bad bitmap is refused");
    }
}
