//! blinky: toggles a GPIO output on a timer.
//!
//! Config: `line` (default 17), `period-ms` (default 500).
//! Build: `make apps` (or `cargo build --release --target wasm32-wasip2 -p blinky`
//! in `wasm-apps/`, then `trellis app pack`).

use trellis_sdk::{App, Level, Start, gpio, timers};

struct Blinky {
    line: u32,
    level: Level,
    toggles: u64,
}

impl App for Blinky {
    fn start(start: &Start) -> Result<Self, String> {
        let line = start.get("line", 17)?;
        let period = start.get("period-ms", 500)?;
        gpio::claim_output(line, Level::Low)?;
        timers::set_interval(period)?;
        trellis_sdk::info(&format!("blinking GPIO {line} every {period} ms"));
        Ok(Self { line, level: Level::Low, toggles: 0 })
    }

    fn on_timer(&mut self, _id: u32) -> Result<(), String> {
        self.level = match self.level {
            Level::Low => Level::High,
            Level::High => Level::Low,
        };
        gpio::write(self.line, self.level)?;
        self.toggles += 1;
        trellis_sdk::debug(&format!("GPIO {} {:?} (toggle {})", self.line, self.level, self.toggles));
        Ok(())
    }

    fn on_shutdown(&mut self) {
        let _ = gpio::write(self.line, Level::Low);
    }
}

trellis_sdk::app!(Blinky);
