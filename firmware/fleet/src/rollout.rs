//! Rollouts: a release deployed to a group in waves. The plan (wave sizes,
//! soak time, thresholds, penalties) and the progress are one value in the
//! rollouts bucket; [`Rollout::step`] is the controller's whole decision,
//! a function of that value, the group's devices and their reports, and the
//! time, so that any number of controllers reach the same one and the first
//! to compare-and-set it wins.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::state::{DesiredState, ReportedState, Window};

/// How big a wave is: a number of devices, or a share of the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaveSize {
    /// This many devices.
    Count(u32),
    /// This percentage of the group (rounded up, at least one device).
    Percent(u8),
}

impl std::fmt::Display for WaveSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Count(n) => write!(f, "{n}"),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl std::str::FromStr for WaveSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("wave size {s:?} is not a count (5) or a percentage (10%)");
        match s.strip_suffix('%') {
            Some(p) => match p.parse::<u8>() {
                Ok(p @ 1..=100) => Ok(Self::Percent(p)),
                _ => Err(bad()),
            },
            None => match s.parse::<u32>() {
                Ok(n @ 1..) => Ok(Self::Count(n)),
                _ => Err(bad()),
            },
        }
    }
}

impl Serialize for WaveSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WaveSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The plan of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Plan {
    /// Wave sizes, in order; the last wave takes every device left.
    pub waves: Vec<WaveSize>,
    /// Minimum time a wave runs before the next starts.
    pub soak_s: u64,
    /// Share of a wave's devices that must run the release healthy before
    /// the next wave starts (percent).
    pub success_pct: u8,
    /// Share of the devices given the release so far that may be failed at
    /// once; reaching it halts the rollout (percent; 0 halts at the first).
    pub error_pct: u8,
    /// Attempts a device gets; after a failure it waits its penalty first.
    pub attempts: u32,
    /// The penalty after a device's first failure; doubles after each.
    pub penalty_s: u64,
    /// Apply without asking the apps' consent.
    #[serde(default)]
    pub forced: bool,
    /// When devices may apply it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
}

impl Default for Plan {
    /// One device, then 10 %, then everyone; ten minutes' soak; every device
    /// of a wave healthy to advance; halt when 20 % fail; two attempts, the
    /// second after five minutes.
    fn default() -> Self {
        Self {
            waves: vec![WaveSize::Count(1), WaveSize::Percent(10), WaveSize::Percent(100)],
            soak_s: 600,
            success_pct: 100,
            error_pct: 20,
            attempts: 2,
            penalty_s: 300,
            forced: false,
            window: None,
        }
    }
}

impl Plan {
    /// Check the plan.
    ///
    /// # Errors
    /// The setting out of range, named.
    pub fn validate(&self) -> Result<(), String> {
        if self.waves.is_empty() {
            return Err("a plan needs at least one wave".into());
        }
        if self.success_pct > 100 || self.error_pct > 100 {
            return Err("thresholds are percentages (0 to 100)".into());
        }
        if self.attempts == 0 {
            return Err("a device needs at least one attempt".into());
        }
        if let Some(w) = &self.window {
            w.validate()?;
        }
        Ok(())
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Waves start as the thresholds allow.
    Running,
    /// Held by an operator: no new wave, no retry.
    Paused,
    /// Stopped by itself at the error threshold.
    Halted,
    /// Stopped by an operator; devices that had not updated went back to their group.
    Aborted,
    /// Every wave done; the group runs the release.
    Done,
}

impl State {
    /// Whether it can change again.
    #[must_use]
    pub fn finished(self) -> bool {
        matches!(self, Self::Aborted | Self::Done)
    }
}

/// How one device fares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Given the release, not there yet.
    Pending,
    /// Runs it, healthy.
    Updated,
    /// Its last attempt failed (refused, rolled back).
    Failed,
}

/// A device in a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Member {
    /// The wave it is in (0-based).
    pub wave: u32,
    /// Its attempt (the desired state's `attempt`).
    pub attempt: u32,
    /// How it fares.
    pub outcome: Outcome,
    /// When its last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_ms: Option<u64>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A rollout, as stored under its id in [`crate::names::ROLLOUTS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Rollout {
    /// Its id.
    pub id: String,
    /// The release.
    pub release: String,
    /// The group.
    pub group: String,
    /// The plan.
    pub plan: Plan,
    /// Where it is.
    pub state: State,
    /// Why it halted or was aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was created (Unix ms).
    pub created_ms: u64,
    /// The wave running (0-based); `waves.len()` when all have run.
    pub wave: u32,
    /// When that wave started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_started_ms: Option<u64>,
    /// The devices given the release so far.
    #[serde(default)]
    pub members: BTreeMap<String, Member>,
}

