//! subscriber: receives what happens elsewhere and logs it: messages from
//! other apps, and devices appearing and going away.
//!
//! Config: `pattern` (`demo/#`), `hotplug` (comma-separated subsystems, default none).

use trellis_sdk::{App, HotplugAction, HotplugEvent, Start, hotplug, pubsub};

struct Subscriber {
    received: u64,
}

impl App for Subscriber {
    fn start(start: &Start) -> Result<Self, String> {
        let pattern = start.get("pattern", "demo/#".to_owned())?;
        pubsub::subscribe(&pattern)?;
        let subsystems = start.get("hotplug", String::new())?;
        for subsystem in subsystems.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            hotplug::subscribe(subsystem)?;
        }
        trellis_sdk::info(&format!("listening on {pattern}, hot-plug [{subsystems}]"));
        Ok(Self { received: 0 })
    }

    fn on_message(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
        self.received += 1;
        trellis_sdk::info(&format!("{topic}: {} (message {})", String::from_utf8_lossy(payload), self.received));
        Ok(())
    }

    fn on_hotplug(&mut self, event: HotplugEvent) -> Result<(), String> {
        let action = match event.action {
            HotplugAction::Add => "added",
            HotplugAction::Remove => "removed",
        };
        trellis_sdk::info(&format!("{} device {} {action}", event.subsystem, event.device));
        Ok(())
    }
}

trellis_sdk::app!(Subscriber);
