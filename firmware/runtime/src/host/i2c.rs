//! `trellis:app/i2c`: transfers to the bus + address pairs granted in the
//! manifest, on buses opened on first use (and again after a hot-unplug).

use trellis_hal::i2c::I2cBus;

use crate::bindings::WitError;
use crate::bindings::trellis::app::i2c;

use super::HostState;

impl HostState {
    fn i2c_bus(&mut self, bus: u32, address: u8) -> Result<&mut Box<dyn I2cBus>, WitError> {
        let granted = self.manifest.permissions.i2c.iter().any(|g| g.bus == bus && g.address == address);
        if !granted {
            return Err(self.denied(format!("I2C bus {bus} address {address:#04x} is not granted (permissions.i2c)")));
        }
        self.forget_unplugged();
        if !self.i2c.contains_key(&bus) {
            let opened = self.services.hw.board.i2c.open(bus).map_err(|e| WitError::NotFound(e.to_string()))?;
            self.i2c.insert(bus, opened);
        }
        self.i2c.get_mut(&bus).ok_or_else(|| WitError::NotFound(format!("I2C bus {bus}")))
    }
}

impl i2c::Host for HostState {
    fn read(&mut self, bus: u32, address: u8, len: u32) -> Result<Vec<u8>, WitError> {
        Self::check_len(len as usize)?;
        let mut buf = vec![0; len as usize];
        self.blocking(|s| s.i2c_bus(bus, address)?.read(address, &mut buf).map_err(|e| WitError::Io(e.to_string())))?;
        Ok(buf)
    }

    fn write(&mut self, bus: u32, address: u8, data: Vec<u8>) -> Result<(), WitError> {
        Self::check_len(data.len())?;
        self.blocking(|s| s.i2c_bus(bus, address)?.write(address, &data).map_err(|e| WitError::Io(e.to_string())))
    }

    fn write_read(&mut self, bus: u32, address: u8, data: Vec<u8>, len: u32) -> Result<Vec<u8>, WitError> {
        Self::check_len(data.len().max(len as usize))?;
        let mut buf = vec![0; len as usize];
        self.blocking(|s| {
            s.i2c_bus(bus, address)?.write_read(address, &data, &mut buf).map_err(|e| WitError::Io(e.to_string()))
        })?;
        Ok(buf)
    }
}
