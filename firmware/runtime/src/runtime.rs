//! The runtime's handle: start it, hand it app files and hot-plug events,
//! follow its events and messages, read its status. The work happens on the
//! supervisor's thread (`supervisor.rs`); this side only sends it requests.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use trellis_appfmt::TrustList;
use trellis_control::Consent;
use trellis_hal::Board;

use crate::bindings::{Event, WitHotplugAction, WitHotplugEvent};
use crate::broker::{Broker, Message};
use crate::cache::CompileCache;
use crate::cgroup::{Cgroups, Kernel};
use crate::clock::{Clock, SystemClock};
use crate::engine::EpochTicker;
use crate::events::{EventBus, RuntimeEvent};
use crate::host::Services;
use crate::hw::Hardware;
use crate::seed::seed_apps;
use crate::shaping::{Shaper, Tc};
use crate::status::{AppStatus, HotplugAction, HotplugEvent, SwapOutcome};
use crate::supervisor::{Control, Reply, Supervisor};
use crate::sync::lock;
use crate::watcher::{AppFileEvent, watch};
use crate::{LoadError, RuntimeConfig, RuntimeError, paths};

/// A running Trellis runtime. Dropping it stops every app.
pub struct Runtime {
    control: Sender<Control>,
    services: Arc<Services>,
    status: Arc<Mutex<BTreeMap<String, AppStatus>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _watcher: Option<notify::RecommendedWatcher>,
    _ticker: EpochTicker,
    _lan: Option<Lan>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// Start: load every app in `config.apps_dir`, then watch it.
    ///
    /// # Errors
    /// Directories, trust list, engine or watcher cannot be set up. Apps that
    /// fail to load do not make this fail; they are reported as refused.
    pub fn start(config: RuntimeConfig, board: Board) -> Result<Self, RuntimeError> {
        Self::start_with_events(config, board).map(|(runtime, _)| runtime)
    }

    /// Like [`Runtime::start`], also returning the event stream from before the
    /// first app loads.
    ///
    /// # Errors
    /// As [`Runtime::start`].
    pub fn start_with_events(
        config: RuntimeConfig,
        board: Board,
    ) -> Result<(Self, Receiver<RuntimeEvent>), RuntimeError> {
        Self::start_with_clock(config, board, SystemClock::shared())
    }

    /// Like [`Runtime::start_with_events`], counting back-off, crash windows
    /// and "good after" on `clock` (a [`crate::FakeClock`] in tests).
    ///
    /// # Errors
    /// As [`Runtime::start`].
    pub fn start_with_clock(
        config: RuntimeConfig,
        board: Board,
        clock: Arc<dyn Clock>,
    ) -> Result<(Self, Receiver<RuntimeEvent>), RuntimeError> {
        if let Some(seed) = &config.seed_dir
            && !config.apps_dir.exists()
            && let Err(e) = seed_apps(seed, &config.apps_dir)
        {
            // Not fatal: a runtime that refused to start would be restarted by init
            // into the same failure; without the seed apps it still runs what is copied in.
            tracing::error!("cannot seed the apps directory: {e}");
        }
        for dir in [&config.apps_dir, &config.state_dir] {
            std::fs::create_dir_all(dir).map_err(|source| RuntimeError::Io { path: dir.clone(), source })?;
        }
        let trust = if config.require_signatures || !config.trust.is_empty() {
            TrustList::load(
                &config.trust.iter().filter(|p| p.exists() || config.require_signatures).cloned().collect::<Vec<_>>(),
            )?
        } else {
            TrustList::default()
        };
        if config.require_signatures && trust.is_empty() {
            tracing::warn!("signatures are required but no key is trusted: every app will be refused");
        }
        let engine = crate::engine::engine(config.max_apps, config.profiler)?;
        let linker = crate::engine::linker(&engine)?;
        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick())?;
        // Per-app rate limits: like CPU shares, never a reason not to run apps.
        let shaper = config.network.as_ref().and_then(|n| {
            Shaper::setup(&n.shape, Box::new(Tc))
                .inspect_err(|e| tracing::warn!("{e}: apps' outgoing traffic is not limited"))
                .ok()
                .map(Arc::new)
        });
        let (fetcher, lan) = asset_fetcher(&config);
        let services = Arc::new(Services {
            hw: Hardware::new(board),
            broker: Arc::new(Broker::default()),
            events: EventBus::default(),
            apps_changed: EventBus::default(),
            epoch: Instant::now(),
            app_log: config.app_log,
            shaper,
            assets: Arc::new(fetcher),
        });
        let status = Arc::new(Mutex::new(BTreeMap::new()));
        let (control_tx, control_rx) = unbounded();
        let events = services.events.subscribe();

