//! The host side of the `trellis:app` world: what an app's imports do, with
//! every permission checked against its manifest before anything happens.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use trellis_appfmt::{LineBias, Manifest, pattern_covers, topic_matches, valid_topic_pattern};
use trellis_hal::gpio::{Bias, Edge, Level, LineConfig};
use trellis_hal::i2c::I2cBus;
use trellis_hal::pwm::PwmError;
use trellis_hal::spi::{SpiBus, SpiConfig, SpiError};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::trellis::app::{clocks, events, gpio, hotplug, i2c, kv, log, pubsub, pwm, spi, timers, types};
use crate::bindings::{Event, GpioEdge, WitEdge, WitError, WitLevel};
use crate::broker::{Broker, Subscriptions};
use crate::hw::Hardware;
use crate::kv::KvStore;
use crate::supervisor::{EventBus, RuntimeEvent};

/// Largest single I2C or SPI transfer, and largest pub/sub payload.
const MAX_TRANSFER: usize = 4096;
const MAX_PAYLOAD: usize = 64 * 1024;
const MAX_TIMERS: usize = 64;
const MAX_SUBSCRIPTIONS: usize = 64;

/// Services shared by every app.
pub(crate) struct Services {
    pub hw: Arc<Hardware>,
    pub broker: Arc<Broker>,
    pub events: EventBus,
    pub epoch: Instant,
}

/// The error a memory limit raises inside wasmtime (becomes a trap).
#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded: asked for {requested} bytes, limit is {limit} bytes")]
pub(crate) struct MemoryLimitExceeded {
    pub requested: usize,
    pub limit: usize,
}

/// What an app uses, read live by the status: its linear memory now, and the
/// time and number of calls into it since the runtime started it.
#[derive(Debug, Default)]
pub struct Usage {
    memory: AtomicU64,
    busy_ns: AtomicU64,
    calls: AtomicU64,
}

impl Usage {
    /// Bytes of linear memory of the running instance.
    #[must_use]
    pub fn memory_bytes(&self) -> u64 {
        self.memory.load(Ordering::Relaxed)
    }

    /// Time spent in calls into the app (its handlers, host calls included).
    #[must_use]
    pub fn cpu_time(&self) -> Duration {
        Duration::from_nanos(self.busy_ns.load(Ordering::Relaxed))
    }

