//! Which pieces of a release a device holds, one bit each.

/// A set of piece numbers `0..len`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitfield {
    words: Vec<u64>,
    len: u32,
    ones: u32,
}

impl Bitfield {
    /// No piece of `len`.
    #[must_use]
    pub fn empty(len: u32) -> Self {
        Self { words: vec![0; (len as usize).div_ceil(64)], len, ones: 0 }
    }

    /// Every piece of `len`.
    #[must_use]
    pub fn full(len: u32) -> Self {
        let mut b = Self::empty(len);
        for n in 0..len {
            b.set(n);
        }
        b
    }

    /// How many pieces the release has.
    #[must_use]
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the release has no pieces.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many pieces are held.
    #[must_use]
    pub fn count(&self) -> u32 {
        self.ones
    }

    /// Whether every piece is held.
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.ones == self.len
    }

    /// Whether piece `n` is held (false past the end).
    #[must_use]
    pub fn has(&self, n: u32) -> bool {
        n < self.len && self.words[(n / 64) as usize] & (1 << (n % 64)) != 0
    }

    /// Mark piece `n` held; false if it already was or is past the end.
    pub fn set(&mut self, n: u32) -> bool {
        if n >= self.len || self.has(n) {
            return false;
        }
        self.words[(n / 64) as usize] |= 1 << (n % 64);
        self.ones += 1;
        true
    }

    /// Forget piece `n`; false if it was not held.
    pub fn clear(&mut self, n: u32) -> bool {
        if !self.has(n) {
            return false;
        }
        self.words[(n / 64) as usize] &= !(1 << (n % 64));
        self.ones -= 1;
        true
    }

    /// The pieces held here and not in any of `not`, in order.
    pub fn missing_from<'a>(&'a self, not: &'a [&'a Bitfield]) -> impl Iterator<Item = u32> + 'a {
        self.words.iter().enumerate().flat_map(move |(i, &w)| {
            let mut bits = not.iter().fold(w, |acc, b| acc & !b.words.get(i).copied().unwrap_or(0));
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let bit = bits.trailing_zeros();
                bits &= bits - 1;
                #[allow(clippy::cast_possible_truncation)]
                Some(i as u32 * 64 + bit)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_clear_count_and_difference() {
        let mut a = Bitfield::empty(130);
        assert!(a.set(0) && a.set(64) && a.set(129));
        assert!(!a.set(129), "twice");
        assert!(!a.set(130), "past the end");
        assert_eq!(a.count(), 3);
        let mut b = Bitfield::empty(130);
        b.set(64);
        assert_eq!(a.missing_from(&[&b]).collect::<Vec<_>>(), [0, 129]);
        assert!(a.clear(0) && !a.clear(0));
        assert_eq!(Bitfield::full(130).count(), 130);
        assert!(Bitfield::full(130).is_full() && !a.is_full());
    }
}
