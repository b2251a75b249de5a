//! A simulated board: GPIO lines you can drive and read back, I2C devices with
//! register maps (a TMP102 temperature sensor among them), an SPI loopback and
//! two PWM channels whose settings you can read back.
//!
//! Used by `trellis run` on a laptop and by the tests; behaves like the Linux
//! backends as far as apps can tell (claims, busy lines, NACKs, edge events).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use embedded_hal::digital::{ErrorType as DigitalErrorType, InputPin, OutputPin, StatefulOutputPin};
use embedded_hal::i2c::{ErrorType as I2cErrorType, I2c, Operation as I2cOperation};
use embedded_hal::spi::{ErrorType as SpiErrorType, Operation as SpiOperation, SpiDevice};

use crate::Board;
use crate::gpio::{Bias, Edge, EdgeEvent, EdgeSink, GpioChip, GpioError, InputLine, Level, LineConfig, OutputLine};
use crate::i2c::{I2cBackend, I2cBus, I2cError};
use crate::pwm::{PwmBackend, PwmChannel, PwmError};
use crate::spi::{SpiBackend, SpiBus, SpiConfig, SpiError};

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The I2C bus the standard board's sensor sits on (I2C-1 on a Pi).
pub const SENSOR_BUS: u32 = 1;
/// The standard board's TMP102 address.
pub const SENSOR_ADDRESS: u8 = 0x48;
/// The standard board's SPI loopback device.
pub const SPI_LOOPBACK: &str = "spidev0.0";

/// A simulated board with handles to poke at it.
#[derive(Clone, Debug)]
pub struct SimBoard {
    /// The GPIO chip (54 lines, like a Pi's `gpiochip0`).
    pub gpio: Arc<SimGpioChip>,
    /// The I2C buses.
    pub i2c: Arc<SimI2c>,
    /// The SPI devices.
    pub spi: Arc<SimSpi>,
    /// The PWM channels (0 and 1, like a Pi's).
    pub pwm: Arc<SimPwm>,
    /// The TMP102 on bus 1 at 0x48.
    pub temperature: SimTemperature,
}

impl SimBoard {
    /// The standard simulated board: `gpiochip0` with 54 lines, a TMP102 at
    /// 0x48 on I2C bus 1 reading 21.5 °C, a register map at 0x50 on bus 1, and a
    /// loopback on `spidev0.0`, PWM channels 0 and 1.
    #[must_use]
    pub fn standard() -> Self {
        let temperature = SimTemperature::new(21.5);
        let i2c = Arc::new(SimI2c::default());
        i2c.add_device(SENSOR_BUS, SENSOR_ADDRESS, Tmp102::new(temperature.clone()));
        i2c.add_device(SENSOR_BUS, 0x50, RegisterMap::default());
        let spi = Arc::new(SimSpi::default());
        spi.add_loopback(SPI_LOOPBACK);
        let pwm = Arc::new(SimPwm::new(2));
        Self { gpio: Arc::new(SimGpioChip::new("gpiochip0", 54)), i2c, spi, pwm, temperature }
    }

    /// The board as the runtime sees it.
    #[must_use]
    pub fn board(&self) -> Board {
        Board { gpio: self.gpio.clone(), i2c: self.i2c.clone(), spi: self.spi.clone(), pwm: self.pwm.clone() }
    }
}

// ---------------------------------------------------------------- GPIO

enum Claim {
    Free,
    Output { consumer: String },
    Input { consumer: String, edges: Edge, sink: Arc<EdgeSink>, active_low: bool },
}

/// One line, modelled like the kernel's gpio-sim: what the wire carries
/// (`physical`) comes from the line's own output when it is one, else from
/// whatever drives it from outside, else from the requested pull resistor,
/// else it keeps its last level.
struct LineState {
    physical: Level,
    external: Option<Level>,
    bias: Bias,
    claim: Claim,
}

