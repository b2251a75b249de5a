//! Linux backends: GPIO through the character device (`/dev/gpiochipN`, via
//! `linux-embedded-hal`'s cdev support), I2C through i2cdev (`/dev/i2c-N`,
//! with SMBus transfers for adapters that have nothing else, like the
//! kernel's `i2c-stub`), SPI through spidev (`/dev/spidevB.C`) and the
//! Raspberry Pi's hardware PWM through `rppal`, which the generic interfaces
//! lack. One module
//! per peripheral; errors name the chip and line, the bus and address, or the
//! device.

pub mod gpio;
pub mod i2c;
pub mod pwm;
pub mod spi;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use gpio::LinuxGpioChip;
pub use i2c::LinuxI2c;
pub use pwm::PiPwm;
pub use spi::LinuxSpi;

use crate::gpio::GpioError;

/// The board as seen through the kernel: the GPIO chip named `gpio_chip` (a
/// path like `/dev/gpiochip0`, or a chip's label like `pinctrl-bcm2711`), the
/// I2C buses (`i2c_buses` maps an app's bus number to an adapter by path or
/// name; unmapped numbers are `/dev/i2c-N`), the SPI devices and the Pi's PWM channels.
///
/// # Errors
/// The GPIO chip cannot be found or opened.
pub fn board(gpio_chip: &str, i2c_buses: BTreeMap<u32, String>) -> Result<crate::Board, GpioError> {
    Ok(crate::Board {
        gpio: Arc::new(LinuxGpioChip::find(gpio_chip)?),
        i2c: Arc::new(LinuxI2c::new(i2c_buses)),
        spi: Arc::new(LinuxSpi),
        pwm: Arc::new(PiPwm),
    })
}
