//! thermostat: reads a TMP102 temperature sensor over I2C and switches a
//! heater output with hysteresis; publishes each reading, on the device and
//! on the fleet bus, and holds the setpoint the fleet's summary asks for.
//!
//! Config: `bus` (1), `address` (72 = 0x48), `heater-line` (22), `setpoint` (21.0 °C),
//! `hysteresis` (0.5 °C), `period-ms` (1000). Publishes `sensors/temperature`
//! and `fleet/readings/temperature` (the fleet bus, as this device); follows
//! `fleet/+/summary/temperature` (`mean=.. setpoint=.. devices=..`, from the
//! `aggregator` app on an edge node) and takes its setpoint.

use trellis_sdk::{App, Level, Start, gpio, i2c, pubsub, timers};

struct Thermostat {
    bus: u32,
    address: u8,
    heater: u32,
    setpoint: f32,
    hysteresis: f32,
    heating: bool,
}

/// The value of `key` in a summary like `mean=21.30 setpoint=20.85 devices=2`.
fn field(summary: &str, key: &str) -> Option<f32> {
    summary.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// TMP102 register 0: 12-bit two's complement, 0.0625 °C per bit, left-justified.
fn decode_tmp102(raw: [u8; 2]) -> f32 {
    f32::from(i16::from_be_bytes(raw) >> 4) * 0.0625
}

impl Thermostat {
    fn read(&self) -> Result<f32, String> {
        let bytes = i2c::write_read(self.bus, self.address, &[0x00], 2)?;
        let raw: [u8; 2] = bytes.try_into().map_err(|_| "short read from the sensor".to_owned())?;
        Ok(decode_tmp102(raw))
    }
}

impl App for Thermostat {
    fn start(start: &Start) -> Result<Self, String> {
        let t = Self {
            bus: start.get("bus", 1)?,
            address: start.get("address", 0x48)?,
            heater: start.get("heater-line", 22)?,
            setpoint: start.get("setpoint", 21.0)?,
            hysteresis: start.get("hysteresis", 0.5)?,
            heating: false,
        };
        gpio::claim_output(t.heater, Level::Low)?;
        let first = t.read()?;
        pubsub::subscribe("fleet/+/summary/temperature")?;
        timers::set_interval(start.get("period-ms", 1000)?)?;
        trellis_sdk::info(&format!("{first:.2} °C now, holding {:.1} °C", t.setpoint));
        Ok(t)
    }

    fn on_timer(&mut self, _id: u32) -> Result<(), String> {
        let celsius = self.read()?;
        let heating = if celsius < self.setpoint - self.hysteresis {
            true
        } else if celsius > self.setpoint + self.hysteresis {
            false
        } else {
            self.heating
        };
        if heating != self.heating {
            self.heating = heating;
            let level = if heating { Level::High } else { Level::Low };
            gpio::write(self.heater, level)?;
            trellis_sdk::info(&format!("{celsius:.2} °C: heater {}", if heating { "on" } else { "off" }));
        }
        let reading = format!("{celsius:.2}");
        pubsub::publish("sensors/temperature", reading.as_bytes())?;
        // Never waits on the network: without a fleet link the reading is dropped (and counted).
        pubsub::publish("fleet/readings/temperature", reading.as_bytes()).map_err(String::from)
    }

    fn on_message(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
        let summary = String::from_utf8_lossy(payload);
        let Some(setpoint) = field(&summary, "setpoint").filter(|s| (5.0..=35.0).contains(s)) else {
            trellis_sdk::warn(&format!("{topic}: no setpoint in {summary:?}"));
            return Ok(());
        };
        if (setpoint - self.setpoint).abs() >= 0.05 {
            let from = topic.split('/').nth(1).unwrap_or("?");
            self.setpoint = setpoint;
            trellis_sdk::info(&format!(
                "setpoint {setpoint:.2} °C from {from} (fleet mean {:.2} °C over {} devices)",
                field(&summary, "mean").unwrap_or(f32::NAN),
                field(&summary, "devices").unwrap_or(0.0)
            ));
        }
        Ok(())
    }

    fn on_shutdown(&mut self) {
        let _ = gpio::write(self.heater, Level::Low);
    }
}

trellis_sdk::app!(Thermostat);
