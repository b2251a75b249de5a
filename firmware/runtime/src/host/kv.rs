//! `trellis:app/kv`: the app's own key-value store (writes are durable and
//! count against its quota; the time spent writing is not charged to the app).

use crate::bindings::WitError;
use crate::bindings::trellis::app::kv;
use crate::kv::KvError;
use crate::sync::lock;

use super::HostState;

impl kv::Host for HostState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, WitError> {
        Ok(lock(&self.kv).get(&key))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), WitError> {
        self.blocking(|s| lock(&s.kv).set(&key, &value)).map_err(|e| match e {
            KvError::Quota { .. } => WitError::QuotaExceeded(e.to_string()),
            KvError::Key(_) => WitError::Invalid(e.to_string()),
            _ => self.io_error(e.to_string()),
        })
    }

    fn delete(&mut self, key: String) -> Result<bool, WitError> {
        self.blocking(|s| lock(&s.kv).delete(&key)).map_err(|e| self.io_error(e.to_string()))
    }

    fn keys(&mut self) -> Result<Vec<String>, WitError> {
        Ok(lock(&self.kv).keys())
    }
}
