//! Desired state (what the operator wants a device to run), reported state
//! (what it runs), and events (what happened, in order): the JSON values of
//! the fleet's buckets and stream.

use serde::{Deserialize, Serialize};

/// When a device may apply a normal release: on these days, between these
/// times (`HH:MM`, `end` before `start` crosses midnight), on the device's
/// own clock in UTC, so the window holds while it is offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Window {
    /// `mon`..`sun`; empty: every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// Opening time, `HH:MM`.
    pub start: String,
    /// Closing time, `HH:MM`.
    pub end: String,
}

/// What a device or a group should run (in [`crate::names::DESIRED`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DesiredState {
    /// The release to run.
    pub release: String,
    /// The rollout that set it (none for a pin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    /// Apply without asking the apps' consent hooks.
    #[serde(default)]
    pub forced: bool,
    /// When a normal release may be applied (none: any time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// Set by an operator (`trellis fleet pin`): rollouts leave this device
    /// or group alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
    /// Raised by a rollout to ask a device that failed this release to try
    /// again (after its penalty); a device tries each attempt once.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's signature
fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl DesiredState {
    /// Run `release`, nothing else said.
    #[must_use]
    pub fn release(release: &str) -> Self {
        Self { release: release.to_owned(), rollout: None, forced: false, window: None, pinned: false, attempt: 0 }
    }
}

/// An app as a device reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReportedApp {
    /// Name.
    pub name: String,
    /// Version running (or last loaded).
    pub version: String,
    /// `running`, `crashed`, `failed`, ...
    pub state: String,
}

/// What a device runs and how it is (in [`crate::names::REPORTED`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReportedState {
    /// The device.
    pub device: String,
    /// The device's clock when it wrote this (Unix milliseconds).
    pub seen_ms: u64,
    /// The release it runs in full, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// The release it is working towards (its desired state), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The attempt at `target` (see [`DesiredState::attempt`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    /// Its firmware version.
    pub firmware: String,
    /// The slot it booted (`A`, `B`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// Its apps.
    #[serde(default)]
    pub apps: Vec<ReportedApp>,
    /// Every app running and no firmware on trial (a failed attempt at a
    /// release shows in `phase` and `error`, not here).
    pub healthy: bool,
    /// What it is doing: `idle`, `downloading`, `installing`, `trial-boot`,
    /// `deferred`, or `failed` (the last attempt at `target` failed: `error`).
    pub phase: String,
    /// Progress of that, 0-100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    /// The last error, if the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// An artifact arrived whole.
    Downloaded,
    /// Its hash and the release's signature checked.
    Verified,
    /// Installed (an app running, a firmware slot written).
    Installed,
    /// The release runs healthy (after the trial boot, for firmware).
    Healthy,
    /// The new firmware did not come up healthy; the device went back.
    RolledBack,
    /// Refused (signature, hash, board, interface, an app's load): with the reason.
    Refused,
    /// Held by a maintenance window or an app's consent hook.
    Deferred,
}

/// One event on `trellis.events.<device>` (the fleet's audit log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Event {
    /// The device.
    pub device: String,
    /// The device's clock (Unix milliseconds).
    pub at_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// The release it concerns.
    pub release: String,
    /// Why (refusals, roll-backs, deferrals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn values_read_back_and_unknown_fields_are_refused() {
        let e = Event {
            device: "pi-1".into(),
            at_ms: 1,
            kind: EventKind::RolledBack,
            release: "r-1".into(),
            reason: Some("health".into()),
        };
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"kind\":\"rolled-back\""), "{json}");
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
        let err = serde_json::from_str::<DesiredState>(r#"{"release":"r","force":true}"#).unwrap_err();
        assert!(err.to_string().contains("force"), "{err}");
    }
}
