//! The update lifecycle: install, trial boot, health gate, commit or roll back.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Deserialize;

use crate::{Bundle, FirmwareStatus, Mark, Phase, Progress, Rauc, StateFile, UpdateError, UpdateRecord};

/// How a reboot is to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reboot {
    /// With `"0 tryboot"`: the firmware boots the `[tryboot]` slot once.
    Trial,
    /// A plain reboot: the firmware boots the primary slot.
    Normal,
}

/// The device below the lifecycle.
pub trait Platform: Send + Sync {
    /// This boot's identity (`/proc/sys/kernel/random/boot_id`).
    fn boot_id(&self) -> String;
    /// The slot the kernel was booted from (`rauc.slot=` on its command line,
    /// where RAUC reads it too), known before RAUC's service is up.
    fn booted_slot(&self) -> Option<String>;
    /// Time since the kernel started.
    fn uptime(&self) -> Duration;
    /// Seconds since the epoch.
    fn now(&self) -> u64;
    /// Wait.
    fn sleep(&self, d: Duration);
    /// Ask init to reboot.
    ///
    /// # Errors
    /// Init cannot be asked.
    fn reboot(&self, how: Reboot) -> Result<(), UpdateError>;
}

/// When a trial boot counts as healthy, and how streamed installs go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Policy {
    /// The trial must be healthy this long after the kernel started.
    #[serde(default = "Policy::default_deadline_ms")]
    pub health_deadline_ms: u64,
    /// ... and stay healthy this long before it is committed.
    #[serde(default = "Policy::default_settle_ms")]
    pub settle_ms: u64,
    /// How often health is checked.
    #[serde(default = "Policy::default_poll_ms")]
    pub poll_ms: u64,
    /// A streamed install (a bundle URL) that fails on the network is
    /// started again, this many times at most; RAUC's adaptive mode then
    /// takes what the slots already hold, the blocks written before the cut
    /// included, and fetches only the rest.
    #[serde(default = "Policy::default_stream_retries")]
    pub stream_retries: u32,
    /// The wait before the first retry; it doubles with each.
    #[serde(default = "Policy::default_stream_retry_ms")]
    pub stream_retry_ms: u64,
    /// The device's certificate and the servers' CA for bundles streamed
    /// over HTTPS (absent: no client certificate, curl's own CAs).
    #[serde(default)]
    pub stream_tls: Option<StreamTls>,
}

/// `[update.stream-tls]`: what the device presents to the server it streams
/// a bundle from over HTTPS, and which servers it trusts. RAUC's HTTP side
/// (curl) reads them; it runs as its sandbox user, so the key is handed to
/// it for each install ([`crate::dbus::DbusRauc`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamTls {
    /// The device's certificate (PEM; readable by RAUC's sandbox user).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM; may be readable by root alone).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The CA certificates the server's certificate must chain to.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

impl Policy {
    /// What the fields cannot say alone: a client key goes with its
    /// certificate.
    ///
    /// # Errors
    /// `[update.stream-tls]` has a `cert` without a `key`, or the reverse.
    pub fn check(&self) -> Result<(), String> {
        match &self.stream_tls {
            Some(t) if t.cert.is_some() != t.key.is_some() => {
                Err("[update.stream-tls]: `cert` and `key` go together (the device's certificate and its key)".into())
            }
            _ => Ok(()),
        }
    }

    const fn default_deadline_ms() -> u64 {
        120_000
    }
    const fn default_settle_ms() -> u64 {
        2_000
    }
    const fn default_poll_ms() -> u64 {
        250
    }
    const fn default_stream_retries() -> u32 {
        5
    }
    const fn default_stream_retry_ms() -> u64 {
        5_000
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            health_deadline_ms: Self::default_deadline_ms(),
            settle_ms: Self::default_settle_ms(),
            poll_ms: Self::default_poll_ms(),
            stream_retries: Self::default_stream_retries(),
            stream_retry_ms: Self::default_stream_retry_ms(),
            stream_tls: None,
        }
    }
}

