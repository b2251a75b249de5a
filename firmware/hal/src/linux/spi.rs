//! SPI through spidev (`/dev/spidevB.C`): each open sets the mode, clock rate
//! and word size the app's manifest asks for.

use std::path::Path;

use embedded_hal::spi::{ErrorType, Operation, SpiDevice};
use linux_embedded_hal::SpidevDevice;
use linux_embedded_hal::spidev::{SpiModeFlags, SpidevOptions};

use crate::spi::{SpiBackend, SpiBus, SpiConfig, SpiError};

/// SPI devices through `/dev/spidevB.C`.
#[derive(Debug, Default)]
pub struct LinuxSpi;

struct LinuxSpiDevice {
    name: String,
    dev: SpidevDevice,
}

impl ErrorType for LinuxSpiDevice {
    type Error = SpiError;
}

impl SpiDevice<u8> for LinuxSpiDevice {
    fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), SpiError> {
        self.dev.transaction(operations).map_err(|e| SpiError::Io { device: self.name.clone(), message: e.to_string() })
    }
}

/// spidev's options for `config`.
fn options(config: SpiConfig) -> SpidevOptions {
    let mode = match config.mode {
        0 => SpiModeFlags::SPI_MODE_0,
        1 => SpiModeFlags::SPI_MODE_1,
        2 => SpiModeFlags::SPI_MODE_2,
        _ => SpiModeFlags::SPI_MODE_3,
    };
    let mut options = SpidevOptions::new();
    options.mode(mode).bits_per_word(config.bits_per_word);
    if let Some(hz) = config.max_speed_hz {
        options.max_speed_hz(hz);
    }
    options.build()
}

impl SpiBackend for LinuxSpi {
    fn open(&self, device: &str, config: SpiConfig) -> Result<Box<dyn SpiBus>, SpiError> {
        let path = format!("/dev/{device}");
        if !crate::spi::valid_device_name(device) || !Path::new(&path).exists() {
            return Err(SpiError::NoSuchDevice { device: device.to_owned() });
        }
        config.check(device)?;
        let io =
            |e: &dyn std::fmt::Display| SpiError::Io { device: device.to_owned(), message: format!("{path}: {e}") };
        let mut dev = SpidevDevice::open(&path).map_err(|e| io(&e))?;
        dev.configure(&options(config)).map_err(|e| io(&e))?;
        Ok(Box::new(LinuxSpiDevice { name: device.to_owned(), dev }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_carry_the_mode_speed_and_word_size() {
        let o = options(SpiConfig { mode: 3, max_speed_hz: Some(500_000), bits_per_word: 8 });
        assert_eq!(o.spi_mode, Some(SpiModeFlags::SPI_MODE_3));
        assert_eq!(o.max_speed_hz, Some(500_000));
        assert_eq!(o.bits_per_word, Some(8));
        let o = options(SpiConfig::default());
        assert_eq!((o.spi_mode, o.max_speed_hz), (Some(SpiModeFlags::SPI_MODE_0), None));
    }
}