impl LineState {
    /// Recompute an input's (or a free line's) level; returns the old one.
    fn settle(&mut self) -> Level {
        let old = self.physical;
        if !matches!(self.claim, Claim::Output { .. }) {
            let pull = match self.bias {
                Bias::PullUp => Some(Level::High),
                Bias::PullDown => Some(Level::Low),
                Bias::AsIs | Bias::Disabled => None,
            };
            self.physical = self.external.or(pull).unwrap_or(self.physical);
        }
        old
    }
}

/// The logical level of a physical one.
fn logical(physical: Level, active_low: bool) -> Level {
    Level::from_bool(physical.is_high() != active_low)
}

type Observer = Arc<dyn Fn(u32, Level) + Send + Sync>;

struct ChipState {
    lines: Vec<LineState>,
    observers: Vec<Observer>,
}

/// A simulated GPIO chip. Outputs can be read back with [`SimGpioChip::level`],
/// inputs driven with [`SimGpioChip::drive`].
pub struct SimGpioChip {
    name: String,
    start: Instant,
    state: Arc<Mutex<ChipState>>,
}

impl std::fmt::Debug for SimGpioChip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimGpioChip").field("name", &self.name).finish_non_exhaustive()
    }
}

impl SimGpioChip {
    /// A chip named `name` with `lines` lines, all low and free.
    #[must_use]
    pub fn new(name: &str, lines: u32) -> Self {
        let lines = (0..lines)
            .map(|_| LineState { physical: Level::Low, external: None, bias: Bias::AsIs, claim: Claim::Free })
            .collect();
        Self {
            name: name.to_owned(),
            start: Instant::now(),
            state: Arc::new(Mutex::new(ChipState { lines, observers: Vec::new() })),
        }
    }

    fn no_such_line(&self, line: u32, lines: usize) -> GpioError {
        GpioError::NoSuchLine { chip: self.name.clone(), line, lines: u32::try_from(lines).unwrap_or(u32::MAX) }
    }

    /// The physical level of `line` (driven by its output, from outside with
    /// [`SimGpioChip::drive`], or by its pull resistor).
    ///
    /// # Errors
    /// No such line.
    pub fn level(&self, line: u32) -> Result<Level, GpioError> {
        let state = lock(&self.state);
        let n = state.lines.len();
        state.lines.get(line as usize).map(|l| l.physical).ok_or_else(|| self.no_such_line(line, n))
    }

    /// Who holds `line`, if anyone.
    #[must_use]
    pub fn holder(&self, line: u32) -> Option<String> {
        let state = lock(&self.state);
        match &state.lines.get(line as usize)?.claim {
            Claim::Free => None,
            Claim::Output { consumer } | Claim::Input { consumer, .. } => Some(consumer.clone()),
        }
    }

    /// Drive `line` physically from outside (a button, a sensor): sets its
    /// level and, when an app holds it as an input watching that (logical)
    /// edge, delivers the edge.
    ///
    /// # Errors
    /// No such line, or the line is claimed as an output (two drivers would fight).
    pub fn drive(&self, line: u32, level: Level) -> Result<(), GpioError> {
        let sink = {
            let mut state = lock(&self.state);
            let n = state.lines.len();
            let chip = self.name.clone();
            let l = state.lines.get_mut(line as usize).ok_or_else(|| self.no_such_line(line, n))?;
            if let Claim::Output { consumer } = &l.claim {
                return Err(GpioError::Busy { chip, line, holder: format!("{consumer} (output)") });
            }
            l.external = Some(level);
            let old = l.settle();
            match &l.claim {
                Claim::Input { edges, sink, active_low, .. }
                    if old != l.physical && edges.matches(logical(l.physical, *active_low)) =>
                {
                    Some((sink.clone(), logical(l.physical, *active_low)))
                }
                _ => None,
            }
        };
        if let Some((sink, level)) = sink {
            sink(EdgeEvent { line, level, timestamp_ns: self.now_ns() });
        }
        Ok(())
    }

