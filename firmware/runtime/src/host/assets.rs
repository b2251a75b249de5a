//! `trellis:app/assets`: read-only files the manifest names by content hash,
//! fetched block by block on first read and verified (see `trellis-assets`).
//! The time spent waiting for blocks is not charged to the app's deadline.

use trellis_assets::{AssetError, AssetId};

use crate::bindings::WitError;
use crate::bindings::trellis::app::assets;

use super::HostState;

/// Largest single read.
const MAX_READ: u32 = 1 << 20;

impl HostState {
    fn asset_id(&self, name: &str) -> Result<AssetId, WitError> {
        self.manifest
            .asset(name)
            .map(AssetId)
            .ok_or_else(|| self.denied(format!("asset {name:?} is not in the manifest's [assets]")))
    }

    fn asset_error(&self, name: &str, e: &AssetError) -> WitError {
        match e {
            AssetError::PastEnd { .. } => WitError::Invalid(format!("asset {name}: {e}")),
            _ => {
                tracing::warn!(app = %self.app, "asset {name}: {e}");
                self.io_error(format!("asset {name}: {e}"))
            }
        }
    }
}

impl assets::Host for HostState {
    fn size(&mut self, name: String) -> Result<u64, WitError> {
        let id = self.asset_id(&name)?;
        let fetcher = self.services.assets.clone();
        self.blocking(|_| fetcher.size(id)).map_err(|e| self.asset_error(&name, &e))
    }

    fn read(&mut self, name: String, offset: u64, len: u32) -> Result<Vec<u8>, WitError> {
        let id = self.asset_id(&name)?;
        if len > MAX_READ {
            return Err(WitError::Invalid(format!("read of {len} bytes is above the {MAX_READ}-byte limit")));
        }
        let fetcher = self.services.assets.clone();
        self.blocking(|_| fetcher.read(id, offset, u64::from(len))).map_err(|e| self.asset_error(&name, &e))
    }
}
