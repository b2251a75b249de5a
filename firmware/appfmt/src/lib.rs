//! The Trellis app file.
//!
//! An app is one WebAssembly component file (`name.wasm`). Its manifest (TOML)
//! travels inside it in the custom section [`MANIFEST_SECTION`], and an optional
//! ed25519 signature in the custom section [`SIGNATURE_SECTION`], which must be
//! the file's last section and covers every byte before it. So an app and its
//! manifest are replaced in one rename and can never be mismatched.

mod container;
mod interface;
mod keys;
mod manifest;

pub use container::{
    AppFile, FormatError, NativeCode, SignatureInfo, component_code, interface_imports, pack, sign, with_native,
};
pub use interface::{
    INTERFACE_PACKAGE, built_for, imported_versions, interface_compatible, retarget_interface, semver_triple,
};
pub use keys::{KeyError, KeyId, SigningKey, TrustList, generate_key, load_signing_key, write_key_pair};
pub use manifest::{
    FLEET_PREFIX, FleetGrants, GpioLine, HostPattern, I2cGrant, Limits, LineBias, Manifest, ManifestError, Permissions,
    SpiDevice, pattern_covers, topic_matches, valid_fleet_pattern, valid_name, valid_topic_pattern,
};

/// Custom section holding the manifest (UTF-8 TOML).
pub const MANIFEST_SECTION: &str = "trellis-manifest";
/// Custom section holding the signature: 32-byte public key then 64-byte signature.
pub const SIGNATURE_SECTION: &str = "trellis-signature";
/// Custom section holding the component compiled ahead of time for one
/// target (`trellis app precompile`): a header naming the code it was
/// compiled from and the target, then wasmtime's serialized component. Not
/// part of the code (the code digest and the compile cache leave it out).
pub const NATIVE_SECTION: &str = "trellis-native";
