//! One app version: its `Store`, the calls into it under a deadline, and the
//! thread that feeds it events and fires its timers.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use wasmtime::Store;
use wasmtime::component::{Component, Linker, TypedFunc};

use crate::Fault;
use crate::bindings::{App, Event};
use crate::events::RuntimeEvent;
use crate::host::{HostState, MemoryLimitExceeded};
use crate::mailbox::WorkerMsg;

struct StateFns {
    save: TypedFunc<(), (Option<Vec<u8>>,)>,
    restore: TypedFunc<(Vec<u8>,), (Result<(), String>,)>,
}

/// `update.consent`: `None` applies now, `Some(seconds)` asks to wait.
type ConsentFn = TypedFunc<(String,), (Option<u32>,)>;

/// An instantiated app version.
pub(crate) struct Instance {
    pub store: Store<HostState>,
    app: App,
    state: Option<StateFns>,
    consent: Option<ConsentFn>,
    call_ms: u32,
    limit: Duration,
    ticks: u64,
}

/// The least time instantiation, `start` and `restore` get, in milliseconds:
/// one-time set-up on a slow (or emulated) CPU must not be cut at `call-ms`.
const INSTANTIATE_MS: u64 = 1000;

/// Turn a wasmtime error from a call into what the operator reads.
fn classify(err: &wasmtime::Error, call_ms: u32) -> Fault {
    if let Some(m) = err.downcast_ref::<MemoryLimitExceeded>() {
        return Fault::MemoryLimit { requested: m.requested, limit: m.limit };
    }
    if let Some(wasmtime::Trap::Interrupt) = err.downcast_ref::<wasmtime::Trap>() {
        return Fault::Deadline { ms: call_ms };
    }
    Fault::Trap(format!("{err:#}"))
}

impl Instance {
    /// Instantiate `component` in a new store holding `host`.
    pub fn new(
        linker: &Linker<HostState>,
        component: &Component,
        host: HostState,
        epoch_tick: Duration,
    ) -> Result<Self, String> {
        let call_ms = host.manifest.limits.call_ms;
        let ticks = u64::from(call_ms).div_ceil(u64::try_from(epoch_tick.as_millis()).unwrap_or(1).max(1)) + 1;
        let tick_ms = u64::try_from(epoch_tick.as_millis()).unwrap_or(1).max(1);
        let limit = Duration::from_millis(u64::from(call_ms));
        let mut store = Store::new(linker.engine(), host);
        store.limiter(|s| &mut s.limiter);
        // The deadline counts the app's own time: time spent blocked in host
        // calls (an fsync of the key-value store, a slow I2C transfer) is given back.
        store.epoch_deadline_callback(move |ctx| {
            let (used, limit) = ctx.data().guest_time();
            if used >= limit {
                return Err(wasmtime::Error::new(wasmtime::Trap::Interrupt));
            }
            let left = u64::try_from((limit - used).as_millis()).unwrap_or(u64::MAX);
            Ok(wasmtime::UpdateDeadline::Continue(left.div_ceil(tick_ms).max(1)))
        });
        // Instantiation runs the component's initialisers: give it at least
        // INSTANTIATE_MS (a slow or emulated CPU), still bounded.
        store.data_mut().begin_call(limit.max(Duration::from_millis(INSTANTIATE_MS)));
        store.set_epoch_deadline(1);
        let instance = linker.instantiate(&mut store, component).map_err(|e| match classify(&e, call_ms) {
            Fault::Trap(_) => format!("{e:#}"),
            fault => fault.to_string(),
        })?;
        let app = App::new(&mut store, &instance).map_err(|e| format!("{e:#}"))?;
        // The `state` export of the app's own interface version: this one, or
        // an older compatible patch (an app built against 0.1.0 on a 0.1.1 runtime).
        let state = export_names("state")
            .into_iter()
            .find_map(|name| instance.get_export_index(&mut store, None, &name))
            .and_then(|iface| {
                let save = instance.get_export_index(&mut store, Some(&iface), "save")?;
                let restore = instance.get_export_index(&mut store, Some(&iface), "restore")?;
                Some(StateFns {
                    save: instance.get_typed_func(&mut store, save).ok()?,
                    restore: instance.get_typed_func(&mut store, restore).ok()?,
                })
            });
        // The optional `update` export, looked up the same way.
        let consent = export_names("update")
            .into_iter()
            .find_map(|name| instance.get_export_index(&mut store, None, &name))
            .and_then(|iface| {
                let consent = instance.get_export_index(&mut store, Some(&iface), "consent")?;
                instance.get_typed_func(&mut store, consent).ok()
            });
        Ok(Self { store, app, state, consent, call_ms, limit, ticks })
    }

    /// Whether the app exports `state`.
    pub fn has_state(&self) -> bool {
        self.state.is_some()
    }

    /// Whether the app exports `update` (the consent hook).
    pub fn has_consent(&self) -> bool {
        self.consent.is_some()
    }

    fn call<R>(&mut self, f: impl FnOnce(&App, &mut Store<HostState>) -> wasmtime::Result<R>) -> Result<R, Fault> {
        self.call_within(self.limit, f)
    }

    /// One-time calls (`start`, `restore`) get at least `INSTANTIATE_MS`, like instantiation.
    fn call_once<R>(&mut self, f: impl FnOnce(&App, &mut Store<HostState>) -> wasmtime::Result<R>) -> Result<R, Fault> {
        self.call_within(self.limit.max(Duration::from_millis(INSTANTIATE_MS)), f)
    }

