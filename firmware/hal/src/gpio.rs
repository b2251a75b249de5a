//! GPIO lines: claim an output or an input (with edge events) on a chip.
//!
//! A claimed line is held until its handle is dropped.

use embedded_hal::digital::{ErrorKind, ErrorType, InputPin, StatefulOutputPin};

/// A logic level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// Logic 0.
    Low,
    /// Logic 1.
    High,
}

impl Level {
    /// `High` for true.
    #[must_use]
    pub fn from_bool(high: bool) -> Self {
        if high { Self::High } else { Self::Low }
    }

    /// True for `High`.
    #[must_use]
    pub fn is_high(self) -> bool {
        self == Self::High
    }
}

/// Which edges of an input to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// Low to high.
    Rising,
    /// High to low.
    Falling,
    /// Both directions.
    Both,
}

impl Edge {
    /// Whether a change to `new` is one this filter reports.
    #[must_use]
    pub fn matches(self, new: Level) -> bool {
        matches!((self, new), (Self::Both, _) | (Self::Rising, Level::High) | (Self::Falling, Level::Low))
    }
}

/// The line's internal pull resistor, where the controller has one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Bias {
    /// Leave it as it is (the controller's or the firmware's setting).
    #[default]
    AsIs,
    /// Pull up.
    PullUp,
    /// Pull down.
    PullDown,
    /// No pull at all.
    Disabled,
}

/// How a line is requested beyond its direction. Levels an app sees are
/// logical: with `active_low`, high means the physical line is low (edges
/// too), so an LED wired to 3.3 V or a button to ground reads naturally.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct LineConfig {
    /// Internal pull resistor.
    pub bias: Bias,
    /// The line is active when physically low.
    pub active_low: bool,
}

/// An edge seen on an input line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeEvent {
    /// Line offset on the chip.
    pub line: u32,
    /// The (logical) level after the edge.
    pub level: Level,
    /// Timestamp of the edge in nanoseconds: the kernel's `CLOCK_MONOTONIC`
    /// on Linux, taken when the edge was seen; the board's own clock on the
    /// simulated one.
    pub timestamp_ns: u64,
}

/// Where edge events of an input line go. Called from the backend's thread.
pub type EdgeSink = Box<dyn Fn(EdgeEvent) + Send + Sync>;

/// What went wrong with a GPIO line; every variant names the chip and line.
#[derive(Debug, thiserror::Error)]
pub enum GpioError {
    /// No GPIO chip has this path, name or label.
    #[error("no GPIO chip {chip} (found: {found})")]
    NoSuchChip {
        /// What was asked for.
        chip: String,
        /// The chips there are, with their labels.
        found: String,
    },
    /// The chip has no such line.
    #[error("GPIO line {line} does not exist on {chip} ({lines} lines)")]
    NoSuchLine {
        /// Chip name.
        chip: String,
        /// Requested line.
        line: u32,
        /// Lines the chip has.
        lines: u32,
    },
    /// Someone else holds the line.
    #[error("GPIO line {line} on {chip} is busy (held by {holder})")]
    Busy {
        /// Chip name.
        chip: String,
        /// Requested line.
        line: u32,
        /// Current consumer.
        holder: String,
    },
    /// The kernel or device failed.
    #[error("GPIO line {line} on {chip}: {message}")]
    Io {
        /// Chip name.
        chip: String,
        /// Line concerned.
        line: u32,
        /// What failed.
        message: String,
    },
}

impl embedded_hal::digital::Error for GpioError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

/// A claimed output line (released on drop).
pub trait OutputLine: StatefulOutputPin + ErrorType<Error = GpioError> + Send {
    /// The line offset.
    fn line(&self) -> u32;
}

/// A claimed input line (released on drop).
pub trait InputLine: InputPin + ErrorType<Error = GpioError> + Send {
    /// The line offset.
    fn line(&self) -> u32;
}

/// A GPIO controller.
pub trait GpioChip: Send + Sync {
    /// Its name (`gpiochip0`).
    fn name(&self) -> &str;
    /// How many lines it has.
    fn lines(&self) -> u32;
    /// Claim `line` as an output driven to `initial` (logical level, see
    /// [`LineConfig`]); `consumer` names the holder for the kernel's tools.
    ///
    /// # Errors
    /// No such line, busy, or the device failed.
    fn request_output(
        &self,
        line: u32,
        initial: Level,
        config: LineConfig,
        consumer: &str,
    ) -> Result<Box<dyn OutputLine>, GpioError>;
    /// Claim `line` as an input; `sink` receives the edges `edges` selects.
    ///
    /// # Errors
    /// No such line, busy, or the device failed.
    fn request_input(
        &self,
        line: u32,
        edges: Edge,
        config: LineConfig,
        consumer: &str,
        sink: EdgeSink,
    ) -> Result<Box<dyn InputLine>, GpioError>;
}

/// Drive an output to `level` through the `embedded-hal` trait.
///
/// # Errors
/// What the backend reports.
pub fn write(pin: &mut dyn OutputLine, level: Level) -> Result<(), GpioError> {
    match level {
        Level::High => pin.set_high(),
        Level::Low => pin.set_low(),
    }
}

/// Read back an output's driven level.
///
/// # Errors
/// What the backend reports.
pub fn read_output(pin: &mut dyn OutputLine) -> Result<Level, GpioError> {
    pin.is_set_high().map(Level::from_bool)
}

/// Read an input's level.
///
/// # Errors
/// What the backend reports.
pub fn read_input(pin: &mut dyn InputLine) -> Result<Level, GpioError> {
    pin.is_high().map(Level::from_bool)
}