    /// Call `observer(line, level)` whenever an output line changes its physical level.
    pub fn on_output_change(&self, observer: impl Fn(u32, Level) + Send + Sync + 'static) {
        lock(&self.state).observers.push(Arc::new(observer));
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn claim(&self, line: u32, claim: Claim, config: LineConfig, initial: Option<Level>) -> Result<(), GpioError> {
        let mut state = lock(&self.state);
        let n = state.lines.len();
        let chip = self.name.clone();
        let l = state.lines.get_mut(line as usize).ok_or_else(|| self.no_such_line(line, n))?;
        if let Claim::Output { consumer } | Claim::Input { consumer, .. } = &l.claim {
            return Err(GpioError::Busy { chip, line, holder: consumer.clone() });
        }
        l.claim = claim;
        l.bias = config.bias;
        let old = l.physical;
        if let Some(level) = initial {
            l.physical = logical(level, config.active_low);
        } else {
            l.settle();
        }
        let changed = (initial.is_some() && old != l.physical).then_some(l.physical);
        let observers = state.observers.clone();
        drop(state);
        if let Some(level) = changed {
            observers.iter().for_each(|o| o(line, level));
        }
        Ok(())
    }
}

struct SimLine {
    line: u32,
    active_low: bool,
    state: Arc<Mutex<ChipState>>,
}

impl SimLine {
    fn set(&self, level: Level) {
        let physical = logical(level, self.active_low);
        let mut state = lock(&self.state);
        let changed = state.lines.get_mut(self.line as usize).is_some_and(|l| {
            let changed = l.physical != physical;
            l.physical = physical;
            changed
        });
        let observers = state.observers.clone();
        drop(state);
        if changed {
            observers.iter().for_each(|o| o(self.line, physical));
        }
    }

    fn get(&self) -> Level {
        let physical = lock(&self.state).lines.get(self.line as usize).map_or(Level::Low, |l| l.physical);
        logical(physical, self.active_low)
    }
}

impl Drop for SimLine {
    fn drop(&mut self) {
        if let Some(l) = lock(&self.state).lines.get_mut(self.line as usize) {
            l.claim = Claim::Free;
            l.bias = Bias::AsIs;
        }
    }
}

impl DigitalErrorType for SimLine {
    type Error = GpioError;
}

impl OutputPin for SimLine {
    fn set_low(&mut self) -> Result<(), GpioError> {
        self.set(Level::Low);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), GpioError> {
        self.set(Level::High);
        Ok(())
    }
}

impl StatefulOutputPin for SimLine {
    fn is_set_high(&mut self) -> Result<bool, GpioError> {
        Ok(self.get().is_high())
    }
    fn is_set_low(&mut self) -> Result<bool, GpioError> {
        Ok(!self.get().is_high())
    }
}

impl InputPin for SimLine {
    fn is_high(&mut self) -> Result<bool, GpioError> {
        Ok(self.get().is_high())
    }
    fn is_low(&mut self) -> Result<bool, GpioError> {
        Ok(!self.get().is_high())
    }
}

impl OutputLine for SimLine {
    fn line(&self) -> u32 {
        self.line
    }
}

impl InputLine for SimLine {
    fn line(&self) -> u32 {
        self.line
    }
}

impl GpioChip for SimGpioChip {
    fn name(&self) -> &str {
        &self.name
    }

    fn lines(&self) -> u32 {
        u32::try_from(lock(&self.state).lines.len()).unwrap_or(u32::MAX)
    }

    fn request_output(
        &self,
        line: u32,
        initial: Level,
        config: LineConfig,
        consumer: &str,
    ) -> Result<Box<dyn OutputLine>, GpioError> {
        self.claim(line, Claim::Output { consumer: consumer.to_owned() }, config, Some(initial))?;
        Ok(Box::new(SimLine { line, active_low: config.active_low, state: self.state.clone() }))
    }

