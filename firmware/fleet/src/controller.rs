//! The rollout controller: follows the rollouts, the registry, the desired
//! state (pins) and every device's report through watches, and steps each
//! rollout ([`Rollout::step`]). A step is written with compare-and-set on
//! the rollout's revision before its actions are carried out, so several
//! controllers may run: one wins each step, the others see its result. A
//! controller that starts (or restarts) first re-issues the desired state of
//! every device a rollout has given the release, so a step whose actions
//! were cut short is completed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;

use crate::clock::Clock;
use crate::error::FleetError;
use crate::link::{After, Link};
use crate::names::{self, DESIRED, DEVICES, REPORTED, ROLLOUTS};
use crate::ops::{self, DeviceRecord};
use crate::rollout::{Action, Outcome, Rollout, State};
use crate::state::{DesiredState, ReportedState};

/// What the controller knows, kept current by watches.
#[derive(Debug, Default)]
struct View {
    reports: BTreeMap<String, ReportedState>,
    registry: BTreeMap<String, DeviceRecord>,
    pinned: BTreeSet<String>,
    rollouts: BTreeMap<String, (Rollout, u64)>,
}

type Shared = Arc<Mutex<View>>;

/// A rollout to step: its value, revision, the group's devices and their reports.
type Work = (Rollout, u64, Vec<String>, BTreeMap<String, ReportedState>);

