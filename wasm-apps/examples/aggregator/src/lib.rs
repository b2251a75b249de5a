//! aggregator: runs on an edge node and follows the temperature readings of
//! every device's thermostat on the fleet bus; every period it publishes a
//! summary for them: the fleet's mean, and the setpoint the thermostats
//! should hold (the target, raised when the fleet runs cold and lowered
//! when it runs warm).
//!
//! Config: `target` (21.0 °C), `gain` (0.5), `max-offset` (2.0 °C),
//! `period-ms` (5000), `stale-periods` (3: a device not heard from for that
//! many periods is left out). Follows `fleet/+/readings/temperature`;
//! publishes `fleet/summary/temperature` as `mean=21.30 setpoint=20.85 devices=2`.

use std::collections::BTreeMap;

use trellis_sdk::{App, Start, pubsub, timers};

struct Aggregator {
    target: f32,
    gain: f32,
    max_offset: f32,
    stale_periods: u64,
    period: u64,
    /// The last reading of each device, and the period it came in.
    readings: BTreeMap<String, (f32, u64)>,
    /// The devices of the last summary.
    summarised: Vec<String>,
}

impl App for Aggregator {
    fn start(start: &Start) -> Result<Self, String> {
        pubsub::subscribe("fleet/+/readings/temperature")?;
        let period_ms: u32 = start.get("period-ms", 5000)?;
        timers::set_interval(period_ms)?;
        let a = Self {
            target: start.get("target", 21.0)?,
            gain: start.get("gain", 0.5)?,
            max_offset: start.get("max-offset", 2.0)?,
            stale_periods: start.get("stale-periods", 3)?,
            period: 0,
            readings: BTreeMap::new(),
            summarised: Vec::new(),
        };
        trellis_sdk::info(&format!("summarising the fleet's readings every {period_ms} ms, target {:.1} °C", a.target));
        Ok(a)
    }

    fn on_message(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
        // fleet/<device>/readings/temperature
        let Some(device) = topic.split('/').nth(1) else { return Ok(()) };
        match String::from_utf8_lossy(payload).trim().parse::<f32>() {
            Ok(celsius) if celsius.is_finite() => {
                self.readings.insert(device.to_owned(), (celsius, self.period));
            }
            _ => trellis_sdk::warn(&format!("{topic}: not a temperature")),
        }
        Ok(())
    }

    fn on_timer(&mut self, _id: u32) -> Result<(), String> {
        self.period += 1;
        let (now, stale) = (self.period, self.stale_periods);
        self.readings.retain(|_, (_, seen)| now - *seen <= stale);
        let devices: Vec<String> = self.readings.keys().cloned().collect();
        if devices != self.summarised {
            trellis_sdk::info(&format!("following {} devices: {}", devices.len(), devices.join(", ")));
            self.summarised = devices;
        }
        if self.readings.is_empty() {
            return Ok(());
        }
        let n = self.readings.len();
        let mean = self.readings.values().map(|(c, _)| c).sum::<f32>() / n as f32;
        let offset = ((self.target - mean) * self.gain).clamp(-self.max_offset, self.max_offset);
        let summary = format!("mean={mean:.2} setpoint={:.2} devices={n}", self.target + offset);
        pubsub::publish("fleet/summary/temperature", summary.as_bytes()).map_err(String::from)
    }
}

trellis_sdk::app!(Aggregator);