    fn call_within<R>(
        &mut self,
        limit: Duration,
        f: impl FnOnce(&App, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, Fault> {
        self.store.data_mut().begin_call(limit);
        self.store.set_epoch_deadline(self.ticks);
        let result = f(&self.app, &mut self.store);
        self.store.data().end_call();
        result.map_err(|e| classify(&e, self.call_ms))
    }

    pub fn start(&mut self) -> Result<(), Fault> {
        let config: Vec<(String, String)> =
            self.store.data().manifest.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        self.call_once(|app, store| app.call_start(store, &config))?.map_err(Fault::StartRefused)
    }

    pub fn save(&mut self) -> Result<Option<Vec<u8>>, Fault> {
        let Some(save) = self.state.as_ref().map(|s| s.save) else { return Ok(None) };
        self.call(|_, store| save.call(store, ())).map(|(r,)| r)
    }

    pub fn restore(&mut self, data: Vec<u8>) -> Result<(), Fault> {
        let Some(restore) = self.state.as_ref().map(|s| s.restore) else { return Ok(()) };
        self.call_once(|_, store| restore.call(store, (data,)))?.0.map_err(Fault::StartRefused)
    }

    /// Ask the consent hook about `release`, under the call deadline:
    /// `None` (apply now; also without a hook) or `Some(seconds)` to wait.
    pub fn consent(&mut self, release: &str) -> Result<Option<u32>, Fault> {
        let Some(consent) = self.consent else { return Ok(None) };
        self.call(|_, store| consent.call(store, (release.to_owned(),))).map(|(r,)| r)
    }

    /// Deliver one event. An error the handler returns goes into the app's
    /// log (the device log and the runtime's event stream); a trap is a fault.
    pub fn handle(&mut self, event: &Event) -> Result<(), Fault> {
        if let Err(message) = self.call(|app, store| app.call_handle(store, event))? {
            let state = self.store.data();
            tracing::warn!(app = %state.app, "event handler returned an error: {message}");
            state.services.events.emit(RuntimeEvent::Log {
                app: state.app.clone(),
                level: "warn",
                message: format!("event handler returned an error: {message}"),
            });
        }
        Ok(())
    }
}

/// `trellis:app/INTERFACE@0.1.P` for this runtime's patch down to 0: the
/// names a compatible app's export of `interface` (`state`, `update`) can have.
fn export_names(interface: &str) -> Vec<String> {
    let v = semver::Version::parse(crate::INTERFACE_VERSION).unwrap_or_else(|_| semver::Version::new(0, 0, 0));
    (0..=v.patch)
        .rev()
        .map(|p| format!("{}/{interface}@{}.{}.{p}", crate::INTERFACE_PACKAGE, v.major, v.minor))
        .collect()
}

/// Why a worker ended.
pub(crate) enum Exit {
    /// Told to stop.
    Stopped,
    /// A call faulted; the instance is unusable.
    Faulted(Fault),
}

/// Run `instance` until stopped or faulted.
pub(crate) fn run(mut instance: Instance, rx: &Receiver<WorkerMsg>) -> Exit {
    loop {
        let msg = match instance.store.data().timers.next_due() {
            Some(due) => rx.recv_deadline(due),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let result = match msg {
            Ok(WorkerMsg::Event(event)) => instance.handle(&event),
            Ok(WorkerMsg::Consent { release, reply }) => {
                let answer = instance.consent(&release);
                let faulted = answer.as_ref().err().cloned();
                let _ = reply.send(answer);
                faulted.map_or(Ok(()), Err)
            }
            Ok(WorkerMsg::SaveState(reply)) => {
                let saved = instance.save();
                let faulted = saved.as_ref().err().cloned();
                let _ = reply.send(saved);
                if let Some(fault) = faulted {
                    return Exit::Faulted(fault);
                }
                // Paused: the new version is starting from this state. Events
                // are held until we resume, or passed on when we stop.
                let mut held = Vec::new();
                loop {
                    match rx.recv() {
                        Ok(WorkerMsg::Event(event)) => held.push(event),
                        Ok(WorkerMsg::SaveState(again)) => {
                            let _ = again.send(Ok(None));
                        }
                        // Being replaced: the old version no longer has a say.
                        Ok(WorkerMsg::Consent { reply, .. }) => {
                            let _ = reply.send(Ok(None));
                        }
                        Ok(WorkerMsg::Resume) => break,
                        Ok(WorkerMsg::Stop) | Err(_) => return stop(instance, rx, held, false),
                    }
                }
                held.iter().try_for_each(|event| instance.handle(event))
            }
            Ok(WorkerMsg::Resume) => Ok(()),
            Ok(WorkerMsg::Stop) | Err(RecvTimeoutError::Disconnected) => return stop(instance, rx, Vec::new(), true),
            Err(RecvTimeoutError::Timeout) => fire_timers(&mut instance),
        };
        if let Err(fault) = result {
            return Exit::Faulted(fault);
        }
    }
}

fn fire_timers(instance: &mut Instance) -> Result<(), Fault> {
    let due = instance.store.data_mut().timers.take_due(Instant::now());
    for id in due {
        instance.handle(&Event::Timer(id))?;
    }
    Ok(())
}

/// Retire: tell the app (unless it was paused after handing over its state),
/// then pass events still queued for it to whoever the route points at now.
fn stop(mut instance: Instance, rx: &Receiver<WorkerMsg>, held: Vec<Event>, notify: bool) -> Exit {
    if notify && let Err(fault) = instance.handle(&Event::Shutdown) {
        tracing::warn!(app = %instance.store.data().app, "shutdown handler: {fault}");
    }
    let services = instance.store.data().services.clone();
    let app = instance.store.data().app.clone();
    let queued = rx.try_iter().filter_map(|msg| match msg {
        WorkerMsg::Event(event) => Some(event),
        _ => None,
    });
    for event in held.into_iter().chain(queued) {
        services.broker.deliver(&app, event);
    }
    Exit::Stopped
}