fn lock(view: &Shared) -> std::sync::MutexGuard<'_, View> {
    view.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Follow `bucket` (every key's latest value, then each change) into `view`.
async fn follow(link: Link, bucket: &'static str, view: Shared) {
    loop {
        let watched = async {
            let store = link.kv(bucket).await?;
            let mut watch =
                store.watch_with_history(">").await.map_err(|e| FleetError::nats(format!("watching {bucket}"), e))?;
            while let Some(entry) = watch.next().await {
                let entry = entry.map_err(|e| FleetError::nats(format!("watching {bucket}"), e))?;
                apply(&view, bucket, &entry);
            }
            Ok::<(), FleetError>(())
        };
        if let Err(e) = watched.await {
            tracing::warn!("controller: {e}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn apply(view: &Shared, bucket: &str, entry: &kv::Entry) {
    let mut v = lock(view);
    let key = entry.key.clone();
    let gone = entry.operation != kv::Operation::Put;
    let parse_error = |e: serde_json::Error| tracing::warn!("{bucket}/{key}: {e}");
    match bucket {
        REPORTED if gone => {
            v.reports.remove(&key);
        }
        REPORTED => match serde_json::from_slice(&entry.value) {
            Ok(r) => {
                v.reports.insert(key.clone(), r);
            }
            Err(e) => parse_error(e),
        },
        DEVICES if gone => {
            v.registry.remove(&key);
        }
        DEVICES => match serde_json::from_slice(&entry.value) {
            Ok(r) => {
                v.registry.insert(key.clone(), r);
            }
            Err(e) => parse_error(e),
        },
        DESIRED => {
            if let Some(device) = key.strip_prefix("device.") {
                let pinned = !gone && serde_json::from_slice::<DesiredState>(&entry.value).is_ok_and(|d| d.pinned);
                if pinned {
                    v.pinned.insert(device.to_owned());
                } else {
                    v.pinned.remove(device);
                }
            }
        }
        ROLLOUTS if gone => {
            v.rollouts.remove(&key);
        }
        ROLLOUTS => match serde_json::from_slice(&entry.value) {
            Ok(r) => {
                let newer = v.rollouts.get(&key).is_none_or(|(_, rev)| *rev < entry.revision);
                if newer {
                    v.rollouts.insert(key.clone(), (r, entry.revision));
                }
            }
            Err(e) => parse_error(e),
        },
        _ => {}
    }
}

/// The controller.
#[derive(Debug)]
pub struct Controller {
    link: Link,
    clock: Arc<dyn Clock>,
    view: Shared,
    tick: Duration,
    reconciled: BTreeSet<String>,
}

impl Controller {
    /// A controller on `link`, stepping every `tick`.
    #[must_use]
    pub fn new(link: Link, clock: Arc<dyn Clock>, tick: Duration) -> Self {
        Self { link, clock, view: Shared::default(), tick, reconciled: BTreeSet::new() }
    }

    /// Run until the task is dropped.
    pub async fn run(mut self) {
        let _watches: Vec<_> = [REPORTED, DEVICES, DESIRED, ROLLOUTS]
            .into_iter()
            .map(|bucket| AbortOnDrop(tokio::spawn(follow(self.link.clone(), bucket, Arc::clone(&self.view)))))
            .collect();
        loop {
            if let Err(e) = self.step().await {
                tracing::warn!("controller: {e}");
            }
            tokio::time::sleep(self.tick).await;
        }
    }

    /// Step every rollout that is not finished.
    ///
    /// # Errors
    /// The server.
    pub async fn step(&mut self) -> Result<(), FleetError> {
        let now = self.clock.now_ms();
        let work: Vec<Work> = {
            let v = lock(&self.view);
            v.rollouts
                .values()
                .filter(|(r, _)| matches!(r.state, State::Running | State::Paused))
                .map(|(r, rev)| {
                    let devices: Vec<String> = v
                        .registry
                        .iter()
                        .filter(|(d, rec)| rec.group == r.group && !v.pinned.contains(*d))
                        .map(|(d, _)| d.clone())
                        .collect();
                    let reports =
                        devices.iter().filter_map(|d| v.reports.get(d).map(|rep| (d.clone(), rep.clone()))).collect();
                    (r.clone(), *rev, devices, reports)
                })
                .collect()
        };
        for (before, revision, devices, reports) in work {
            if !self.reconciled.contains(&before.id) {
                self.reconcile(&before).await?;
                self.reconciled.insert(before.id.clone());
            }
            let mut after = before.clone();
            let actions = after.step(&devices, &reports, now);
            if after == before {
                continue;
            }
            if !ops::compare_and_set(&self.link, &after, revision).await? {
                tracing::debug!("rollout {}: another controller stepped it first", after.id);
                continue;
            }
            // Our write is the newest: keep it, so the next step starts from it.
            lock(&self.view).rollouts.insert(after.id.clone(), (after.clone(), revision + 1));
            if after.state != before.state || after.wave != before.wave {
                tracing::info!(
                    "rollout {}: {:?}, wave {} of {}{}",
                    after.id,
                    after.state,
                    (after.wave as usize + 1).min(after.plan.waves.len()),
                    after.plan.waves.len(),
                    after.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
                );
            }
            if let Err(e) = self.act(&after, &actions).await {
                // Recorded but not (all) carried out: re-issue at the next step.
                self.reconciled.remove(&after.id);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Carry out a step's writes: the group's key first (so a device whose
    /// own key is deleted next finds the release there), then the devices'
    /// keys, many at once. A device's key is deleted naming the group's
    /// revision, so the device waits for a replica that holds it.
    async fn act(&self, rollout: &Rollout, actions: &[Action]) -> Result<(), FleetError> {
        let store = self.link.kv(DESIRED).await?;
        let group = names::group_key(&rollout.group);
        let mut group_revision = None;
        for action in actions {
            if let Action::DesireGroup(d) = action {
                group_revision = Some(self.link.put(DESIRED, &group, serde_json::to_vec(d).unwrap_or_default()).await?);
            }
        }
        if group_revision.is_none() && actions.iter().any(|a| matches!(a, Action::Forget(_))) {
            group_revision = Some(self.link.get_latest(DESIRED, &group).await?.map_or(0, |s| s.revision));
        }
        let after = After { key: group, revision: group_revision.unwrap_or(0) };
        // Owned (key, value or delete) pairs: the writes run concurrently.
        let writes: Vec<(String, Option<Vec<u8>>)> = actions
            .iter()
            .filter_map(|action| match action {
                Action::Desire(device, d) => {
                    Some((names::device_key(device), Some(serde_json::to_vec(d).unwrap_or_default())))
                }
                Action::Forget(device) => Some((names::device_key(device), None)),
                Action::DesireGroup(_) => None,
            })
            .collect();
        let after = &after;
        let writes = writes.into_iter().map(|(key, value)| {
            let store = store.clone();
            async move {
                match value {
                    Some(v) => store
                        .put(&key, v.into())
                        .await
                        .map(|_| ())
                        .map_err(|e| FleetError::nats(format!("writing {DESIRED}/{key}"), e)),
                    None => self.link.delete_after(DESIRED, &key, Some(after)).await,
                }
            }
        });
        let results: Vec<Result<(), FleetError>> =
            futures_util::stream::iter(writes).buffer_unordered(64).collect().await;
        results.into_iter().collect()
    }

    /// Re-issue the desired state of every member still working on it.
    async fn reconcile(&self, rollout: &Rollout) -> Result<(), FleetError> {
        for (device, m) in &rollout.members {
            if m.outcome == Outcome::Updated {
                continue;
            }
            let d = rollout.desired(m.attempt);
            let key = names::device_key(device);
            let current = self.link.get_latest(DESIRED, &key).await?;
            if current.is_none_or(|c| serde_json::from_slice::<DesiredState>(&c.value).ok().as_ref() != Some(&d)) {
                self.link.put(DESIRED, &key, serde_json::to_vec(&d).unwrap_or_default()).await?;
            }
        }
        Ok(())
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