    fn request_input(
        &self,
        line: u32,
        edges: Edge,
        config: LineConfig,
        consumer: &str,
        sink: EdgeSink,
    ) -> Result<Box<dyn InputLine>, GpioError> {
        let claim =
            Claim::Input { consumer: consumer.to_owned(), edges, sink: Arc::new(sink), active_low: config.active_low };
        self.claim(line, claim, config, None)?;
        Ok(Box::new(SimLine { line, active_low: config.active_low, state: self.state.clone() }))
    }
}

// ---------------------------------------------------------------- I2C

/// A device on a simulated I2C bus.
pub trait SimI2cDevice: Send {
    /// The controller wrote `data`.
    fn write(&mut self, data: &[u8]);
    /// The controller reads `buf.len()` bytes.
    fn read(&mut self, buf: &mut [u8]);
}

type SharedDevice = Arc<Mutex<dyn SimI2cDevice>>;

/// Simulated I2C buses with devices at addresses.
#[derive(Default)]
pub struct SimI2c {
    buses: Arc<Mutex<Buses>>,
}

type Buses = HashMap<u32, HashMap<u8, SharedDevice>>;

impl std::fmt::Debug for SimI2c {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let buses: Vec<u32> = lock(&self.buses).keys().copied().collect();
        f.debug_struct("SimI2c").field("buses", &buses).finish()
    }
}

impl SimI2c {
    /// Put `device` at `address` on `bus` (creating the bus).
    pub fn add_device(&self, bus: u32, address: u8, device: impl SimI2cDevice + 'static) {
        lock(&self.buses).entry(bus).or_default().insert(address, Arc::new(Mutex::new(device)));
    }

    /// Unplug a whole bus (a USB adapter pulled out): later transfers on it
    /// fail with "does not exist". Returns whether it was there.
    pub fn remove_bus(&self, bus: u32) -> bool {
        lock(&self.buses).remove(&bus).is_some()
    }

    /// Unplug the device at `address` on `bus`; later transfers get no acknowledge.
    pub fn remove_device(&self, bus: u32, address: u8) {
        if let Some(devices) = lock(&self.buses).get_mut(&bus) {
            devices.remove(&address);
        }
    }
}

struct SimI2cHandle {
    bus: u32,
    buses: Arc<Mutex<Buses>>,
}

impl I2cErrorType for SimI2cHandle {
    type Error = I2cError;
}

impl I2c for SimI2cHandle {
    fn transaction(&mut self, address: u8, operations: &mut [I2cOperation<'_>]) -> Result<(), I2cError> {
        let device = lock(&self.buses)
            .get(&self.bus)
            .ok_or(I2cError::NoSuchBus { bus: self.bus })?
            .get(&address)
            .cloned()
            .ok_or(I2cError::NoDevice { bus: self.bus, address })?;
        let mut device = lock(&device);
        for op in operations {
            match op {
                I2cOperation::Write(data) => device.write(data),
                I2cOperation::Read(buf) => device.read(buf),
            }
        }
        Ok(())
    }
}

impl I2cBackend for SimI2c {
    fn open(&self, bus: u32) -> Result<Box<dyn I2cBus>, I2cError> {
        if !lock(&self.buses).contains_key(&bus) {
            return Err(I2cError::NoSuchBus { bus });
        }
        Ok(Box::new(SimI2cHandle { bus, buses: self.buses.clone() }))
    }
}

/// 256 byte registers with an auto-incrementing pointer, like the kernel's
/// `i2c-stub`: the first written byte sets the pointer, the rest are stored.
#[derive(Debug)]
pub struct RegisterMap {
    /// Register contents.
    pub registers: [u8; 256],
    pointer: u8,
}

impl Default for RegisterMap {
    fn default() -> Self {
        Self { registers: [0; 256], pointer: 0 }
    }
}

impl SimI2cDevice for RegisterMap {
    fn write(&mut self, data: &[u8]) {
        if let Some((&pointer, rest)) = data.split_first() {
            self.pointer = pointer;
            for &b in rest {
                self.registers[usize::from(self.pointer)] = b;
                self.pointer = self.pointer.wrapping_add(1);
            }
        }
    }
    fn read(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.registers[usize::from(self.pointer)];
            self.pointer = self.pointer.wrapping_add(1);
        }
    }
}

