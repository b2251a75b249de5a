//! The device agent: follows the device's desired state, fetches each
//! artifact by hash, checks it and the release's signature before anything
//! touches the device, applies apps and firmware through the one device
//! interface ([`trellis_control::Device`]), and reports what it did.
//!
//! It keeps working offline: what it applied stays applied, and its events
//! wait in an outbox on the data partition (one file each, written
//! atomically) until the server has acknowledged them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use trellis_appfmt::TrustList;
use trellis_control::{Bundle, Consent, Device, Phase};

use crate::clock::Clock;
use crate::error::FleetError;
use crate::link::{Entry, Link};
use crate::names::{self, DESIRED, RELEASES, REPORTED};
use crate::object::{self, ObjectError};
use crate::release::{AppRef, FirmwareRef, Part, Release, Urgency};
use crate::state::{DesiredState, Event, EventKind, ReportedApp, ReportedState};
use crate::window::Gate;

/// What the agent needs to know about its device (`[fleet]` in the
/// runtime's configuration, plus what the runtime knows of itself).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The device's id (its certificate's common name).
    pub device: String,
    /// Its group.
    pub group: String,
    /// Its board (`rpi4`, `qemu-aarch64`): releases for another are refused.
    pub board: String,
    /// The app interface its runtime provides (`0.1.1`).
    pub app_interface: String,
    /// The firmware version it booted.
    pub firmware_version: String,
    /// Where the agent keeps its state (`/data/trellis/fleet`).
    pub state_dir: PathBuf,
    /// How often the desired state is read even without a change notice.
    pub poll: Duration,
    /// How often the report is rewritten when nothing changed (last seen).
    pub heartbeat: Duration,
}

impl AgentConfig {
    /// A configuration with the default intervals (poll 30 s, heartbeat 30 s).
    #[must_use]
    pub fn new(
        device: &str,
        group: &str,
        board: &str,
        app_interface: &str,
        firmware_version: &str,
        state_dir: &Path,
    ) -> Self {
        Self {
            device: device.to_owned(),
            group: group.to_owned(),
            board: board.to_owned(),
            app_interface: app_interface.to_owned(),
            firmware_version: firmware_version.to_owned(),
            state_dir: state_dir.to_owned(),
            poll: Duration::from_secs(30),
            heartbeat: Duration::from_secs(30),
        }
    }
}

/// An attempt that failed: not tried again until the desired release or its
/// attempt number changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Failure {
    release: String,
    attempt: u32,
    reason: String,
}

/// What the agent keeps across restarts (`state.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Local {
    /// The release applied in full.
    applied: Option<String>,
    /// The last desired state read (followed while offline).
    desired: Option<DesiredState>,
    /// The firmware version running (updated when a trial commits).
    firmware: Option<String>,
    /// A release whose firmware is in its trial boot.
    trial: Option<String>,
    /// The firmware version that release names (running once it commits).
    #[serde(default)]
    trial_version: Option<String>,
    /// The last failure.
    failed: Option<Failure>,
    /// A release held by a window or consent: until when, and why.
    deferred: Option<(String, u64, String)>,
    /// The next event's number in the outbox.
    next_event: u64,
}

const STATE_FILE: &str = "state.json";
/// How long a desired state older than one already read is waited out
/// before it is taken as it is (a bucket made again numbers its revisions
/// from 1).
pub const LAG_MAX: Duration = Duration::from_secs(30);
const OUTBOX: &str = "outbox";

/// The device agent. [`Agent::run`] drives it.
pub struct Agent {
    config: AgentConfig,
    device: Arc<dyn Device>,
    trust: TrustList,
    clock: Arc<dyn Clock>,
    local: Local,
    phase: &'static str,
    progress: Option<u8>,
    wake: Arc<Notify>,
    last_report: Option<(ReportedState, u64)>,
    /// The newest revisions of the desired state read so far.
    seen: Seen,
    /// Since when the replica read has lagged them.
    lagging_since: Option<u64>,
}

/// The newest revisions of the device's own key and of its group's key read
/// so far. Reads are direct gets, answered by whichever replica the device's
/// server holds, and a replica may lag its leader: a read older than one
/// made before, or a group older than the one a deletion of the device's
/// key names, is a lagging replica's and is not followed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Seen {
    own: u64,
    group: u64,
}

/// A read that lags: of the group's key or the device's own, which revision
/// it had and which one at least was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lag {
    group: bool,
    revision: u64,
    expected: u64,
}

impl Seen {
    /// Whether `own` (and `group`, key `group_key`, read when `own` holds no
    /// value) lag what was read before or what `own`'s deletion follows
    /// (when it names that key: a device moved to another group since
    /// follows that one's key as it is).
    fn lag(self, own: &Entry, group: Option<&Entry>, group_key: &str) -> Option<Lag> {
        if own.revision < self.own {
            return Some(Lag { group: false, revision: own.revision, expected: self.own });
        }
        let group = group.filter(|_| own.value.is_none())?;
        let after = own.after.as_ref().filter(|a| a.key == group_key).map_or(0, |a| a.revision);
        let expected = self.group.max(after);
        (group.revision < expected).then_some(Lag { group: true, revision: group.revision, expected })
    }

    /// What was read, taken as the newest.
    fn read(self, own: &Entry, group: Option<&Entry>) -> Self {
        Self { own: own.revision, group: group.map_or(self.group, |g| g.revision) }
    }
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("device", &self.config.device).field("local", &self.local).finish_non_exhaustive()
    }
}

/// Why one attempt did not end with the release applied.
enum Stop {
    /// Refused or failed: reported, not tried again until the desired state changes.
    Failed(String, EventKind),
    /// Held until then.
    Deferred(u64, String),
    /// The firmware is in its trial boot.
    Trial,
    /// The server cannot be reached: try again later.
    Offline(FleetError),
}

