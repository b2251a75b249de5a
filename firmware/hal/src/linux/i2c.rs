//! I2C through i2cdev (`/dev/i2c-N`).
//!
//! Transfers go out as plain I2C messages (`I2C_RDWR`). Adapters that can only
//! do SMBus (the kernel's `i2c-stub`, many SMBus host controllers) refuse
//! those with `EOPNOTSUPP`; from then on the bus maps each transfer to the
//! SMBus transaction that puts the same bytes on the wire: a register read
//! (write one byte, read n ≤ 32) is an I2C-block read (a byte read for
//! n = 1), a register write is a byte-data or I2C-block write, a one-byte
//! write or read is an SMBus byte. Anything else has no SMBus equivalent and
//! fails naming the adapter.
//!
//! An app's bus number is `/dev/i2c-N` unless the board maps it to another
//! adapter, by path or by the adapter's name (`/sys/bus/i2c/devices/i2c-N/name`),
//! looked up at every open so an adapter plugged in later is found.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use embedded_hal::i2c::{ErrorType, I2c, Operation};
use linux_embedded_hal::I2cdev;
use linux_embedded_hal::i2cdev::core::I2CDevice;
use linux_embedded_hal::i2cdev::linux::LinuxI2CError;
use rustix::io::Errno;

use crate::i2c::{I2cBackend, I2cBus, I2cError};

/// Where the kernel lists I2C adapters.
const SYS_I2C: &str = "/sys/bus/i2c/devices";

/// I2C buses through `/dev/i2c-N`, with the board's bus numbering.
#[derive(Debug, Default)]
pub struct LinuxI2c {
    buses: BTreeMap<u32, String>,
}

impl LinuxI2c {
    /// `buses` maps an app's bus number to an adapter: a path (`/dev/i2c-3`)
    /// or an adapter's name (`SMBus stub driver`). Other numbers are `/dev/i2c-N`.
    #[must_use]
    pub fn new(buses: BTreeMap<u32, String>) -> Self {
        Self { buses }
    }

    fn path(&self, bus: u32) -> Result<PathBuf, I2cError> {
        match self.buses.get(&bus) {
            None => Ok(PathBuf::from(format!("/dev/i2c-{bus}"))),
            Some(path) if path.contains('/') => Ok(PathBuf::from(path)),
            Some(name) => adapter_named(Path::new(SYS_I2C), name)
                .ok_or_else(|| I2cError::NoAdapter { bus, adapter: name.clone() }),
        }
    }
}

/// `/dev/i2c-N` of the adapter called `name` in `sys` (`/sys/bus/i2c/devices`).
fn adapter_named(sys: &Path, name: &str) -> Option<PathBuf> {
    let mut adapters: Vec<String> = std::fs::read_dir(sys)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.strip_prefix("i2c-").is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .collect();
    adapters.sort();
    adapters
        .into_iter()
        .find(|a| std::fs::read_to_string(sys.join(a).join("name")).is_ok_and(|n| n.trim() == name))
        .map(|a| Path::new("/dev").join(a))
}

struct LinuxI2cBus {
    bus: u32,
    path: PathBuf,
    dev: I2cdev,
    smbus_only: bool,
}

fn errno(e: &LinuxI2CError) -> Option<Errno> {
    match e {
        LinuxI2CError::Errno(n) => Some(Errno::from_raw_os_error(*n)),
        LinuxI2CError::Io(e) => e.raw_os_error().map(Errno::from_raw_os_error),
    }
}

impl LinuxI2cBus {
    fn error(&self, address: u8, e: &LinuxI2CError) -> I2cError {
        match errno(e) {
            // No acknowledge (kernel's i2c fault codes; i2c-stub says ENODEV).
            Some(Errno::NXIO | Errno::REMOTEIO | Errno::NODEV) => I2cError::NoDevice { bus: self.bus, address },
            _ => I2cError::Io { bus: self.bus, address, message: format!("{}: {e}", self.path.display()) },
        }
    }

