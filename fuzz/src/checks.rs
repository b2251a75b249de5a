//! The properties the fuzz targets check on any input. Also compiled into
//! `firmware/api/tests/fuzz_corpus.rs`, which replays the corpus on stable.

use sha2::{Digest, Sha256};
use trellis_api::http::{MAX_HEAD, MAX_HEADERS, parse_head};
use trellis_appfmt::{AppFile, Manifest, component_code, pack, valid_name};

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

/// An app file (`NAME.wasm`, uploaded or read from `/data`): reading the
/// container never panics; a file it accepts has the code its manifest
/// records, a signature (if any) inside the file, and packs again to the
/// same code; the import scan never panics either.
pub fn app_file(data: &[u8]) {
    let _ = trellis_appfmt::interface_imports(data);
    let Ok(file) = AppFile::inspect(data) else {
        assert!(AppFile::parse(data).is_err(), "parse accepted what inspect refused");
        return;
    };
    assert_eq!(file.size, data.len());
    if let Some(sig) = &file.signature {
        assert!(sig.signed_len <= data.len(), "a signature over {} of {} bytes", sig.signed_len, data.len());
    }
    let code = component_code(data).unwrap_or_else(|e| panic!("inspected, but no code: {e}"));
    let digest: [u8; 32] = Sha256::digest(&code).into();
    assert_eq!(file.code_sha256, digest, "the code digest is not the digest of the code");
    match AppFile::parse(data) {
        Ok(parsed) => {
            assert!(file.check_code().is_ok());
            let again =
                pack(&code, &parsed.manifest).unwrap_or_else(|e| panic!("an accepted app does not repack: {e}"));
            let repacked = AppFile::parse(&again).unwrap_or_else(|e| panic!("a repacked app does not parse: {e}"));
            assert_eq!(repacked.code_sha256, file.code_sha256);
            assert_eq!(repacked.manifest, parsed.manifest);
        }
        Err(e) => assert!(file.check_code().is_err(), "parse refused a file whose code checks: {e}"),
    }
}
