//! GPIO through the kernel's character device (`/dev/gpiochipN`), with
//! `linux-embedded-hal`'s `gpio-cdev`: line requests with direction, bias and
//! active-low, and edge events timestamped by the kernel (`CLOCK_MONOTONIC`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use embedded_hal::digital::{ErrorType, InputPin, OutputPin, StatefulOutputPin};
use linux_embedded_hal::gpio_cdev::{
    Chip, EventRequestFlags, EventType, LineEventHandle, LineHandle, LineRequestFlags,
};

use crate::gpio::{Bias, Edge, EdgeEvent, EdgeSink, GpioChip, GpioError, InputLine, Level, LineConfig, OutputLine};

/// The kernel's bias flags of a line request (`GPIOHANDLE_REQUEST_BIAS_*` in
/// `linux/gpio.h`, since 5.5), which `gpio-cdev` has no names for.
const BIAS_PULL_UP: u32 = 1 << 5;
const BIAS_PULL_DOWN: u32 = 1 << 6;
const BIAS_DISABLE: u32 = 1 << 7;

/// A GPIO chip through `/dev/gpiochipN`.
pub struct LinuxGpioChip {
    path: PathBuf,
    label: String,
    lines: u32,
    chip: Mutex<Chip>,
}

impl std::fmt::Debug for LinuxGpioChip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxGpioChip")
            .field("path", &self.path)
            .field("label", &self.label)
            .field("lines", &self.lines)
            .finish()
    }
}

fn gpio_io(chip: &Path, line: u32, e: impl std::fmt::Display) -> GpioError {
    GpioError::Io { chip: chip.display().to_string(), line, message: e.to_string() }
}

/// The request flags for a line in `direction` with `config`.
fn request_flags(direction: LineRequestFlags, config: LineConfig) -> LineRequestFlags {
    let mut bits = direction.bits();
    if config.active_low {
        bits |= LineRequestFlags::ACTIVE_LOW.bits();
    }
    bits |= match config.bias {
        Bias::AsIs => 0,
        Bias::PullUp => BIAS_PULL_UP,
        Bias::PullDown => BIAS_PULL_DOWN,
        Bias::Disabled => BIAS_DISABLE,
    };
    LineRequestFlags::from_bits_retain(bits)
}

impl LinuxGpioChip {
    /// Open a chip by path (`/dev/gpiochip0`).
    ///
    /// # Errors
    /// The device cannot be opened.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, GpioError> {
        let path = path.into();
        let chip = Chip::new(&path).map_err(|e| gpio_io(&path, 0, e))?;
        Ok(Self { lines: chip.num_lines(), label: chip.label().to_owned(), chip: Mutex::new(chip), path })
    }

    /// Find a chip by path (anything with a `/`), by its name (`gpiochip0`) or
    /// by its label (`pinctrl-bcm2711` on a Pi 4, the label given to a
    /// gpio-sim bank): chip numbers depend on probe order, labels do not.
    ///
    /// # Errors
    /// No chip matches (the error lists the chips there are), or it cannot be opened.
    pub fn find(name: &str) -> Result<Self, GpioError> {
        if name.contains('/') {
            return Self::open(name);
        }
        let mut found = Vec::new();
        let mut paths: Vec<PathBuf> =
            std::fs::read_dir("/dev").map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
        paths.retain(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("gpiochip")));
        paths.sort();
        for path in paths {
            let Ok(chip) = Self::open(&path) else { continue };
            let file = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            if chip.label == name || file == name {
                return Ok(chip);
            }
            found.push(format!("{file} \"{}\"", chip.label));
        }
        let found = if found.is_empty() { "none".to_owned() } else { found.join(", ") };
        Err(GpioError::NoSuchChip { chip: name.to_owned(), found })
    }

    /// The chip's label.
    #[must_use]
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The device file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check(&self, line: u32) -> Result<(), GpioError> {
        if line < self.lines {
            Ok(())
        } else {
            Err(GpioError::NoSuchLine { chip: self.path.display().to_string(), line, lines: self.lines })
        }
    }
}

struct LinuxOutput {
    chip: PathBuf,
    line: u32,
    handle: LineHandle,
}

impl ErrorType for LinuxOutput {
    type Error = GpioError;
}

impl OutputPin for LinuxOutput {
    fn set_low(&mut self) -> Result<(), GpioError> {
        self.handle.set_value(0).map_err(|e| gpio_io(&self.chip, self.line, e))
    }
    fn set_high(&mut self) -> Result<(), GpioError> {
        self.handle.set_value(1).map_err(|e| gpio_io(&self.chip, self.line, e))
    }
}

impl StatefulOutputPin for LinuxOutput {
    fn is_set_high(&mut self) -> Result<bool, GpioError> {
        self.handle.get_value().map(|v| v != 0).map_err(|e| gpio_io(&self.chip, self.line, e))
    }
    fn is_set_low(&mut self) -> Result<bool, GpioError> {
        self.is_set_high().map(|h| !h)
    }
}

