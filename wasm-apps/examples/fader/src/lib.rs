//! fader: fades an LED in and out with hardware PWM.
//!
//! One concept: a PWM channel's duty cycle, changed on a timer. The channel
//! keeps running across a swap to a new version and stops when the app stops.
//! On a Pi 4, channel 0 is GPIO 18 with `dtoverlay=pwm` in `config.txt`; the
//! device twin has no PWM (the simulated board has two channels).
//!
//! Config: `channel` (0), `period-us` (1000, a 1 kHz PWM), `step-ms` (20: a
//! full fade up and down takes 100 steps). Build: `make apps` (or `cargo build
//! --release --target wasm32-wasip2 -p fader` in `wasm-apps/`, then `trellis app pack`).

use trellis_sdk::{App, Start, pwm, timers};

struct Fader {
    channel: u32,
    period_ns: u64,
    /// 0..=100, then back down.
    step: u32,
    up: bool,
}

impl Fader {
    fn apply(&self) -> Result<(), String> {
        // Perceived brightness is roughly quadratic in duty.
        let duty = self.period_ns * u64::from(self.step * self.step) / 10_000;
        pwm::set(self.channel, self.period_ns, duty).map_err(String::from)
    }
}

impl App for Fader {
    fn start(start: &Start) -> Result<Self, String> {
        let channel = start.get("channel", 0)?;
        let period_ns = start.get::<u64>("period-us", 1000)? * 1000;
        let fader = Self { channel, period_ns, step: 0, up: true };
        fader.apply()?;
        timers::set_interval(start.get("step-ms", 20)?)?;
        trellis_sdk::info(&format!("fading PWM channel {channel} at {} Hz", 1_000_000_000 / period_ns.max(1)));
        Ok(fader)
    }

    fn on_timer(&mut self, _id: u32) -> Result<(), String> {
        match (self.up, self.step) {
            (true, 100) => self.up = false,
            (false, 0) => self.up = true,
            _ => {}
        }
        self.step = if self.up { self.step + 1 } else { self.step - 1 };
        self.apply()
    }
}

trellis_sdk::app!(Fader);