/// A temperature you can change while apps read it.
#[derive(Debug, Clone)]
pub struct SimTemperature(Arc<AtomicI32>);

impl SimTemperature {
    /// Starting at `celsius`.
    #[must_use]
    pub fn new(celsius: f32) -> Self {
        let t = Self(Arc::new(AtomicI32::new(0)));
        t.set(celsius);
        t
    }
    /// Set the temperature.
    #[allow(clippy::cast_possible_truncation)]
    pub fn set(&self, celsius: f32) {
        self.0.store((celsius * 1000.0).round() as i32, Ordering::Relaxed);
    }
    /// The temperature in °C.
    #[must_use]
    #[allow(clippy::cast_precision_loss)]
    pub fn get(&self) -> f32 {
        self.0.load(Ordering::Relaxed) as f32 / 1000.0
    }
}

/// A TI TMP102: register 0 holds the temperature as a 12-bit two's complement
/// value, 0.0625 °C per bit, left-justified in two big-endian bytes; register 1
/// is the configuration (reset value 0x60A0).
#[derive(Debug)]
pub struct Tmp102 {
    temperature: SimTemperature,
    pointer: u8,
    config: [u8; 2],
}

impl Tmp102 {
    /// A sensor reading `temperature`.
    #[must_use]
    pub fn new(temperature: SimTemperature) -> Self {
        Self { temperature, pointer: 0, config: [0x60, 0xA0] }
    }

    /// Encode °C as the TMP102's temperature register.
    #[must_use]
    #[allow(clippy::cast_possible_truncation)]
    pub fn encode(celsius: f32) -> [u8; 2] {
        let counts = (celsius / 0.0625).round().clamp(-2048.0, 2047.0) as i16;
        (counts << 4).to_be_bytes()
    }
}

impl SimI2cDevice for Tmp102 {
    fn write(&mut self, data: &[u8]) {
        if let Some((&pointer, rest)) = data.split_first() {
            self.pointer = pointer & 0x03;
            if self.pointer == 1 && rest.len() >= 2 {
                self.config = [rest[0], rest[1]];
            }
        }
    }
    fn read(&mut self, buf: &mut [u8]) {
        let reg = match self.pointer {
            0 => Self::encode(self.temperature.get()),
            1 => self.config,
            _ => [0, 0],
        };
        for (i, b) in buf.iter_mut().enumerate() {
            *b = reg.get(i).copied().unwrap_or(0xFF);
        }
    }
}

// ---------------------------------------------------------------- SPI

/// Simulated SPI devices; a loopback returns what it was sent (MISO tied to MOSI).
#[derive(Debug, Default)]
pub struct SimSpi {
    loopbacks: Mutex<HashMap<String, Option<SpiConfig>>>,
}

impl SimSpi {
    /// Add a loopback device named `device`.
    pub fn add_loopback(&self, device: &str) {
        lock(&self.loopbacks).insert(device.to_owned(), None);
    }

    /// How `device` was last configured by an open.
    #[must_use]
    pub fn config(&self, device: &str) -> Option<SpiConfig> {
        lock(&self.loopbacks).get(device).copied().flatten()
    }
}

struct SpiLoopback;

impl SpiErrorType for SpiLoopback {
    type Error = SpiError;
}

