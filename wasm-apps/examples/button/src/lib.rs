//! button: follows a push button on a GPIO input through edge events.
//!
//! One concept: an input line whose edges arrive as events, with the kernel's
//! timestamp. The manifest says how the button is wired (`[gpio.27]`: pull-up,
//! active-low), so the app sees "pressed" as high whatever the wiring.
//!
//! Config: `line` (27). Publishes `buttons/<line>` = `pressed` / `released`.
//! Build: `make apps` (or `cargo build --release --target wasm32-wasip2 -p button`
//! in `wasm-apps/`, then `trellis app pack`).

use trellis_sdk::{App, Edge, GpioEdge, Level, Start, gpio, pubsub};

struct Button {
    line: u32,
    presses: u64,
}

impl App for Button {
    fn start(start: &Start) -> Result<Self, String> {
        let line = start.get("line", 27)?;
        gpio::claim_input(line, Edge::Both)?;
        let now = if gpio::read(line)? == Level::High { "pressed" } else { "released" };
        trellis_sdk::info(&format!("watching the button on GPIO {line}: {now}"));
        Ok(Self { line, presses: 0 })
    }

    fn on_gpio_edge(&mut self, edge: GpioEdge) -> Result<(), String> {
        if edge.line != self.line {
            return Ok(());
        }
        let state = if edge.value == Level::High {
            self.presses += 1;
            "pressed"
        } else {
            "released"
        };
        trellis_sdk::info(&format!(
            "button on GPIO {} {state} (press {}, kernel time {} ns)",
            self.line, self.presses, edge.timestamp_ns
        ));
        pubsub::publish(&format!("buttons/{}", self.line), state.as_bytes()).map_err(String::from)
    }
}

trellis_sdk::app!(Button);
