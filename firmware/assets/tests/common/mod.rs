//! What the asset tests share (the CLI's LAN tests include it too).

/// `len` bytes that neither compress nor repeat: every block differs.
#[must_use]
#[allow(dead_code)] // the CLI's tests use only `noise_from`
pub fn noise(len: usize) -> Vec<u8> {
    noise_from(len, 0x9E37_79B9_7F4A_7C15)
}

/// The same from another `seed` (not 0): the same bytes for the same seed.
#[must_use]
pub fn noise_from(len: usize, seed: u64) -> Vec<u8> {
    let mut x: u64 = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
