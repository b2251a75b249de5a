//! The supervision loop: loads apps, swaps them as transactions, restarts
//! crashed ones after their back-off, falls back to the last good version
//! after a crash loop. It owns every app's slot and runs on its own thread;
//! the [`crate::Runtime`] handle sends it [`Control`] requests.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use trellis_appfmt::{AppFile, Manifest, TrustList, component_code, interface_imports};
use trellis_layout::{AppsDir, write_atomic};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::cache::CompileCache;
use crate::cgroup::{AppCgroup, Cgroups};
use crate::clock::Clock;
use crate::consent::Hook;
use crate::events::RuntimeEvent;
use crate::host::{HostState, Services, Usage};
use crate::kv::KvStore;
use crate::mailbox::WorkerMsg;
use crate::paths;
use crate::status::{AppState, AppStatus, SwapOutcome};
use crate::stopped::StoppedApps;
use crate::sync::lock;
use crate::worker::{self, Exit, Instance};
use crate::{Fault, LoadError, RuntimeConfig};

const MAILBOX: usize = 1024;
/// The supervisor looks at its clock at least this often.
const TICK: Duration = Duration::from_millis(500);

pub(crate) type Reply<T> = Sender<Result<T, LoadError>>;

/// What the supervisor is asked to do.
pub(crate) enum Control {
    Load {
        path: PathBuf,
        reply: Option<Reply<SwapOutcome>>,
    },
    Install {
        app: String,
        bytes: Vec<u8>,
        reply: Reply<SwapOutcome>,
    },
    RemoveApp {
        app: String,
        reply: Reply<()>,
    },
    /// Stop an app on request and keep it stopped.
    StopApp {
        app: String,
        reply: Reply<()>,
    },
    /// Run a stopped app again.
    StartApp {
        app: String,
        reply: Reply<SwapOutcome>,
    },
    Remove {
        path: PathBuf,
    },
    Exited {
        app: String,
        generation: u64,
        fault: Option<Fault>,
    },
    /// The running apps that export the consent hook (`update`).
    ConsentHooks(Sender<Vec<Hook>>),
    /// Look at the clock (after a fake one moved); answered once acted on.
    Tick(Sender<()>),
    Shutdown,
}

struct Version {
    manifest: Arc<Manifest>,
    component: Component,
    bytes: Arc<Vec<u8>>,
    sha256: [u8; 32],
    /// The `trellis:app` version it was built for.
    interface: Option<String>,
}

struct Worker {
    generation: u64,
    tx: Sender<WorkerMsg>,
    thread: std::thread::JoinHandle<()>,
    started: Duration,
    /// The version exports `update` (the consent hook).
    consent: bool,
}

/// One app: its versions, worker and crash record.
pub(crate) struct Slot {
    kv: Arc<Mutex<KvStore>>,
    usage: Arc<Usage>,
    version: Option<Arc<Version>>,
    worker: Option<Worker>,
    crashes: VecDeque<Duration>,
    restarts: u32,
    restart_at: Option<Duration>,
    good: bool,
    failed: Option<String>,
    last_error: Option<String>,
    /// How the running version got there (answers a `load` that the watcher beat).
    outcome: Option<SwapOutcome>,
    /// The app's cgroup (`[cgroups]`), when it could be set up.
    cgroup: Option<AppCgroup>,
}

/// The supervision loop's state, on its own thread.
pub(crate) struct Supervisor {
    pub(crate) config: RuntimeConfig,
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) cache: CompileCache,
    pub(crate) trust: TrustList,
    pub(crate) services: Arc<Services>,
    pub(crate) status: Arc<Mutex<BTreeMap<String, AppStatus>>>,
    pub(crate) control: Sender<Control>,
    pub(crate) slots: HashMap<String, Slot>,
    pub(crate) next_generation: u64,
    pub(crate) clock: Arc<dyn Clock>,
    /// Per-app CPU shares (`[cgroups]`), when configured and set up.
    pub(crate) cgroups: Option<Arc<Cgroups>>,
    /// The apps stopped on request (kept in `STATE_DIR/stopped`).
    pub(crate) stopped: StoppedApps,
    /// An app was installed, swapped, removed or marked good since the
    /// assets were last collected.
    pub(crate) apps_changed: bool,
}