/// How long a resumed installation waits for RAUC's service after start.
const RAUC_START: Duration = Duration::from_secs(60);

/// What [`Updater::resume`] found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Nothing pending.
    Idle,
    /// This is the trial boot of a new slot: run [`Updater::gate`].
    Trial,
    /// An installation finished in this boot but the trial reboot has not
    /// happened (the runtime was restarted in between): reboot into it.
    RebootPending,
    /// A streamed installation was cut by a reboot or power cut: start it
    /// again with [`Updater::install_again`] (RAUC takes the blocks it had
    /// written), then reboot into the trial.
    Install(Bundle),
}

/// How the health gate ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateOutcome {
    /// Marked good: the new slot is the primary.
    Committed,
    /// Marked bad and rebooting into the old slot, with the reason.
    RolledBack(String),
}

#[derive(Debug, Default)]
struct Live {
    record: Option<UpdateRecord>,
    installing: bool,
    progress: Option<Progress>,
}

/// The update lifecycle of one device.
#[derive(Debug)]
pub struct Updater<R, P> {
    rauc: R,
    platform: P,
    file: StateFile,
    policy: Policy,
    live: Mutex<Live>,
}

impl<R: Rauc, P: Platform> Updater<R, P> {
    /// The lifecycle over `rauc` and `platform`, with its record in `file`.
    pub fn new(rauc: R, platform: P, file: StateFile, policy: Policy) -> Self {
        let record = file.load();
        Self { rauc, platform, file, policy, live: Mutex::new(Live { record, ..Live::default() }) }
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The record, changed by `f`, saved and logged.
    fn update(&self, f: impl FnOnce(&mut UpdateRecord)) -> Result<UpdateRecord, UpdateError> {
        let mut live = self.live();
        let Some(record) = live.record.as_mut() else {
            return Err(UpdateError::Busy("no update in progress".into()));
        };
        f(record);
        record.changed = self.platform.now();
        let record = record.clone();
        drop(live);
        log(&record);
        self.file.save(&record)?;
        Ok(record)
    }

    /// Decide, at start, what the record left behind means in this boot.
    /// Unresolved trials that are not this boot's are recorded as rolled back
    /// (the firmware went back to the old slot by itself) and their slot is
    /// marked bad; installations interrupted by a reboot are recorded as failed.
    ///
    /// Unless an install resumes, the backend is told none runs
    /// ([`Rauc::settled`]), with the bundle whose slot was written if the
    /// record names one in its trial or committed.
    pub fn resume(&self) -> Resume {
        let resume = self.resume_record();
        if !matches!(resume, Resume::Install(_)) {
            let record = self.live().record.clone();
            let written = record
                .filter(|r| matches!(r.phase, Phase::Trial | Phase::Committed))
                .and_then(|r| Bundle::parse(&r.bundle).ok());
            self.rauc.settled(written.as_ref());
        }
        resume
    }

    fn resume_record(&self) -> Resume {
        let Some(record) = self.live().record.clone() else { return Resume::Idle };
        let boot_id = self.platform.boot_id();
        let this_boot = record.boot_id == boot_id;
        match record.phase {
            Phase::Installing => {
                // A URL is fetched again; a file may be gone, or was only a
                // copy the API had received.
                let url = Bundle::parse(&record.bundle).ok().filter(Bundle::is_streamed);
                match url {
                    Some(bundle) if !this_boot && record.resumed < self.policy.stream_retries => {
                        let resumed = record.resumed + 1;
                        tracing::warn!(
                            "streaming {bundle} was interrupted (reboot or power cut); starting it again, the blocks \
                             already written are kept (resumed {resumed} of {} times)",
                            self.policy.stream_retries
                        );
                        if let Err(e) = self.update(|r| r.resumed = resumed) {
                            tracing::error!("{e}");
                        }
                        // Reserved until it has run: an install asked for
                        // meanwhile is told one is running.
                        self.live().installing = true;
                        Resume::Install(bundle)
                    }
                    _ => {
                        let why = if this_boot {
                            "the runtime restarted during the installation; its outcome is unknown, install again"
                        } else if record.resumed > 0 {
                            "the installation was interrupted again (reboot or power cut) after being resumed as \
                             often as stream-retries allows; the running slot was not changed"
                        } else {
                            "the installation was interrupted (reboot or power cut); the running slot was not changed"
                        };
                        self.finish(Phase::Failed, why);
                        Resume::Idle
                    }
                }
            }
            Phase::Trial => {
                let Some(booted) = self.platform.booted_slot() else {
                    tracing::error!("the booted slot is unknown (no rauc.slot= on the kernel command line)");
                    return Resume::Idle;
                };
                let to = record.to.clone().unwrap_or_default();
                if booted == to {
                    tracing::info!(slot = %to, version = ?record.version, "trial boot: waiting for the device to be healthy");
                    Resume::Trial
                } else if this_boot {
                    Resume::RebootPending
                } else {
                    let why = format!(
                        "the trial boot of slot {to} did not come up healthy (kernel, init or runtime failed, \
                         power cut or watchdog reset); the firmware booted slot {booted} again"
                    );
                    self.finish(Phase::RolledBack, &why);
                    self.rolled_back(&record.bundle, &why);
                    // RAUC's service may still be starting.
                    let until = self.platform.uptime() + Duration::from_millis(self.policy.health_deadline_ms);
                    while let Err(e) = self.rauc.mark(Mark::Bad, "other") {
                        if self.platform.uptime() >= until {
                            tracing::warn!("marking slot {to} bad: {e}");
                            break;
                        }
                        self.platform.sleep(Duration::from_millis(self.policy.poll_ms.max(1)));
                    }
                    Resume::Idle
                }
            }
            Phase::Committed | Phase::RolledBack | Phase::Failed => Resume::Idle,
        }
    }

    /// A resumed install that cannot start: recorded as failed (`why`), its
    /// place given back, and the backend told no install runs (`resume`
    /// left that to the install).
    fn give_up_resume(&self, why: &str) {
        self.live().installing = false;
        self.finish(Phase::Failed, why);
        self.rauc.settled(None);
    }

    /// Tell the backend the bundle on record was rolled back.
    fn rolled_back(&self, bundle: &str, why: &str) {
        if let Ok(bundle) = Bundle::parse(bundle) {
            self.rauc.rolled_back(&bundle, why);
        }
    }

    fn finish(&self, phase: Phase, why: &str) {
        if let Err(e) = self.update(|r| {
            r.phase = phase;
            r.reason = Some(why.to_owned());
        }) {
            tracing::error!("{e}");
        }
    }

    /// The trial boot's health gate. `health` says whether init and the apps
    /// are healthy (or why not). Healthy for the settle time before the
    /// deadline: the slot is marked good (committed). Otherwise: marked bad,
    /// recorded as rolled back, and a normal reboot is requested, which boots
    /// the old slot.
    pub fn gate(&self, health: &dyn Fn() -> Result<(), String>) -> GateOutcome {
        let deadline = Duration::from_millis(self.policy.health_deadline_ms);
        let settle = Duration::from_millis(self.policy.settle_ms);
        let mut since: Option<Duration> = None;
        let mut why = String::from("not checked yet");
        loop {
            let now = self.platform.uptime();
            match health() {
                Ok(()) => {
                    let start = *since.get_or_insert(now);
                    if now.saturating_sub(start) >= settle {
                        match self.rauc.mark(Mark::Good, "booted") {
                            Ok(msg) => {
                                tracing::info!("{msg}");
                                self.finish(Phase::Committed, "healthy in the trial boot");
                                return GateOutcome::Committed;
                            }
                            Err(e) => {
                                why = format!("marking the slot good: {e}");
                                since = None;
                            }
                        }
                    }
                }
                Err(e) => {
                    why = e;
                    since = None;
                }
            }
            if now >= deadline {
                let why = format!("not healthy within {} s of boot: {why}", deadline.as_secs());
                if let Err(e) = self.rauc.mark(Mark::Bad, "booted") {
                    tracing::warn!("marking the trial slot bad: {e}");
                }
                self.finish(Phase::RolledBack, &why);
                if let Some(r) = self.live().record.clone() {
                    self.rolled_back(&r.bundle, &why);
                }
                if let Err(e) = self.platform.reboot(Reboot::Normal) {
                    tracing::error!("{e}");
                }
                return GateOutcome::RolledBack(why);
            }
            self.platform.sleep(Duration::from_millis(self.policy.poll_ms.max(1)));
        }
    }

    /// Install `bundle` into the other slot. On success the record says
    /// `trial` and [`Updater::reboot_into_trial`] is next; on failure it says
    /// `failed` with RAUC's reason, and nothing else changed.
    ///
    /// # Errors
    /// Another installation or a trial is under way, RAUC cannot be reached,
    /// or RAUC refused or failed.
    pub fn install(&self, bundle: &Bundle, progress: &mut dyn FnMut(&Progress)) -> Result<UpdateRecord, UpdateError> {
        self.install_with(bundle, 0, progress)
    }

    /// Install the bundle of [`Resume::Install`] again, counting the resume
    /// in the record (so an installation that keeps being cut is given up
    /// after `stream-retries` boots).
    ///
    /// # Errors
    /// As [`Updater::install`].
    pub fn install_again(
        &self,
        bundle: &Bundle,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<UpdateRecord, UpdateError> {
        // RAUC's service starts beside the runtime: wait for it to answer
        // (by the kernel's clock: a call may itself wait for D-Bus).
        let until = self.platform.uptime() + RAUC_START;
        while let Err(e) = self.rauc.slots() {
            if self.platform.uptime() >= until {
                self.give_up_resume(&format!(
                    "RAUC did not answer within {} s to resume the installation: {e}",
                    RAUC_START.as_secs()
                ));
                return Err(e);
            }
            self.platform.sleep(Duration::from_millis(self.policy.poll_ms.max(1)));
        }
        let resumed = self.live().record.as_ref().map_or(1, |r| r.resumed.max(1));
        self.install_with(bundle, resumed, progress)
    }

    fn install_with(
        &self,
        bundle: &Bundle,
        resumed: u32,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<UpdateRecord, UpdateError> {
        // A resumed install was reserved by `resume`.
        let reserved = resumed > 0;
        if self.live().installing && !reserved {
            return Err(UpdateError::Busy("an installation is already running".into()));
        }
        let slots = match self.rauc.slots() {
            Ok(slots) => slots,
            Err(e) => {
                if reserved {
                    self.give_up_resume(&e.to_string());
                }
                return Err(e);
            }
        };
        {
            let mut live = self.live();
            if live.installing && !reserved {
                return Err(UpdateError::Busy("an installation is already running".into()));
            }
            if let Some(r) = &live.record
                && r.phase == Phase::Trial
                && r.to.as_deref() == Some(&slots.booted)
            {
                return Err(UpdateError::Busy(format!(
                    "slot {} is in its trial boot; wait for the verdict",
                    slots.booted
                )));
            }
            live.installing = true;
            live.progress = None;
            let now = self.platform.now();
            live.record = Some(UpdateRecord {
                bundle: bundle.to_string(),
                version: None,
                from: slots.booted.clone(),
                to: None,
                phase: Phase::Installing,
                reason: None,
                boot_id: self.platform.boot_id(),
                started: now,
                changed: now,
                resumed,
            });
        }
        let result = self.install_inner(bundle, resumed, progress);
        // Over, either way.
        self.rauc.settled(result.is_ok().then_some(bundle));
        let mut live = self.live();
        live.installing = false;
        live.progress = None;
        drop(live);
        match result {
            Ok(record) => Ok(record),
            Err(e) => {
                self.finish(Phase::Failed, &e.to_string());
                Err(e)
            }
        }
    }

    /// `resumed`: a resumed install was accepted once already, so each of
    /// its failures is retried: right after boot the network and the clock
    /// (which TLS certificates are checked against) may not be ready yet.
    fn install_inner(
        &self,
        bundle: &Bundle,
        resumed: u32,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<UpdateRecord, UpdateError> {
        self.update(|_| {})?;
        if let Bundle::File(path) = bundle
            && !path.is_file()
        {
            return Err(UpdateError::Bundle { bundle: bundle.clone(), reason: "no such file".into() });
        }
        let mut attempt = 0;
        loop {
            let result = self.rauc.install(bundle, &mut |p| {
                self.live().progress = Some(p.clone());
                tracing::info!(percent = p.percent, "{}", p.message);
                progress(p);
            });
            match result {
                Ok(()) => break,
                Err(UpdateError::Rauc(why))
                    if bundle.is_streamed()
                        && attempt < self.policy.stream_retries
                        && (resumed > 0 || !trellis_control::is_refusal(&why)) =>
                {
                    let wait = self.policy.stream_retry_ms.saturating_mul(1 << attempt.min(16));
                    attempt += 1;
                    tracing::warn!(
                        "streaming {bundle} failed on the network ({why}); again in {:.1} s, the blocks already written are kept (attempt {} of {})",
                        Duration::from_millis(wait).as_secs_f64(),
                        attempt + 1,
                        self.policy.stream_retries + 1
                    );
                    self.platform.sleep(Duration::from_millis(wait));
                }
                // RAUC's reasons do not say which bundle they are about.
                Err(UpdateError::Rauc(why)) => {
                    return Err(UpdateError::Bundle { bundle: bundle.clone(), reason: format!("RAUC: {why}") });
                }
                Err(e) => return Err(e),
            }
        }
        let slots = self.rauc.slots()?;
        let to = slots.other().ok_or_else(|| UpdateError::Rauc("no other bootable slot".into()))?;
        let (to, version) = (to.bootname.clone(), to.version.clone());
        self.update(|r| {
            r.phase = Phase::Trial;
            r.to = Some(to);
            r.version = version;
        })
    }

    /// Ask for the trial boot of the slot just installed.
    ///
    /// # Errors
    /// Init cannot be asked to reboot.
    pub fn reboot_into_trial(&self) -> Result<(), UpdateError> {
        tracing::info!("rebooting into the trial boot");
        self.platform.reboot(Reboot::Trial)
    }

    /// The device below.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// The firmware's state for `trellis device status`.
    pub fn status(&self) -> FirmwareStatus {
        let (slots, slots_error) = match self.rauc.slots() {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let live = self.live();
        let operation = if live.installing {
            "installing"
        } else if live.record.as_ref().is_some_and(|r| r.phase == Phase::Trial) {
            "trial"
        } else {
            "idle"
        };
        FirmwareStatus {
            slots,
            slots_error,
            operation: operation.into(),
            progress: live.progress.clone(),
            last_update: live.record.clone(),
        }
    }
}

fn log(r: &UpdateRecord) {
    let reason = r.reason.as_deref().unwrap_or("");
    let (to, version) = (r.to.as_deref().unwrap_or("?"), r.version.as_deref().unwrap_or("?"));
    match r.phase {
        Phase::Failed | Phase::RolledBack => {
            tracing::warn!(phase = ?r.phase, from = %r.from, to, version, bundle = %r.bundle, "firmware update: {reason}");
        }
        _ => tracing::info!(phase = ?r.phase, from = %r.from, to, version, bundle = %r.bundle, "firmware update"),
    }
}
