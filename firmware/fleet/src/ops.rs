//! What an operator does to a fleet (the `trellis fleet` commands): set up
//! the buckets, register devices, publish releases with their artifacts,
//! deploy them as rollouts, follow, pause, resume, abort and pin.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{kv, object_store, stream};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::FleetError;
use crate::link::{After, Link, Stored};
use crate::names::{self, ARTIFACTS, DESIRED, DEVICES, RELEASES, REPORTED, ROLLOUTS};
use crate::release::Release;
use crate::rollout::{Outcome, Plan, Rollout, State};
use crate::state::{DesiredState, ReportedState};

/// A device in the registry ([`names::DEVICES`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeviceRecord {
    /// Its group.
    pub group: String,
    /// Its board.
    pub board: String,
}

/// How long events are kept: 90 days.
const EVENTS_MAX_AGE: Duration = Duration::from_secs(90 * 86_400);
/// How long the events stream remembers an event's id, so that one sent
/// again after a lost acknowledgement is stored once (an outbox resent
/// later than this after a long outage may record an event twice).
const EVENTS_DUPLICATE_WINDOW: Duration = Duration::from_secs(3600);
/// The events stream's size: the oldest events go first beyond it.
const EVENTS_MAX_BYTES: i64 = 1 << 30;
/// Most events kept of one device (its subject): a device that floods its
/// subject drops its own oldest events, not the other devices'.
pub const EVENTS_PER_DEVICE: i64 = 10_000;
/// The largest event stored (an event is a few hundred bytes; a reason is
/// one line): with `EVENTS_PER_DEVICE`, one device holds at most 80 MiB.
pub const EVENTS_MAX_SIZE: i32 = 8 * 1024;

/// Create the fleet's buckets, object store and events stream (those that
/// exist are left as they are), each with `replicas` copies.
///
/// # Errors
/// The server refused (not enough servers for `replicas`, no JetStream).
pub async fn setup(link: &Link, replicas: usize) -> Result<(), FleetError> {
    for (bucket, history) in [(RELEASES, 1), (DESIRED, 5), (REPORTED, 1), (ROLLOUTS, 5), (DEVICES, 1)] {
        if link.js.get_key_value(bucket).await.is_ok() {
            continue;
        }
        let config = kv::Config { bucket: bucket.into(), history, num_replicas: replicas, ..Default::default() };
        link.js.create_key_value(config).await.map_err(|e| FleetError::nats(format!("creating bucket {bucket}"), e))?;
    }
    no_rollups(link, REPORTED).await?;
    if link.js.get_object_store(ARTIFACTS).await.is_err() {
        let config = object_store::Config { bucket: ARTIFACTS.into(), num_replicas: replicas, ..Default::default() };
        link.js
            .create_object_store(config)
            .await
            .map_err(|e| FleetError::nats(format!("creating object store {ARTIFACTS}"), e))?;
    }
    let what = || format!("creating stream {}", names::EVENTS_STREAM);
    match link.js.get_stream(names::EVENTS_STREAM).await {
        Err(_) => {
            let config = stream::Config {
                name: names::EVENTS_STREAM.into(),
                subjects: vec![names::EVENTS_SUBJECTS.into()],
                max_age: EVENTS_MAX_AGE,
                duplicate_window: EVENTS_DUPLICATE_WINDOW,
                max_bytes: EVENTS_MAX_BYTES,
                max_messages_per_subject: EVENTS_PER_DEVICE,
                max_message_size: EVENTS_MAX_SIZE,
                num_replicas: replicas,
                ..Default::default()
            };
            link.js.create_stream(config).await.map_err(|e| FleetError::nats(what(), e))?;
        }
        // A stream made before these limits: each device's share of it.
        Ok(events) => {
            amend(link, &events, &what, |config| {
                config.max_messages_per_subject = EVENTS_PER_DEVICE;
                config.max_message_size = EVENTS_MAX_SIZE;
            })
            .await?;
        }
    }
    Ok(())
}

