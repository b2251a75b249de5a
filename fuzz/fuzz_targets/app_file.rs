//! `cargo +nightly fuzz run app_file` (make fuzz): the app file's container reader.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| trellis_fuzz::checks::app_file(data));
