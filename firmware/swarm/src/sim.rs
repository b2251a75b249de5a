//! A discrete-event simulation of one site's swarm: an origin behind the
//! site's uplink and N devices on the LAN, each receiving a release piece by
//! piece from the origin and from each other, choosing pieces with the same
//! [`Picker`] the devices run.
//!
//! The model: every node has an upload and a download rate (bytes/s). A
//! transfer moves one piece at a fixed rate, the smaller of what its sender
//! has left of its upload and its receiver of its download when it starts,
//! so no node ever sends or receives faster than its capacity (which is why
//! no run can beat [`kumar_ross`]). A node starts a transfer only with at
//! least 5 % of its capacity free. Devices see every other device's pieces
//! (as on one LAN, where each announces what it holds); a node looking for a
//! partner considers every device up to [`Scenario::sample`] of them and a
//! random sample beyond that (a device knows a bounded set of peers).
//!
//! Who sends what:
//! - A device with upload to spare sends to the device furthest behind
//!   among those it considers, the piece that device's picker asks for.
//! - The origin ([`OriginPolicy::NewPiecesFirst`]) first sends pieces no
//!   device holds or receives yet, one copy each; after that it serves only a
//!   device that no peer keeps busy (nothing coming in). So its egress stays
//!   near one copy of the release while the devices' uploads do the rest.
//!   [`OriginPolicy::NewPiecesOnly`] sends the new pieces and nothing else.
//! - [`OriginPolicy::Any`] is a plain server, and with
//!   [`Scenario::sharing`] off it is the client–server baseline.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::{Availability, Bitfield, Capacity, Picker, Rng, Strategy, jain_index, kumar_ross};

/// A start needs this share of the node's capacity free.
const MIN_FREE: f64 = 0.05;

/// How the origin chooses whom to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginPolicy {
    /// Pieces no device has yet first; then only devices nothing comes to.
    NewPiecesFirst,
    /// Pieces no device has yet, one copy each, and nothing more: egress of
    /// one copy, the rest left to the devices' uploads.
    NewPiecesOnly,
    /// Anyone, any piece they ask for, like a plain download server.
    Any,
    /// What a device's download does (`trellis_assets::download`): each
    /// device asks the origin, one piece at a time, for a piece its picker
    /// chooses among those no device holds yet. A device cannot see what
    /// the others are receiving, so two may ask for the same piece.
    Unheld,
}

/// One site and one release.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The devices' LAN capacities.
    pub peers: Vec<Capacity>,
    /// The origin's upload to this site (the site's uplink), bytes/s.
    pub origin_up: f64,
    /// The release's size.
    pub file_bytes: u64,
    /// The piece size.
    pub piece_bytes: u64,
    /// How devices choose pieces.
    pub strategy: Strategy,
    /// How the origin chooses.
    pub origin: OriginPolicy,
    /// Whether devices upload to each other (off: client–server).
    pub sharing: bool,
    /// How many partners a node considers at a time.
    pub sample: usize,
    /// The seed of every random choice.
    pub seed: u64,
}

impl Scenario {
    /// `n` devices with `lan` each, an origin uploading `origin_up`, a release
    /// of `file_bytes` in pieces of 256 KiB; rarest first, the origin sending
    /// new pieces first, devices considering up to 32 partners.
    #[must_use]
    pub fn site(n: usize, lan: Capacity, origin_up: f64, file_bytes: u64) -> Self {
        Self {
            peers: vec![lan; n],
            origin_up,
            file_bytes,
            piece_bytes: 256 * 1024,
            strategy: Strategy::RarestFirst,
            origin: OriginPolicy::NewPiecesFirst,
            sharing: true,
            sample: 32,
            seed: 1,
        }
    }

    /// The same site downloading from the origin alone.
    #[must_use]
    pub fn client_server(&self) -> Self {
        Self { sharing: false, origin: OriginPolicy::Any, ..self.clone() }
    }

    /// The Kumar–Ross bound for this scenario, in seconds.
    #[must_use]
    pub fn bound(&self) -> f64 {
        if self.sharing {
            kumar_ross(self.file_bytes, self.origin_up, &self.peers)
        } else {
            let silent: Vec<Capacity> = self.peers.iter().map(|p| Capacity { up: 0.0, ..*p }).collect();
            kumar_ross(self.file_bytes, self.origin_up, &silent)
        }
    }

    fn pieces(&self) -> u32 {
        u32::try_from(self.file_bytes.div_ceil(self.piece_bytes.max(1))).unwrap_or(u32::MAX)
    }

    fn piece_len(&self, n: u32) -> u64 {
        let start = u64::from(n) * self.piece_bytes;
        self.piece_bytes.min(self.file_bytes - start)
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// When each device held the whole release, in seconds (infinite: never).
    pub done_s: Vec<f64>,
    /// Bytes the origin sent.
    pub origin_bytes: u64,
    /// Bytes each device uploaded to others.
    pub uploaded: Vec<u64>,
    /// Pieces moved.
    pub transfers: u64,
}

impl Outcome {
    /// When the last device held the whole release.
    #[must_use]
    pub fn all_done_s(&self) -> f64 {
        self.done_s.iter().copied().fold(0.0, f64::max)
    }