/// Refuse roll-ups in `bucket`, which the client library allows in every
/// bucket it makes: a message with `Nats-Rollup: all` on any subject of the
/// stream purges every other one, so a device, which may write its own
/// report, could otherwise wipe every device's. A bucket made before is
/// changed too.
async fn no_rollups(link: &Link, bucket: &str) -> Result<(), FleetError> {
    let what = || format!("refusing roll-ups in bucket {bucket}");
    let stream = link.js.get_stream(names::kv_stream(bucket)).await.map_err(|e| FleetError::nats(what(), e))?;
    amend(link, &stream, &what, |config| config.allow_rollup = false).await
}

/// Make `change` to `stream`'s configuration (as read when it was opened),
/// and update the stream only if that changed anything.
async fn amend(
    link: &Link,
    stream: &stream::Stream,
    what: &dyn Fn() -> String,
    change: impl FnOnce(&mut stream::Config),
) -> Result<(), FleetError> {
    let mut config = stream.cached_info().config.clone();
    change(&mut config);
    if config != stream.cached_info().config {
        link.js.update_stream(config).await.map_err(|e| FleetError::nats(what(), e))?;
    }
    Ok(())
}

fn check_id(what: &str, id: &str) -> Result<(), FleetError> {
    if names::valid_id(id) {
        Ok(())
    } else {
        Err(FleetError::Refused(format!("{what} {id:?} is not an id ([a-z0-9][a-z0-9-]*, at most 64 characters)")))
    }
}

/// Register `device` in `group` with `board`.
///
/// # Errors
/// A bad id, or the server cannot be reached.
pub async fn register(link: &Link, device: &str, group: &str, board: &str) -> Result<(), FleetError> {
    check_id("device", device)?;
    check_id("group", group)?;
    let record = DeviceRecord { group: group.to_owned(), board: board.to_owned() };
    link.put(DEVICES, device, serde_json::to_vec(&record).unwrap_or_default()).await?;
    Ok(())
}

/// Every entry of `bucket`, parsed (entries that do not parse are skipped
/// with a warning).
async fn entries<T: serde::de::DeserializeOwned>(link: &Link, bucket: &str) -> Result<BTreeMap<String, T>, FleetError> {
    Ok(stamped_entries(link, bucket).await?.into_iter().map(|(k, (v, _))| (k, v)).collect())
}

