//! `cargo +nightly fuzz run request_head` (make fuzz): the API's request parsing.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| trellis_fuzz::checks::request_head(data));