    /// Jain's fairness index of the devices' uploads ([`jain_index`]).
    #[must_use]
    pub fn upload_fairness(&self) -> f64 {
        jain_index(&self.uploaded)
    }
}

#[derive(Debug)]
struct Node {
    up: f64,
    down: f64,
    have: Bitfield,
    coming: Bitfield,
    up_used: f64,
    down_used: f64,
    incoming: u32,
    /// Transfers coming from the origin.
    from_origin: u32,
    done_at: f64,
    uploaded: u64,
    picker: Picker,
}

impl Node {
    fn up_free(&self) -> f64 {
        self.up - self.up_used
    }
    fn down_free(&self) -> f64 {
        self.down - self.down_used
    }
    fn can_send(&self) -> bool {
        self.up_free() >= MIN_FREE * self.up && self.up > 0.0 && self.have.count() > 0
    }
    fn can_receive(&self) -> bool {
        !self.have.is_full() && self.down_free() >= MIN_FREE * self.down
    }
    fn progress(&self) -> u32 {
        self.have.count() + self.coming.count()
    }
}

#[derive(Debug, PartialEq)]
struct Done {
    at: f64,
    seq: u64,
    from: usize,
    to: usize,
    piece: u32,
    rate: f64,
}

impl Eq for Done {}
impl Ord for Done {
    fn cmp(&self, other: &Self) -> Ordering {
        // The earliest first out of the max-heap.
        other.at.total_cmp(&self.at).then(other.seq.cmp(&self.seq))
    }
}
impl PartialOrd for Done {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

struct Swarm<'a> {
    s: &'a Scenario,
    nodes: Vec<Node>,
    /// Devices holding each piece (what announcements tell every device).
    availability: Availability,
    /// Copies held or on their way, per piece (what the origin steers by).
    copies: Vec<u32>,
    queue: BinaryHeap<Done>,
    now: f64,
    seq: u64,
    rng: Rng,
    origin_bytes: u64,
    transfers: u64,
    /// Partners: every device, not a sample.
    wide: bool,
}

const ORIGIN: usize = 0;

impl Swarm<'_> {
    fn peers(&self) -> std::ops::RangeInclusive<usize> {
        1..=self.s.peers.len()
    }

    /// The devices a node considers: all of them when they are few, else a sample.
    fn partners(&mut self, exclude: usize) -> Vec<usize> {
        let n = self.s.peers.len();
        if self.wide || n <= self.s.sample {
            let start = self.rng.below(n);
            (0..n).map(|i| 1 + (start + i) % n).filter(|&p| p != exclude).collect()
        } else {
            (0..self.s.sample).map(|_| 1 + self.rng.below(n)).filter(|&p| p != exclude).collect()
        }
    }

    fn start(&mut self, from: usize, to: usize, piece: u32) {
        let rate = self.nodes[from].up_free().min(self.nodes[to].down_free());
        #[allow(clippy::cast_precision_loss)]
        let at = self.now + self.s.piece_len(piece) as f64 / rate;
        self.nodes[from].up_used += rate;
        let r = &mut self.nodes[to];
        r.down_used += rate;
        r.incoming += 1;
        if from == ORIGIN {
            r.from_origin += 1;
        }
        r.coming.set(piece);
        self.copies[piece as usize] += 1;
        self.seq += 1;
        self.queue.push(Done { at, seq: self.seq, from, to, piece, rate });
    }

    /// The piece the origin sends `to` now, by its policy, if any.
    fn origin_piece(&mut self, to: usize) -> Option<u32> {
        if self.s.origin == OriginPolicy::Unheld && self.s.sharing {
            if self.nodes[to].from_origin > 0 {
                return None;
            }
            let mut unheld = Bitfield::empty(self.s.pieces());
            for p in (0..self.s.pieces()).filter(|&p| self.availability.count(p) == 0) {
                unheld.set(p);
            }
            let r = &mut self.nodes[to];
            return r.picker.pick(&unheld, &r.have, &r.coming, &self.availability);
        }
        if self.s.origin != OriginPolicy::Any && self.s.sharing {
            // A piece no device holds or receives yet (then `to` lacks it too), in order.
            if let Some(p) = self.copies.iter().position(|&c| c == 0) {
                return u32::try_from(p).ok();
            }
            if self.s.origin == OriginPolicy::NewPiecesOnly || self.nodes[to].incoming > 0 {
                return None;
            }
        }
        let (origin, r) = pair(&mut self.nodes, ORIGIN, to);
        r.picker.pick(&origin.have, &r.have, &r.coming, &self.availability)
    }