/// The same, with when the server stored each (Unix ms). A cluster electing
/// a stream's leader may not answer at once: three tries.
async fn stamped_entries<T: serde::de::DeserializeOwned>(
    link: &Link,
    bucket: &str,
) -> Result<BTreeMap<String, (T, u64)>, FleetError> {
    let mut tries = 0;
    loop {
        match entries_once(link, bucket).await {
            Err(e) if tries < 2 => {
                tries += 1;
                tracing::debug!("{e}: trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}

async fn entries_once<T: serde::de::DeserializeOwned>(
    link: &Link,
    bucket: &str,
) -> Result<BTreeMap<String, (T, u64)>, FleetError> {
    let store = link.kv(bucket).await?;
    let what = || format!("listing {bucket}");
    // The keys as the bucket's leader holds them (the stream's subjects; a
    // key watcher's consumer may sit on a replica that lags, and miss a key
    // written a moment before); deleted ones read as none below.
    let mut subjects =
        store.stream.info_with_subjects(format!("{}>", store.prefix)).await.map_err(|e| FleetError::nats(what(), e))?;
    let mut keys = Vec::new();
    while let Some(subject) = subjects.next().await {
        let (subject, _) = subject.map_err(|e| FleetError::nats(what(), e))?;
        keys.extend(subject.strip_prefix(store.prefix.as_str()).map(str::to_owned));
    }
    keys.sort();
    let mut out = BTreeMap::new();
    for key in keys {
        if let Some(Stored { value, stored_ms, .. }) = link.get_latest(bucket, &key).await? {
            match serde_json::from_slice(&value) {
                Ok(v) => {
                    out.insert(key, (v, stored_ms));
                }
                Err(e) => tracing::warn!("{bucket}/{key}: {e}"),
            }
        }
    }
    Ok(out)
}

/// The registry.
///
/// # Errors
/// The server cannot be reached.
pub async fn registry(link: &Link) -> Result<BTreeMap<String, DeviceRecord>, FleetError> {
    entries(link, DEVICES).await
}

/// Every device's reported state.
///
/// # Errors
/// The server cannot be reached.
pub async fn reports(link: &Link) -> Result<BTreeMap<String, ReportedState>, FleetError> {
    entries(link, REPORTED).await
}

/// One row of `trellis fleet devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DeviceRow {
    /// The device.
    pub device: String,
    /// Its group (registry).
    pub group: Option<String>,
    /// What it reports (none: never reported).
    pub reported: Option<ReportedState>,
    /// When the server stored its last report (Unix ms; its own clock may be off).
    pub last_seen_ms: Option<u64>,
}

/// The devices: every registered one and every one that reported.
///
/// # Errors
/// The server cannot be reached.
pub async fn devices(link: &Link) -> Result<Vec<DeviceRow>, FleetError> {
    let registry = registry(link).await?;
    let mut reports = stamped_entries::<ReportedState>(link, REPORTED).await?;
    let mut rows: Vec<DeviceRow> = registry
        .iter()
        .map(|(d, r)| {
            let (reported, last_seen_ms) = reports.remove(d).map_or((None, None), |(r, at)| (Some(r), Some(at)));
            DeviceRow { device: d.clone(), group: Some(r.group.clone()), reported, last_seen_ms }
        })
        .collect();
    rows.extend(reports.into_iter().map(|(d, (r, at))| DeviceRow {
        device: d,
        group: None,
        reported: Some(r),
        last_seen_ms: Some(at),
    }));
    rows.sort_by(|a, b| a.device.cmp(&b.device));
    Ok(rows)
}

/// Publish `release` (signed) with its artifacts' bytes: each artifact is
/// stored under its hash (skipped when already there), checked against the
/// release first; the release is written last, and never over another of
/// the same id.
///
/// # Errors
/// An artifact that is not the one the release names, a release id that
/// exists, or the server.
pub async fn publish(link: &Link, release: &Release, artifacts: &[(String, Vec<u8>)]) -> Result<(), FleetError> {
    release.validate()?;
    if release.signature.is_none() {
        return Err(FleetError::Refused(format!("release {} is not signed", release.id)));
    }
    let store = link.artifacts().await?;
    for (name, bytes) in artifacts {
        release.check_artifact(name, bytes)?;
        let digest: [u8; 32] = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(bytes)).into();
        let object = names::artifact(&digest);
        if store.info(&object).await.is_ok() {
            continue;
        }
        let mut reader = bytes.as_slice();
        store
            .put(object.as_str(), &mut reader)
            .await
            .map_err(|e| FleetError::nats(format!("storing artifact {object} ({name})"), e))?;
    }
    let releases = link.kv(RELEASES).await?;
    releases.create(&release.id, release.to_json().into()).await.map_err(|e| {
        if e.kind() == kv::CreateErrorKind::AlreadyExists {
            FleetError::Refused(format!("release {} exists; a release is never changed, publish a new id", release.id))
        } else {
            FleetError::nats(format!("writing {RELEASES}/{}", release.id), e)
        }
    })?;
    Ok(())
}

/// A release.
///
/// # Errors
/// No such release, or the server.
pub async fn release(link: &Link, id: &str) -> Result<Release, FleetError> {
    let stored = link.get_latest(RELEASES, id).await?.ok_or_else(|| FleetError::Refused(format!("no release {id}")))?;
    Ok(Release::from_json(&stored.value)?)
}

/// Every release.
///
/// # Errors
/// The server.
pub async fn releases(link: &Link) -> Result<Vec<Release>, FleetError> {
    Ok(entries::<Release>(link, RELEASES).await?.into_values().collect())
}

async fn desired(link: &Link, key: &str) -> Result<Option<DesiredState>, FleetError> {
    match link.get_latest(DESIRED, key).await? {
        Some(Stored { value: b, .. }) => {
            serde_json::from_slice(&b).map(Some).map_err(|e| FleetError::value(format!("{DESIRED}/{key}"), e))
        }
        None => Ok(None),
    }
}

/// Delete a device's own desired state `key`, so that it follows `group`
/// again: the deletion names the group's key and its revision as the
/// leader holds it, and the device waits for a replica that holds that much
/// ([`Link::delete_after`]).
async fn forget(link: &Link, key: &str, group: Option<&str>) -> Result<(), FleetError> {
    let after = match group {
        Some(g) => {
            let key = names::group_key(g);
            let revision = link.get_latest(DESIRED, &key).await?.map_or(0, |s| s.revision);
            Some(After { key, revision })
        }
        None => None,
    };
    link.delete_after(DESIRED, key, after.as_ref()).await
}

/// Every rollout.
///
/// # Errors
/// The server.
pub async fn rollouts(link: &Link) -> Result<Vec<Rollout>, FleetError> {
    let mut all: Vec<Rollout> = entries::<Rollout>(link, ROLLOUTS).await?.into_values().collect();
    all.sort_by_key(|r| r.created_ms);
    Ok(all)
}

/// A rollout and its revision (for compare-and-set).
///
/// # Errors
/// No such rollout, or the server.
pub async fn rollout(link: &Link, id: &str) -> Result<(Rollout, u64), FleetError> {
    let entry = link.get_latest(ROLLOUTS, id).await?.ok_or_else(|| FleetError::Refused(format!("no rollout {id}")))?;
    let rollout = serde_json::from_slice(&entry.value).map_err(|e| FleetError::value(format!("{ROLLOUTS}/{id}"), e))?;
    Ok((rollout, entry.revision))
}

/// Write `rollout` if it is still at `revision`; false when another writer
/// got there first.
///
/// # Errors
/// The server.
pub async fn compare_and_set(link: &Link, rollout: &Rollout, revision: u64) -> Result<bool, FleetError> {
    let store = link.kv(ROLLOUTS).await?;
    match store.update(&rollout.id, serde_json::to_vec(rollout).unwrap_or_default().into(), revision).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
        Err(e) => Err(FleetError::nats(format!("writing {ROLLOUTS}/{}", rollout.id), e)),
    }
}

/// Deploy `release` to `group` as a rollout following `plan`; its id is
/// `<group>-<now_ms>`. Refused when the release does not exist, the group
/// is pinned, or another rollout to the group is running.
///
/// # Errors
/// Why not, or the server.
pub async fn deploy(
    link: &Link,
    release_id: &str,
    group: &str,
    plan: Plan,
    now_ms: u64,
) -> Result<Rollout, FleetError> {
    check_id("group", group)?;
    plan.validate().map_err(FleetError::Refused)?;
    release(link, release_id).await?;
    if let Some(d) = desired(link, &names::group_key(group)).await?
        && d.pinned
    {
        return Err(FleetError::Refused(format!("group {group} is pinned to {}; unpin it first", d.release)));
    }
    if let Some(r) = rollouts(link).await?.into_iter().find(|r| r.group == group && !r.state.finished()) {
        return Err(FleetError::Refused(format!(
            "rollout {} of {} to group {group} is {:?}; abort it first",
            r.id, r.release, r.state
        )));
    }
    let rollout = Rollout::new(&format!("{group}-{now_ms}"), release_id, group, plan, now_ms);
    let store = link.kv(ROLLOUTS).await?;
    store
        .create(&rollout.id, serde_json::to_vec(&rollout).unwrap_or_default().into())
        .await
        .map_err(|e| FleetError::nats(format!("creating {ROLLOUTS}/{}", rollout.id), e))?;
    Ok(rollout)
}

/// Change a rollout with `change` (compare-and-set, retried on conflict).
async fn change(
    link: &Link,
    id: &str,
    change: impl Fn(&mut Rollout) -> Result<(), FleetError>,
) -> Result<Rollout, FleetError> {
    for _ in 0..20 {
        let (mut rollout, revision) = rollout(link, id).await?;
        change(&mut rollout)?;
        if compare_and_set(link, &rollout, revision).await? {
            return Ok(rollout);
        }
    }
    Err(FleetError::Refused(format!("rollout {id} keeps changing under us; try again")))
}

/// Pause a running rollout: no new wave, no retry.
///
/// # Errors
/// It is not running, or the server.
pub async fn pause(link: &Link, id: &str) -> Result<Rollout, FleetError> {
    change(link, id, |r| match r.state {
        State::Running => {
            r.state = State::Paused;
            Ok(())
        }
        s => Err(FleetError::Refused(format!("rollout {id} is {s:?}, not running"))),
    })
    .await
}

/// Resume a paused or halted rollout. Devices that failed get another
/// attempt at once (the operator fixed what made them fail).
///
/// # Errors
/// It is finished, or the server.
pub async fn resume(link: &Link, id: &str) -> Result<Rollout, FleetError> {
    let rollout = change(link, id, |r| match r.state {
        State::Paused | State::Halted => {
            r.state = State::Running;
            r.reason = None;
            for m in r.members.values_mut().filter(|m| m.outcome == Outcome::Failed) {
                m.attempt += 1;
                m.outcome = Outcome::Pending;
                m.failed_ms = None;
            }
            Ok(())
        }
        s => Err(FleetError::Refused(format!("rollout {id} is {s:?}; only a paused or halted one resumes"))),
    })
    .await?;
    for (device, m) in &rollout.members {
        if m.outcome == Outcome::Pending && m.attempt > 0 {
            let d = rollout.desired(m.attempt);
            link.put(DESIRED, &names::device_key(device), serde_json::to_vec(&d).unwrap_or_default()).await?;
        }
    }
    Ok(rollout)
}

/// Abort a rollout: devices that have not updated go back to following their
/// group (their rollout key is deleted); those that updated keep the release.
///
/// # Errors
/// It is finished, or the server.
pub async fn abort(link: &Link, id: &str) -> Result<Rollout, FleetError> {
    let rollout = change(link, id, |r| {
        if r.state.finished() {
            return Err(FleetError::Refused(format!("rollout {id} is already {:?}", r.state)));
        }
        r.state = State::Aborted;
        r.reason = Some("aborted by an operator".into());
        Ok(())
    })
    .await?;
    for (device, m) in &rollout.members {
        if m.outcome == Outcome::Updated {
            continue;
        }
        let key = names::device_key(device);
        // Only the key this rollout set (a pin made since stays).
        if desired(link, &key).await?.is_some_and(|d| d.rollout.as_deref() == Some(id)) {
            forget(link, &key, Some(&rollout.group)).await?;
        }
    }
    Ok(rollout)
}

/// What `pin` pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One device.
    Device(String),
    /// A group.
    Group(String),
}

impl Target {
    fn key(&self) -> Result<String, FleetError> {
        match self {
            Self::Device(d) => check_id("device", d).map(|()| names::device_key(d)),
            Self::Group(g) => check_id("group", g).map(|()| names::group_key(g)),
        }
    }
}

/// Pin a device or a group to `release`: rollouts leave it alone until it is unpinned.
///
/// # Errors
/// No such release, or the server.
pub async fn pin(link: &Link, target: &Target, release_id: &str) -> Result<(), FleetError> {
    let key = target.key()?;
    release(link, release_id).await?;
    let d = DesiredState { pinned: true, ..DesiredState::release(release_id) };
    link.put(DESIRED, &key, serde_json::to_vec(&d).unwrap_or_default()).await?;
    Ok(())
}

/// Unpin: a device follows its group again; a group keeps its release, unpinned.
///
/// # Errors
/// Not pinned, or the server.
pub async fn unpin(link: &Link, target: &Target) -> Result<(), FleetError> {
    let key = target.key()?;
    let Some(d) = desired(link, &key).await?.filter(|d| d.pinned) else {
        return Err(FleetError::Refused(format!("{key} is not pinned")));
    };
    match target {
        Target::Device(device) => {
            let record = link.get_latest(DEVICES, device).await?;
            let group = record.and_then(|r| serde_json::from_slice::<DeviceRecord>(&r.value).ok()).map(|r| r.group);
            forget(link, &key, group.as_deref()).await?;
        }
        Target::Group(_) => {
            let d = DesiredState { pinned: false, ..d };
            link.put(DESIRED, &key, serde_json::to_vec(&d).unwrap_or_default()).await?;
        }
    }
    Ok(())
}

/// The devices pinned (their device key says so).
///
/// # Errors
/// The server.
pub async fn pinned_devices(link: &Link) -> Result<Vec<String>, FleetError> {
    Ok(entries::<DesiredState>(link, DESIRED)
        .await?
        .into_iter()
        .filter(|(k, d)| d.pinned && k.starts_with("device."))
        .map(|(k, _)| k.trim_start_matches("device.").to_owned())
        .collect())
}