    /// Calls into the app.
    #[must_use]
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub(crate) fn called(&self, took: Duration) {
        self.busy_ns.fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts every linear memory of the app against one limit.
pub(crate) struct MemoryLimiter {
    limit: usize,
    total: usize,
    usage: Arc<Usage>,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let requested = self.total - current.min(self.total) + desired;
        if requested > self.limit {
            return Err(wasmtime::Error::new(MemoryLimitExceeded { requested, limit: self.limit }));
        }
        self.total = requested;
        self.usage.memory.store(requested as u64, Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

struct Timer {
    due: Instant,
    period: Option<Duration>,
}

/// An app's timers; the worker fires them between calls.
#[derive(Default)]
pub(crate) struct Timers {
    next_id: u32,
    active: BTreeMap<u32, Timer>,
}

impl Timers {
    fn add(&mut self, delay: Duration, period: Option<Duration>) -> Option<u32> {
        if self.active.len() >= MAX_TIMERS {
            return None;
        }
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.active.insert(self.next_id, Timer { due: Instant::now() + delay, period });
        Some(self.next_id)
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.active.values().map(|t| t.due).min()
    }

    /// Timers due at `now`, in due order; intervals are rescheduled one period
    /// on (so a late tick is caught up, not skipped), timeouts removed.
    pub fn take_due(&mut self, now: Instant) -> Vec<u32> {
        let mut due: Vec<(Instant, u32)> =
            self.active.iter().filter(|(_, t)| t.due <= now).map(|(&id, t)| (t.due, id)).collect();
        due.sort_unstable();
        for &(_, id) in &due {
            let Some(t) = self.active.get_mut(&id) else { continue };
            match t.period {
                Some(p) => {
                    t.due += p;
                    // Far behind (the device was suspended, the app was stuck): resynchronise.
                    if now.saturating_duration_since(t.due) > p * 10 {
                        t.due = now + p;
                    }
                }
                None => {
                    self.active.remove(&id);
                }
            }
        }
        due.into_iter().map(|(_, id)| id).collect()
    }
}

/// The data of one app's `Store`.
pub(crate) struct HostState {
    pub app: String,
    pub generation: u64,
    pub manifest: Arc<Manifest>,
    pub services: Arc<Services>,
    pub kv: Arc<Mutex<KvStore>>,
    pub limiter: MemoryLimiter,
    pub timers: Timers,
    /// Subscriptions made by this version; applied to the broker at commit.
    pub subs: Subscriptions,
    /// Committed: subscriptions go to the broker at once.
    pub live: bool,
    /// When the current call into the app began, and how much of it the host
    /// spent blocked (not charged to the app's deadline).
    call_started: Instant,
    host_time: Duration,
    /// The deadline of the current call.
    call_limit: Duration,
    wasi: WasiCtx,
    table: ResourceTable,
    i2c: HashMap<u32, Box<dyn I2cBus>>,
    spi: HashMap<String, Box<dyn SpiBus>>,
    /// [`Hardware::unplugged`] when the handles above were last checked.
    unplugged: u64,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn level_to_hal(l: WitLevel) -> Level {
    match l {
        WitLevel::Low => Level::Low,
        WitLevel::High => Level::High,
    }
}

fn level_to_wit(l: Level) -> WitLevel {
    match l {
        Level::Low => WitLevel::Low,
        Level::High => WitLevel::High,
    }
}

impl HostState {
    pub fn new(
        app: &str,
        generation: u64,
        manifest: Arc<Manifest>,
        services: Arc<Services>,
        kv: Arc<Mutex<KvStore>>,
        usage: Arc<Usage>,
    ) -> Self {
        // No arguments, environment, preopened directories or network: WASI gives
        // clocks and randomness only; everything else goes through `trellis:app`.
        let wasi =
            wasmtime_wasi::WasiCtxBuilder::new().allow_ip_name_lookup(false).allow_tcp(false).allow_udp(false).build();
        Self {
            app: app.to_owned(),
            generation,
            limiter: MemoryLimiter { limit: manifest.limits.memory_bytes(), total: 0, usage },
            manifest,
            services,
            kv,
            timers: Timers::default(),
            subs: Subscriptions::default(),
            live: false,
            call_started: Instant::now(),
            host_time: Duration::ZERO,
            call_limit: Duration::ZERO,
            wasi,
            table: ResourceTable::new(),
            i2c: HashMap::new(),
            spi: HashMap::new(),
            unplugged: 0,
        }
    }

    /// A call into the app begins, with `limit` for the app's own time.
    pub fn begin_call(&mut self, limit: Duration) {
        self.call_started = Instant::now();
        self.host_time = Duration::ZERO;
        self.call_limit = limit;
    }

    /// The call [`HostState::begin_call`] began is over: count it in the app's usage.
    pub fn end_call(&self) {
        self.limiter.usage.called(self.call_started.elapsed());
    }

    /// Time the current call has spent in the app itself, and its limit.
    pub fn guest_time(&self) -> (Duration, Duration) {
        (self.call_started.elapsed().saturating_sub(self.host_time), self.call_limit)
    }

    /// Run a host operation that may block on I/O, not charging it to the app.
    fn blocking<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let t = Instant::now();
        let r = f(self);
        self.host_time += t.elapsed();
        r
    }

    /// Refuse with `Denied`, naming what and the app in the log.
    fn denied(&self, what: String) -> WitError {
        tracing::warn!(app = %self.app, "denied: {what}");
        self.services.events.emit(RuntimeEvent::Denied { app: self.app.clone(), reason: what.clone() });
        WitError::Denied(what)
    }

    fn io_error(&self, what: String) -> WitError {
        tracing::debug!(app = %self.app, "host call failed: {what}");
        WitError::Io(what)
    }

    fn check_output(&self, line: u32) -> Result<(), WitError> {
        let granted = &self.manifest.permissions.gpio_outputs;
        if granted.contains(&line) {
            Ok(())
        } else {
            Err(self
                .denied(format!("GPIO line {line} as output is not granted (permissions.gpio-outputs = {granted:?})")))
        }
    }

    /// Drop the open I2C and SPI handles when a device went away since they
    /// were last used: the next use opens the device again, or fails naming it.
    fn forget_unplugged(&mut self) {
        let now = self.services.hw.unplugged();
        if now != self.unplugged {
            self.unplugged = now;
            self.i2c.clear();
            self.spi.clear();
        }
    }

    /// How the manifest says `line` is wired.
    fn line_config(&self, line: u32) -> LineConfig {
        let wiring = self.manifest.gpio_line(line);
        let bias = match wiring.bias {
            LineBias::AsIs => Bias::AsIs,
            LineBias::PullUp => Bias::PullUp,
            LineBias::PullDown => Bias::PullDown,
            LineBias::Disable => Bias::Disabled,
        };
        LineConfig { bias, active_low: wiring.active_low }
    }

    fn check_line(&self, line: u32) -> Result<(), WitError> {
        let p = &self.manifest.permissions;
        if p.gpio_outputs.contains(&line) || p.gpio_inputs.contains(&line) {
            Ok(())
        } else {
            Err(self.denied(format!(
                "GPIO line {line} is not granted (permissions.gpio-inputs = {:?}, gpio-outputs = {:?})",
                p.gpio_inputs, p.gpio_outputs
            )))
        }
    }

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

    fn check_len(len: usize) -> Result<(), WitError> {
        if len > MAX_TRANSFER {
            return Err(WitError::Invalid(format!("transfer of {len} bytes is above the {MAX_TRANSFER}-byte limit")));
        }
        Ok(())
    }
}

impl types::Host for HostState {}
impl events::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: log::LogLevel, message: String) {
        let app = self.app.as_str();
        match level {
            log::LogLevel::Trace => tracing::trace!(target: "app", app, "{message}"),
            log::LogLevel::Debug => tracing::debug!(target: "app", app, "{message}"),
            log::LogLevel::Info => tracing::info!(target: "app", app, "{message}"),
            log::LogLevel::Warn => tracing::warn!(target: "app", app, "{message}"),
            log::LogLevel::Error => tracing::error!(target: "app", app, "{message}"),
        }
        let level = match level {
            log::LogLevel::Trace => "trace",
            log::LogLevel::Debug => "debug",
            log::LogLevel::Info => "info",
            log::LogLevel::Warn => "warn",
            log::LogLevel::Error => "error",
        };
        self.services.events.emit(RuntimeEvent::Log { app: self.app.clone(), level, message });
    }
}

impl clocks::Host for HostState {
    fn monotonic_now(&mut self) -> u64 {
        u64::try_from(self.services.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn wall_now(&mut self) -> clocks::Datetime {
        let d = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        clocks::Datetime { seconds: d.as_secs(), nanoseconds: d.subsec_nanos() }
    }
}

impl timers::Host for HostState {
    fn set_timeout(&mut self, ms: u32) -> u32 {
        self.timers.add(Duration::from_millis(ms.into()), None).unwrap_or(0)
    }

    fn set_interval(&mut self, ms: u32) -> Result<u32, String> {
        if ms == 0 {
            return Err("interval must be at least 1 ms".into());
        }
        let period = Duration::from_millis(ms.into());
        self.timers.add(period, Some(period)).ok_or_else(|| format!("at most {MAX_TIMERS} timers per app"))
    }

    fn cancel(&mut self, id: u32) -> bool {
        self.timers.active.remove(&id).is_some()
    }
}

impl gpio::Host for HostState {
    fn claim_output(&mut self, line: u32, initial: WitLevel) -> Result<(), WitError> {
        self.check_output(line)?;
        let config = self.line_config(line);
        self.services
            .hw
            .claim_output(&self.app, self.generation, line, level_to_hal(initial), config)
            .map_err(|e| self.io_error(e.to_string()))
    }

    fn write(&mut self, line: u32, value: WitLevel) -> Result<(), WitError> {
        self.check_output(line)?;
        self.services.hw.write(&self.app, line, level_to_hal(value)).map_err(|e| self.io_error(e.to_string()))
    }

    fn claim_input(&mut self, line: u32, edges: WitEdge) -> Result<(), WitError> {
        let granted = &self.manifest.permissions.gpio_inputs;
        if !granted.contains(&line) {
            return Err(self
                .denied(format!("GPIO line {line} as input is not granted (permissions.gpio-inputs = {granted:?})")));
        }
        let edges = match edges {
            WitEdge::Rising => Edge::Rising,
            WitEdge::Falling => Edge::Falling,
            WitEdge::Both => Edge::Both,
        };
        let broker = self.services.broker.clone();
        let app = self.app.clone();
        let sink = Box::new(move |e: trellis_hal::gpio::EdgeEvent| {
            let edge = GpioEdge { line: e.line, value: level_to_wit(e.level), timestamp_ns: e.timestamp_ns };
            broker.deliver(&app, Event::GpioEdge(edge));
        });
        let config = self.line_config(line);
        self.services
            .hw
            .claim_input(&self.app, self.generation, line, edges, config, sink)
            .map_err(|e| self.io_error(e.to_string()))
    }

    fn read(&mut self, line: u32) -> Result<WitLevel, WitError> {
        self.check_line(line)?;
        self.services.hw.read(&self.app, line).map(level_to_wit).map_err(|e| self.io_error(e.to_string()))
    }

    fn release(&mut self, line: u32) -> Result<(), WitError> {
        self.check_line(line)?;
        self.services.hw.release(&self.app, line).map_err(|e| self.io_error(e.to_string()))
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
        let t = Instant::now();
        let result = dev.transfer(&mut read, &data).map_err(|e| WitError::Io(e.to_string()));
        self.host_time += t.elapsed();
        result.map(|()| read)
    }
}

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

impl kv::Host for HostState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, WitError> {
        Ok(lock(&self.kv).get(&key))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), WitError> {
        self.blocking(|s| lock(&s.kv).set(&key, &value)).map_err(|e| match e {
            crate::kv::KvError::Quota { .. } => WitError::QuotaExceeded(e.to_string()),
            crate::kv::KvError::Key(_) => WitError::Invalid(e.to_string()),
            _ => self.io_error(e.to_string()),
        })
    }

    fn delete(&mut self, key: String) -> Result<bool, WitError> {
        self.blocking(|s| lock(&s.kv).delete(&key)).map_err(|e| self.io_error(e.to_string()))
    }

    fn keys(&mut self) -> Result<Vec<String>, WitError> {
        Ok(lock(&self.kv).keys())
    }
}

impl pubsub::Host for HostState {
    fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), WitError> {
        if !valid_topic_pattern(&topic) || topic.contains(['+', '#']) {
            return Err(WitError::Invalid(format!("{topic:?} is not a topic (no wildcards when publishing)")));
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(WitError::Invalid(format!("payload of {} bytes is above {MAX_PAYLOAD}", payload.len())));
        }
        if !self.manifest.permissions.publish.iter().any(|p| topic_matches(p, &topic)) {
            return Err(self.denied(format!("publishing to {topic:?} is not granted (permissions.publish)")));
        }
        self.services.broker.publish(&self.app, &topic, &payload);
        Ok(())
    }

    fn subscribe(&mut self, pattern: String) -> Result<(), WitError> {
        if !valid_topic_pattern(&pattern) {
            return Err(WitError::Invalid(format!("{pattern:?} is not a topic pattern")));
        }
        // The pattern must lie within a granted one: every topic it matches must be granted.
        let granted = self.manifest.permissions.subscribe.iter().any(|g| pattern_covers(g, &pattern));
        if !granted {
            return Err(self.denied(format!("subscribing to {pattern:?} is not granted (permissions.subscribe)")));
        }
        if self.subs.topics.len() >= MAX_SUBSCRIPTIONS {
            return Err(WitError::QuotaExceeded(format!("at most {MAX_SUBSCRIPTIONS} subscriptions")));
        }
        if !self.subs.topics.contains(&pattern) {
            self.subs.topics.push(pattern.clone());
        }
        if self.live {
            self.services.broker.subscribe(&self.app, &pattern);
        }
        Ok(())
    }

    fn unsubscribe(&mut self, pattern: String) -> Result<(), WitError> {
        self.subs.topics.retain(|p| p != &pattern);
        if self.live {
            self.services.broker.unsubscribe(&self.app, &pattern);
        }
        Ok(())
    }
}

impl hotplug::Host for HostState {
    fn subscribe(&mut self, subsystem: String) -> Result<(), WitError> {
        if !self.manifest.permissions.hotplug.contains(&subsystem) {
            return Err(self.denied(format!("hot-plug events of {subsystem:?} are not granted (permissions.hotplug)")));
        }
        if !self.subs.hotplug.contains(&subsystem) {
            self.subs.hotplug.push(subsystem.clone());
        }
        if self.live {
            self.services.broker.subscribe_hotplug(&self.app, &subsystem);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_catch_up_and_timeouts_fire_once() {
        let mut t = Timers::default();
        let a = t.add(Duration::from_millis(10), Some(Duration::from_millis(10))).unwrap_or(0);
        let b = t.add(Duration::from_millis(15), None).unwrap_or(0);
        let start = Instant::now();
        assert!(t.take_due(start).is_empty());
        // 35 ms later: the interval is due (once per call, catching up) and the timeout too
        let later = start + Duration::from_millis(35);
        assert_eq!(t.take_due(later), vec![a, b]);
        assert_eq!(t.take_due(later), vec![a]);
        assert_eq!(t.take_due(later), vec![a]);
        assert!(t.take_due(later).is_empty());
        assert!(t.next_due() > Some(later));
        assert!(!t.active.contains_key(&b));
    }
}
