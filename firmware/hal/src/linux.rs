//! Linux backends: GPIO through the character device (`/dev/gpiochipN`, via
//! `linux-embedded-hal`'s cdev support), I2C through i2cdev (`/dev/i2c-N`) and
//! SPI through spidev (`/dev/spidevB.C`). Errors name the chip and line, the
//! bus and address, or the device.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use embedded_hal::digital::{ErrorType as DigitalErrorType, InputPin, OutputPin, StatefulOutputPin};
use embedded_hal::i2c::{ErrorType as I2cErrorType, I2c, Operation as I2cOperation};
use embedded_hal::spi::{ErrorType as SpiErrorType, Operation as SpiOperation, SpiDevice};
use linux_embedded_hal::gpio_cdev::{
    Chip, EventRequestFlags, EventType, LineEventHandle, LineHandle, LineRequestFlags,
};
use linux_embedded_hal::{I2cdev, SpidevDevice};

use crate::gpio::{Edge, EdgeEvent, EdgeSink, GpioChip, GpioError, InputLine, Level, OutputLine};
use crate::i2c::{I2cBackend, I2cBus, I2cError};
use crate::spi::{SpiBackend, SpiBus, SpiError};

/// A GPIO chip through `/dev/gpiochipN`.
pub struct LinuxGpioChip {
    path: PathBuf,
    lines: u32,
    chip: Mutex<Chip>,
}

impl std::fmt::Debug for LinuxGpioChip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxGpioChip").field("path", &self.path).field("lines", &self.lines).finish()
    }
}

fn gpio_io(chip: &Path, line: u32, e: impl std::fmt::Display) -> GpioError {
    GpioError::Io { chip: chip.display().to_string(), line, message: e.to_string() }
}

impl LinuxGpioChip {
    /// Open a chip (`/dev/gpiochip0`).
    ///
    /// # Errors
    /// The device cannot be opened.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, GpioError> {
        let path = path.into();
        let chip = Chip::new(&path).map_err(|e| gpio_io(&path, 0, e))?;
        Ok(Self { lines: chip.num_lines(), chip: Mutex::new(chip), path })
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

impl DigitalErrorType for LinuxOutput {
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

impl DigitalErrorType for LinuxInput {
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

    fn request_output(&self, line: u32, initial: Level, consumer: &str) -> Result<Box<dyn OutputLine>, GpioError> {
        self.check(line)?;
        let mut chip = self.chip.lock().unwrap_or_else(PoisonError::into_inner);
        let handle = chip
            .get_line(line)
            .and_then(|l| l.request(LineRequestFlags::OUTPUT, u8::from(initial.is_high()), consumer))
            .map_err(|e| gpio_io(&self.path, line, e))?;
        Ok(Box::new(LinuxOutput { chip: self.path.clone(), line, handle }))
    }

    fn request_input(
        &self,
        line: u32,
        edges: Edge,
        consumer: &str,
        sink: EdgeSink,
    ) -> Result<Box<dyn InputLine>, GpioError> {
        self.check(line)?;
        let flags = match edges {
            Edge::Rising => EventRequestFlags::RISING_EDGE,
            Edge::Falling => EventRequestFlags::FALLING_EDGE,
            Edge::Both => EventRequestFlags::BOTH_EDGES,
        };
        let mut chip = self.chip.lock().unwrap_or_else(PoisonError::into_inner);
        let handle = chip
            .get_line(line)
            .and_then(|l| l.events(LineRequestFlags::INPUT, flags, consumer))
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

/// I2C buses through `/dev/i2c-N`.
#[derive(Debug, Default)]
pub struct LinuxI2c;

struct LinuxI2cBus {
    bus: u32,
    dev: I2cdev,
}

impl I2cErrorType for LinuxI2cBus {
    type Error = I2cError;
}

impl I2c for LinuxI2cBus {
    fn transaction(&mut self, address: u8, operations: &mut [I2cOperation<'_>]) -> Result<(), I2cError> {
        self.dev.transaction(address, operations).map_err(|e| {
            let nack = matches!(embedded_hal::i2c::Error::kind(&e), embedded_hal::i2c::ErrorKind::NoAcknowledge(_));
            if nack {
                I2cError::NoDevice { bus: self.bus, address }
            } else {
                I2cError::Io { bus: self.bus, address, message: e.to_string() }
            }
        })
    }
}

impl I2cBackend for LinuxI2c {
    fn open(&self, bus: u32) -> Result<Box<dyn I2cBus>, I2cError> {
        let path = format!("/dev/i2c-{bus}");
        if !Path::new(&path).exists() {
            return Err(I2cError::NoSuchBus { bus });
        }
        let dev = I2cdev::new(&path).map_err(|e| I2cError::Io { bus, address: 0, message: format!("{path}: {e}") })?;
        Ok(Box::new(LinuxI2cBus { bus, dev }))
    }
}

/// SPI devices through `/dev/spidevB.C`.
#[derive(Debug, Default)]
pub struct LinuxSpi;

struct LinuxSpiDevice {
    name: String,
    dev: SpidevDevice,
}

impl SpiErrorType for LinuxSpiDevice {
    type Error = SpiError;
}

impl SpiDevice<u8> for LinuxSpiDevice {
    fn transaction(&mut self, operations: &mut [SpiOperation<'_, u8>]) -> Result<(), SpiError> {
        self.dev.transaction(operations).map_err(|e| SpiError::Io { device: self.name.clone(), message: e.to_string() })
    }
}

impl SpiBackend for LinuxSpi {
    fn open(&self, device: &str) -> Result<Box<dyn SpiBus>, SpiError> {
        let path = format!("/dev/{device}");
        if !crate::spi::valid_device_name(device) || !Path::new(&path).exists() {
            return Err(SpiError::NoSuchDevice { device: device.to_owned() });
        }
        let dev = SpidevDevice::open(&path)
            .map_err(|e| SpiError::Io { device: device.to_owned(), message: format!("{path}: {e}") })?;
        Ok(Box::new(LinuxSpiDevice { name: device.to_owned(), dev }))
    }
}

/// The board as seen through the kernel: `gpio_chip` (`/dev/gpiochip0`), all
/// I2C buses and SPI devices.
///
/// # Errors
/// The GPIO chip cannot be opened.
pub fn board(gpio_chip: &Path) -> Result<crate::Board, GpioError> {
    Ok(crate::Board {
        gpio: Arc::new(LinuxGpioChip::open(gpio_chip)?),
        i2c: Arc::new(LinuxI2c),
        spi: Arc::new(LinuxSpi),
    })
}
