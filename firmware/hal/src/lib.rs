//! Hardware access for Trellis apps.
//!
//! One module and one error type per peripheral ([`gpio`], [`i2c`], [`spi`], [`pwm`]); each
//! backend implements the traits there, which hand out handles implementing the
//! `embedded-hal` 1.0 traits. [`sim`] is an in-memory board used by `trellis run`
//! and the tests; `linux` (feature `linux`) drives the kernel's GPIO character
//! device, i2cdev and spidev, and the Raspberry Pi's hardware PWM through `rppal`.

pub mod gpio;
pub mod i2c;
#[cfg(feature = "linux")]
pub mod linux;
pub mod pwm;
pub mod sim;
pub mod spi;

use std::sync::Arc;

/// The hardware one runtime hands to its apps.
#[derive(Clone)]
pub struct Board {
    /// The board's main GPIO chip (BCM numbering on a Pi).
    pub gpio: Arc<dyn gpio::GpioChip>,
    /// I2C buses by number.
    pub i2c: Arc<dyn i2c::I2cBackend>,
    /// SPI devices by name.
    pub spi: Arc<dyn spi::SpiBackend>,
    /// Hardware PWM channels by number.
    pub pwm: Arc<dyn pwm::PwmBackend>,
}

impl std::fmt::Debug for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Board").field("gpio", &self.gpio.name()).finish_non_exhaustive()
    }
}