        let watcher = if config.watch {
            let (filter, control) = (config.clone(), control_tx.clone());
            let watcher = watch(
                &config.apps_dir,
                move |app| filter.runs(app),
                move |change| {
                    let _ = control.send(match change {
                        AppFileEvent::Written(path) => Control::Load { path, reply: None },
                        AppFileEvent::Gone(path) => Control::Remove { path },
                    });
                },
            )?;
            Some(watcher)
        } else {
            None
        };
        // Per-app CPU shares: never a reason not to run apps (docs/runtime.md).
        let cgroups = config.cgroups.as_ref().and_then(|c| {
            Cgroups::setup(&c.path, Arc::new(Kernel))
                .inspect_err(|e| tracing::warn!("{e}: apps run without CPU shares"))
                .ok()
                .map(Arc::new)
        });
        let mut sup = Supervisor {
            cache: CompileCache::new(
                &engine,
                config.state_dir.join(paths::state::CACHE),
                &config.state_dir.join(paths::state::CACHE_KEY),
            ),
            engine,
            linker,
            trust,
            services: services.clone(),
            status: status.clone(),
            control: control_tx.clone(),
            slots: HashMap::new(),
            next_generation: 1,
            clock,
            cgroups,
            stopped: crate::stopped::StoppedApps::load(&config.state_dir),
            config,
            apps_changed: false,
        };
        sup.load_all();
        sup.retain_assets();
        let thread = std::thread::Builder::new()
            .name("supervisor".into())
            .spawn(move || sup.run(&control_rx))
            .map_err(|source| RuntimeError::Io { path: PathBuf::from("supervisor thread"), source })?;
        let runtime = Self {
            control: control_tx,
            services,
            status,
            thread: Some(thread),
            _watcher: watcher,
            _ticker: ticker,
            _lan: lan,
        };
        Ok((runtime, events))
    }

    /// Where this device serves the asset blocks it holds to its peers
    /// (`[assets] share`), once it does.
    #[must_use]
    pub fn assets_shared_on(&self) -> Option<std::net::SocketAddr> {
        self.services.assets.shared_on()
    }

    /// A loopback server from which RAUC streams the firmware bundles named
    /// by their piece root (`asset:<id>`), fetched from the same sources as
    /// the apps' assets (`[assets]`: the peers, those found on the LAN, the
    /// origin) and verified block by block. The blocks are kept under
    /// `STATE_DIR/bundles` while an install needs them, and those of the
    /// firmware written last after it, served to the peers beside the
    /// apps' assets when `[assets] share` is set. Nothing is pushed
    /// ahead of RAUC's reads: which blocks an adaptive install reads depends
    /// on what the device's slots hold. `None` without an origin or a peer
    /// named (then blocks an earlier configuration kept are removed), or
    /// when loopback cannot be listened on (logged).
    #[must_use]
    pub fn bundle_stream(&self, config: &RuntimeConfig) -> Option<Arc<trellis_assets::StreamServer>> {
        let fetcher = self.release_fetcher(config, paths::state::BUNDLES)?;
        let loopback = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
        trellis_assets::StreamServer::start(Arc::new(fetcher), loopback)
            .inspect_err(|e| tracing::warn!("bundles named by their piece root cannot stream: {e}"))
            .ok()
            .map(Arc::new)
    }

    /// A fetcher of a release's apps by their piece root, from the same
    /// sources as the apps' assets (the peers, those found on the LAN, the
    /// origin), each block verified; kept under `STATE_DIR/artifacts` and
    /// served to the peers beside the apps' assets only as its device says
    /// ([`crate::device::RuntimeDevice`]: while an app runs that very file).
    /// `None` without an origin or a peer named (then pieces an earlier
    /// configuration kept are removed).
    #[must_use]
    pub fn artifact_fetcher(&self, config: &RuntimeConfig) -> Option<trellis_assets::Fetcher> {
        self.release_fetcher(config, paths::state::ARTIFACTS)
    }

    /// A fetcher of what releases carry, kept under `STATE_DIR/dir`: from
    /// the apps' asset sources, shared through their server only as told
    /// ([`trellis_assets::Fetcher::share_asset`]). Without sources, what an
    /// image that had them kept there is removed.
    fn release_fetcher(&self, config: &RuntimeConfig, dir: &str) -> Option<trellis_assets::Fetcher> {
        let root = config.state_dir.join(dir);
        let Some(assets) = config.assets.as_ref().filter(|a| a.names_bundle_sources()) else {
            match std::fs::remove_dir_all(&root) {
                Ok(()) => tracing::info!(path = %root.display(), "kept blocks removed: no asset sources"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(path = %root.display(), "{e}"),
            }
            return None;
        };
        let fetcher = trellis_assets::Fetcher::new(assets.origin.clone(), root, String::new())
            .with_peers(self.services.assets.peers())
            .sharing_through(&self.services.assets);
        Some(fetcher)
    }

    /// Follow what happens (loads, refusals, crashes, app logs).
    #[must_use]
    pub fn events(&self) -> Receiver<RuntimeEvent> {
        self.services.events.subscribe()
    }

    /// A message after each change of the apps directory the runtime has
    /// handled: a file copied in, replaced or removed (run, refused, or put in
    /// place for an app stopped on request), an install or a removal through
    /// the runtime.
    #[must_use]
    pub fn apps_changed(&self) -> Receiver<()> {
        self.services.apps_changed.subscribe()
    }

    /// Receive messages published on topics matching `pattern`.
    #[must_use]
    pub fn subscribe(&self, pattern: &str) -> Receiver<Message> {
        let (tx, rx) = unbounded();
        self.services.broker.subscribe_host(pattern, tx);
        rx
    }

    /// Publish a message to apps from the host.
    pub fn publish(&self, topic: &str, payload: &[u8]) {
        self.services.broker.publish("host", topic, payload);
    }

    /// The NATS side of the fleet bus, once (`None` after): run it over the
    /// device's link (`crate::fleet::start_bus`). Until it is taken, apps'
    /// `fleet/...` publishes are dropped and counted.
    #[must_use]
    pub fn fleet_bus(&self) -> Option<trellis_fleet::bus::BusDriver> {
        let broker = Arc::downgrade(&self.services.broker);
        self.services.broker.bus().driver(Arc::new(move |device, topic, payload| {
            if let Some(broker) = broker.upgrade() {
                broker.deliver_bus(device, topic, payload);
            }
        }))
    }

    /// What the fleet bus has carried and dropped so far.
    #[must_use]
    pub fn bus_stats(&self) -> crate::BusStats {
        self.services.broker.bus().stats()
    }

    /// Tell subscribed apps about a device appearing or going away. When one
    /// goes away, every app drops the I2C and SPI handles it holds open before
    /// its next call, so a call on a device that is gone fails naming it.
    pub fn hotplug(&self, event: &HotplugEvent) {
        if event.action == HotplugAction::Remove {
            self.services.hw.note_unplugged();
        }
        for app in self.services.broker.hotplug_subscribers(&event.subsystem) {
            let wit = WitHotplugEvent {
                action: match event.action {
                    HotplugAction::Add => WitHotplugAction::Add,
                    HotplugAction::Remove => WitHotplugAction::Remove,
                },
                subsystem: event.subsystem.clone(),
                device: event.device.clone(),
            };
            self.services.broker.deliver(&app, Event::Hotplug(wit));
        }
    }

    /// Load (or swap in) the app file at `path` now, as the watcher would.
    ///
    /// # Errors
    /// Why it was refused; the previous version keeps running.
    pub fn load(&self, path: &Path) -> Result<SwapOutcome, LoadError> {
        self.ask(|reply| Control::Load { path: path.to_owned(), reply: Some(reply) })
    }

    /// Install `bytes` as app `name`: checked, compiled and started as a
    /// transaction, and only once the new version runs is its file put in
    /// place (`APPS_DIR/NAME.wasm`, written atomically). What uploads (the
    /// management API, the fleet agent) use: the answer is the load's own
    /// result. Bytes that already run are answered at once.
    ///
    /// # Errors
    /// Why it was refused (the previous version keeps running and its file
    /// stays), or that the configuration does not run `name`.
    pub fn install(&self, name: &str, bytes: &[u8]) -> Result<SwapOutcome, LoadError> {
        self.ask(|reply| Control::Install { app: name.to_owned(), bytes: bytes.to_vec(), reply })
    }

    /// Stop app `name` and remove its file.
    ///
    /// # Errors
    /// No such app file, or it cannot be removed.
    pub fn remove(&self, name: &str) -> Result<(), LoadError> {
        self.ask(|reply| Control::RemoveApp { app: name.to_owned(), reply })
    }

    /// Stop app `name` and keep it stopped, across restarts and reboots
    /// (`STATE_DIR/stopped`), until [`Runtime::start_app`]: it gets its
    /// `shutdown` event, is not restarted, and a new file for it (copied in
    /// or installed) is checked and put in place but not run. Its file,
    /// key-value store and last good copy stay. Stopping it again changes
    /// nothing.
    ///
    /// # Errors
    /// No such app, not run by this configuration, or the stop cannot be
    /// recorded (then it runs on).
    pub fn stop_app(&self, name: &str) -> Result<(), LoadError> {
        self.ask(|reply| Control::StopApp { app: name.to_owned(), reply })
    }

    /// Run app `name` again from its file, as any load: the answer is that
    /// load's result. An app that runs already runs on; one given up on after
    /// a crash loop is loaded again.
    ///
    /// # Errors
    /// No such app file, or the load refused it (then it stays stopped).
    pub fn start_app(&self, name: &str) -> Result<SwapOutcome, LoadError> {
        self.ask(|reply| Control::StartApp { app: name.to_owned(), reply })
    }

    fn ask<T>(&self, request: impl FnOnce(Reply<T>) -> Control) -> Result<T, LoadError> {
        let (tx, rx) = bounded(1);
        self.control.send(request(tx)).map_err(|_| LoadError::Stopped)?;
        rx.recv().map_err(|_| LoadError::Stopped)?
    }

    /// Let the supervisor act on its clock now (restarts due, versions that
    /// became good), after a fake clock was advanced; returns once it has.
    pub fn tick(&self) {
        let (tx, rx) = bounded(1);
        if self.control.send(Control::Tick(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// Whether the apps agree to `release` being applied now. Every running
    /// app that exports the consent hook (`trellis:app/update`) is asked at
    /// once, each under its `call-ms` deadline and waited for at most that plus
    /// [`crate::CONSENT_MARGIN`]; apps without the hook are not asked. The
    /// longest deferral wins, naming its app, capped at
    /// [`crate::MAX_DEFERRAL_S`]; no deferral (or no app with the hook) is
    /// [`Consent::Apply`]. A hook that traps, overruns its deadline or does not
    /// answer in time counts as "apply" and is logged (a trap or an overrun is
    /// also that app's fault, restarted like any other).
    #[must_use]
    pub fn update_consent(&self, release: &str) -> Consent {
        let (tx, rx) = bounded(1);
        if self.control.send(Control::ConsentHooks(tx)).is_err() {
            return Consent::Apply;
        }
        match rx.recv() {
            Ok(hooks) => crate::consent::ask(hooks, release),
            Err(_) => Consent::Apply,
        }
    }

    /// Every app's status.
    #[must_use]
    pub fn status(&self) -> Vec<AppStatus> {
        lock(&self.status).values().cloned().collect()
    }

    /// One app's status.
    #[must_use]
    pub fn app_status(&self, name: &str) -> Option<AppStatus> {
        lock(&self.status).get(name).cloned()
    }

    /// Stop every app (each gets its shutdown event) and the runtime.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.control.send(Control::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The apps' assets: from the device, its peers, then the origin; what the
/// device holds served to its peers, and the peers on the LAN found, as
/// `[assets]` says. Sharing that cannot start is logged, never a reason
/// not to run apps.
fn asset_fetcher(config: &RuntimeConfig) -> (trellis_assets::Fetcher, Option<Lan>) {
    let assets = config.assets.clone().unwrap_or_default();
    let peers = trellis_assets::PeerList::new();
    for peer in &assets.peers {
        peers.add(peer);
    }
    let mut fetcher = trellis_assets::Fetcher::new(
        assets.origin.clone(),
        config.state_dir.join(paths::state::ASSETS),
        asset_session(),
    )
    .with_peers(peers.clone());
    let shared = assets.share.and_then(|addr| {
        fetcher
            .share(addr)
            .inspect(|bound| tracing::info!(%bound, "sharing the asset blocks held with the peers"))
            .inspect_err(|e| tracing::warn!("{e}: asset blocks are not shared"))
            .ok()
    });
    if !assets.lan {
        return (fetcher, None);
    }
    let joined = trellis_api::mdns::join_pieces(
        trellis_api::mdns::MDNS_PORT,
        &crate::api::mdns_name(),
        shared.map(|a| a.port()),
        move |name, addr| {
            if peers.add(addr) {
                tracing::info!(peer = name, addr, "found a peer on the LAN");
            }
        },
    );
    match joined {
        Ok(lan) => (fetcher, Some(lan)),
        Err(e) => {
            tracing::warn!("{e}: no peers are found on the LAN");
            (fetcher, None)
        }
    }
}

/// This device's part in the LAN's sharing of asset blocks, while it runs.
type Lan = (Option<trellis_api::mdns::Announcer>, trellis_api::mdns::Watcher);

/// How this run of the runtime names itself to the asset origin: the host
/// name and the kernel's boot id (a new one every boot), so the origin can
/// follow the order in which this run reads.
fn asset_session() -> String {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_owned()).unwrap_or_default();
    format!("{}/{}/{}", read(paths::HOSTNAME), read(paths::BOOT_ID), std::process::id())
}