/// What the controller must write for a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Set `device.<id>` in the desired-state bucket.
    Desire(String, DesiredState),
    /// Set the group's desired state (the rollout is done).
    DesireGroup(DesiredState),
    /// Delete `device.<id>`: the device follows its group again.
    Forget(String),
}

impl Rollout {
    /// A new rollout of `release` to `group`.
    #[must_use]
    pub fn new(id: &str, release: &str, group: &str, plan: Plan, now_ms: u64) -> Self {
        Self {
            id: id.to_owned(),
            release: release.to_owned(),
            group: group.to_owned(),
            plan,
            state: State::Running,
            reason: None,
            created_ms: now_ms,
            wave: 0,
            wave_started_ms: None,
            members: BTreeMap::new(),
        }
    }

    /// The desired state this rollout gives a device at `attempt`.
    #[must_use]
    pub fn desired(&self, attempt: u32) -> DesiredState {
        DesiredState {
            release: self.release.clone(),
            rollout: Some(self.id.clone()),
            forced: self.plan.forced,
            window: self.plan.window.clone(),
            pinned: false,
            attempt,
        }
    }

    /// How many devices the waves up to and including `wave` cover, of `n`.
    fn covered(&self, wave: usize, n: usize) -> usize {
        if wave + 1 >= self.plan.waves.len() {
            return n;
        }
        let total: usize = self.plan.waves[..=wave]
            .iter()
            .map(|w| match *w {
                WaveSize::Count(c) => c as usize,
                WaveSize::Percent(p) => (n * usize::from(p)).div_ceil(100).max(1),
            })
            .sum();
        total.min(n)
    }

    /// Counts: (given the release, updated, failed).
    #[must_use]
    pub fn counts(&self) -> (usize, usize, usize) {
        let count = |o: Outcome| self.members.values().filter(|m| m.outcome == o).count();
        (self.members.len(), count(Outcome::Updated), count(Outcome::Failed))
    }