impl Agent {
    /// An agent for `device`, trusting releases signed by `trust`.
    ///
    /// # Errors
    /// Its state directory cannot be made or its state file read.
    pub fn new(
        config: AgentConfig,
        device: Arc<dyn Device>,
        trust: TrustList,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, FleetError> {
        let outbox = config.state_dir.join(OUTBOX);
        std::fs::create_dir_all(&outbox).map_err(|e| FleetError::io(&outbox, e))?;
        let path = config.state_dir.join(STATE_FILE);
        let mut local: Local = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!("{}: {e}: starting afresh", path.display());
                Local::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Local::default(),
            Err(e) => return Err(FleetError::io(&path, e)),
        };
        if local.trial.is_none() {
            // The firmware this boot runs is the one the image says.
            local.firmware = Some(config.firmware_version.clone());
        }
        // An event written just before a power cut, its number not yet saved: never overwrite it.
        let highest = outbox_files(&outbox).iter().filter_map(|p| event_number(p)).max();
        if let Some(n) = highest {
            local.next_event = local.next_event.max(n + 1);
        }
        Ok(Self {
            config,
            device,
            trust,
            clock,
            local,
            phase: "idle",
            progress: None,
            wake: Arc::new(Notify::new()),
            last_report: None,
            seen: Seen::default(),
            lagging_since: None,
        })
    }

    /// Wakes the agent (a test that moved the clock, a watch that fired).
    #[must_use]
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    fn save(&self) {
        let path = self.config.state_dir.join(STATE_FILE);
        let bytes = serde_json::to_vec_pretty(&self.local).unwrap_or_default();
        if let Err(e) = trellis_layout::write_atomic(&path, &bytes) {
            tracing::error!("fleet agent state: {e}");
        }
    }

    /// Record an event: kept in the outbox until the server acknowledges it.
    fn event(&mut self, kind: EventKind, release: &str, reason: Option<String>) {
        // Short enough for the events stream's largest message, escaped or not
        // (an event too large would stay first in the outbox, unsent, for ever).
        let clip = |text: &str, most: usize| match text.char_indices().nth(most) {
            Some((at, _)) => format!("{}…", &text[..at]),
            None => text.to_owned(),
        };
        let event = Event {
            device: self.config.device.clone(),
            at_ms: self.clock.now_ms(),
            kind,
            release: clip(release, 200),
            reason: reason.map(|r| clip(&r, 1000)),
        };
        tracing::info!(
            release,
            "fleet: {:?}{}",
            kind,
            event.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
        );
        // The random part keeps the event's id (event_id) from being guessed.
        let nonce: u64 = rand::random();
        let name = format!("{:020}-{nonce:016x}.json", self.local.next_event);
        let path = self.config.state_dir.join(OUTBOX).join(name);
        self.local.next_event += 1;
        if let Err(e) = trellis_layout::write_atomic(&path, &serde_json::to_vec(&event).unwrap_or_default()) {
            tracing::error!("fleet outbox: {e}");
        }
        self.save();
    }

    /// Send the outbox, oldest first; stop at the first that is not acknowledged.
    async fn flush(&self, link: &Link) -> Result<(), FleetError> {
        let files = outbox_files(&self.config.state_dir.join(OUTBOX));
        let subject = names::events_subject(&self.config.device);
        for file in files {
            let bytes = std::fs::read(&file).map_err(|e| FleetError::io(&file, e))?;
            // A send whose acknowledgement was lost is sent again; the
            // stream drops the copy by this id (its duplicate window).
            let id = event_id(&self.config.device, &file, &bytes);
            let publish = async_nats::jetstream::context::Publish::build().payload(bytes.into()).message_id(id);
            let ack = link
                .js
                .send_publish(subject.clone(), publish)
                .await
                .map_err(|e| FleetError::nats(format!("publishing on {subject}"), e))?;
            ack.await.map_err(|e| FleetError::nats(format!("publishing on {subject}"), e))?;
            std::fs::remove_file(&file).map_err(|e| FleetError::io(&file, e))?;
        }
        Ok(())
    }

    /// Events not yet acknowledged by the server.
    #[must_use]
    pub fn pending_events(&self) -> usize {
        outbox_files(&self.config.state_dir.join(OUTBOX)).len()
    }

    /// The firmware version running: the booted slot's bundle version as
    /// RAUC records it, else what the agent knows (its image's, or the one it
    /// saw committed).
    fn firmware_version(&self, status: &trellis_control::DeviceStatus) -> String {
        let booted =
            status.firmware.slots.as_ref().and_then(|s| {
                s.slots.iter().find(|slot| slot.bootname == s.booted).and_then(|slot| slot.version.clone())
            });
        booted.or_else(|| self.local.firmware.clone()).unwrap_or_else(|| self.config.firmware_version.clone())
    }

    fn report(&self) -> ReportedState {
        let status = self.device.status();
        let apps: Vec<ReportedApp> = status
            .apps
            .iter()
            .map(|a| ReportedApp { name: a.name.clone(), version: a.version.clone(), state: a.state.clone() })
            .collect();
        // The device's health (its apps run, or were stopped by the operator;
        // no firmware on trial); a failed attempt at a release is its phase
        // and error, not its health.
        let healthy =
            apps.iter().all(|a| matches!(a.state.as_str(), "running" | "stopped")) && self.local.trial.is_none();
        ReportedState {
            device: self.config.device.clone(),
            seen_ms: self.clock.now_ms(),
            release: self.local.applied.clone(),
            target: self.local.desired.as_ref().map(|d| d.release.clone()),
            attempt: self.local.desired.as_ref().map_or(0, |d| d.attempt),
            firmware: self.firmware_version(&status),
            slot: status.firmware.slots.as_ref().map(|s| s.booted.clone()),
            apps,
            healthy,
            phase: self.phase.to_owned(),
            progress: self.progress,
            error: self.local.failed.as_ref().map(|f| f.reason.clone()),
        }
    }

