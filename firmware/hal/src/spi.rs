//! SPI devices: full-duplex transfers through `embedded_hal::spi::SpiDevice`.

use embedded_hal::spi::ErrorKind;

/// What went wrong with an SPI device; every variant names the device.
#[derive(Debug, thiserror::Error)]
pub enum SpiError {
    /// No such device.
    #[error("SPI device {device} does not exist")]
    NoSuchDevice {
        /// Device name (`spidev0.0`).
        device: String,
    },
    /// The transfer failed.
    #[error("SPI device {device}: {message}")]
    Io {
        /// Device name.
        device: String,
        /// What failed.
        message: String,
    },
}

impl embedded_hal::spi::Error for SpiError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

/// An open SPI device (chip select handled by the device).
pub trait SpiBus: embedded_hal::spi::SpiDevice<u8, Error = SpiError> + Send {}
impl<T: embedded_hal::spi::SpiDevice<u8, Error = SpiError> + Send> SpiBus for T {}

/// Opens SPI devices by name.
pub trait SpiBackend: Send + Sync {
    /// Open `device` (`spidev0.0`).
    ///
    /// # Errors
    /// The device does not exist or cannot be opened.
    fn open(&self, device: &str) -> Result<Box<dyn SpiBus>, SpiError>;
}

/// Check an SPI device name: `spidev<bus>.<cs>`, nothing else (no paths).
#[must_use]
pub fn valid_device_name(device: &str) -> bool {
    device.strip_prefix("spidev").and_then(|rest| rest.split_once('.')).is_some_and(|(bus, cs)| {
        !bus.is_empty()
            && !cs.is_empty()
            && bus.bytes().all(|b| b.is_ascii_digit())
            && cs.bytes().all(|b| b.is_ascii_digit())
    })
}
