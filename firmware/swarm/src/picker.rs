//! Which piece to ask a peer for next.

use crate::{Bitfield, Rng};

/// How a device chooses among the pieces a peer can give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The piece the fewest peers hold (ties at random), so that every piece
    /// spreads and none is left on the origin alone.
    RarestFirst,
    /// The lowest-numbered piece: for a consumer that reads the release in
    /// order as it arrives (an install that streams).
    InOrder,
    /// Any piece, uniformly: the baseline rarest-first is compared with.
    Random,
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::RarestFirst => "rarest-first",
            Self::InOrder => "in-order",
            Self::Random => "random",
        })
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rarest-first" => Ok(Self::RarestFirst),
            "in-order" => Ok(Self::InOrder),
            "random" => Ok(Self::Random),
            _ => Err(format!("{s:?} is not a strategy (rarest-first, in-order, random)")),
        }
    }
}

/// How many of the peers a device knows hold each piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Availability {
    counts: Vec<u32>,
}

impl Availability {
    /// No peer known, for a release of `len` pieces.
    #[must_use]
    pub fn new(len: u32) -> Self {
        Self { counts: vec![0; len as usize] }
    }

    /// A peer announced `held`.
    pub fn add(&mut self, held: &Bitfield) {
        for n in held.missing_from(&[]) {
            self.gained(n);
        }
    }

    /// A peer holding `held` went away (or was banned).
    pub fn remove(&mut self, held: &Bitfield) {
        for n in held.missing_from(&[]) {
            if let Some(c) = self.counts.get_mut(n as usize) {
                *c = c.saturating_sub(1);
            }
        }
    }

    /// A peer announced piece `n`.
    pub fn gained(&mut self, n: u32) {
        if let Some(c) = self.counts.get_mut(n as usize) {
            *c += 1;
        }
    }

    /// How many known peers hold piece `n`.
    #[must_use]
    pub fn count(&self, n: u32) -> u32 {
        self.counts.get(n as usize).copied().unwrap_or(0)
    }
}

/// Chooses the next piece by a [`Strategy`], breaking ties with a seeded
/// generator (two devices with the same view still pick different pieces).
#[derive(Debug, Clone)]
pub struct Picker {
    strategy: Strategy,
    rng: Rng,
}

impl Picker {
    /// A picker following `strategy`, its ties broken from `seed`.
    #[must_use]
    pub fn new(strategy: Strategy, seed: u64) -> Self {
        Self { strategy, rng: Rng::new(seed) }
    }

    /// Its strategy.
    #[must_use]
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The piece to ask a peer holding `theirs` for: one it holds that
    /// `mine` lacks and that is not already coming (`in_flight`); `None` if
    /// the peer has nothing this device needs.
    pub fn pick(
        &mut self,
        theirs: &Bitfield,
        mine: &Bitfield,
        in_flight: &Bitfield,
        availability: &Availability,
    ) -> Option<u32> {
        let exclude = [mine, in_flight];
        let mut candidates = theirs.missing_from(&exclude);
        match self.strategy {
            Strategy::InOrder => candidates.next(),
            Strategy::Random => {
                let mut chosen = None;
                for (seen, n) in candidates.enumerate() {
                    if self.rng.below(seen + 1) == 0 {
                        chosen = Some(n);
                    }
                }
                chosen
            }
            Strategy::RarestFirst => {
                let (mut chosen, mut fewest, mut ties) = (None, u32::MAX, 0usize);
                for n in candidates {
                    let c = availability.count(n);
                    if c < fewest {
                        (chosen, fewest, ties) = (Some(n), c, 1);
                    } else if c == fewest {
                        ties += 1;
                        if self.rng.below(ties) == 0 {
                            chosen = Some(n);
                        }
                    }
                }
                chosen
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn field(len: u32, held: &[u32]) -> Bitfield {
        let mut b = Bitfield::empty(len);
        for &n in held {
            b.set(n);
        }
        b
    }

    #[test]
    fn a_strategy_reads_back_from_its_name_and_a_wrong_one_is_named() {
        for s in [Strategy::RarestFirst, Strategy::InOrder, Strategy::Random] {
            assert_eq!(s.to_string().parse::<Strategy>(), Ok(s));
        }
        let e = "fastest".parse::<Strategy>().unwrap_err();
        assert!(e.contains("\"fastest\" is not a strategy"), "{e}");
    }

    #[test]
    fn rarest_first_takes_the_piece_fewest_peers_hold() {
        let theirs = Bitfield::full(8);
        let mine = field(8, &[0]);
        let coming = field(8, &[1]);
        let mut avail = Availability::new(8);
        for peer in [field(8, &[0, 1, 2, 3, 4, 5, 6, 7]), field(8, &[0, 1, 2, 3, 4, 6, 7]), field(8, &[2, 3, 4, 6, 7])]
        {
            avail.add(&peer);
        }
        // Piece 5 is held by one peer, 0 and 1 by two (and excluded anyway), the rest by three.
        let mut p = Picker::new(Strategy::RarestFirst, 1);
        assert_eq!(p.pick(&theirs, &mine, &coming, &avail), Some(5));
        avail.remove(&field(8, &[0, 1, 2, 3, 4, 5, 6, 7]));
        assert_eq!(avail.count(5), 0);
    }

    #[test]
    fn ties_are_broken_differently_by_different_devices() {
        let (theirs, none) = (Bitfield::full(16), Bitfield::empty(16));
        let avail = Availability::new(16);
        let picked: std::collections::BTreeSet<u32> = (0..32)
            .map(|seed| Picker::new(Strategy::RarestFirst, seed).pick(&theirs, &none, &none, &avail).unwrap())
            .collect();
        assert!(picked.len() > 8, "32 devices with one view picked only {picked:?}");
    }

    #[test]
    fn no_strategy_picks_what_is_held_coming_or_not_offered() {
        let theirs = field(100, &[3, 50, 64, 99]);
        let mine = field(100, &[3]);
        let coming = field(100, &[64]);
        let avail = Availability::new(100);
        for strategy in [Strategy::RarestFirst, Strategy::InOrder, Strategy::Random] {
            for seed in 0..50 {
                let n = Picker::new(strategy, seed).pick(&theirs, &mine, &coming, &avail).unwrap();
                assert!(n == 50 || n == 99, "{strategy}: {n}");
            }
        }
        assert_eq!(Picker::new(Strategy::InOrder, 0).pick(&theirs, &mine, &coming, &avail), Some(50));
        let all = field(100, &[3, 50, 64, 99]);
        assert_eq!(Picker::new(Strategy::Random, 0).pick(&theirs, &all, &coming, &avail), None, "nothing needed");
    }
}