    /// Write the report when it changed, or when the heartbeat is due.
    async fn send_report(&mut self, link: &Link, force: bool) -> Result<(), FleetError> {
        let report = self.report();
        let now = self.clock.now_ms();
        let heartbeat = u64::try_from(self.config.heartbeat.as_millis()).unwrap_or(u64::MAX);
        let same = self.last_report.as_ref().is_some_and(|(last, at)| {
            let mut last = last.clone();
            last.seen_ms = report.seen_ms;
            last == report && now.saturating_sub(*at) < heartbeat
        });
        if same && !force {
            return Ok(());
        }
        link.put(REPORTED, &self.config.device, serde_json::to_vec(&report).unwrap_or_default()).await?;
        self.last_report = Some((report, now));
        Ok(())
    }

    /// The desired state: the device's own key if there is one, else its
    /// group's. A read that lags one made before ([`Seen`]) is an error
    /// (the last one read is followed meanwhile) for up to [`LAG_MAX`].
    async fn read_desired(&mut self, link: &Link) -> Result<Option<DesiredState>, FleetError> {
        let own_key = names::device_key(&self.config.device);
        let group_key = names::group_key(&self.config.group);
        let read = async {
            let own = link.entry(DESIRED, &own_key).await?;
            let group = if own.value.is_none() { Some(link.entry(DESIRED, &group_key).await?) } else { None };
            Ok::<_, FleetError>((own, group))
        };
        let (own, group) = match read.await {
            Ok(read) => read,
            Err(e) => {
                // Only reads that lag one after the other count towards LAG_MAX.
                self.lagging_since = None;
                return Err(e);
            }
        };
        if let Some(lag) = self.seen.lag(&own, group.as_ref(), &group_key) {
            let now = self.clock.now_ms();
            // A clock set back starts the wait again rather than prolonging it.
            let since = *self.lagging_since.get_or_insert(now);
            let since = if since > now { *self.lagging_since.insert(now) } else { since };
            let key = if lag.group { &group_key } else { &own_key };
            let what = format!("{DESIRED}/{key}");
            if now.saturating_sub(since) < u64::try_from(LAG_MAX.as_millis()).unwrap_or(u64::MAX) {
                return Err(FleetError::Lagging { what, revision: lag.revision, expected: lag.expected });
            }
            tracing::warn!(
                "{what}: revision {} read for {} s where {} was expected; taken as it is",
                lag.revision,
                LAG_MAX.as_secs(),
                lag.expected
            );
        }
        self.lagging_since = None;
        self.seen = self.seen.read(&own, group.as_ref());
        let (key, value) = match (own.value, group.and_then(|g| g.value)) {
            (Some(v), _) => (own_key, v),
            (None, Some(v)) => (group_key, v),
            (None, None) => return Ok(None),
        };
        let desired: DesiredState =
            serde_json::from_slice(&value).map_err(|e| FleetError::value(format!("{DESIRED}/{key}"), e))?;
        Ok(Some(desired))
    }