impl Supervisor {
    pub(crate) fn run(&mut self, rx: &Receiver<Control>) {
        loop {
            let mut ticked = None;
            // At least every 500 ms (real time); earlier when a restart is due.
            let now = self.clock.now();
            let due = self.slots.values().filter_map(|s| s.restart_at).map(|t| t.saturating_sub(now)).min();
            match rx.recv_timeout(due.map_or(TICK, |d| d.min(TICK))) {
                Ok(Control::Install { app, bytes, reply }) => {
                    self.apps_changed = true;
                    let _ = reply.send(self.install(&app, bytes));
                }
                Ok(Control::RemoveApp { app, reply }) => {
                    self.apps_changed = true;
                    let _ = reply.send(self.remove_app(&app));
                }
                Ok(Control::StopApp { app, reply }) => {
                    let _ = reply.send(self.stop_app(&app));
                }
                Ok(Control::StartApp { app, reply }) => {
                    let _ = reply.send(self.start_app(&app));
                }
                Ok(Control::Load { path, reply }) => {
                    self.apps_changed = true;
                    let result = self.load_path(&path);
                    match reply {
                        Some(reply) => {
                            let _ = reply.send(result);
                        }
                        None => {
                            if let Err(e) = result
                                && !matches!(e, LoadError::Unchanged { .. } | LoadError::AppStopped { .. })
                            {
                                tracing::warn!("refused: {e}");
                            }
                        }
                    }
                }
                Ok(Control::Remove { path }) => {
                    self.apps_changed = true;
                    self.remove(&path);
                }
                Ok(Control::Tick(reply)) => ticked = Some(reply),
                Ok(Control::ConsentHooks(reply)) => {
                    let _ = reply.send(self.consent_hooks());
                }
                Ok(Control::Exited { app, generation, fault }) => self.exited(&app, generation, fault),
                Ok(Control::Shutdown) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    self.shutdown();
                    return;
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            }
            self.restart_due();
            self.mark_good();
            if std::mem::take(&mut self.apps_changed) {
                self.retain_assets();
                self.services.apps_changed.emit(());
            }
            if let Some(reply) = ticked {
                let _ = reply.send(());
            }
        }
    }

    /// Every running app with the consent hook, by name.
    fn consent_hooks(&self) -> Vec<Hook> {
        let mut hooks: Vec<Hook> = self
            .slots
            .iter()
            .filter(|(_, s)| s.failed.is_none())
            .filter_map(|(app, s)| {
                let worker = s.worker.as_ref().filter(|w| w.consent)?;
                let call_ms = s.version.as_ref()?.manifest.limits.call_ms;
                Some(Hook { app: app.clone(), tx: worker.tx.clone(), call_ms })
            })
            .collect();
        hooks.sort_by(|a, b| a.app.cmp(&b.app));
        hooks
    }

    fn last_good_path(&self, app: &str) -> PathBuf {
        AppsDir::new(self.config.state_dir.join(paths::state::LAST_GOOD)).path(app)
    }