    /// One decision. `devices`: the group's devices that are not pinned;
    /// `reports`: their reported states. Returns what to write; `self` is
    /// the rollout's next value.
    pub fn step(&mut self, devices: &[String], reports: &BTreeMap<String, ReportedState>, now_ms: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.state.finished() || self.state == State::Halted {
            return actions;
        }
        // What the devices report.
        for (id, m) in &mut self.members {
            let Some(r) = reports.get(id) else { continue };
            if r.release.as_deref() == Some(self.release.as_str()) && r.healthy && r.phase == "idle" {
                m.outcome = Outcome::Updated;
                m.error = None;
            } else if m.outcome == Outcome::Pending
                && r.target.as_deref() == Some(self.release.as_str())
                && r.attempt == m.attempt
                && r.phase == "failed"
            {
                m.outcome = Outcome::Failed;
                m.failed_ms = Some(now_ms);
                m.error = r.error.clone();
            }
        }
        let (given, _, failed) = self.counts();
        if failed > 0 && failed * 100 >= usize::from(self.plan.error_pct) * given {
            let (first, m) = self
                .members
                .iter()
                .find(|(_, m)| m.outcome == Outcome::Failed)
                .map_or(("", None), |(d, m)| (d.as_str(), m.error.as_deref()));
            self.state = State::Halted;
            self.reason = Some(format!(
                "{failed} of {given} devices failed (error threshold {} %); {first}: {}",
                self.plan.error_pct,
                m.unwrap_or("failed")
            ));
            return actions;
        }
        if self.state == State::Paused {
            return actions;
        }
        // Penalties served: another attempt.
        let retry = self.desired(0);
        for (id, m) in &mut self.members {
            if m.outcome != Outcome::Failed || m.attempt + 1 >= self.plan.attempts {
                continue;
            }
            let penalty = self.plan.penalty_s.saturating_mul(1000).saturating_mul(1 << m.attempt.min(16));
            if m.failed_ms.is_some_and(|at| now_ms >= at.saturating_add(penalty)) {
                m.attempt += 1;
                m.outcome = Outcome::Pending;
                m.failed_ms = None;
                actions.push(Action::Desire(id.clone(), DesiredState { attempt: m.attempt, ..retry.clone() }));
            }
        }
        // The wave running: start it, or finish it.
        let wave = self.wave as usize;
        if wave >= self.plan.waves.len() {
            return actions;
        }
        if self.wave_started_ms.is_none() {
            let target = self.covered(wave, devices.len());
            let mut fresh: Vec<&String> = devices.iter().filter(|d| !self.members.contains_key(*d)).collect();
            fresh.sort();
            for id in fresh.into_iter().take(target.saturating_sub(self.members.len())) {
                self.members.insert(
                    id.clone(),
                    Member { wave: self.wave, attempt: 0, outcome: Outcome::Pending, failed_ms: None, error: None },
                );
                actions.push(Action::Desire(id.clone(), self.desired(0)));
            }
            self.wave_started_ms = Some(now_ms);
            return actions;
        }
        let in_wave: Vec<&Member> = self.members.values().filter(|m| m.wave == self.wave).collect();
        let updated = in_wave.iter().filter(|m| m.outcome == Outcome::Updated).count();
        let soaked = self.wave_started_ms.is_some_and(|t| now_ms >= t.saturating_add(self.plan.soak_s * 1000));
        if soaked && updated * 100 >= usize::from(self.plan.success_pct) * in_wave.len() {
            self.wave += 1;
            self.wave_started_ms = None;
            if self.wave as usize >= self.plan.waves.len() {
                self.state = State::Done;
                actions.push(Action::DesireGroup(self.desired(0)));
                for (id, m) in &self.members {
                    if m.outcome == Outcome::Updated {
                        actions.push(Action::Forget(id.clone()));
                    }
                }
            }
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn devices(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("pi-{i:03}")).collect()
    }

    fn report(device: &str, release: Option<&str>, target: &str, phase: &str, healthy: bool) -> ReportedState {
        ReportedState {
            device: device.into(),
            seen_ms: 0,
            release: release.map(Into::into),
            target: Some(target.into()),
            attempt: 0,
            firmware: "1.0.0".into(),
            slot: None,
            apps: Vec::new(),
            healthy,
            phase: phase.into(),
            progress: None,
            error: (phase == "failed").then(|| "refused".into()),
        }
    }

    fn plan() -> Plan {
        Plan {
            waves: vec![WaveSize::Count(1), WaveSize::Percent(50), WaveSize::Percent(100)],
            soak_s: 10,
            ..Plan::default()
        }
    }

    fn desired_devices(actions: &[Action]) -> Vec<&str> {
        actions.iter().filter_map(|a| if let Action::Desire(d, _) = a { Some(d.as_str()) } else { None }).collect()
    }

    #[test]
    fn wave_sizes_parse_and_print() {
        assert_eq!("5".parse::<WaveSize>().unwrap(), WaveSize::Count(5));
        assert_eq!("10%".parse::<WaveSize>().unwrap(), WaveSize::Percent(10));
        for bad in ["0", "0%", "101%", "x", "-1"] {
            assert!(bad.parse::<WaveSize>().unwrap_err().contains(bad), "{bad}");
        }
        let json = serde_json::to_string(&plan()).unwrap();
        assert!(json.contains(r#""waves":["1","50%","100%"]"#), "{json}");
    }

    #[test]
    fn waves_advance_after_the_soak_when_enough_succeed() {
        let group = devices(10);
        let mut r = Rollout::new("r", "v2", "north", plan(), 0);
        let mut reports = BTreeMap::new();
        assert_eq!(desired_devices(&r.step(&group, &reports, 0)), ["pi-000"]);
        // Healthy at once, but the wave soaks for 10 s.
        reports.insert("pi-000".into(), report("pi-000", Some("v2"), "v2", "idle", true));
        assert!(r.step(&group, &reports, 5_000).is_empty());
        assert_eq!(r.wave, 0);
        assert!(r.step(&group, &reports, 10_000).is_empty());
        assert_eq!(r.wave, 1, "soaked and healthy: the next wave");
        // Wave 2: 50 % of 10 = 5 more.
        assert_eq!(desired_devices(&r.step(&group, &reports, 10_500)).len(), 5);
        for d in &group[1..6] {
            reports.insert(d.clone(), report(d, Some("v2"), "v2", "idle", true));
        }
        r.step(&group, &reports, 21_000);
        assert_eq!(desired_devices(&r.step(&group, &reports, 21_000)).len(), 4, "the last wave takes the rest");
        for d in &group {
            reports.insert(d.clone(), report(d, Some("v2"), "v2", "idle", true));
        }
        let done = r.step(&group, &reports, 40_000);
        assert_eq!(r.state, State::Done);
        assert!(done.contains(&Action::DesireGroup(r.desired(0))));
        assert_eq!(done.iter().filter(|a| matches!(a, Action::Forget(_))).count(), 10);
        assert!(r.step(&group, &reports, 50_000).is_empty(), "done is done");
    }

    #[test]
    fn the_error_threshold_halts_and_a_wave_waits_for_its_successes() {
        let group = devices(10);
        let mut r = Rollout::new("r", "v2", "north", Plan { error_pct: 30, ..plan() }, 0);
        let mut reports = BTreeMap::new();
        r.step(&group, &reports, 0);
        reports.insert("pi-000".into(), report("pi-000", Some("v2"), "v2", "idle", true));
        r.step(&group, &reports, 10_000);
        r.step(&group, &reports, 10_000);
        // One of six failed: 17 % < 30 %, and the wave waits for its successes.
        reports.insert("pi-001".into(), report("pi-001", Some("v1"), "v2", "failed", false));
        r.step(&group, &reports, 30_000);
        assert_eq!((r.state, r.wave), (State::Running, 1));
        assert_eq!(r.counts(), (6, 1, 1));
        // A second: 33 % >= 30 %: halted, naming a device and its error.
        reports.insert("pi-002".into(), report("pi-002", Some("v1"), "v2", "failed", false));
        r.step(&group, &reports, 31_000);
        assert_eq!(r.state, State::Halted);
        let reason = r.reason.clone().unwrap();
        assert!(reason.contains("2 of 6 devices failed") && reason.contains("pi-001: refused"), "{reason}");
        for d in &group {
            reports.insert(d.clone(), report(d, Some("v2"), "v2", "idle", true));
        }
        assert!(r.step(&group, &reports, 99_000).is_empty(), "a halted rollout does nothing");
        assert_eq!(r.members.len(), 6, "and gives no one else the release");
    }

    #[test]
    fn a_failed_device_retries_after_its_penalty() {
        let group = devices(3);
        let plan = Plan { waves: vec![WaveSize::Percent(100)], error_pct: 50, attempts: 3, penalty_s: 60, ..plan() };
        let mut r = Rollout::new("r", "v2", "north", plan, 0);
        let mut reports = BTreeMap::new();
        assert_eq!(desired_devices(&r.step(&group, &reports, 0)).len(), 3);
        reports.insert("pi-000".into(), report("pi-000", None, "v2", "failed", false));
        assert!(r.step(&group, &reports, 1_000).is_empty());
        assert!(r.step(&group, &reports, 60_999).is_empty(), "serving the penalty");
        let retry = r.step(&group, &reports, 61_000);
        assert!(matches!(&retry[..], [Action::Desire(d, s)] if d == "pi-000" && s.attempt == 1), "{retry:?}");
        // The old report (attempt 0) does not fail attempt 1.
        assert!(r.step(&group, &reports, 62_000).is_empty());
        let mut again = report("pi-000", None, "v2", "failed", false);
        again.attempt = 1;
        reports.insert("pi-000".into(), again);
        r.step(&group, &reports, 70_000);
        assert!(r.step(&group, &reports, 70_000 + 119_999).is_empty(), "the penalty doubles");
        assert_eq!(desired_devices(&r.step(&group, &reports, 190_000)), ["pi-000"]);
        assert_eq!(r.state, State::Running);
    }

    #[test]
    fn a_paused_rollout_starts_no_wave() {
        let group = devices(4);
        let mut r = Rollout::new("r", "v2", "north", plan(), 0);
        r.state = State::Paused;
        assert!(r.step(&group, &BTreeMap::new(), 0).is_empty());
        assert!(r.members.is_empty());
    }
}