    /// Keep a watch on the device's and the group's desired state: each
    /// write to either key (a put or a deletion is a message on the key's
    /// subject) wakes the agent, and so does the link coming back, since
    /// what was written while it was down was not heard. A plain
    /// subscription to each of the two subjects: the server keeps nothing
    /// for it, and a device may create no consumer on the desired state
    /// ([`crate::server::device_permissions`]). The poll is the safety net.
    fn watch(&self, link: &Link) -> Vec<Watch> {
        let subjects = [
            names::kv_subject(DESIRED, &names::device_key(&self.config.device)),
            names::kv_subject(DESIRED, &names::group_key(&self.config.group)),
        ];
        let mut watches: Vec<Watch> = subjects
            .into_iter()
            .map(|subject| {
                let (nats, wake) = (link.nats.clone(), Arc::clone(&self.wake));
                Watch(tokio::spawn(async move {
                    loop {
                        match nats.subscribe(subject.clone()).await {
                            Ok(mut messages) => {
                                while messages.next().await.is_some() {
                                    wake.notify_one();
                                }
                            }
                            Err(e) => tracing::debug!("watching {subject}: {e}"),
                        }
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }))
            })
            .collect();
        let (mut connections, wake) = (link.connections(), Arc::clone(&self.wake));
        watches.push(Watch(tokio::spawn(async move {
            while connections.changed().await.is_ok() {
                wake.notify_one();
            }
        })));
        watches
    }

    /// Run until the task is dropped: follow the desired state, apply it,
    /// report, deliver the outbox.
    pub async fn run(mut self, link: Link) {
        let _watches = self.watch(&link);
        loop {
            let started = tokio::time::Instant::now();
            self.step(&link).await;
            // Waiting on something that changes by itself: look again soon.
            // Otherwise the watches wake it, and the poll is the safety net.
            let busy = self.local.trial.is_some()
                || self.local.deferred.is_some()
                || self.pending_events() > 0
                || self.lagging_since.is_some();
            let wait = if busy { Duration::from_secs(1) } else { self.config.poll.min(self.config.heartbeat) };
            let _ = tokio::time::timeout(wait, self.wake.notified()).await;
            tokio::time::sleep_until(started + ROUND_GAP).await;
        }
    }

    /// One round: finish a trial, read the desired state, apply it, send the
    /// events, report.
    pub async fn step(&mut self, link: &Link) {
        self.check_trial();
        match self.read_desired(link).await {
            Ok(desired) if desired != self.local.desired => {
                self.local.desired = desired;
                self.local.deferred = None;
                self.save();
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("desired state (following the last one read): {e}"),
        }
        if let Err(e) = self.converge(link).await {
            tracing::debug!("fleet: {e}");
        }
        // Events first: a report never runs ahead of the audit log, so
        // whoever reads a report (an operator, a rollout) finds the events
        // that led to it already stored.
        if let Err(e) = self.flush(link).await {
            tracing::debug!("events (kept until the link is back): {e}");
        }
        if let Err(e) = self.send_report(link, false).await {
            tracing::debug!("report (sent when the link is back): {e}");
        }
    }

    /// After the trial boot of new firmware: committed (healthy) or rolled back.
    fn check_trial(&mut self) {
        let Some(release) = self.local.trial.clone() else { return };
        let Some(update) = self.device.status().firmware.last_update else { return };
        match update.phase {
            Phase::Committed => {
                self.local.trial = None;
                if let Some(v) = self.local.trial_version.take().or(update.version) {
                    self.local.firmware = Some(v);
                }
                self.phase = "idle";
                self.save();
                self.event(EventKind::Installed, &release, Some("firmware committed after its trial boot".into()));
            }
            // An install the agent followed (the device resumed it) that
            // failed before any trial: no slot was switched.
            Phase::Failed => {
                self.local.trial = None;
                self.local.trial_version = None;
                let reason = format!("firmware: {}", update.reason.unwrap_or_else(|| "the install failed".into()));
                let attempt = self.local.desired.as_ref().map_or(0, |d| d.attempt);
                self.local.failed = Some(Failure { release: release.clone(), attempt, reason: reason.clone() });
                self.phase = "failed";
                self.save();
                self.event(EventKind::Refused, &release, Some(reason));
            }
            Phase::RolledBack => {
                self.local.trial = None;
                self.local.trial_version = None;
                let reason = update.reason.unwrap_or_else(|| "the trial boot was not healthy".into());
                let attempt = self.local.desired.as_ref().map_or(0, |d| d.attempt);
                self.local.failed =
                    Some(Failure { release: release.clone(), attempt, reason: format!("rolled back: {reason}") });
                self.phase = "failed";
                self.save();
                self.event(EventKind::RolledBack, &release, Some(reason));
            }
            Phase::Installing | Phase::Trial => self.phase = "trial-boot",
        }
    }

    /// Bring the device to its desired release, if it is not there and the
    /// last attempt at it did not fail.
    async fn converge(&mut self, link: &Link) -> Result<(), FleetError> {
        let Some(desired) = self.local.desired.clone() else { return Ok(()) };
        if self.local.trial.is_some() {
            return Ok(());
        }
        if self.local.applied.as_deref() == Some(desired.release.as_str()) {
            self.phase = "idle";
            self.progress = None;
            if self.local.failed.take().is_some() {
                self.save();
            }
            return Ok(());
        }
        if self.local.failed.as_ref().is_some_and(|f| f.release == desired.release && f.attempt == desired.attempt) {
            self.phase = "failed";
            return Ok(());
        }
        if let Some((release, until, _)) = &self.local.deferred
            && *release == desired.release
            && self.clock.now_ms() < *until
        {
            return Ok(());
        }
        let attempted = self.attempt(link, &desired).await;
        // What it fetched by root is kept only as far as the device runs it.
        let device = Arc::clone(&self.device);
        let _ = tokio::task::spawn_blocking(move || device.fetches_done()).await;
        match attempted {
            Ok(()) => Ok(()),
            Err(Stop::Offline(e)) => Err(e),
            Err(Stop::Trial) => Ok(()),
            Err(Stop::Deferred(until, reason)) => {
                let again =
                    self.local.deferred.as_ref().is_some_and(|(r, _, why)| *r == desired.release && *why == reason);
                self.local.deferred = Some((desired.release.clone(), until, reason.clone()));
                self.phase = "deferred";
                self.save();
                if !again {
                    self.event(EventKind::Deferred, &desired.release, Some(reason));
                }
                Ok(())
            }
            Err(Stop::Failed(reason, kind)) => {
                self.local.failed = Some(Failure {
                    release: desired.release.clone(),
                    attempt: desired.attempt,
                    reason: reason.clone(),
                });
                self.local.deferred = None;
                self.phase = "failed";
                self.progress = None;
                self.save();
                self.event(kind, &desired.release, Some(reason));
                Ok(())
            }
        }
    }

    /// Fetch, check, gate and apply one release.
    async fn attempt(&mut self, link: &Link, desired: &DesiredState) -> Result<(), Stop> {
        let id = &desired.release;
        // From the leader: the replica on this device's server may not hold a release just published.
        let bytes = match link.get_latest(RELEASES, id).await {
            Ok(Some(stored)) => stored.value,
            Ok(None) => return Err(Stop::Failed(format!("release {id} does not exist"), EventKind::Refused)),
            Err(e) => return Err(Stop::Offline(e)),
        };
        let refused = |e: String| Stop::Failed(e, EventKind::Refused);
        let release = Release::from_json(&bytes).map_err(|e| refused(e.to_string()))?;
        if release.id != *id {
            return Err(refused(format!(
                "release {id} is stored under another name: its manifest says {}",
                release.id
            )));
        }
        release.verify(&self.trust).map_err(|e| refused(e.to_string()))?;
        if release.board != self.config.board {
            return Err(refused(format!(
                "release {id} is for board {}, this device is a {}",
                release.board, self.config.board
            )));
        }
        // What this device does not have yet.
        let installed = self.device.apps();
        let apps_running: BTreeMap<&str, &str> =
            installed.iter().map(|a| (a.name.as_str(), a.version.as_str())).collect();
        let apps: Vec<_> = release
            .apps
            .iter()
            .filter(|a| apps_running.get(a.name.as_str()) != Some(&a.version.as_str()))
            .cloned()
            .collect();
        let running = self.firmware_version(&self.device.status());
        let firmware = release.firmware.clone().filter(|f| f.version != running);

        // The apps fit the runtime, and the firmware fits the apps, before anything is fetched.
        release
            .check_fit(&self.config.app_interface, &installed, firmware.is_some())
            .map_err(|e| refused(e.to_string()))?;
        self.gate(desired, &release).await?;

        // Everything is fetched and checked before anything is applied; but
        // a device that streams firmware by its piece root is given the root
        // the signed release names, and checks every block as RAUC reads it.
        let streamed = firmware.as_ref().and_then(|f| f.pieces.clone()).filter(|_| self.device.streams_firmware());
        self.phase = "downloading";
        self.progress = Some(0);
        let _ = self.send_report(link, true).await;
        let fetched_firmware = firmware.as_ref().filter(|_| streamed.is_none());
        let total: u64 = apps.iter().map(|a| a.size).sum::<u64>() + fetched_firmware.map_or(0, |f| f.size);
        let mut done = 0u64;
        let (mut app_bytes, mut hows) = (Vec::new(), Vec::new());
        for app in &apps {
            let (bytes, how) = self.fetch_app(link, &release, app).await?;
            done += app.size;
            self.progress = Some(percent(done, total));
            app_bytes.push((app.name.clone(), bytes));
            hows.extend(how);
        }
        let bundle = match (&firmware, &streamed) {
            (Some(_), Some(root)) => Some(Bundle::parse(&format!("asset:{root}")).map_err(refused)?),
            (Some(f), None) => Some(Bundle::File(self.fetch_bundle(link, &release, f).await?)),
            (None, _) => None,
        };
        // `downloaded` and `verified` once per attempt: here, or for streamed
        // firmware alone, once RAUC has read it.
        let mut announced = !apps.is_empty() || fetched_firmware.is_some();
        if announced {
            self.event(EventKind::Downloaded, id, (!hows.is_empty()).then(|| hows.join("; ")));
            self.event(EventKind::Verified, id, None);
        }

        self.phase = "installing";
        self.progress = Some(0);
        let _ = self.send_report(link, true).await;
        for part in &release.order {
            match part {
                Part::Apps => {
                    for (name, bytes) in &app_bytes {
                        let (device, n, b) = (Arc::clone(&self.device), name.clone(), bytes.clone());
                        // Compiling and starting an app takes a while: off the async threads.
                        let result = tokio::task::spawn_blocking(move || device.install_app(&n, &b))
                            .await
                            .unwrap_or_else(|e| Err(trellis_control::AppError::Failed(e.to_string())));
                        if let Err(e) = result {
                            return Err(Stop::Failed(format!("app {name}: {e}"), EventKind::Refused));
                        }
                    }
                }
                Part::Firmware => {
                    let Some(mut bundle) = bundle.clone() else { continue };
                    let mut how = None;
                    let (mut result, mut last) = self.install_firmware(&bundle).await;
                    // The device installs this very bundle already (the runtime
                    // resumed it after a reboot or power cut): follow that
                    // install to its trial boot rather than start another.
                    if result.as_ref().is_err_and(|e| e.starts_with("busy: "))
                        && let Some(running) = self.device.status().firmware.last_update
                        && running.phase == Phase::Installing
                        && running.bundle == bundle.to_string()
                    {
                        tracing::info!(release = %id, "the device is installing {bundle} already: following it");
                        self.local.trial = Some(id.clone());
                        self.local.trial_version = firmware.as_ref().map(|f| f.version.clone());
                        self.phase = "trial-boot";
                        self.save();
                        return Err(Stop::Trial);
                    }
                    // A stream that fails on the way (the site's sources lack
                    // the bundle, or cannot be reached) has not switched a
                    // slot: the bundle is then fetched whole from the object
                    // store. A refusal of the bundle itself is final.
                    if let (Err(streaming), Some(f), Bundle::Asset(_)) = (&result, &firmware, &bundle)
                        && falls_back(streaming)
                    {
                        tracing::warn!(release = %id, "firmware streamed as {bundle}: {streaming}; fetching it whole");
                        let streaming = format!("firmware streamed as {bundle}: {streaming}");
                        self.phase = "downloading";
                        let path = self.fetch_bundle(link, &release, f).await.map_err(|stop| match stop {
                            Stop::Failed(why, kind) => Stop::Failed(format!("{streaming}; fetched whole: {why}"), kind),
                            other => other,
                        })?;
                        how = Some(format!("{streaming}; fetched whole"));
                        if !announced {
                            self.event(EventKind::Downloaded, id, how.clone());
                            self.event(EventKind::Verified, id, None);
                            announced = true;
                        }
                        self.phase = "installing";
                        bundle = Bundle::File(path);
                        (result, last) = self.install_firmware(&bundle).await;
                    }
                    self.progress = Some(last);
                    if let Bundle::File(path) = &bundle {
                        let _ = std::fs::remove_file(path);
                    }
                    match result {
                        Ok(_) => {
                            if matches!(bundle, Bundle::Asset(_)) {
                                how = Some(format!("firmware streamed as {bundle}, every block checked against it"));
                                if !announced {
                                    self.event(EventKind::Downloaded, id, how.clone());
                                    self.event(EventKind::Verified, id, None);
                                }
                            }
                            self.local.trial = Some(id.clone());
                            self.local.trial_version = firmware.as_ref().map(|f| f.version.clone());
                            self.phase = "trial-boot";
                            self.save();
                            let how = how.map(|h| format!(" ({h})")).unwrap_or_default();
                            self.event(
                                EventKind::Installed,
                                id,
                                Some(format!("firmware written{how}; rebooting into its trial")),
                            );
                            let _ = self.send_report(link, true).await;
                            let _ = self.flush(link).await;
                            let device = Arc::clone(&self.device);
                            let _ = tokio::task::spawn_blocking(move || device.installed()).await;
                            return Err(Stop::Trial);
                        }
                        Err(e) => return Err(Stop::Failed(format!("firmware: {e}"), EventKind::Refused)),
                    }
                }
            }
        }
        // Apps installed through the device run (that is what install means); check they still do.
        let status = self.device.apps();
        if let Some(sick) = release
            .apps
            .iter()
            .find(|a| !status.iter().any(|s| s.name == a.name && s.version == a.version && s.state == "running"))
        {
            let stopped = status.iter().any(|s| s.name == sick.name && s.state == "stopped");
            let why = if stopped {
                format!("app {} {} is stopped on the device (trellis app start {})", sick.name, sick.version, sick.name)
            } else {
                format!("app {} {} is not running", sick.name, sick.version)
            };
            return Err(Stop::Failed(why, EventKind::Refused));
        }
        if !app_bytes.is_empty() {
            self.event(EventKind::Installed, id, None);
        }
        self.local.applied = Some(id.clone());
        self.local.failed = None;
        self.local.deferred = None;
        self.phase = "idle";
        self.progress = None;
        self.save();
        self.event(EventKind::Healthy, id, None);
        Ok(())
    }

    /// Fetch release `release`'s firmware bundle `f` whole into the device's
    /// firmware directory, checked.
    async fn fetch_bundle(&mut self, link: &Link, release: &Release, f: &FirmwareRef) -> Result<PathBuf, Stop> {
        let Some(dir) = self.device.firmware_dir() else {
            return Err(Stop::Failed(
                format!("release {} carries firmware and this device takes no firmware updates", release.id),
                EventKind::Refused,
            ));
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| Stop::Failed(format!("{}: {e}", dir.display()), EventKind::Refused))?;
        let path = dir.join(format!("fleet-{}.raucb", &f.sha256[..16]));
        self.fetch(link, release, "firmware", &f.sha256, f.size, Some(&path)).await?;
        Ok(path)
    }

    /// Install `bundle` through the device (RAUC writes the slot for
    /// minutes: off the async threads); the result and the last percentage.
    async fn install_firmware(&self, bundle: &Bundle) -> (Result<trellis_control::UpdateRecord, String>, u8) {
        let (device, source) = (Arc::clone(&self.device), bundle.clone());
        tokio::task::spawn_blocking(move || {
            let mut last = 0u8;
            let mut progress = |p: &trellis_control::Progress| {
                last = u8::try_from(p.percent.clamp(0, 100)).unwrap_or(0);
            };
            (device.install_firmware(&source, &mut progress), last)
        })
        .await
        .unwrap_or_else(|e| (Err(e.to_string()), 0))
    }

    /// A maintenance window or an app's consent hook holds a normal release.
    async fn gate(&self, desired: &DesiredState, release: &Release) -> Result<(), Stop> {
        if release.urgency == Urgency::Critical {
            return Ok(());
        }
        let now = self.clock.now_ms();
        if let Some(w) = &desired.window {
            if let Err(e) = w.validate() {
                return Err(Stop::Failed(e, EventKind::Refused));
            }
            if let Gate::ClosedUntil(at) = w.gate(now) {
                return Err(Stop::Deferred(at, format!("outside the maintenance window {}-{} UTC", w.start, w.end)));
            }
        }
        if desired.forced {
            return Ok(());
        }
        // The apps' hooks run under their call deadlines: off the async threads.
        let (device, id) = (Arc::clone(&self.device), release.id.clone());
        let consent = tokio::task::spawn_blocking(move || device.update_consent(&id)).await.unwrap_or(Consent::Apply);
        if let Consent::Defer { app, seconds } = consent {
            return Err(Stop::Deferred(
                now + u64::from(seconds) * 1000,
                format!("app {app} asked to wait {seconds} s"),
            ));
        }
        Ok(())
    }

    /// App `app` of `release`, checked against the hash the signed release
    /// names. By its piece root from the device's asset sources (its LAN
    /// peers, the site's origin) when the release names a root and the
    /// device has sources, each block checked as it arrives; else, or when
    /// those sources cannot deliver it, whole from the object store. The
    /// bytes, and how they came when by root.
    async fn fetch_app(
        &mut self,
        link: &Link,
        release: &Release,
        app: &AppRef,
    ) -> Result<(Vec<u8>, Option<String>), Stop> {
        // Why the pieces did not do, when the release names a root and the device has sources.
        let mut failed_by_root = None;
        if let Some(root) = &app.pieces {
            let (device, asked, size) = (Arc::clone(&self.device), root.clone(), app.size);
            let fetched = tokio::task::spawn_blocking(move || device.fetch_by_root(&asked, size))
                .await
                .unwrap_or_else(|e| Some(Err(e.to_string())));
            let by_root = format!("app {} by asset:{root}", app.name);
            match fetched {
                None => {}
                Some(Ok(got)) => {
                    // The root and the hash are both the publisher's: bytes that
                    // match one and not the other mean a release made wrong.
                    release
                        .check_artifact(&app.name, &got.bytes)
                        .map_err(|e| Stop::Failed(format!("{by_root}: {e}"), EventKind::Refused))?;
                    let how = format!("{by_root} ({})", got.sources());
                    return Ok((got.bytes, Some(how)));
                }
                Some(Err(why)) => {
                    tracing::warn!(release = %release.id, "{by_root}: {why}; fetching it whole");
                    failed_by_root = Some(format!("{by_root}: {why}"));
                }
            }
        }
        let whole = self.fetch(link, release, &app.name, &app.sha256, app.size, None).await;
        match failed_by_root {
            None => Ok((whole?, None)),
            Some(why) => {
                let bytes = whole.map_err(|stop| match stop {
                    Stop::Failed(whole, kind) => Stop::Failed(format!("{why}; fetched whole: {whole}"), kind),
                    other => other,
                })?;
                Ok((bytes, Some(format!("{why}; fetched whole"))))
            }
        }
    }

    /// Fetch artifact `name` by hash, into memory or into `file`, checking
    /// its size as it arrives and its hash before it is used.
    async fn fetch(
        &mut self,
        link: &Link,
        release: &Release,
        name: &str,
        sha256: &str,
        size: u64,
        file: Option<&Path>,
    ) -> Result<Vec<u8>, Stop> {
        let mut digest = [0u8; 32];
        hex::decode_to_slice(sha256, &mut digest)
            .map_err(|_| Stop::Failed(format!("artifact {name}: bad hash"), EventKind::Refused))?;
        let object = names::artifact(&digest);
        // In a task of its own: a panic anywhere in reading it (the client
        // library's code included) must cost a retry, not the agent.
        let task = tokio::spawn(download(link.clone(), object.clone(), size, file.map(Path::to_owned)));
        let result =
            task.await.unwrap_or_else(|e| Err(Download::Link(FleetError::nats(format!("fetching {object}"), e))));
        let cleanup = || {
            if let Some(p) = file {
                let _ = std::fs::remove_file(p);
            }
        };
        let (bytes, actual, got) = match result {
            Ok(r) => r,
            Err(Download::Missing(e)) => {
                cleanup();
                return Err(Stop::Failed(
                    format!("artifact {name} of release {}: {e}", release.id),
                    EventKind::Refused,
                ));
            }
            Err(Download::Link(e)) => {
                cleanup();
                return Err(Stop::Offline(e));
            }
            Err(Download::TooBig) => {
                cleanup();
                return Err(Stop::Failed(
                    format!("artifact {name} of release {}: more than the {size} bytes the release names", release.id),
                    EventKind::Refused,
                ));
            }
            Err(Download::File(e)) => {
                cleanup();
                return Err(Stop::Failed(e, EventKind::Refused));
            }
        };
        if actual != sha256 || got != size {
            cleanup();
            return Err(Stop::Failed(
                format!(
                    "artifact {name} of release {}: expected sha256 {sha256} ({size} bytes), got {actual} ({got} bytes)",
                    release.id
                ),
                EventKind::Refused,
            ));
        }
        Ok(bytes)
    }
}

/// Whether a streamed install that failed with `why` is worth doing again
/// from the bundle fetched whole: when its sources could not deliver it (a
/// transfer failure, no source holding it, none configured), not when the
/// bundle was refused or the device is busy.
fn falls_back(why: &str) -> bool {
    let lower = why.to_ascii_lowercase();
    if lower.starts_with("busy: ") {
        return false;
    }
    ["http error code 404", "no asset sources"].iter().any(|s| lower.contains(s)) || !trellis_control::is_refusal(why)
}

/// The least time from the start of one round to the start of the next. A
/// message on one of the device's keys wakes the agent, and another device
/// can send one there (the answer to its own request, within the devices'
/// account): a burst of them costs a few rounds a second, not one per
/// message.
pub const ROUND_GAP: Duration = Duration::from_millis(250);

/// Why a download stopped.
enum Download {
    /// The object store says it does not hold the object, or holds a copy
    /// that is not whole: refused.
    Missing(FleetError),
    /// The server, the store or the client library (its stream away, a
    /// connection lost, a panic): try again later, whatever the error says.
    Link(FleetError),
    /// More bytes than the release names.
    TooBig,
    /// The file it goes into.
    File(String),
}

impl From<ObjectError> for Download {
    fn from(e: ObjectError) -> Self {
        match e {
            refused @ (ObjectError::Missing { .. } | ObjectError::Corrupt { .. }) => {
                Self::Missing(FleetError::Refused(refused.to_string()))
            }
            ObjectError::Link(e) => Self::Link(e),
        }
    }
}

/// Read `object` (at most `size` bytes) into memory or into `file`; the
/// bytes (when in memory), their SHA-256 and their count.
async fn download(
    link: Link,
    object: String,
    size: u64,
    file: Option<PathBuf>,
) -> Result<(Vec<u8>, String, u64), Download> {
    let mut reader = object::Reader::open(&link, names::ARTIFACTS, &object).await?;
    if reader.size() > size {
        return Err(Download::TooBig);
    }
    let file_error = |p: &Path, e: std::io::Error| Download::File(format!("{}: {e}", p.display()));
    let mut out = match &file {
        Some(p) => Some(std::fs::File::create(p).map_err(|e| file_error(p, e))?),
        None => None,
    };
    let (mut hasher, mut bytes, mut got) = (Sha256::new(), Vec::new(), 0u64);
    while let Some(chunk) = reader.next_chunk().await? {
        got += chunk.len() as u64;
        if got > size {
            return Err(Download::TooBig);
        }
        hasher.update(&chunk);
        match (&mut out, &file) {
            (Some(f), Some(p)) => std::io::Write::write_all(f, &chunk).map_err(|e| file_error(p, e))?,
            _ => bytes.extend_from_slice(&chunk),
        }
    }
    if let (Some(f), Some(p)) = (out, &file) {
        f.sync_all().map_err(|e| file_error(p, e))?;
    }
    Ok((bytes, hex::encode(hasher.finalize()), got))
}

/// The number an outbox file's name starts with.
fn event_number(file: &Path) -> Option<u64> {
    file.file_stem()?.to_str()?.split('-').next()?.parse().ok()
}

/// The id an event is sent with (`Nats-Msg-Id`), the same each time it is
/// sent again, so the events stream stores it once. The stream drops any
/// message whose id it has seen within its duplicate window, whoever sent
/// it, so the id carries the random part of the outbox file's name: were it
/// only the device, the number and the time, another device could send a
/// device's next ids first and keep its events out of the log. (A number
/// reused after the state was lost comes with another time.)
fn event_id(device: &str, file: &Path, bytes: &[u8]) -> String {
    let number = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    let at_ms = serde_json::from_slice::<Event>(bytes).map(|e| e.at_ms).unwrap_or_default();
    format!("{device}.{number}.{at_ms}")
}

/// The events in the outbox, oldest first (temporary files of a write cut
/// short are not events).
fn outbox_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|x| x == "json"));
    files.sort();
    files
}

