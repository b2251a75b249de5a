//! GPIO lines and PWM channels held on behalf of apps.
//!
//! Both are held per app *name*, with the set of versions (generations) that
//! used them: during a swap the new version takes over the old version's
//! lines and channels without releasing them, so the pin never glitches, and
//! one is released (a PWM channel stopped) only when no version of the app
//! holds it any more.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use trellis_hal::Board;
use trellis_hal::gpio::{self, Edge, EdgeSink, GpioError, InputLine, Level, LineConfig, OutputLine};
use trellis_hal::pwm::{PwmChannel, PwmError};

use crate::sync::lock;

enum Line {
    Output(Box<dyn OutputLine>),
    Input(Box<dyn InputLine>, Edge),
}

struct Held {
    app: String,
    generations: BTreeSet<u64>,
    line: Line,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum HwError {
    #[error("GPIO line {line} is held by app {holder}")]
    HeldByOther { line: u32, holder: String },
    #[error("GPIO line {line} is not claimed by this app as {what} (call claim-{what} first)")]
    NotClaimed { line: u32, what: &'static str },
    #[error(transparent)]
    Gpio(#[from] GpioError),
}

struct HeldPwm {
    app: String,
    generations: BTreeSet<u64>,
    channel: Box<dyn PwmChannel>,
}

pub(crate) struct Hardware {
    pub board: Board,
    lines: Mutex<HashMap<u32, Held>>,
    pwm: Mutex<HashMap<u32, HeldPwm>>,
    /// Counts devices that went away: apps drop the I2C and SPI handles they
    /// keep open when it moves, so the next call on a device that is gone
    /// fails naming it (and one that came back is opened afresh).
    unplugged: AtomicU64,
}

impl std::fmt::Debug for Hardware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hardware").field("board", &self.board).finish_non_exhaustive()
    }
}

impl Hardware {
    pub fn new(board: Board) -> Arc<Self> {
        Arc::new(Self {
            board,
            lines: Mutex::new(HashMap::new()),
            pwm: Mutex::new(HashMap::new()),
            unplugged: AtomicU64::new(0),
        })
    }

    /// A device went away.
    pub fn note_unplugged(&self) {
        self.unplugged.fetch_add(1, Ordering::SeqCst);
    }

    /// How many devices went away so far.
    pub fn unplugged(&self) -> u64 {
        self.unplugged.load(Ordering::SeqCst)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u32, Held>> {
        lock(&self.lines)
    }

    pub fn claim_output(
        &self,
        app: &str,
        generation: u64,
        line: u32,
        level: Level,
        config: LineConfig,
    ) -> Result<(), HwError> {
        let mut lines = self.lock();
        if let Some(held) = lines.get_mut(&line) {
            if held.app != app {
                return Err(HwError::HeldByOther { line, holder: held.app.clone() });
            }
            if let Line::Output(pin) = &mut held.line {
                gpio::write(pin.as_mut(), level)?;
                held.generations.insert(generation);
                return Ok(());
            }
            lines.remove(&line);
        }
        let pin = self.board.gpio.request_output(line, level, config, app)?;
        lines.insert(line, Held { app: app.to_owned(), generations: [generation].into(), line: Line::Output(pin) });
        Ok(())
    }

    pub fn claim_input(
        &self,
        app: &str,
        generation: u64,
        line: u32,
        edges: Edge,
        config: LineConfig,
        sink: EdgeSink,
    ) -> Result<(), HwError> {
        let mut lines = self.lock();
        if let Some(held) = lines.get_mut(&line) {
            if held.app != app {
                return Err(HwError::HeldByOther { line, holder: held.app.clone() });
            }
            if matches!(held.line, Line::Input(_, e) if e == edges) {
                held.generations.insert(generation);
                return Ok(());
            }
            lines.remove(&line);
        }
        let pin = self.board.gpio.request_input(line, edges, config, app, sink)?;
        lines.insert(
            line,
            Held { app: app.to_owned(), generations: [generation].into(), line: Line::Input(pin, edges) },
        );
        Ok(())
    }

    pub fn write(&self, app: &str, line: u32, level: Level) -> Result<(), HwError> {
        match self.lock().get_mut(&line) {
            Some(Held { app: a, line: Line::Output(pin), .. }) if a == app => Ok(gpio::write(pin.as_mut(), level)?),
            _ => Err(HwError::NotClaimed { line, what: "output" }),
        }
    }

    pub fn read(&self, app: &str, line: u32) -> Result<Level, HwError> {
        match self.lock().get_mut(&line) {
            Some(Held { app: a, line: Line::Output(pin), .. }) if a == app => Ok(gpio::read_output(pin.as_mut())?),
            Some(Held { app: a, line: Line::Input(pin, _), .. }) if a == app => Ok(gpio::read_input(pin.as_mut())?),
            _ => Err(HwError::NotClaimed { line, what: "input" }),
        }
    }

    pub fn release(&self, app: &str, line: u32) -> Result<(), HwError> {
        let mut lines = self.lock();
        match lines.get(&line) {
            Some(held) if held.app == app => {
                lines.remove(&line);
                Ok(())
            }
            _ => Err(HwError::NotClaimed { line, what: "output" }),
        }
    }

    /// Run PWM `channel` for `app` (opening it on first use); another app's
    /// channel is refused.
    pub fn pwm_set(
        &self,
        app: &str,
        generation: u64,
        channel: u32,
        period_ns: u64,
        duty_ns: u64,
    ) -> Result<(), PwmError> {
        let mut held = lock(&self.pwm);
        let entry = match held.entry(channel) {
            Entry::Occupied(e) if e.get().app != app => {
                return Err(PwmError::Io { channel, message: format!("held by app {}", e.get().app) });
            }
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let opened = self.board.pwm.open(channel)?;
                e.insert(HeldPwm { app: app.to_owned(), generations: BTreeSet::new(), channel: opened })
            }
        };
        entry.generations.insert(generation);
        entry.channel.set(period_ns, duty_ns)
    }

    /// Stop PWM `channel` of `app` (it stays held).
    pub fn pwm_disable(&self, app: &str, channel: u32) -> Result<(), PwmError> {
        match lock(&self.pwm).get_mut(&channel) {
            Some(h) if h.app == app => h.channel.disable(),
            Some(h) => Err(PwmError::Io { channel, message: format!("held by app {}", h.app) }),
            None => Ok(()),
        }
    }

    /// A version of `app` is gone: release the lines and PWM channels no
    /// other version holds (a released channel stops).
    pub fn release_generation(&self, app: &str, generation: u64) {
        let keep = |held_app: &str, generations: &mut BTreeSet<u64>| {
            if held_app == app {
                generations.remove(&generation);
                !generations.is_empty()
            } else {
                true
            }
        };
        self.lock().retain(|_, held| keep(&held.app, &mut held.generations));
        lock(&self.pwm).retain(|_, held| keep(&held.app, &mut held.generations));
    }
}
