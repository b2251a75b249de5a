//! `trellis:app/spi`: full-duplex transfers to the SPI devices granted in the
//! manifest, opened on first use with the manifest's mode, speed and word size.

use trellis_hal::spi::{SpiConfig, SpiError};

use crate::bindings::WitError;
use crate::bindings::trellis::app::spi;

use super::{HostState, thread_cpu_time};

impl spi::Host for HostState {
    fn transfer(&mut self, device: String, data: Vec<u8>) -> Result<Vec<u8>, WitError> {
        Self::check_len(data.len())?;
        if !self.manifest.permissions.spi.contains(&device) {
            return Err(self.denied(format!("SPI device {device:?} is not granted (permissions.spi)")));
        }
        self.forget_unplugged();
        if !self.spi.contains_key(&device) {
            let s = self.manifest.spi_device(&device);
            let config = SpiConfig { mode: s.mode, max_speed_hz: s.speed_hz, bits_per_word: s.bits_per_word };
            let opened = self.services.hw.board.spi.open(&device, config).map_err(|e| match e {
                SpiError::NoSuchDevice { .. } => WitError::NotFound(e.to_string()),
                SpiError::Io { .. } => self.io_error(e.to_string()),
            })?;
            self.spi.insert(device.clone(), opened);
        }
        let dev = self.spi.get_mut(&device).ok_or_else(|| WitError::NotFound(device.clone()))?;
        let mut read = vec![0; data.len()];
        let t = thread_cpu_time();
        let result = dev.transfer(&mut read, &data).map_err(|e| WitError::Io(e.to_string()));
        self.host_time += thread_cpu_time().saturating_sub(t);
        result.map(|()| read)
    }
}
