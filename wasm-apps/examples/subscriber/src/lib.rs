//! subscriber: receives messages from other apps and logs them.
//!
//! Config: `pattern` (`demo/#`).

use trellis_sdk::{App, Start, pubsub};

struct Subscriber {
    received: u64,
}

impl App for Subscriber {
    fn start(start: &Start) -> Result<Self, String> {
        let pattern = start.get("pattern", "demo/#".to_owned())?;
        pubsub::subscribe(&pattern).map_err(|e| e.to_string())?;
        trellis_sdk::info(&format!("listening on {pattern}"));
        Ok(Self { received: 0 })
    }

    fn on_message(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
        self.received += 1;
        trellis_sdk::info(&format!("{topic}: {} (message {})", String::from_utf8_lossy(payload), self.received));
        Ok(())
    }
}

trellis_sdk::app!(Subscriber);
