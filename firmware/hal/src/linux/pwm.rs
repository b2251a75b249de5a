//! Hardware PWM on the Raspberry Pi through `rppal` (the kernel's PWM sysfs
//! interface on the Pi's PWM0/PWM1, routed to pins by `dtoverlay=pwm` or
//! `pwm-2chan` in `config.txt`). The generic Linux interfaces have no PWM,
//! which is why this one backend is Pi-specific; elsewhere every open fails
//! naming the channel.

use std::time::Duration;

use rppal::pwm::{Channel, Polarity, Pwm};

use crate::pwm::{PwmBackend, PwmChannel, PwmError, check};

/// The Pi's hardware PWM channels 0 and 1.
#[derive(Debug, Default)]
pub struct PiPwm;

struct PiPwmChannel {
    channel: u32,
    pwm: Pwm,
}

fn io(channel: u32, e: &rppal::pwm::Error) -> PwmError {
    PwmError::Io { channel, message: e.to_string() }
}

impl PwmChannel for PiPwmChannel {
    fn set(&mut self, period_ns: u64, duty_ns: u64) -> Result<(), PwmError> {
        check(self.channel, period_ns, duty_ns)?;
        let c = self.channel;
        // The kernel refuses a period shorter than the current duty: shrink the duty first.
        self.pwm.set_pulse_width(Duration::ZERO).map_err(|e| io(c, &e))?;
        self.pwm.set_period(Duration::from_nanos(period_ns)).map_err(|e| io(c, &e))?;
        self.pwm.set_pulse_width(Duration::from_nanos(duty_ns)).map_err(|e| io(c, &e))?;
        self.pwm.enable().map_err(|e| io(c, &e))
    }

    fn disable(&mut self) -> Result<(), PwmError> {
        self.pwm.disable().map_err(|e| io(self.channel, &e))
    }
}

impl PwmBackend for PiPwm {
    fn open(&self, channel: u32) -> Result<Box<dyn PwmChannel>, PwmError> {
        let which = match channel {
            0 => Channel::Pwm0,
            1 => Channel::Pwm1,
            _ => return Err(PwmError::NoSuchChannel { channel, hint: " (the Pi 4 has channels 0 and 1)".into() }),
        };
        let pwm = Pwm::with_period(which, Duration::from_millis(1), Duration::ZERO, Polarity::Normal, false).map_err(
            |e| PwmError::NoSuchChannel {
                channel,
                hint: format!(" ({e}; enable it with dtoverlay=pwm-2chan in config.txt)"),
            },
        )?;
        Ok(Box::new(PiPwmChannel { channel, pwm }))
    }
}