    /// The transfer as the SMBus transaction with the same bytes on the wire.
    fn smbus(&mut self, address: u8, operations: &mut [Operation<'_>]) -> Result<(), I2cError> {
        let unsupported = |ops: &[Operation<'_>]| {
            let shape: Vec<String> = ops
                .iter()
                .map(|op| match op {
                    Operation::Write(w) => format!("write {}", w.len()),
                    Operation::Read(r) => format!("read {}", r.len()),
                })
                .collect();
            format!("the adapter can only do SMBus, which has nothing for [{}]", shape.join(", "))
        };
        let (bus, path) = (self.bus, self.path.clone());
        let io = |message: String| I2cError::Io { bus, address, message: format!("{}: {message}", path.display()) };
        let dev = &mut *self.dev;
        dev.set_slave_address(u16::from(address)).map_err(|e| io(e.to_string()))?;
        let result = match operations {
            [Operation::Write(w)] => match w.len() {
                0 => dev.smbus_write_quick(false),
                1 => dev.smbus_write_byte(w[0]),
                2 => dev.smbus_write_byte_data(w[0], w[1]),
                3..=33 => dev.smbus_write_i2c_block_data(w[0], &w[1..]),
                _ => return Err(io(unsupported(operations))),
            },
            [Operation::Read(r)] if r.len() == 1 => dev.smbus_read_byte().map(|b| r[0] = b),
            [Operation::Write(w), Operation::Read(r)] if w.len() == 1 && (1..=32).contains(&r.len()) => {
                if r.len() == 1 {
                    dev.smbus_read_byte_data(w[0]).map(|b| r[0] = b)
                } else {
                    let len = u8::try_from(r.len()).unwrap_or(32);
                    match dev.smbus_read_i2c_block_data(w[0], len) {
                        Ok(got) if got.len() == r.len() => {
                            r.copy_from_slice(&got);
                            Ok(())
                        }
                        Ok(got) => return Err(io(format!("read {} of {} bytes", got.len(), r.len()))),
                        Err(e) => Err(e),
                    }
                }
            }
            _ => return Err(io(unsupported(operations))),
        };
        result.map_err(|e| self.error(address, &e))
    }
}

impl ErrorType for LinuxI2cBus {
    type Error = I2cError;
}

impl I2c for LinuxI2cBus {
    fn transaction(&mut self, address: u8, operations: &mut [Operation<'_>]) -> Result<(), I2cError> {
        if !self.smbus_only {
            match self.dev.transaction(address, operations) {
                Ok(()) => return Ok(()),
                Err(e) if errno(e.inner()) == Some(Errno::OPNOTSUPP) => {
                    tracing::debug!(bus = self.bus, adapter = %self.path.display(), "SMBus-only adapter");
                    self.smbus_only = true;
                }
                Err(e) => return Err(self.error(address, e.inner())),
            }
        }
        self.smbus(address, operations)
    }
}

impl I2cBackend for LinuxI2c {
    fn open(&self, bus: u32) -> Result<Box<dyn I2cBus>, I2cError> {
        let path = self.path(bus)?;
        if !path.exists() {
            return Err(I2cError::NoSuchBus { bus });
        }
        let dev = I2cdev::new(&path).map_err(|e| I2cError::Io {
            bus,
            address: 0,
            message: format!("{}: {e}", path.display()),
        })?;
        Ok(Box::new(LinuxI2cBus { bus, path, dev, smbus_only: false }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn adapters_are_found_by_name() {
        let sys = tempfile::tempdir().unwrap();
        for (dir, name) in [("i2c-0", "pl011 stand-in"), ("i2c-3", "SMBus stub driver"), ("0-0048", "tmp102")] {
            std::fs::create_dir(sys.path().join(dir)).unwrap();
            std::fs::write(sys.path().join(dir).join("name"), format!("{name}\n")).unwrap();
        }
        assert_eq!(adapter_named(sys.path(), "SMBus stub driver"), Some(PathBuf::from("/dev/i2c-3")));
        assert_eq!(adapter_named(sys.path(), "tmp102"), None, "a client is not an adapter");
        assert_eq!(adapter_named(sys.path(), "missing"), None);
    }

    #[test]
    fn bus_numbers_map_to_adapters() {
        let i2c = LinuxI2c::new([(1, "/dev/i2c-7".to_owned()), (2, "no such adapter".to_owned())].into());
        assert_eq!(i2c.path(1).unwrap(), PathBuf::from("/dev/i2c-7"));
        assert_eq!(i2c.path(4).unwrap(), PathBuf::from("/dev/i2c-4"));
        let err = i2c.path(2).unwrap_err().to_string();
        assert_eq!(err, "I2C bus 2: no adapter named \"no such adapter\"");
    }
}