/// A watch task, stopped with the agent.
struct Watch(tokio::task::JoinHandle<()>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn percent(done: u64, total: u64) -> u8 {
    done.saturating_mul(100).checked_div(total).map_or(100, |p| u8::try_from(p).unwrap_or(100))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::After;

    #[test]
    fn a_desired_state_older_than_one_read_before_is_a_lagging_replicas() {
        const GROUP: &str = "group.north";
        let put = |revision| Entry { value: Some(b"{}".to_vec()), revision, after: None };
        let gone = |revision, after: Option<(&str, u64)>| Entry {
            value: None,
            revision,
            after: after.map(|(key, revision)| After { key: key.into(), revision }),
        };
        let seen = Seen { own: 7, group: 3 };
        let lag = |own: &Entry, group: Option<&Entry>| seen.lag(own, group, GROUP);
        // The device's own key: older than read before (an earlier attempt), or not there at all.
        assert_eq!(lag(&put(5), None), Some(Lag { group: false, revision: 5, expected: 7 }));
        assert_eq!(lag(&Entry::default(), Some(&put(3))), Some(Lag { group: false, revision: 0, expected: 7 }));
        assert_eq!(lag(&put(7), None), None);
        // Deleted: the group must be at least what its deletion names, and what was read of it.
        let after = Some((GROUP, 8));
        assert_eq!(lag(&gone(9, after), Some(&put(3))), Some(Lag { group: true, revision: 3, expected: 8 }));
        assert_eq!(lag(&gone(9, after), Some(&put(8))), None);
        assert_eq!(lag(&gone(9, None), Some(&put(2))), Some(Lag { group: true, revision: 2, expected: 3 }));
        assert_eq!(lag(&gone(9, None), Some(&put(3))), None);
        // A deletion that names another group's key (the device has moved since) holds nothing.
        assert_eq!(lag(&gone(9, Some(("group.south", 8))), Some(&put(3))), None);
        // A group that was deleted too counts by its deletion's revision.
        assert_eq!(lag(&gone(9, after), Some(&gone(10, None))), None);
        // The group is not looked at while the device's own key holds a value.
        assert_eq!(lag(&put(9), Some(&put(1))), None);
        // What was read becomes the newest, the group's only when read.
        assert_eq!(seen.read(&put(9), None), Seen { own: 9, group: 3 });
        assert_eq!(seen.read(&gone(9, None), Some(&put(4))), Seen { own: 9, group: 4 });
    }

    #[test]
    fn a_stream_falls_back_to_the_whole_bundle_only_when_its_sources_failed() {
        for why in [
            "bundle asset:ab: RAUC: Failed to stream bundle http://127.0.0.1:4/v1/assets/ab/data: \
             failed to configure streaming: unexpected HTTP error code 404",
            "bundle asset:ab: no asset sources: the runtime's [assets] names no origin and no peers",
            "bundle asset:ab: RAUC: Installation error: Failed updating slot rootfs.1: tar: read error",
        ] {
            assert!(super::falls_back(why), "{why}");
        }
        for why in [
            "busy: an installation is already running",
            "bundle asset:ab: RAUC: signature verification failed: certificate not trusted",
            "bundle asset:ab: RAUC: Compatible mismatch: Expected 'trellis-qemu-aarch64'",
        ] {
            assert!(!super::falls_back(why), "{why}");
        }
    }

    /// An agent's parts on a fresh state directory, on a fake clock at 0.
    #[cfg(feature = "sim")]
    #[allow(clippy::unwrap_used)]
    fn parts(dir: &Path) -> (AgentConfig, Arc<trellis_control::testing::FakeDevice>, Arc<crate::clock::ManualClock>) {
        let config = AgentConfig::new("pi-1", "north", "rpi4", "0.1.1", "1.0.0", dir);
        let device = Arc::new(trellis_control::testing::FakeDevice::new(dir.join("apps")));
        (config, device, Arc::new(crate::clock::ManualClock::at(0)))
    }

    #[cfg(feature = "sim")]
    #[test]
    fn an_event_fits_the_events_streams_largest_message_whatever_its_reason() {
        #![allow(clippy::unwrap_used)]
        let dir = tempfile::tempdir().unwrap();
        let (config, device, clock) = parts(dir.path());
        let mut agent = Agent::new(config, device, TrustList::default(), clock).unwrap();
        // Control characters take six bytes each in JSON.
        agent.event(EventKind::Refused, &"r".repeat(10_000), Some("\u{1}".repeat(100_000)));
        let files = outbox_files(&dir.path().join(OUTBOX));
        let bytes = std::fs::read(&files[0]).unwrap();
        let most = usize::try_from(crate::ops::EVENTS_MAX_SIZE).unwrap();
        assert!(bytes.len() <= most, "{} bytes", bytes.len());
        let event: Event = serde_json::from_slice(&bytes).unwrap();
        assert!(event.reason.unwrap().starts_with("\u{1}\u{1}"));
    }

    /// A power cut between writing an event and saving its number: the next
    /// event gets a new number, it does not overwrite the one not yet sent.
    #[cfg(feature = "sim")]
    #[test]
    fn an_unsent_event_is_never_overwritten() {
        #![allow(clippy::unwrap_used)]
        let dir = tempfile::tempdir().unwrap();
        let (config, device, clock) = parts(dir.path());
        let mut agent = Agent::new(config.clone(), device.clone(), TrustList::default(), clock.clone()).unwrap();
        agent.event(EventKind::Deferred, "r-1", None);
        // The number is lost with the state file; the event and a temporary file of a cut write stay.
        std::fs::remove_file(dir.path().join(STATE_FILE)).unwrap();
        std::fs::write(dir.path().join(OUTBOX).join(".00000000000000000001.json.tmp"), b"{").unwrap();
        let mut agent = Agent::new(config, device, TrustList::default(), clock).unwrap();
        assert_eq!(agent.pending_events(), 1);
        agent.event(EventKind::Healthy, "r-1", None);
        let files = outbox_files(&dir.path().join(OUTBOX));
        assert_eq!(files.len(), 2, "{files:?}");
        let first: Event = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
        assert_eq!(first.kind, EventKind::Deferred, "the first event is still there, first");
    }
}
