//! counter: state that survives a swap. The count lives in the key-value store
//! (so it also survives a reboot); the number of ticks since the device booted
//! is handed from version to version with `save` / `restore`.
//!
//! Config: `period-ms` (1000). Publishes `counter/value` with the count.

use trellis_sdk::{App, Start, kv, pubsub, timers};

struct Counter {
    count: u64,
    ticks_since_boot: u64,
}

fn decode(bytes: Option<Vec<u8>>) -> u64 {
    bytes.and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes)
}

impl App for Counter {
    fn start(start: &Start) -> Result<Self, String> {
        let count = decode(kv::get("count")?);
        let ticks_since_boot = decode(start.restored.clone());
        timers::set_interval(start.get("period-ms", 1000)?)?;
        trellis_sdk::info(&format!("counting from {count} ({ticks_since_boot} ticks since boot)"));
        Ok(Self { count, ticks_since_boot })
    }

    fn on_timer(&mut self, _id: u32) -> Result<(), String> {
        self.count += 1;
        self.ticks_since_boot += 1;
        kv::set("count", &self.count.to_le_bytes())?;
        pubsub::publish("counter/value", self.count.to_string().as_bytes())?;
        trellis_sdk::debug(&format!("count {}", self.count));
        Ok(())
    }

    fn save(&self) -> Option<Vec<u8>> {
        Some(self.ticks_since_boot.to_le_bytes().to_vec())
    }
}

trellis_sdk::app!(Counter);
