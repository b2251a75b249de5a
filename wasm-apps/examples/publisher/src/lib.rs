//! publisher: publishes a sequence number on a topic at a fixed period.
//!
//! Config: `topic` (`demo/ticks`), `period-ms` (1000). The payload is the
//! sequence number as text, starting at 1 for each start.

use trellis_sdk::{App, Start, pubsub, timers};

struct Publisher {
    topic: String,
    seq: u64,
}

impl App for Publisher {
    fn start(start: &Start) -> Result<Self, String> {
        let topic = start.get("topic", "demo/ticks".to_owned())?;
        let period: u32 = start.get("period-ms", 1000)?;
        timers::set_interval(period)?;
        trellis_sdk::info(&format!("publishing on {topic} every {period} ms"));
        Ok(Self { topic, seq: 0 })
    }

    fn on_timer(&mut self, _id: u32) -> Result<(), String> {
        self.seq += 1;
        pubsub::publish(&self.topic, self.seq.to_string().as_bytes()).map_err(String::from)
    }
}

trellis_sdk::app!(Publisher);