impl SpiDevice<u8> for SpiLoopback {
    fn transaction(&mut self, operations: &mut [SpiOperation<'_, u8>]) -> Result<(), SpiError> {
        for op in operations {
            match op {
                SpiOperation::Transfer(read, write) => {
                    for (i, r) in read.iter_mut().enumerate() {
                        *r = write.get(i).copied().unwrap_or(0);
                    }
                }
                SpiOperation::Read(buf) => buf.fill(0),
                SpiOperation::Write(_) | SpiOperation::TransferInPlace(_) | SpiOperation::DelayNs(_) => {}
            }
        }
        Ok(())
    }
}

impl SpiBackend for SimSpi {
    fn open(&self, device: &str, config: SpiConfig) -> Result<Box<dyn SpiBus>, SpiError> {
        let mut loopbacks = lock(&self.loopbacks);
        let slot = loopbacks.get_mut(device).ok_or_else(|| SpiError::NoSuchDevice { device: device.to_owned() })?;
        config.check(device)?;
        *slot = Some(config);
        Ok(Box::new(SpiLoopback))
    }
}

// ---------------------------------------------------------------- PWM

/// What a simulated PWM channel is set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PwmState {
    /// Period in nanoseconds.
    pub period_ns: u64,
    /// Active time per period in nanoseconds.
    pub duty_ns: u64,
    /// Running.
    pub enabled: bool,
}

/// Simulated PWM channels; [`SimPwm::state`] reads back what an app set.
#[derive(Debug)]
pub struct SimPwm {
    channels: Arc<Mutex<Vec<Option<PwmState>>>>,
}

impl SimPwm {
    /// Channels 0 to `n` - 1, all off.
    #[must_use]
    pub fn new(n: u32) -> Self {
        Self { channels: Arc::new(Mutex::new(vec![None; n as usize])) }
    }

    /// What channel `channel` is set to (`None`: never set, or out of range).
    #[must_use]
    pub fn state(&self, channel: u32) -> Option<PwmState> {
        lock(&self.channels).get(channel as usize).copied().flatten()
    }
}

struct SimPwmChannel {
    channel: u32,
    channels: Arc<Mutex<Vec<Option<PwmState>>>>,
}

impl SimPwmChannel {
    fn put(&self, state: PwmState) {
        if let Some(slot) = lock(&self.channels).get_mut(self.channel as usize) {
            *slot = Some(state);
        }
    }
}

impl PwmChannel for SimPwmChannel {
    fn set(&mut self, period_ns: u64, duty_ns: u64) -> Result<(), PwmError> {
        crate::pwm::check(self.channel, period_ns, duty_ns)?;
        self.put(PwmState { period_ns, duty_ns, enabled: true });
        Ok(())
    }

    fn disable(&mut self) -> Result<(), PwmError> {
        let old = lock(&self.channels).get(self.channel as usize).copied().flatten();
        self.put(PwmState { enabled: false, ..old.unwrap_or(PwmState { period_ns: 0, duty_ns: 0, enabled: false }) });
        Ok(())
    }
}

/// Like the Pi's: a channel stops when its holder lets go of it.
impl Drop for SimPwmChannel {
    fn drop(&mut self) {
        let _ = self.disable();
    }
}

