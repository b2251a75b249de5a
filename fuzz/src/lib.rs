//! What the fuzz targets check, shared with the corpus replay in the
//! workspace's tests.

#[path = "checks.rs"]
pub mod checks;
