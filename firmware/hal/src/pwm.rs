//! Hardware PWM channels: a period and a duty cycle, in nanoseconds.

/// What went wrong with a PWM channel; every variant names the channel.
#[derive(Debug, thiserror::Error)]
pub enum PwmError {
    /// The board has no such channel (or it is not enabled).
    #[error("PWM channel {channel} does not exist{hint}")]
    NoSuchChannel {
        /// Channel number.
        channel: u32,
        /// What would make it exist, if known.
        hint: String,
    },
    /// The period or duty cycle cannot be set.
    #[error("PWM channel {channel}: {message}")]
    Invalid {
        /// Channel number.
        channel: u32,
        /// What is wrong.
        message: String,
    },
    /// The kernel or device failed.
    #[error("PWM channel {channel}: {message}")]
    Io {
        /// Channel number.
        channel: u32,
        /// What failed.
        message: String,
    },
}

/// Check a period and a duty cycle: the period above 0, the duty not above it.
///
/// # Errors
/// Either is out of range, naming the channel.
pub fn check(channel: u32, period_ns: u64, duty_ns: u64) -> Result<(), PwmError> {
    if period_ns == 0 || duty_ns > period_ns {
        return Err(PwmError::Invalid {
            channel,
            message: format!("duty {duty_ns} ns must not exceed the period {period_ns} ns (above 0)"),
        });
    }
    Ok(())
}

/// An open PWM channel (disabled when dropped).
pub trait PwmChannel: Send {
    /// Run with `period_ns` and `duty_ns` (checked with [`check`]), enabled.
    ///
    /// # Errors
    /// Out of range, or the device failed.
    fn set(&mut self, period_ns: u64, duty_ns: u64) -> Result<(), PwmError>;
    /// Stop the output.
    ///
    /// # Errors
    /// The device failed.
    fn disable(&mut self) -> Result<(), PwmError>;
}

/// Opens PWM channels by number.
pub trait PwmBackend: Send + Sync {
    /// Open channel `channel`.
    ///
    /// # Errors
    /// No such channel, or it cannot be opened.
    fn open(&self, channel: u32) -> Result<Box<dyn PwmChannel>, PwmError>;
}
