//! The fuzz targets' checks (fuzz/src/checks.rs) over their seed corpus and
//! a few thousand deterministic mutations of it, on the stable compiler, so
//! every `make test` exercises them; `make fuzz` runs libFuzzer for real.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

#[path = "../../../fuzz/src/checks.rs"]
mod checks;

use std::path::Path;

/// Seed files of one target.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut seeds: Vec<Vec<u8>> =
        std::fs::read_dir(&dir).unwrap().map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect();
    assert!(seeds.len() >= 5, "{}: the seed corpus", dir.display());
    seeds.sort();
    seeds
}

/// xorshift64: the same mutations every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap()
    }
}

const INTERESTING: [&[u8]; 10] =
    [b"\r\n", b"\r\n\r\n", b"..", b"/", b"%00", b"\0", b"Content-Length: 99999999999999999999\r\n", b"=", b"[", b"\""];

/// One mutation: flip, cut, insert, or splice something interesting in.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(4) {
            0 if !data.is_empty() => {
                let i = at.min(data.len() - 1);
                data[i] ^= 1 << rng.below(8);
            }
            1 => data.truncate(at),
            2 => data.insert(at, u8::try_from(rng.below(256)).unwrap()),
            _ => {
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                data.splice(at..at, piece.iter().copied());
            }
        }
    }
    data
}

fn replay(target: &str, check: fn(&[u8])) {
    let mut rng = Rng(0x5eed_0f7e_1115);
    for seed in corpus(target) {
        check(&seed);
        for _ in 0..3000 {
            check(&mutate(&mut rng, &seed));
        }
    }
}

#[test]
fn request_heads_never_break_the_parser() {
    replay("request_head", checks::request_head);
}

#[test]
fn manifests_never_break_the_parser_and_read_back() {
    replay("manifest", checks::manifest);
}

#[test]
fn app_files_never_break_the_container_reader() {
    replay("app_file", checks::app_file);
}
