//! `cargo +nightly fuzz run manifest` (make fuzz): the app manifest's parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| trellis_fuzz::checks::manifest(data));