    /// A node with upload to spare looks for devices to send to.
    fn try_send(&mut self, from: usize) {
        if from != ORIGIN && !self.s.sharing {
            return;
        }
        while self.nodes[from].can_send() {
            let mut best: Option<(u32, usize, u32)> = None;
            for to in self.partners(from) {
                if !self.nodes[to].can_receive() {
                    continue;
                }
                let behind = self.nodes[to].progress();
                if best.is_some_and(|(b, _, _)| behind >= b) {
                    continue;
                }
                let piece = if from == ORIGIN { self.origin_piece(to) } else { self.peer_piece(from, to) };
                if let Some(piece) = piece {
                    best = Some((behind, to, piece));
                }
            }
            let Some((_, to, piece)) = best else { return };
            self.start(from, to, piece);
        }
    }

    fn peer_piece(&mut self, from: usize, to: usize) -> Option<u32> {
        let (f, r) = pair(&mut self.nodes, from, to);
        r.picker.pick(&f.have, &r.have, &r.coming, &self.availability)
    }

    /// A device with download to spare looks for senders: peers first, then the origin.
    fn try_receive(&mut self, to: usize) {
        if self.s.sharing {
            for from in self.partners(to) {
                if !self.nodes[to].can_receive() {
                    return;
                }
                if self.nodes[from].can_send()
                    && let Some(piece) = self.peer_piece(from, to)
                {
                    self.start(from, to, piece);
                }
            }
        }
        if self.nodes[to].can_receive()
            && self.nodes[ORIGIN].can_send()
            && let Some(piece) = self.origin_piece(to)
        {
            self.start(ORIGIN, to, piece);
        }
    }

    fn finish(&mut self, d: &Done) {
        self.now = d.at;
        self.nodes[d.from].up_used = (self.nodes[d.from].up_used - d.rate).max(0.0);
        self.nodes[d.from].uploaded += self.s.piece_len(d.piece);
        if d.from == ORIGIN {
            self.origin_bytes += self.s.piece_len(d.piece);
        }
        let r = &mut self.nodes[d.to];
        r.down_used = (r.down_used - d.rate).max(0.0);
        r.incoming -= 1;
        if d.from == ORIGIN {
            r.from_origin -= 1;
        }
        r.coming.clear(d.piece);
        r.have.set(d.piece);
        if r.have.is_full() {
            r.done_at = self.now;
        }
        self.availability.gained(d.piece);
        self.transfers += 1;
    }

    fn run(mut self) -> Outcome {
        self.try_send(ORIGIN);
        loop {
            while let Some(d) = self.queue.pop() {
                self.finish(&d);
                self.try_send(d.from);
                self.try_send(d.to);
                self.try_receive(d.to);
            }
            if self.nodes[1..].iter().all(|n| n.have.is_full()) {
                break;
            }
            // Nothing under way and devices still missing pieces: every
            // device looks once more, over all the others.
            self.wide = true;
            for p in self.peers() {
                self.try_receive(p);
            }
            self.try_send(ORIGIN);
            self.wide = false;
            if self.queue.is_empty() {
                break;
            }
        }
        Outcome {
            done_s: self.nodes[1..].iter().map(|n| n.done_at).collect(),
            origin_bytes: self.origin_bytes,
            uploaded: self.nodes[1..].iter().map(|n| n.uploaded).collect(),
            transfers: self.transfers,
        }
    }
}

/// Node `a` to read and node `b` to change (`a` ≠ `b`).
fn pair(nodes: &mut [Node], a: usize, b: usize) -> (&Node, &mut Node) {
    if a < b {
        let (left, right) = nodes.split_at_mut(b);
        (&left[a], &mut right[0])
    } else {
        let (left, right) = nodes.split_at_mut(a);
        (&right[0], &mut left[b])
    }
}

/// Run `scenario` to the end (every device holds the release, or nothing
/// can move any more).
#[must_use]
pub fn run(scenario: &Scenario) -> Outcome {
    let len = scenario.pieces();
    let mut nodes = Vec::with_capacity(scenario.peers.len() + 1);
    let origin = Capacity { up: scenario.origin_up, down: 0.0 };
    for (i, cap) in std::iter::once(origin).chain(scenario.peers.iter().copied()).enumerate() {
        nodes.push(Node {
            up: cap.up,
            down: cap.down,
            have: if i == ORIGIN { Bitfield::full(len) } else { Bitfield::empty(len) },
            coming: Bitfield::empty(len),
            up_used: 0.0,
            down_used: 0.0,
            incoming: 0,
            from_origin: 0,
            done_at: f64::INFINITY,
            uploaded: 0,
            picker: Picker::new(scenario.strategy, scenario.seed.wrapping_mul(1_000_003).wrapping_add(i as u64)),
        });
    }
    let swarm = Swarm {
        s: scenario,
        nodes,
        availability: Availability::new(len),
        copies: vec![0; len as usize],
        queue: BinaryHeap::new(),
        now: 0.0,
        seq: 0,
        rng: Rng::new(scenario.seed),
        origin_bytes: 0,
        transfers: 0,
        wide: false,
    };
    swarm.run()
}