impl OutputLine for LinuxOutput {
    fn line(&self) -> u32 {
        self.line
    }
}

/// An input line with an edge-watching thread (stopped when the line is dropped).
struct LinuxInput {
    chip: PathBuf,
    line: u32,
    handle: Arc<Mutex<LineEventHandle>>,
    stop: Arc<AtomicBool>,
}

impl Drop for LinuxInput {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl ErrorType for LinuxInput {
    type Error = GpioError;
}

impl InputPin for LinuxInput {
    fn is_high(&mut self) -> Result<bool, GpioError> {
        let handle = self.handle.lock().unwrap_or_else(PoisonError::into_inner);
        handle.get_value().map(|v| v != 0).map_err(|e| gpio_io(&self.chip, self.line, e))
    }
    fn is_low(&mut self) -> Result<bool, GpioError> {
        self.is_high().map(|h| !h)
    }
}

impl InputLine for LinuxInput {
    fn line(&self) -> u32 {
        self.line
    }
}

fn watch_edges(line: u32, handle: Arc<Mutex<LineEventHandle>>, stop: Arc<AtomicBool>, sink: EdgeSink) {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let timeout = Timespec { tv_sec: 0, tv_nsec: 100_000_000 };
    while !stop.load(Ordering::Relaxed) {
        let mut handle = handle.lock().unwrap_or_else(PoisonError::into_inner);
        let ready = {
            let mut fds = [PollFd::new(&*handle, PollFlags::IN)];
            poll(&mut fds, Some(&timeout)).unwrap_or(0)
        };
        if ready == 0 {
            drop(handle);
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        match handle.get_event() {
            Ok(event) => {
                let level = match event.event_type() {
                    EventType::RisingEdge => Level::High,
                    EventType::FallingEdge => Level::Low,
                };
                drop(handle);
                sink(EdgeEvent { line, level, timestamp_ns: event.timestamp() });
            }
            Err(e) => {
                tracing::warn!(line, "GPIO edge events stopped: {e}");
                return;
            }
        }
    }
}

impl GpioChip for LinuxGpioChip {
    fn name(&self) -> &str {
        self.path.file_name().and_then(|n| n.to_str()).unwrap_or("gpiochip")
    }

    fn lines(&self) -> u32 {
        self.lines
    }

    fn request_output(
        &self,
        line: u32,
        initial: Level,
        config: LineConfig,
        consumer: &str,
    ) -> Result<Box<dyn OutputLine>, GpioError> {
        self.check(line)?;
        let mut chip = self.chip.lock().unwrap_or_else(PoisonError::into_inner);
        let flags = request_flags(LineRequestFlags::OUTPUT, config);
        let handle = chip
            .get_line(line)
            .and_then(|l| l.request(flags, u8::from(initial.is_high()), consumer))
            .map_err(|e| gpio_io(&self.path, line, e))?;
        Ok(Box::new(LinuxOutput { chip: self.path.clone(), line, handle }))
    }

    fn request_input(
        &self,
        line: u32,
        edges: Edge,
        config: LineConfig,
        consumer: &str,
        sink: EdgeSink,
    ) -> Result<Box<dyn InputLine>, GpioError> {
        self.check(line)?;
        let events = match edges {
            Edge::Rising => EventRequestFlags::RISING_EDGE,
            Edge::Falling => EventRequestFlags::FALLING_EDGE,
            Edge::Both => EventRequestFlags::BOTH_EDGES,
        };
        let mut chip = self.chip.lock().unwrap_or_else(PoisonError::into_inner);
        let flags = request_flags(LineRequestFlags::INPUT, config);
        let handle = chip
            .get_line(line)
            .and_then(|l| l.events(flags, events, consumer))
            .map_err(|e| gpio_io(&self.path, line, e))?;
        let handle = Arc::new(Mutex::new(handle));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (handle.clone(), stop.clone());
        std::thread::Builder::new()
            .name(format!("gpio-edges-{line}"))
            .spawn(move || watch_edges(line, h, s, sink))
            .map_err(|e| gpio_io(&self.path, line, e))?;
        Ok(Box::new(LinuxInput { chip: self.path.clone(), line, handle, stop }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_flags_carry_bias_and_active_low() {
        let f = request_flags(LineRequestFlags::INPUT, LineConfig { bias: Bias::PullUp, active_low: true });
        assert_eq!(f.bits(), 1 | (1 << 2) | (1 << 5));
        let f = request_flags(LineRequestFlags::OUTPUT, LineConfig::default());
        assert_eq!(f.bits(), 1 << 1);
        let f = request_flags(LineRequestFlags::INPUT, LineConfig { bias: Bias::Disabled, active_low: false });
        assert_eq!(f.bits(), 1 | (1 << 7));
        let f = request_flags(LineRequestFlags::INPUT, LineConfig { bias: Bias::PullDown, active_low: false });
        assert_eq!(f.bits(), 1 | (1 << 6));
    }
}