impl PwmBackend for SimPwm {
    fn open(&self, channel: u32) -> Result<Box<dyn PwmChannel>, PwmError> {
        if channel as usize >= lock(&self.channels).len() {
            return Err(PwmError::NoSuchChannel { channel, hint: String::new() });
        }
        Ok(Box::new(SimPwmChannel { channel, channels: self.channels.clone() }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::gpio;
    use std::sync::mpsc;

    #[test]
    fn output_reads_back_and_is_exclusive_until_dropped() {
        let chip = SimGpioChip::new("gpiochip0", 8);
        let mut out = chip.request_output(3, Level::High, LineConfig::default(), "blinky").unwrap();
        assert_eq!(chip.level(3).unwrap(), Level::High);
        gpio::write(out.as_mut(), Level::Low).unwrap();
        assert_eq!(chip.level(3).unwrap(), Level::Low);
        assert_eq!(gpio::read_output(out.as_mut()).unwrap(), Level::Low);
        let busy = chip.request_output(3, Level::Low, LineConfig::default(), "other").err().unwrap();
        assert!(busy.to_string().contains("held by blinky"), "{busy}");
        assert!(chip.drive(3, Level::High).is_err(), "driving an output from outside must fail");
        drop(out);
        assert!(chip.holder(3).is_none());
        assert!(chip.request_output(3, Level::Low, LineConfig::default(), "other").is_ok());
    }

    #[test]
    fn missing_line_is_named() {
        let chip = SimGpioChip::new("gpiochip0", 8);
        let err = chip.request_output(8, Level::Low, LineConfig::default(), "x").err().unwrap();
        assert_eq!(err.to_string(), "GPIO line 8 does not exist on gpiochip0 (8 lines)");
    }

    #[test]
    fn input_edges_follow_the_filter() {
        let chip = SimGpioChip::new("gpiochip0", 8);
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let mut input = chip
            .request_input(
                5,
                Edge::Rising,
                LineConfig::default(),
                "button",
                Box::new(move |e| lock(&tx).send(e).unwrap()),
            )
            .unwrap();
        chip.drive(5, Level::High).unwrap();
        chip.drive(5, Level::High).unwrap(); // no change, no edge
        chip.drive(5, Level::Low).unwrap(); // falling: filtered
        chip.drive(5, Level::High).unwrap();
        let edges: Vec<EdgeEvent> = rx.try_iter().collect();
        assert_eq!(edges.len(), 2);
        assert!(edges.iter().all(|e| e.line == 5 && e.level == Level::High));
        assert!(edges[0].timestamp_ns <= edges[1].timestamp_ns);
        assert_eq!(gpio::read_input(input.as_mut()).unwrap(), Level::High);
    }

    #[test]
    fn observers_see_output_changes() {
        let chip = SimGpioChip::new("gpiochip0", 8);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        chip.on_output_change(move |line, level| lock(&s).push((line, level)));
        let mut out = chip.request_output(1, Level::High, LineConfig::default(), "a").unwrap();
        gpio::write(out.as_mut(), Level::High).unwrap();
        gpio::write(out.as_mut(), Level::Low).unwrap();
        assert_eq!(*lock(&seen), vec![(1, Level::High), (1, Level::Low)]);
    }

    #[test]
    fn bias_pulls_an_undriven_input_and_an_outside_driver_wins() {
        let chip = SimGpioChip::new("gpiochip0", 8);
        let up = LineConfig { bias: Bias::PullUp, active_low: false };
        let mut input = chip.request_input(2, Edge::Both, up, "button", Box::new(|_| {})).unwrap();
        assert_eq!(gpio::read_input(input.as_mut()).unwrap(), Level::High, "pulled up");
        chip.drive(2, Level::Low).unwrap();
        assert_eq!(gpio::read_input(input.as_mut()).unwrap(), Level::Low, "the button wins over the pull");
        drop(input);
        let down = LineConfig { bias: Bias::PullDown, active_low: false };
        let mut input = chip.request_input(3, Edge::Both, down, "b", Box::new(|_| {})).unwrap();
        assert_eq!(gpio::read_input(input.as_mut()).unwrap(), Level::Low);
    }

    #[test]
    fn active_low_inverts_reads_writes_and_edges() {
        let chip = SimGpioChip::new("gpiochip0", 8);
        let inverted = LineConfig { bias: Bias::AsIs, active_low: true };
        let mut led = chip.request_output(1, Level::High, inverted, "led").unwrap();
        assert_eq!(chip.level(1).unwrap(), Level::Low, "on = physically low");
        gpio::write(led.as_mut(), Level::Low).unwrap();
        assert_eq!(chip.level(1).unwrap(), Level::High);
        assert_eq!(gpio::read_output(led.as_mut()).unwrap(), Level::Low);

        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        chip.drive(4, Level::High).unwrap();
        let mut button = chip
            .request_input(4, Edge::Rising, inverted, "button", Box::new(move |e| lock(&tx).send(e).unwrap()))
            .unwrap();
        assert_eq!(gpio::read_input(button.as_mut()).unwrap(), Level::Low, "released: physically high");
        chip.drive(4, Level::Low).unwrap(); // pressed: physical falling = logical rising
        chip.drive(4, Level::High).unwrap(); // released: logical falling, filtered
        let edges: Vec<EdgeEvent> = rx.try_iter().collect();
        assert_eq!(edges.len(), 1, "{edges:?}");
        assert_eq!(edges[0].level, Level::High);
    }

    #[test]
    fn tmp102_register_read() {
        let board = SimBoard::standard();
        let mut bus = board.board().i2c.open(SENSOR_BUS).unwrap();
        let mut buf = [0u8; 2];
        bus.write_read(SENSOR_ADDRESS, &[0x00], &mut buf).unwrap();
        assert_eq!(buf, [0x15, 0x80]); // 21.5 °C = 344 counts << 4
        board.temperature.set(-10.0);
        bus.write_read(SENSOR_ADDRESS, &[0x00], &mut buf).unwrap();
        assert_eq!(i16::from_be_bytes(buf) >> 4, -160);
        bus.write_read(SENSOR_ADDRESS, &[0x01], &mut buf).unwrap();
        assert_eq!(buf, [0x60, 0xA0]);
    }

    #[test]
    fn i2c_errors_name_bus_and_address() {
        let board = SimBoard::standard();
        assert_eq!(board.board().i2c.open(7).err().unwrap().to_string(), "I2C bus 7 does not exist");
        let mut bus = board.board().i2c.open(1).unwrap();
        let err = bus.write(0x21, &[1]).unwrap_err();
        assert_eq!(err.to_string(), "I2C bus 1: no device acknowledged address 0x21");
        board.i2c.remove_device(SENSOR_BUS, SENSOR_ADDRESS);
        assert!(bus.read(SENSOR_ADDRESS, &mut [0u8; 2]).is_err());
    }

    #[test]
    fn register_map_auto_increments() {
        let board = SimBoard::standard();
        let mut bus = board.board().i2c.open(1).unwrap();
        bus.write(0x50, &[0x10, 0xAA, 0xBB]).unwrap();
        let mut buf = [0u8; 2];
        bus.write_read(0x50, &[0x10], &mut buf).unwrap();
        assert_eq!(buf, [0xAA, 0xBB]);
    }

    #[test]
    fn pwm_settings_read_back_and_stop_when_let_go() {
        let board = SimBoard::standard();
        let mut ch = board.board().pwm.open(1).unwrap();
        ch.set(20_000_000, 1_500_000).unwrap();
        assert_eq!(board.pwm.state(1), Some(PwmState { period_ns: 20_000_000, duty_ns: 1_500_000, enabled: true }));
        let err = ch.set(1000, 2000).unwrap_err().to_string();
        assert_eq!(err, "PWM channel 1: duty 2000 ns must not exceed the period 1000 ns (above 0)");
        drop(ch);
        assert_eq!(board.pwm.state(1).map(|s| s.enabled), Some(false));
        let err = board.board().pwm.open(2).err().unwrap().to_string();
        assert_eq!(err, "PWM channel 2 does not exist");
    }

    #[test]
    fn spi_loopback_echoes() {
        let board = SimBoard::standard();
        let config = SpiConfig { mode: 3, max_speed_hz: Some(1_000_000), bits_per_word: 8 };
        let mut dev = board.board().spi.open(SPI_LOOPBACK, config).unwrap();
        assert_eq!(board.spi.config(SPI_LOOPBACK), Some(config));
        let mut read = [0u8; 3];
        dev.transfer(&mut read, &[1, 2, 3]).unwrap();
        assert_eq!(read, [1, 2, 3]);
        let bad = SpiConfig { mode: 4, ..config };
        let err = board.board().spi.open(SPI_LOOPBACK, bad).err().unwrap();
        assert_eq!(err.to_string(), "SPI device spidev0.0: mode 4 is not 0-3");
        let err = board.board().spi.open("spidev9.9", config).err().unwrap();
        assert_eq!(err.to_string(), "SPI device spidev9.9 does not exist");
        assert!(crate::spi::valid_device_name("spidev0.1"));
        assert!(!crate::spi::valid_device_name("../spidev0.1"));
    }
}
