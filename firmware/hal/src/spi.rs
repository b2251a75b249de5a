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

/// How an SPI device is clocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpiConfig {
    /// SPI mode 0–3 (clock polarity and phase).
    pub mode: u8,
    /// Clock rate; `None` keeps the device's (the device tree's) setting.
    pub max_speed_hz: Option<u32>,
    /// Bits per word (8 for almost every device).
    pub bits_per_word: u8,
}

impl Default for SpiConfig {
    fn default() -> Self {
        Self { mode: 0, max_speed_hz: None, bits_per_word: 8 }
    }
}

impl SpiConfig {
    /// Check the values a controller could take.
    ///
    /// # Errors
    /// A mode above 3 or zero bits per word, naming `device`.
    pub fn check(&self, device: &str) -> Result<(), SpiError> {
        if self.mode > 3 {
            return Err(SpiError::Io { device: device.to_owned(), message: format!("mode {} is not 0-3", self.mode) });
        }
        if self.bits_per_word == 0 || self.max_speed_hz == Some(0) {
            return Err(SpiError::Io {
                device: device.to_owned(),
                message: "bits per word and speed must be above 0".into(),
            });
        }
        Ok(())
    }
}

/// An open SPI device (chip select handled by the device).
pub trait SpiBus: embedded_hal::spi::SpiDevice<u8, Error = SpiError> + Send {}
impl<T: embedded_hal::spi::SpiDevice<u8, Error = SpiError> + Send> SpiBus for T {}

/// Opens SPI devices by name.
pub trait SpiBackend: Send + Sync {
    /// Open `device` (`spidev0.0`) and configure it.
    ///
    /// # Errors
    /// The device does not exist, cannot be opened, or refuses the configuration.
    fn open(&self, device: &str, config: SpiConfig) -> Result<Box<dyn SpiBus>, SpiError>;
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
