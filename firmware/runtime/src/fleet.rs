//! The fleet agent in the runtime (`[fleet]`; off when absent): one thread
//! with a small async executor, driving this device through the same
//! device interface as the control socket and the management API; and the
//! fleet bus between apps ([`start_bus`]), on a thread of its own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use trellis_appfmt::TrustList;
use trellis_control::Device;
use trellis_fleet::agent::{Agent, AgentConfig};
use trellis_fleet::clock::SystemClock;
use trellis_fleet::link::{Credentials, Link};

use crate::{Runtime, RuntimeConfig, paths};

/// `[fleet]`: where the fleet's servers are and who this device is there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FleetConfig {
    /// Server URLs (`tls://fleet.example:4222`).
    pub servers: Vec<String>,
    /// The CA of the servers' certificates.
    pub ca: PathBuf,
    /// The device's certificate (default: the management API's, one identity).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Its key (default: the management API's).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The device's id: its certificate's common name (default: the hostname).
    #[serde(default)]
    pub device: Option<String>,
    /// Its group.
    pub group: String,
    /// Its board (default: `TRELLIS_BOARD` of the firmware's release file).
    #[serde(default)]
    pub board: Option<String>,
    /// How often the desired state is read without a change notice, in seconds.
    #[serde(default = "FleetConfig::default_interval_s")]
    pub poll_s: u64,
    /// How often the report is rewritten when nothing changed, in seconds.
    #[serde(default = "FleetConfig::default_interval_s")]
    pub heartbeat_s: u64,
    /// Public keys (`.pub` files or directories) whose release signatures
    /// the device accepts (read-only in the image: a key on the data
    /// partition would let whoever can write it sign releases).
    #[serde(default = "FleetConfig::default_trust")]
    pub trust: Vec<PathBuf>,
}

impl FleetConfig {
    const fn default_interval_s() -> u64 {
        30
    }
    fn default_trust() -> Vec<PathBuf> {
        vec![PathBuf::from(paths::FLEET_TRUST_DIR)]
    }
}

/// The fleet configuration: the image's `[fleet]`, else the device's
/// provisioning file on the data partition (`fleet.toml` in the state
/// directory), else none (the agent is off).
///
/// # Errors
/// The provisioning file exists and is not valid, named.
pub fn configured(config: &RuntimeConfig) -> Result<Option<FleetConfig>, String> {
    if let Some(f) = &config.fleet {
        return Ok(Some(f.clone()));
    }
    let path = config.state_dir.join(paths::state::FLEET_PROVISION);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map(Some).map_err(|e| format!("fleet: {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("fleet: {}: {e}", path.display())),
    }
}

/// A field of the firmware's release file (`TRELLIS_VERSION=…`).
#[must_use]
pub fn release_field(key: &str) -> Option<String> {
    let release = std::fs::read_to_string(paths::RELEASE_FILE).ok()?;
    release.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')).map(|v| v.trim().to_owned())
}

/// Start the agent for `device` as `config.fleet` says.
///
/// # Errors
/// The configuration is incomplete (a certificate with no default), the
/// trust list cannot be read, or the agent's state directory cannot be made.
pub fn start(config: &RuntimeConfig, fleet: &FleetConfig, device: Arc<dyn Device>) -> Result<(), String> {
    let (id, creds) = identity(config, fleet)?;
    let board = fleet.board.clone().or_else(|| release_field("TRELLIS_BOARD")).unwrap_or_else(|| "unknown".into());
    let version = release_field("TRELLIS_VERSION").unwrap_or_else(|| "unknown".into());
    let mut agent_config = AgentConfig::new(
        &id,
        &fleet.group,
        &board,
        crate::INTERFACE_VERSION,
        &version,
        &config.state_dir.join(paths::state::FLEET),
    );
    agent_config.poll = Duration::from_secs(fleet.poll_s.max(1));
    agent_config.heartbeat = Duration::from_secs(fleet.heartbeat_s.max(1));
    let keys: Vec<PathBuf> = fleet.trust.iter().filter(|p| p.exists()).cloned().collect();
    let trust = TrustList::load(&keys).map_err(|e| format!("fleet: trust list: {e}"))?;
    if trust.is_empty() {
        tracing::warn!("fleet: no release signing key is trusted: every release will be refused");
    }
    let agent = Agent::new(agent_config, device, trust, Arc::new(SystemClock)).map_err(|e| format!("fleet: {e}"))?;
    linked_thread("fleet", "fleet agent", creds, id, |link, _| agent.run(link))
}

/// The device's id and its credentials for the fleet's servers.
fn identity(config: &RuntimeConfig, fleet: &FleetConfig) -> Result<(String, Credentials), String> {
    let api = config.api.as_ref();
    let cert = fleet.cert.clone().or_else(|| api.map(|a| a.cert.clone()));
    let key = fleet.key.clone().or_else(|| api.map(|a| a.key.clone()));
    let (Some(cert), Some(key)) = (cert, key) else {
        return Err("fleet: no certificate: set fleet.cert and fleet.key (or configure [api])".into());
    };
    let id = match &fleet.device {
        Some(id) => id.clone(),
        None => std::fs::read_to_string(paths::HOSTNAME)
            .map(|h| h.trim().to_owned())
            .map_err(|e| format!("fleet: hostname: {e}"))?,
    };
    Ok((id, Credentials { servers: fleet.servers.clone(), ca: fleet.ca.clone(), cert, key }))
}

/// Start the fleet bus between apps (docs/fleet.md, "The app bus"): its own
/// thread and executor and its own connection with the device's certificate,
/// so the agent's downloads and installs never hold up apps' messages.
/// Apps' `fleet/...` publishes go out as this device's, and the patterns
/// they subscribe to come in. Nothing happens when the bus was started already.
///
/// # Errors
/// As [`start`]: no certificate, or no thread.
pub fn start_bus(runtime: &Runtime, config: &RuntimeConfig, fleet: &FleetConfig) -> Result<(), String> {
    let (id, creds) = identity(config, fleet)?;
    let Some(driver) = runtime.fleet_bus() else {
        return Ok(());
    };
    linked_thread("fleet-bus", "fleet bus", creds, id, |link, id| driver.run(link, id))
}

/// Run `run` on a thread of its own (`thread`) with a small executor, once
/// connected to the fleet's servers as device `id`; `what` names it in the log.
fn linked_thread<F, Fut>(thread: &str, what: &'static str, creds: Credentials, id: String, run: F) -> Result<(), String>
where
    F: FnOnce(Link, String) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    std::thread::Builder::new()
        .name(thread.into())
        .spawn(move || {
            let executor = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => return tracing::error!("{what}: no executor: {e}"),
            };
            executor.block_on(async move {
                match Link::connect(&creds, Some(&id), true).await {
                    Ok(link) => {
                        tracing::info!(device = %id, "{what} started");
                        run(link, id).await;
                    }
                    Err(e) => tracing::error!("{what}: {e}"),
                }
            });
        })
        .map_err(|e| format!("{what}: no thread: {e}"))?;
    Ok(())
}
