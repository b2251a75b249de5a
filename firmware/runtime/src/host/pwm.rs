//! `trellis:app/pwm`: setting and stopping the PWM channels granted in the manifest.

use trellis_hal::pwm::PwmError;

use crate::bindings::WitError;
use crate::bindings::trellis::app::pwm;

use super::HostState;

impl HostState {
    fn check_pwm(&self, channel: u32) -> Result<(), WitError> {
        let granted = &self.manifest.permissions.pwm;
        if granted.contains(&channel) {
            Ok(())
        } else {
            Err(self.denied(format!("PWM channel {channel} is not granted (permissions.pwm = {granted:?})")))
        }
    }

    fn pwm_error(&self, e: &PwmError) -> WitError {
        match e {
            PwmError::NoSuchChannel { .. } => WitError::NotFound(e.to_string()),
            PwmError::Invalid { .. } => WitError::Invalid(e.to_string()),
            PwmError::Io { .. } => self.io_error(e.to_string()),
        }
    }
}

impl pwm::Host for HostState {
    fn set(&mut self, channel: u32, period_ns: u64, duty_ns: u64) -> Result<(), WitError> {
        self.check_pwm(channel)?;
        self.services
            .hw
            .pwm_set(&self.app, self.generation, channel, period_ns, duty_ns)
            .map_err(|e| self.pwm_error(&e))
    }

    fn disable(&mut self, channel: u32) -> Result<(), WitError> {
        self.check_pwm(channel)?;
        self.services.hw.pwm_disable(&self.app, channel).map_err(|e| self.pwm_error(&e))
    }
}
