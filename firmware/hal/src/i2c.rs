//! I2C buses: 7-bit addressed transactions through `embedded_hal::i2c::I2c`.

use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};

/// What went wrong on an I2C bus; every variant names the bus (and address).
#[derive(Debug, thiserror::Error)]
pub enum I2cError {
    /// The bus does not exist.
    #[error("I2C bus {bus} does not exist")]
    NoSuchBus {
        /// Bus number.
        bus: u32,
    },
    /// The board maps the bus to an adapter that is not there (unplugged, or
    /// its driver not loaded).
    #[error("I2C bus {bus}: no adapter named {adapter:?}")]
    NoAdapter {
        /// Bus number.
        bus: u32,
        /// The adapter's name.
        adapter: String,
    },
    /// Nothing acknowledged the address.
    #[error("I2C bus {bus}: no device acknowledged address {address:#04x}")]
    NoDevice {
        /// Bus number.
        bus: u32,
        /// 7-bit address.
        address: u8,
    },
    /// The transfer failed.
    #[error("I2C bus {bus} address {address:#04x}: {message}")]
    Io {
        /// Bus number.
        bus: u32,
        /// 7-bit address.
        address: u8,
        /// What failed.
        message: String,
    },
}

impl embedded_hal::i2c::Error for I2cError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NoDevice { .. } => ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address),
            _ => ErrorKind::Other,
        }
    }
}

/// An open I2C bus.
pub trait I2cBus: embedded_hal::i2c::I2c<Error = I2cError> + Send {}
impl<T: embedded_hal::i2c::I2c<Error = I2cError> + Send> I2cBus for T {}

/// Opens I2C buses by number.
pub trait I2cBackend: Send + Sync {
    /// Open bus `bus`.
    ///
    /// # Errors
    /// The bus does not exist or cannot be opened.
    fn open(&self, bus: u32) -> Result<Box<dyn I2cBus>, I2cError>;
}
