//! The properties the fuzz targets check on any input. Also compiled into
//! `firmware/api/tests/fuzz_corpus.rs`, which replays the corpus on stable.

use trellis_api::http::{MAX_HEAD, MAX_HEADERS, parse_head};
use trellis_appfmt::{Manifest, valid_name};

/// A request head from the network: parsing never panics, never claims more
/// bytes than it was given or than the limit, and what it accepts is what the
/// routes rely on (a path from `/`, headers within the limit, a name check
/// that holds for any segment).
pub fn request_head(data: &[u8]) {
    match parse_head(data) {
        Ok(Some((head, used))) => {
            assert!(used <= data.len() && used <= MAX_HEAD, "used {used} of {}", data.len());
            assert!(head.headers.len() <= MAX_HEADERS);
            assert!(head.path.starts_with('/'), "{:?}", head.path);
            for segment in head.segments() {
                if valid_name(segment) {
                    assert!(!segment.contains(['/', '\0', '%']) && segment != "..", "{segment:?}");
                }
            }
        }
        Ok(None) => assert!(data.len() < MAX_HEAD, "an incomplete head of {} bytes", data.len()),
        Err(e) => assert!(matches!(e.status(), 400 | 431), "{e}"),
    }
}

/// A manifest (`trellis.toml`, also embedded in every app file): parsing
/// never panics, and one that is accepted reads back the same after being
/// written out (what `trellis app pack` embeds is what the device reads).
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(m) = Manifest::from_toml(text) {
        let written = m.to_toml();
        let again = Manifest::from_toml(&written).unwrap_or_else(|e| panic!("{written:?} does not read back: {e}"));
        assert_eq!(again, m, "{written}");
    }
}