    pub(crate) fn load_all(&mut self) {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&self.config.apps_dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| AppsDir::name(p).is_some_and(|name| self.config.runs(&name)))
                .collect(),
            Err(e) => {
                tracing::error!(dir = %self.config.apps_dir.display(), "cannot list apps: {e}");
                Vec::new()
            }
        };
        files.sort();
        for path in files {
            if let Some(app) = AppsDir::name(&path).filter(|app| self.stopped.contains(app)) {
                tracing::info!(app, "stopped on request: not started (trellis app start {app} runs it)");
                self.publish_stopped(&app);
                continue;
            }
            if let Err(e) = self.load_path(&path) {
                tracing::warn!("refused: {e}");
                // A broken file (a power cut mid-copy, a bad update): run the last good copy.
                let Some(app) = AppsDir::name(&path) else { continue };
                let good = self.last_good_path(&app);
                if good.exists() {
                    match self.load_file(&good, &app) {
                        Ok(o) => {
                            tracing::warn!(app, version = %o.version, "running the last good version instead");
                            self.services.events.emit(RuntimeEvent::FellBack { app, version: o.version });
                        }
                        Err(e) => tracing::error!("last good copy: {e}"),
                    }
                }
            }
        }
    }

    fn load_path(&mut self, path: &Path) -> Result<SwapOutcome, LoadError> {
        let Some(app) = AppsDir::name(path) else {
            return Err(LoadError::FileName { path: path.to_owned() });
        };
        if self.stopped.contains(&app) {
            // A file copied in while the app is stopped: shown, not run.
            self.publish_stopped(&app);
            return Err(LoadError::AppStopped { app });
        }
        let result = self.load_file(path, &app);
        self.report(&app, result)
    }

    /// A refusal is an event, the app's last error and in its status.
    fn report(&mut self, app: &str, result: Result<SwapOutcome, LoadError>) -> Result<SwapOutcome, LoadError> {
        if let Err(e) = &result
            && !matches!(e, LoadError::Unchanged { .. })
        {
            self.services.events.emit(RuntimeEvent::Refused { app: Some(app.to_owned()), reason: e.to_string() });
            if let Some(slot) = self.slots.get_mut(app) {
                slot.last_error = Some(e.to_string());
            }
            self.publish_status(app);
        }
        result
    }

    /// Where app `app`'s file is, when `app` is a valid name this runtime runs
    /// (the checks every request naming an app passes first).
    fn app_path(&self, app: &str) -> Result<PathBuf, LoadError> {
        let path = AppsDir::new(&self.config.apps_dir).path(app);
        if !trellis_layout::valid_name(app) {
            return Err(LoadError::FileName { path });
        }
        if let Some(only) = self.config.only.as_ref().filter(|_| !self.config.runs(app)) {
            return Err(LoadError::NotRun { app: app.to_owned(), only: format!("{only:?}") });
        }
        Ok(path)
    }

    /// An upload: load `bytes` as `app`, then put them in place.
    fn install(&mut self, app: &str, bytes: Vec<u8>) -> Result<SwapOutcome, LoadError> {
        let path = self.app_path(app)?;
        let t0 = Instant::now();
        if self.stopped.contains(app) {
            return self.install_stopped(&path, app, bytes, t0);
        }
        let result = self.load_bytes(&path, app, bytes.clone(), t0);
        let outcome = self.report(app, result)?;
        if let Err(e) = write_atomic(&path, &bytes) {
            // The file on disk is still the previous version (or none): run that again.
            tracing::error!(app, "{e}: going back to the previous version");
            if path.exists() {
                if let Err(back) = self.load_file(&path, app) {
                    tracing::error!(app, "the previous version failed too: {back}");
                }
            } else {
                self.remove(&path);
            }
            return self.report(app, Err(LoadError::NotKept { path, reason: e.to_string() }));
        }
        Ok(outcome)
    }

    fn remove_app(&mut self, app: &str) -> Result<(), LoadError> {
        let path = AppsDir::new(&self.config.apps_dir).path(app);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(LoadError::NoApp { app: app.to_owned() }),
            Err(source) => return Err(LoadError::Remove { path, source }),
        }
        self.remove(&path);
        Ok(())
    }

    /// Validate and compile `path` as app `app`, then swap it in.
    fn load_file(&mut self, path: &Path, app: &str) -> Result<SwapOutcome, LoadError> {
        let t0 = Instant::now();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read { path: path.to_owned(), source })?;
        self.load_bytes(path, app, bytes, t0)
    }

    /// Validate and compile `bytes` (from `path`) as app `app`, then swap it in.
    fn load_bytes(&mut self, path: &Path, app: &str, bytes: Vec<u8>, t0: Instant) -> Result<SwapOutcome, LoadError> {
        let fmt = |source| LoadError::Format { path: path.to_owned(), source };
        let file = AppFile::parse(&bytes).map_err(fmt)?;
        if let Some(slot) = self.slots.get(app)
            && slot.worker.is_some()
            && slot.version.as_ref().is_some_and(|v| v.sha256 == file.sha256)
        {
            return slot.outcome.clone().ok_or(LoadError::Unchanged { path: path.to_owned() });
        }
        let (component, source, interface) = self.verify(path, app, &file, &bytes)?;
        let version = Arc::new(Version {
            manifest: Arc::new(file.manifest),
            component,
            bytes: Arc::new(bytes),
            sha256: file.sha256,
            interface,
        });
        let (replaced, handed_over) = self.swap(path, app, version.clone(), true)?;
        tracing::info!(
            app,
            version = %version.manifest.version,
            replaced = replaced.as_deref().unwrap_or("-"),
            compile = ?source,
            ms = %format_args!("{:.1}", t0.elapsed().as_secs_f64() * 1000.0),
            "app running"
        );
        let outcome = SwapOutcome {
            app: app.to_owned(),
            version: version.manifest.version.clone(),
            replaced,
            compile: source,
            state_handed_over: handed_over,
            elapsed: t0.elapsed(),
            stopped: false,
        };
        if let Some(slot) = self.slots.get_mut(app) {
            slot.outcome = Some(outcome.clone());
        }
        Ok(outcome)
    }

    /// Every check of a new version short of running it: its name, the
    /// signature policy, the interface version, the hardware it asks for;
    /// then compile it (or take it from the cache).
    fn verify(
        &mut self,
        path: &Path,
        app: &str,
        file: &AppFile,
        bytes: &[u8],
    ) -> Result<(Component, crate::CompileSource, Option<String>), LoadError> {
        if file.manifest.name != app {
            return Err(LoadError::NameMismatch { path: path.to_owned(), manifest: file.manifest.name.clone() });
        }
        let mut signed = false;
        if self.config.require_signatures {
            let key = file
                .verify(bytes, &self.trust)
                .map_err(|source| LoadError::Format { path: path.to_owned(), source })?;
            tracing::debug!(app, %key, "signature verified");
            signed = true;
        }
        let interface = self.check_interface(path, bytes)?;
        self.check_permissions(path, &file.manifest)?;
        let trust = &self.trust;
        let (component, source) = self
            .cache
            .get(
                &self.engine,
                &file.code_sha256,
                || trusted_native(trust, path, app, file, bytes, signed),
                || component_code(bytes).map_err(|e| e.to_string()),
            )
            .map_err(|reason| LoadError::Compile { path: path.to_owned(), reason })?;
        Ok((component, source, interface))
    }

    /// An upload for a stopped app: every check short of running it, then its
    /// file is put in place; it stays stopped until it is started.
    fn install_stopped(
        &mut self,
        path: &Path,
        app: &str,
        bytes: Vec<u8>,
        t0: Instant,
    ) -> Result<SwapOutcome, LoadError> {
        let checked = AppFile::parse(&bytes)
            .map_err(|source| LoadError::Format { path: path.to_owned(), source })
            .and_then(|file| self.verify(path, app, &file, &bytes).map(|(_, source, _)| (file, source)));
        let (file, compile) = match checked {
            Ok(c) => c,
            Err(e) => return self.report(app, Err(e)),
        };
        let replaced = std::fs::read(path).ok().and_then(|b| AppFile::inspect(&b).ok()).map(|f| f.manifest.version);
        if let Err(e) = write_atomic(path, &bytes) {
            return self.report(app, Err(LoadError::NotKept { path: path.to_owned(), reason: e.to_string() }));
        }
        tracing::info!(app, version = %file.manifest.version, "app file in place; the app stays stopped");
        self.publish_stopped(app);
        Ok(SwapOutcome {
            app: app.to_owned(),
            version: file.manifest.version,
            replaced,
            compile,
            state_handed_over: false,
            elapsed: t0.elapsed(),
            stopped: true,
        })
    }

    /// Stop `app` on request: recorded first (if that fails, it runs on),
    /// then its worker is told to stop (it handles `shutdown`) and its routes
    /// go. Its file, key-value store and last good copy stay.
    fn stop_app(&mut self, app: &str) -> Result<(), LoadError> {
        let path = self.app_path(app)?;
        if !path.exists() && !self.slots.contains_key(app) {
            return Err(LoadError::NoApp { app: app.to_owned() });
        }
        if !self.stopped.insert(app)? {
            return Ok(()); // stopped already
        }
        let worker = self.slots.get_mut(app).and_then(|slot| {
            slot.restart_at = None;
            slot.failed = None;
            slot.crashes.clear();
            slot.worker.take()
        });
        self.services.broker.remove(app);
        if let Some(w) = worker {
            let _ = w.tx.send(WorkerMsg::Stop);
            let _ = w.thread.join();
        }
        self.publish_stopped(app);
        tracing::info!(app, "stopped on request");
        self.services.events.emit(RuntimeEvent::Stopped { app: app.to_owned(), reason: "stopped on request".into() });
        Ok(())
    }

    /// Run `app` again: its mark is cleared, then its file goes through the
    /// normal load. If that refuses it, it stays stopped (the reason is its
    /// last error). An app that runs already runs on; one given up on after a
    /// crash loop is loaded again with a clean crash record.
    fn start_app(&mut self, app: &str) -> Result<SwapOutcome, LoadError> {
        let path = self.app_path(app)?;
        if !path.exists() {
            return Err(LoadError::NoApp { app: app.to_owned() });
        }
        let was_stopped = self.stopped.remove(app)?;
        if let Some(slot) = self.slots.get_mut(app).filter(|s| s.worker.is_none()) {
            slot.crashes.clear();
            slot.restart_at = None;
        }
        match self.load_path(&path) {
            Err(LoadError::Unchanged { .. }) if self.slots.get(app).is_some_and(|s| s.worker.is_some()) => {
                let version = self.slots.get(app).and_then(|s| s.version.as_ref()).map(|v| v.manifest.version.clone());
                Ok(SwapOutcome {
                    app: app.to_owned(),
                    version: version.unwrap_or_default(),
                    replaced: None,
                    compile: crate::CompileSource::Memory,
                    state_handed_over: false,
                    elapsed: Duration::ZERO,
                    stopped: false,
                })
            }
            Err(e) => {
                if was_stopped {
                    if let Err(again) = self.stopped.insert(app) {
                        tracing::error!(app, "{again}");
                    }
                    self.publish_stopped(app);
                }
                Err(e)
            }
            Ok(o) => {
                if was_stopped {
                    tracing::info!(app, version = %o.version, "started on request");
                }
                Ok(o)
            }
        }
    }

    /// The status of a stopped app: the version its file holds (else the
    /// one that ran last), state `Stopped`.
    fn publish_stopped(&self, app: &str) {
        let path = AppsDir::new(&self.config.apps_dir).path(app);
        let bytes = std::fs::read(&path).ok();
        let file = bytes.as_deref().and_then(|b| AppFile::inspect(b).ok());
        let slot = self.slots.get(app);
        let (version, sha256, interface) = match (file, slot.and_then(|s| s.version.as_ref())) {
            (Some(f), _) => {
                let imports = bytes.as_deref().and_then(|b| interface_imports(b).ok()).unwrap_or_default();
                (f.manifest.version, hex::encode(f.sha256), trellis_appfmt::built_for(&imports))
            }
            (None, Some(v)) => (v.manifest.version.clone(), hex::encode(v.sha256), v.interface.clone()),
            (None, None) => ("unknown".to_owned(), String::new(), None),
        };
        let status = AppStatus {
            name: app.to_owned(),
            version,
            state: AppState::Stopped,
            restarts: slot.map_or(0, |s| s.restarts),
            sha256,
            last_error: slot.and_then(|s| s.last_error.clone()),
            dropped_events: self.services.broker.dropped(app),
            usage: slot.map_or_else(Arc::default, |s| s.usage.clone()),
            cgroup: None,
            interface,
        };
        lock(&self.status).insert(app.to_owned(), status);
    }

    /// Refuse apps built against another `trellis:app` version; the version
    /// the app was built for when it runs here (`None`: it imports none).
    fn check_interface(&self, path: &Path, bytes: &[u8]) -> Result<Option<String>, LoadError> {
        let imports = interface_imports(bytes).map_err(|source| LoadError::Format { path: path.to_owned(), source })?;
        for (import, version) in trellis_appfmt::imported_versions(&imports) {
            if !trellis_appfmt::interface_compatible(version, crate::INTERFACE_VERSION) {
                return Err(LoadError::Interface {
                    path: path.to_owned(),
                    found: import.to_owned(),
                    provided: format!("{}@{}", crate::INTERFACE_PACKAGE, crate::INTERFACE_VERSION),
                });
            }
        }
        Ok(trellis_appfmt::built_for(&imports))
    }

    /// The manifest may only ask for hardware the device policy allows, that
    /// exists, and (for outputs and PWM channels) that no other app is granted.
    fn check_permissions(&self, path: &Path, m: &Manifest) -> Result<(), LoadError> {
        let refuse = |reason: String| Err(LoadError::Permission { path: path.to_owned(), reason });
        let p = &m.permissions;
        let policy = &self.config.hardware;
        let lines = self.services.hw.board.gpio.lines();
        for &line in p.gpio_outputs.iter().chain(&p.gpio_inputs) {
            if line >= lines {
                return refuse(format!(
                    "GPIO line {line} does not exist ({} has {lines} lines)",
                    self.services.hw.board.gpio.name()
                ));
            }
            if policy.gpio_lines.as_ref().is_some_and(|allowed| !allowed.contains(&line)) {
                return refuse(format!(
                    "GPIO line {line} is not available to apps on this device (hardware.gpio-lines)"
                ));
            }
        }
        if let Some(g) = p.i2c.iter().find(|g| policy.i2c.as_ref().is_some_and(|a| !a.contains(g))) {
            return refuse(format!(
                "I2C bus {} address {:#04x} is not available to apps on this device",
                g.bus, g.address
            ));
        }
        if let Some(d) = p.spi.iter().find(|d| policy.spi.as_ref().is_some_and(|a| !a.contains(d))) {
            return refuse(format!("SPI device {d} is not available to apps on this device"));
        }
        for (other, slot) in &self.slots {
            if other == &m.name || slot.worker.is_none() {
                continue;
            }
            let Some(v) = &slot.version else { continue };
            if let Some(line) = p.gpio_outputs.iter().find(|l| v.manifest.permissions.gpio_outputs.contains(l)) {
                return refuse(format!("GPIO line {line} is already granted as an output to app {other}"));
            }
            if let Some(ch) = p.pwm.iter().find(|c| v.manifest.permissions.pwm.contains(c)) {
                return refuse(format!("PWM channel {ch} is already granted to app {other}"));
            }
        }
        Ok(())
    }

    fn slot(&mut self, app: &str, manifest: &Manifest) -> Result<&mut Slot, LoadError> {
        let path = self.config.state_dir.join(paths::state::KV).join(format!("{app}.db"));
        match self.slots.entry(app.to_owned()) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => {
                let (kv, warning) = KvStore::open(path.clone(), manifest.limits.storage_bytes())
                    .map_err(|err| LoadError::Instantiate { path, reason: err.to_string() })?;
                if let Some(w) = warning {
                    tracing::error!(app, "{w}");
                }
                Ok(e.insert(Slot {
                    kv: Arc::new(Mutex::new(kv)),
                    usage: Arc::default(),
                    version: None,
                    worker: None,
                    crashes: VecDeque::new(),
                    restarts: 0,
                    restart_at: None,
                    good: false,
                    failed: None,
                    last_error: None,
                    outcome: None,
                    cgroup: None,
                }))
            }
        }
    }

    /// The transaction: instantiate, hand over state, start; only then retire
    /// the old version. On any failure the old version carries on.
    fn swap(
        &mut self,
        path: &Path,
        app: &str,
        version: Arc<Version>,
        handover: bool,
    ) -> Result<(Option<String>, bool), LoadError> {
        let generation = self.next_generation;
        self.next_generation += 1;
        let services = self.services.clone();
        let tick = self.config.epoch_tick();
        let slot = self.slot(app, &version.manifest)?;
        let (kv, usage) = (slot.kv.clone(), slot.usage.clone());
        let host = HostState::new(app, generation, version.manifest.clone(), services.clone(), kv, usage);
        let mut instance = Instance::new(&self.linker, &version.component, host, tick)
            .map_err(|reason| LoadError::Instantiate { path: path.to_owned(), reason })?;

        let slot = self.slot(app, &version.manifest)?;
        let old_tx = slot.worker.as_ref().map(|w| w.tx.clone());
        let mut paused = false;
        let mut handed_over = false;
        let result = (|| {
            if handover
                && instance.has_state()
                && let Some(tx) = &old_tx
            {
                let (reply_tx, reply_rx) = bounded(1);
                if tx.send(WorkerMsg::SaveState(reply_tx)).is_ok() {
                    let wait = Duration::from_millis(u64::from(version.manifest.limits.call_ms) + 2000);
                    match reply_rx.recv_timeout(wait) {
                        Ok(Ok(saved)) => {
                            paused = true;
                            if let Some(data) = saved {
                                instance.restore(data)?;
                                handed_over = true;
                            }
                        }
                        Ok(Err(fault)) => tracing::warn!(app, "old version could not save its state: {fault}"),
                        Err(_) => tracing::warn!(app, "old version did not hand over its state in time"),
                    }
                }
            }
            instance.start()
        })();
        if let Err(fault) = result {
            if paused && let Some(tx) = &old_tx {
                let _ = tx.send(WorkerMsg::Resume);
            }
            drop(instance);
            services.hw.release_generation(app, generation);
            return Err(LoadError::Start { path: path.to_owned(), fault });
        }

        // Commit.
        let data = instance.store.data_mut();
        data.live = true;
        services.broker.set_subscriptions(app, data.subs.clone());
        let slot = self.slot(app, &version.manifest)?;
        lock(&slot.kv).set_quota(version.manifest.limits.storage_bytes());
        if let Some(Err(e)) = services.shaper.as_ref().map(|s| s.limit(app, version.manifest.limits.net_kbit)) {
            tracing::warn!(app, "{e}: its outgoing traffic keeps the previous limit");
        }
        let consent = instance.has_consent();
        let (tx, rx) = bounded(MAILBOX);
        services.broker.set_route(app, tx.clone());
        let control = self.control.clone();
        let name = app.to_owned();
        // The app's cgroup with this version's weight; the worker moves itself in.
        let cgroup = self.cgroups.as_ref().and_then(|c| {
            c.app(app, version.manifest.limits.cpu_weight)
                .inspect_err(|e| tracing::warn!(app, "{e}: the app runs without its CPU share"))
                .ok()
        });
        let worker_cgroup = cgroup.clone();
        let thread = std::thread::Builder::new()
            .name(format!("app-{app}"))
            .spawn(move || {
                if let Some(Err(e)) = worker_cgroup.as_ref().map(AppCgroup::enter) {
                    tracing::warn!(app = %name, "{e}: the app runs without its CPU share");
                }
                let exit = worker::run(instance, &rx);
                let services = services.clone();
                services.hw.release_generation(&name, generation);
                let fault = match exit {
                    Exit::Stopped => None,
                    Exit::Faulted(f) => Some(f),
                };
                let _ = control.send(Control::Exited { app: name, generation, fault });
            })
            .map_err(|e| LoadError::Instantiate {
                path: path.to_owned(),
                reason: format!("cannot start a thread: {e}"),
            })?;
        let started = self.clock.now();
        let slot = self.slot(app, &version.manifest)?;
        let replaced = slot.version.as_ref().filter(|_| slot.worker.is_some()).map(|v| v.manifest.version.clone());
        if let Some(old) = slot.worker.replace(Worker { generation, tx, thread, started, consent }) {
            let _ = old.tx.send(WorkerMsg::Stop);
        }
        let same_version = slot.version.as_ref().is_some_and(|v| v.sha256 == version.sha256);
        if !same_version {
            slot.good = false;
            slot.crashes.clear();
            slot.restarts = 0;
        }
        slot.version = Some(version.clone());
        slot.failed = None;
        slot.restart_at = None;
        slot.cgroup = cgroup;
        // The status says Running before anyone hears the event announcing it.
        self.publish_status(app);
        self.services.events.emit(RuntimeEvent::Started {
            app: app.to_owned(),
            version: version.manifest.version.clone(),
            replaced: replaced.clone(),
        });
        Ok((replaced, handed_over))
    }

    fn exited(&mut self, app: &str, generation: u64, fault: Option<Fault>) {
        let Some(slot) = self.slots.get_mut(app) else { return };
        if slot.worker.as_ref().is_none_or(|w| w.generation != generation) {
            return; // a retired version finished
        }
        if let Some(worker) = slot.worker.take() {
            let _ = worker.thread.join();
        }
        if let Some(fault) = fault {
            self.crashed(app, fault);
        }
    }

    /// Count a crash of `app`'s current version: restart after the back-off, or
    /// handle a crash loop.
    fn crashed(&mut self, app: &str, fault: Fault) {
        tracing::error!(app, "crashed: {fault}");
        let crashed = RuntimeEvent::Crashed { app: app.to_owned(), fault: fault.clone() };
        let now = self.clock.now();
        let Some(slot) = self.slots.get_mut(app) else {
            self.services.events.emit(crashed);
            return;
        };
        let window = self.config.crash.window();
        slot.crashes.push_back(now);
        while slot.crashes.front().is_some_and(|&t| now.saturating_sub(t) > window) {
            slot.crashes.pop_front();
        }
        slot.last_error = Some(fault.to_string());
        let n = u32::try_from(slot.crashes.len()).unwrap_or(u32::MAX);
        let looping = n >= self.config.crash.max_crashes;
        if !looping {
            slot.restart_at = Some(now + self.config.crash.backoff(n));
        }
        // The status (and the restart's time) are set before anyone hears of the crash.
        self.publish_status(app);
        self.services.events.emit(crashed);
        if looping {
            self.crash_loop(app);
            self.publish_status(app);
        }
    }

    fn crash_loop(&mut self, app: &str) {
        let good_path = self.last_good_path(app);
        let current_sha = self.slots.get(app).and_then(|s| s.version.as_ref()).map(|v| v.sha256);
        let good_differs = std::fs::read(&good_path)
            .ok()
            .and_then(|b| AppFile::parse(&b).ok())
            .is_some_and(|f| Some(f.sha256) != current_sha);
        if good_differs {
            if let Some(slot) = self.slots.get_mut(app) {
                slot.crashes.clear();
            }
            match self.load_file(&good_path, app) {
                Ok(o) => {
                    tracing::warn!(app, version = %o.version, "crash loop: went back to the last good version");
                    self.services.events.emit(RuntimeEvent::FellBack { app: app.to_owned(), version: o.version });
                    return;
                }
                Err(e) => tracing::error!(app, "crash loop, and the last good version failed too: {e}"),
            }
        }
        let reason =
            format!("crash loop: {} crashes within {:?}", self.config.crash.max_crashes, self.config.crash.window());
        if let Some(slot) = self.slots.get_mut(app) {
            slot.failed = Some(reason.clone());
            slot.restart_at = None;
        }
        tracing::error!(app, "{reason}: stopped until a new version arrives");
        self.services.broker.remove(app);
        // The status says Failed before anyone hears the event announcing it.
        self.publish_status(app);
        self.services.events.emit(RuntimeEvent::Stopped { app: app.to_owned(), reason });
    }

    fn restart_due(&mut self) {
        let now = self.clock.now();
        let due: Vec<String> =
            self.slots.iter().filter(|(_, s)| s.restart_at.is_some_and(|t| t <= now)).map(|(n, _)| n.clone()).collect();
        for app in due {
            let Some(slot) = self.slots.get_mut(&app) else { continue };
            slot.restart_at = None;
            let Some(version) = slot.version.clone() else { continue };
            slot.restarts += 1;
            let path = PathBuf::from(format!("{app}.wasm (restart)"));
            if let Err(e) = self.swap(&path, &app, version, false) {
                tracing::error!(app, "restart failed: {e}");
                // A failed restart counts as another crash.
                let fault = match e {
                    LoadError::Start { fault, .. } => fault,
                    other => Fault::Trap(other.to_string()),
                };
                self.crashed(&app, fault);
            }
        }
    }

    /// A version that ran `good_after` without crashing becomes the last good one.
    fn mark_good(&mut self) {
        let good_after = Duration::from_millis(self.config.crash.good_after_ms);
        let now = self.clock.now();
        let ready: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, s)| {
                !s.good
                    && s.crashes.is_empty()
                    && s.worker.as_ref().is_some_and(|w| now.saturating_sub(w.started) >= good_after)
            })
            .map(|(n, _)| n.clone())
            .collect();
        self.apps_changed |= !ready.is_empty();
        for app in ready {
            let path = self.last_good_path(&app);
            let Some(slot) = self.slots.get_mut(&app) else { continue };
            slot.good = true;
            let Some(v) = &slot.version else { continue };
            let written = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| write_atomic(&path, &v.bytes).map_err(|e| e.into_io()));
            match written {
                Ok(()) => tracing::info!(app, version = %v.manifest.version, "marked as the last good version"),
                Err(e) => tracing::warn!(app, path = %path.display(), "cannot keep the last good copy: {e}"),
            }
        }
    }

    /// The assets an app on the device names: in its file in the apps
    /// directory, in its last good copy (what runs when that file is
    /// broken), or in the version running now.
    fn assets_in_use(&self) -> HashSet<trellis_assets::AssetId> {
        let mut manifests: Vec<Arc<Manifest>> =
            self.slots.values().filter_map(|s| s.version.as_ref()).map(|v| v.manifest.clone()).collect();
        let files = std::fs::read_dir(&self.config.apps_dir).into_iter().flatten().filter_map(Result::ok);
        for app in files.filter_map(|e| AppsDir::name(&e.path())) {
            for path in [AppsDir::new(&self.config.apps_dir).path(&app), self.last_good_path(&app)] {
                if let Some(file) = std::fs::read(&path).ok().and_then(|bytes| AppFile::parse(&bytes).ok()) {
                    manifests.push(Arc::new(file.manifest));
                }
            }
        }
        manifests
            .iter()
            .flat_map(|m| m.assets.keys().filter_map(|name| m.asset(name)))
            .map(trellis_assets::AssetId)
            .collect()
    }

    /// Remove the assets no app on the device names any more (an app
    /// removed, or updated to a version that reads other files).
    pub(crate) fn retain_assets(&self) {
        match self.services.assets.retain(&self.assets_in_use()) {
            Ok(removed) => {
                for r in removed {
                    tracing::info!(asset = %r.id, kib = r.bytes / 1024, "no app names this asset: removed");
                }
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }

    fn remove(&mut self, path: &Path) {
        let Some(app) = AppsDir::name(path) else { return };
        if path.exists() {
            return; // renamed over again already
        }
        // A removed app is no longer stopped: installed again, it runs.
        match self.stopped.remove(&app) {
            Ok(true) => {
                lock(&self.status).remove(&app);
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(app, "{e}"),
        }
        let Some(slot) = self.slots.remove(&app) else { return };
        self.services.broker.remove(&app);
        if let Some(w) = slot.worker {
            let _ = w.tx.send(WorkerMsg::Stop);
            let _ = w.thread.join();
        }
        if let Some(Err(e)) = self.cgroups.as_ref().map(|c| c.remove(&app)) {
            tracing::warn!(app, "{e}");
        }
        if let Some(Err(e)) = self.services.shaper.as_ref().map(|s| s.remove(&app)) {
            tracing::warn!(app, "{e}");
        }
        lock(&self.status).remove(&app);
        tracing::info!(app, "app file removed: stopped");
        self.services.events.emit(RuntimeEvent::Stopped { app, reason: format!("{} was removed", path.display()) });
    }

    fn shutdown(&mut self) {
        for (app, slot) in self.slots.drain() {
            self.services.broker.remove(&app);
            if let Some(w) = slot.worker {
                let _ = w.tx.send(WorkerMsg::Stop);
                let _ = w.thread.join();
            }
        }
    }

    fn publish_status(&self, app: &str) {
        let Some(slot) = self.slots.get(app) else { return };
        if slot.worker.is_none() && self.stopped.contains(app) {
            return self.publish_stopped(app);
        }
        let state = match (&slot.failed, &slot.worker) {
            (Some(reason), _) => AppState::Failed(reason.clone()),
            (None, Some(_)) => AppState::Running,
            (None, None) => AppState::Restarting,
        };
        let Some(v) = &slot.version else { return };
        let status = AppStatus {
            name: app.to_owned(),
            version: v.manifest.version.clone(),
            state,
            restarts: slot.restarts,
            sha256: hex::encode(v.sha256),
            last_error: slot.last_error.clone(),
            dropped_events: self.services.broker.dropped(app),
            usage: slot.usage.clone(),
            cgroup: slot.cgroup.clone(),
            interface: v.interface.clone(),
        };
        lock(&self.status).insert(app.to_owned(), status);
    }
}

/// The code compiled ahead of time that `file` carries, if the runtime
/// may load it: native code runs unchecked, so only from a file signed by
/// a key in the trust list (`signed`: already verified), compiled from
/// this very code. Otherwise the code is compiled, and the log says why.
fn trusted_native(
    trust: &TrustList,
    path: &Path,
    app: &str,
    file: &AppFile,
    bytes: &[u8],
    signed: bool,
) -> Option<Vec<u8>> {
    let native = file.native.as_ref()?;
    let trusted = if native.code_sha256 != file.code_sha256 {
        Err("it was compiled from other code".to_owned())
    } else if signed {
        Ok(())
    } else {
        file.verify(bytes, trust)
            .map(drop)
            .map_err(|e| format!("it is loaded only from a file signed by a trusted key ({e})"))
    };
    let why_not = match trusted.and_then(|()| native.compiled(bytes).map_err(|e| e.to_string())) {
        Ok(compiled) => return Some(compiled),
        Err(why) => why,
    };
    tracing::warn!(app, path = %path.display(), target = %native.target, "precompiled code not used, {why_not}: compiling the app's code");
    None
}
