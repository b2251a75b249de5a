//! `trellis:app/gpio`: claiming, driving and reading GPIO lines granted in the
//! manifest, wired (bias, active-low) as the manifest says; input edges go
//! to the app's mailbox through the broker.

use trellis_appfmt::LineBias;
use trellis_hal::gpio::{Bias, Edge, EdgeEvent, Level, LineConfig};

use crate::bindings::trellis::app::gpio;
use crate::bindings::{Event, GpioEdge, WitEdge, WitError, WitLevel};

use super::HostState;

fn level_to_hal(l: WitLevel) -> Level {
    match l {
        WitLevel::Low => Level::Low,
        WitLevel::High => Level::High,
    }
}

fn level_to_wit(l: Level) -> WitLevel {
    match l {
        Level::Low => WitLevel::Low,
        Level::High => WitLevel::High,
    }
}

impl HostState {
    fn check_output(&self, line: u32) -> Result<(), WitError> {
        let granted = &self.manifest.permissions.gpio_outputs;
        if granted.contains(&line) {
            Ok(())
        } else {
            Err(self
                .denied(format!("GPIO line {line} as output is not granted (permissions.gpio-outputs = {granted:?})")))
        }
    }

    /// How the manifest says `line` is wired.
    fn line_config(&self, line: u32) -> LineConfig {
        let wiring = self.manifest.gpio_line(line);
        let bias = match wiring.bias {
            LineBias::AsIs => Bias::AsIs,
            LineBias::PullUp => Bias::PullUp,
            LineBias::PullDown => Bias::PullDown,
            LineBias::Disable => Bias::Disabled,
        };
        LineConfig { bias, active_low: wiring.active_low }
    }

    fn check_line(&self, line: u32) -> Result<(), WitError> {
        let p = &self.manifest.permissions;
        if p.gpio_outputs.contains(&line) || p.gpio_inputs.contains(&line) {
            Ok(())
        } else {
            Err(self.denied(format!(
                "GPIO line {line} is not granted (permissions.gpio-inputs = {:?}, gpio-outputs = {:?})",
                p.gpio_inputs, p.gpio_outputs
            )))
        }
    }
}

impl gpio::Host for HostState {
    fn claim_output(&mut self, line: u32, initial: WitLevel) -> Result<(), WitError> {
        self.check_output(line)?;
        let config = self.line_config(line);
        self.services
            .hw
            .claim_output(&self.app, self.generation, line, level_to_hal(initial), config)
            .map_err(|e| self.io_error(e.to_string()))
    }

    fn write(&mut self, line: u32, value: WitLevel) -> Result<(), WitError> {
        self.check_output(line)?;
        self.services.hw.write(&self.app, line, level_to_hal(value)).map_err(|e| self.io_error(e.to_string()))
    }

    fn claim_input(&mut self, line: u32, edges: WitEdge) -> Result<(), WitError> {
        let granted = &self.manifest.permissions.gpio_inputs;
        if !granted.contains(&line) {
            return Err(self
                .denied(format!("GPIO line {line} as input is not granted (permissions.gpio-inputs = {granted:?})")));
        }
        let edges = match edges {
            WitEdge::Rising => Edge::Rising,
            WitEdge::Falling => Edge::Falling,
            WitEdge::Both => Edge::Both,
        };
        let broker = self.services.broker.clone();
        let app = self.app.clone();
        let sink = Box::new(move |e: EdgeEvent| {
            let edge = GpioEdge { line: e.line, value: level_to_wit(e.level), timestamp_ns: e.timestamp_ns };
            broker.deliver(&app, Event::GpioEdge(edge));
        });
        let config = self.line_config(line);
        self.services
            .hw
            .claim_input(&self.app, self.generation, line, edges, config, sink)
            .map_err(|e| self.io_error(e.to_string()))
    }

    fn read(&mut self, line: u32) -> Result<WitLevel, WitError> {
        self.check_line(line)?;
        self.services.hw.read(&self.app, line).map(level_to_wit).map_err(|e| self.io_error(e.to_string()))
    }

    fn release(&mut self, line: u32) -> Result<(), WitError> {
        self.check_line(line)?;
        self.services.hw.release(&self.app, line).map_err(|e| self.io_error(e.to_string()))
    }
}
