//! `trellis fleet`: the operator's commands for a fleet on NATS JetStream
//! (docs/fleet.md). Every command takes `--json`; errors are one line naming
//! the cause.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use trellis_appfmt::{
    AppFile, Manifest, built_for, interface_compatible, interface_imports, load_signing_key, semver_triple,
};
use trellis_fleet::clock::{Clock, SystemClock};
use trellis_fleet::controller::Controller;
use trellis_fleet::link::{Credentials, Link};
use trellis_fleet::ops::{self, Target};
use trellis_fleet::release::{Part, Release, Urgency};
use trellis_fleet::rollout::{Outcome, Plan, Rollout, State, WaveSize};
use trellis_fleet::server::{Cluster, DeviceUser, ServerConfig, Tls};
use trellis_fleet::state::Window;

/// Where the fleet is and who the operator is: a context file (TOML:
/// `servers`, `ca`, `cert`, `key`), each field overridable (`--server`,
/// `--tls-ca`, `--tls-cert`, `--tls-key`).
#[derive(Debug, Args)]
pub struct Connection {
    /// The context file [default: $TRELLIS_FLEET_CONTEXT, or ~/.config/trellis/fleet.toml].
    #[arg(long, env = "TRELLIS_FLEET_CONTEXT", global = true)]
    context: Option<PathBuf>,
    /// A server URL (`tls://host:4222`; repeatable).
    #[arg(long = "server", global = true)]
    servers: Vec<String>,
    /// The servers' CA certificate.
    #[arg(id = "tls_ca", long = "tls-ca", global = true)]
    ca: Option<PathBuf>,
    /// The operator's certificate.
    #[arg(id = "tls_cert", long = "tls-cert", global = true)]
    cert: Option<PathBuf>,
    /// The operator's key.
    #[arg(id = "tls_key", long = "tls-key", global = true)]
    key: Option<PathBuf>,
}

impl Connection {
    fn credentials(&self) -> Result<Credentials> {
        let file = self.context.clone().or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/trellis/fleet.toml")).filter(|p| p.exists())
        });
        let mut creds = match &file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("fleet context {}", path.display()))?;
                toml::from_str::<Credentials>(&text).with_context(|| format!("fleet context {}", path.display()))?
            }
            None => Credentials { servers: Vec::new(), ca: PathBuf::new(), cert: PathBuf::new(), key: PathBuf::new() },
        };
        if !self.servers.is_empty() {
            creds.servers.clone_from(&self.servers);
        }
        for (field, value) in [(&mut creds.ca, &self.ca), (&mut creds.cert, &self.cert), (&mut creds.key, &self.key)] {
            if let Some(v) = value {
                field.clone_from(v);
            }
        }
        if creds.servers.is_empty() || creds.ca.as_os_str().is_empty() || creds.cert.as_os_str().is_empty() {
            bail!("no fleet to talk to: pass --context FILE (or --server, --tls-ca, --tls-cert, --tls-key)");
        }
        Ok(creds)
    }
}

/// The operator's fleet commands.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Create the fleet's buckets, object store and events stream (those that exist stay).
    Setup {
        /// Copies of each (3 on a 3-node cluster).
        #[arg(long, default_value_t = 1)]
        replicas: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a device to the registry, in a group.
    Register {
        /// Its id (its certificate's common name).
        device: String,
        /// Its group.
        #[arg(long)]
        group: String,
        /// Its board.
        #[arg(long, default_value = "rpi4")]
        board: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The devices: group, release, firmware, slot, health, phase, last seen.
    Devices {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Releases.
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// Roll a release out to a group in waves.
    Deploy(DeployArgs),
    /// Rollouts.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Hold a running rollout: no new wave, no retry.
    Pause {
        /// The rollout.
        rollout: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Go on with a paused or halted rollout (failed devices try again).
    Resume {
        /// The rollout.
        rollout: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop a rollout: devices that have not updated follow their group again.
    Abort {
        /// The rollout.
        rollout: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Keep a device or a group on a release: rollouts leave it alone.
    Pin {
        /// The release.
        release: String,
        #[command(flatten)]
        target: PinTarget,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Undo `pin`.
    Unpin {
        #[command(flatten)]
        target: PinTarget,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the rollout controller (as many as you like: they agree through the server).
    Controller {
        /// How often each rollout is stepped, in milliseconds.
        #[arg(long, default_value_t = 500)]
        tick_ms: u64,
        /// Stop after this many seconds (default: run until interrupted).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Print a `nats-server` configuration for the fleet: JetStream, mutual
    /// TLS with each certificate mapped to its user, and each device's permissions.
    ServerConfig(ServerConfigArgs),
}

/// `--device D` or `--group G`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct PinTarget {
    /// A device.
    #[arg(long)]
    device: Option<String>,
    /// A group.
    #[arg(long)]
    group: Option<String>,
}

impl PinTarget {
    fn target(&self) -> Target {
        match (&self.device, &self.group) {
            (Some(d), _) => Target::Device(d.clone()),
            (None, Some(g)) => Target::Group(g.clone()),
            (None, None) => Target::Group(String::new()),
        }
    }
}

/// Release commands.
#[derive(Debug, Subcommand)]
// Parsed once per run of the CLI: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum ReleaseCommand {
    /// Make a signed release from app files and/or a firmware bundle and
    /// publish it with its artifacts.
    Create {
        /// Its id (`thermostat-2.1.0`).
        id: String,
        /// The release-signing key (`trellis app keygen`; the devices trust its public half).
        #[arg(long)]
        key: PathBuf,
        /// An app file (repeatable).
        #[arg(long = "app")]
        apps: Vec<PathBuf>,
        /// A firmware bundle (`make bundle`).
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// The bundle's firmware version [default: the bundle's, read by `rauc info`].
        #[arg(long)]
        firmware_version: Option<String>,
        /// The app interface the bundle's runtime provides, checked on each device
        /// against its installed apps [default: the bundle's description, `apps: trellis:app@VERSION`].
        #[arg(long)]
        firmware_app_interface: Option<String>,
        /// The board it is for.
        #[arg(long, default_value = "rpi4")]
        board: String,
        /// The app interface its apps need [default: the newest any of them was built for].
        #[arg(long)]
        app_interface: Option<String>,
        /// `critical`: not held by maintenance windows or apps' consent.
        #[arg(long, default_value = "normal")]
        urgency: String,
        /// Apply the firmware before the apps.
        #[arg(long)]
        firmware_first: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The releases.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// How to roll a release out.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The release.
    release: String,
    /// The group.
    #[arg(long)]
    group: String,
    /// Wave sizes, a count or a percentage each; the last takes everyone left.
    #[arg(long, default_value = "1,10%,100%", value_delimiter = ',')]
    waves: Vec<WaveSize>,
    /// Minimum seconds each wave runs before the next.
    #[arg(long, default_value_t = 600)]
    soak_s: u64,
    /// Percentage of a wave that must run it healthy to go on.
    #[arg(long, default_value_t = 100)]
    success: u8,
    /// Percentage of devices failed at once that halts the rollout.
    #[arg(long, default_value_t = 20)]
    errors: u8,
    /// Attempts per device.
    #[arg(long, default_value_t = 2)]
    attempts: u32,
    /// Seconds a failed device waits before its next attempt (doubling).
    #[arg(long, default_value_t = 300)]
    penalty_s: u64,
    /// Do not ask the apps' consent.
    #[arg(long)]
    forced: bool,
    /// When devices may apply it: `[DAYS/]HH:MM-HH:MM` in UTC (`mon,tue/02:00-05:00`).
    #[arg(long)]
    window: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Rollout commands.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// A rollout's progress, wave by wave [default: the newest].
    Status {
        /// The rollout.
        rollout: Option<String>,
        /// Follow it until it is done, halted or aborted.
        #[arg(short, long)]
        follow: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every rollout.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Where a server listens and who may connect.
#[derive(Debug, Args)]
pub struct ServerConfigArgs {
    /// The server's name.
    #[arg(long, default_value = "trellis-1")]
    name: String,
    /// Where clients connect.
    #[arg(long, default_value = "127.0.0.1:4222")]
    listen: std::net::SocketAddr,
    /// JetStream's storage directory.
    #[arg(long)]
    store: PathBuf,
    /// The server's certificate.
    #[arg(long)]
    server_cert: PathBuf,
    /// Its key.
    #[arg(long)]
    server_key: PathBuf,
    /// The CA of clients' certificates.
    #[arg(long)]
    client_ca: PathBuf,
    /// Cluster listen address (with --route: a cluster node).
    #[arg(long)]
    cluster: Option<std::net::SocketAddr>,
    /// Another node's cluster address (repeatable).
    #[arg(long = "route")]
    routes: Vec<std::net::SocketAddr>,
    /// An operator's certificate common name (repeatable).
    #[arg(long = "operator")]
    operators: Vec<String>,
    /// For an upgrade, while the new firmware reaches every device: the
    /// previous release's layout (one account, which lets a device write
    /// through the answer to its own request), granting what either agent needs.
    #[arg(long)]
    previous_agents: bool,
    /// A device, `ID:GROUP` (repeatable).
    #[arg(long = "device")]
    devices: Vec<String>,
}

fn now() -> u64 {
    SystemClock.now_ms()
}

fn parse_window(text: &str) -> Result<Window> {
    let (days, times) = match text.split_once('/') {
        Some((d, t)) => (d.split(',').map(str::to_owned).collect(), t),
        None => (Vec::new(), text),
    };
    let Some((start, end)) = times.split_once('-') else {
        bail!("window {text:?} is not [DAYS/]HH:MM-HH:MM");
    };
    let w = Window { days, start: start.to_owned(), end: end.to_owned() };
    w.validate().map_err(anyhow::Error::msg)?;
    Ok(w)
}

/// Run a fleet command.
///
/// # Errors
/// Why it could not be done, in one line.
pub fn run(connection: &Connection, command: FleetCommand) -> Result<()> {
    if let FleetCommand::ServerConfig(args) = &command {
        return server_config(args);
    }
    let creds = connection.credentials()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("no async executor")?;
    runtime.block_on(async move {
        let link = Link::connect(&creds, None, false).await?;
        dispatch(&link, command).await
    })
}

async fn dispatch(link: &Link, command: FleetCommand) -> Result<()> {
    match command {
        FleetCommand::Setup { replicas, json } => {
            ops::setup(link, replicas).await?;
            if json {
                println!("{}", serde_json::json!({ "replicas": replicas }));
            } else {
                println!("fleet buckets ready ({replicas} replica{})", if replicas == 1 { "" } else { "s" });
            }
        }
        FleetCommand::Register { device, group, board, json } => {
            ops::register(link, &device, &group, &board).await?;
            if json {
                println!("{}", serde_json::json!({ "device": device, "group": group, "board": board }));
            } else {
                println!("registered {device} in group {group} ({board})");
            }
        }
        FleetCommand::Devices { json } => devices(link, json).await?,
        FleetCommand::Release(ReleaseCommand::Create {
            id,
            key,
            apps,
            bundle,
            firmware_version,
            firmware_app_interface,
            board,
            app_interface,
            urgency,
            firmware_first,
            json,
        }) => {
            let (release, artifacts) = build_release(
                &id,
                &key,
                &apps,
                bundle.as_deref(),
                firmware_version,
                firmware_app_interface,
                &board,
                app_interface,
                &urgency,
                firmware_first,
            )?;
            ops::publish(link, &release, &artifacts).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&release)?);
            } else {
                println!(
                    "published release {} ({} app(s){})",
                    release.id,
                    release.apps.len(),
                    if release.firmware.is_some() { ", firmware" } else { "" }
                );
            }
        }
        FleetCommand::Release(ReleaseCommand::List { json }) => {
            let releases = ops::releases(link).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&releases)?);
            } else {
                for r in releases {
                    let apps: Vec<String> = r.apps.iter().map(|a| format!("{} {}", a.name, a.version)).collect();
                    let fw = r.firmware.as_ref().map(|f| format!("firmware {}", f.version));
                    let parts: Vec<String> = apps.into_iter().chain(fw).collect();
                    println!("{:<28} {:<8} {:?}  {}", r.id, r.board, r.urgency, parts.join(", "));
                }
            }
        }
        FleetCommand::Deploy(args) => {
            let window = args.window.as_deref().map(parse_window).transpose()?;
            let plan = Plan {
                waves: args.waves,
                soak_s: args.soak_s,
                success_pct: args.success,
                error_pct: args.errors,
                attempts: args.attempts,
                penalty_s: args.penalty_s,
                forced: args.forced,
                window,
            };
            let rollout = ops::deploy(link, &args.release, &args.group, plan, now()).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&rollout)?);
            } else {
                let waves: Vec<String> = rollout.plan.waves.iter().map(ToString::to_string).collect();
                println!(
                    "rollout {}: {} to group {} in waves {} (soak {} s, advance at {} % healthy, halt at {} % failed)",
                    rollout.id,
                    rollout.release,
                    rollout.group,
                    waves.join(", "),
                    rollout.plan.soak_s,
                    rollout.plan.success_pct,
                    rollout.plan.error_pct
                );
            }
        }
        FleetCommand::Rollout(RolloutCommand::List { json }) => {
            let all = ops::rollouts(link).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                for r in all {
                    let (given, updated, failed) = r.counts();
                    println!(
                        "{:<28} {:<24} {:<10} {:<8?} {updated}/{given} updated, {failed} failed",
                        r.id, r.release, r.group, r.state
                    );
                }
            }
        }
        FleetCommand::Rollout(RolloutCommand::Status { rollout, follow, json }) => {
            status(link, rollout.as_deref(), follow, json).await?;
        }
        FleetCommand::Pause { rollout, json } => print_state(&ops::pause(link, &rollout).await?, json)?,
        FleetCommand::Resume { rollout, json } => print_state(&ops::resume(link, &rollout).await?, json)?,
        FleetCommand::Abort { rollout, json } => print_state(&ops::abort(link, &rollout).await?, json)?,
        FleetCommand::Pin { release, target, json } => {
            ops::pin(link, &target.target(), &release).await?;
            if json {
                println!("{}", serde_json::json!({ "pinned": describe_target(&target.target()), "release": release }));
            } else {
                println!("pinned {} to {release}", describe_target(&target.target()));
            }
        }
        FleetCommand::Unpin { target, json } => {
            ops::unpin(link, &target.target()).await?;
            if json {
                println!("{}", serde_json::json!({ "unpinned": describe_target(&target.target()) }));
            } else {
                println!("unpinned {}", describe_target(&target.target()));
            }
        }
        FleetCommand::Controller { tick_ms, seconds } => {
            let controller =
                Controller::new(link.clone(), std::sync::Arc::new(SystemClock), Duration::from_millis(tick_ms));
            tracing::info!("rollout controller running");
            match seconds {
                Some(s) => {
                    let _ = tokio::time::timeout(Duration::from_secs(s), controller.run()).await;
                }
                None => controller.run().await,
            }
        }
        FleetCommand::ServerConfig(_) => {}
    }
    Ok(())
}

fn describe_target(t: &Target) -> String {
    match t {
        Target::Device(d) => format!("device {d}"),
        Target::Group(g) => format!("group {g}"),
    }
}

fn print_state(r: &Rollout, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        println!(
            "rollout {}: {:?}{}",
            r.id,
            r.state,
            r.reason.as_deref().map(|x| format!(" ({x})")).unwrap_or_default()
        );
    }
    Ok(())
}

/// Each artifact's name (an app's, or `firmware`) and bytes.
type Artifacts = Vec<(String, Vec<u8>)>;

/// The app interface a release's apps need: `given`, or the newest any of them
/// was built for (this build's own, from `wit/trellis.wit`, when none imports
/// the interface). Every app must run on it: an app whose import names no
/// version, or of another line than the rest, is refused by name.
fn needed_interface(given: Option<String>, apps: &[(Manifest, Option<String>, Vec<u8>)]) -> Result<String> {
    let built: Vec<(&Manifest, &str)> = apps.iter().filter_map(|(m, v, _)| Some((m, v.as_deref()?))).collect();
    if let Some((m, v)) = built.iter().find(|(_, v)| semver_triple(v).is_none()) {
        bail!("app {} {} imports trellis:app without a version like 0.1.2 ({v:?})", m.name, m.version);
    }
    let (needed, by) = match given {
        Some(given) if semver_triple(&given).is_none() => {
            bail!("--app-interface {given:?} is not a version like 0.1.2")
        }
        Some(given) => (given, "--app-interface"),
        None => {
            let newest = built.iter().map(|(_, v)| *v).max_by_key(|v| semver_triple(v));
            (newest.map_or_else(wit_interface, str::to_owned), "the newest its apps were built for")
        }
    };
    if let Some((m, v)) = built.iter().find(|(_, v)| !interface_compatible(v, &needed)) {
        bail!(
            "app interface {needed} ({by}): app {} {} was built for {v}, which a runtime providing {needed} does not run",
            m.name,
            m.version
        );
    }
    Ok(needed)
}

/// The `trellis:app` version of this build's `wit/trellis.wit`.
fn wit_interface() -> String {
    let wit = include_str!("../../../wit/trellis.wit");
    let package = wit.lines().find_map(|l| l.trim().strip_prefix("package trellis:app@"));
    package.map(|v| v.trim_end_matches(';').to_owned()).unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
fn build_release(
    id: &str,
    key: &Path,
    apps: &[PathBuf],
    bundle: Option<&Path>,
    firmware_version: Option<String>,
    firmware_app_interface: Option<String>,
    board: &str,
    app_interface: Option<String>,
    urgency: &str,
    firmware_first: bool,
) -> Result<(Release, Artifacts)> {
    let key = load_signing_key(key)?;
    let mut files = Vec::new();
    for path in apps {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let file = AppFile::parse(&bytes).with_context(|| path.display().to_string())?;
        let imports = interface_imports(&bytes).with_context(|| path.display().to_string())?;
        files.push((file.manifest, built_for(&imports), bytes));
    }
    let app_interface = needed_interface(app_interface, &files)?;
    let mut release = Release::new(id, board, &app_interface);
    release.urgency = match urgency {
        "normal" => Urgency::Normal,
        "critical" => Urgency::Critical,
        other => bail!("urgency {other:?} is not normal or critical"),
    };
    if firmware_first {
        release.order = vec![Part::Firmware, Part::Apps];
    }
    let mut artifacts = Vec::new();
    for (manifest, _, bytes) in files {
        release = release.with_app(&manifest.name, &manifest.version, &bytes);
        artifacts.push((manifest.name, bytes));
    }
    if let Some(path) = bundle {
        // What is not given is read from the bundle (`rauc info`); the version must be found.
        let info = match (&firmware_version, &firmware_app_interface) {
            (Some(_), Some(_)) => None,
            (Some(_), None) => crate::bundle::inspect(path, None)
                .map_err(|e| tracing::warn!("{e:#}: the bundle's app interface is unknown"))
                .ok(),
            (None, _) => Some(crate::bundle::inspect(path, None)?),
        };
        let (info_version, info_interface) = info.map_or((None, None), |i| (Some(i.version), i.app_interface));
        let version = firmware_version.or(info_version).unwrap_or_default();
        let provides = firmware_app_interface.or(info_interface);
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        release = release.with_firmware(&version, &bytes);
        match provides {
            Some(i) => release = release.firmware_provides(&i),
            None => tracing::warn!(
                "{}: the bundle does not say which app interface its runtime provides (give --firmware-app-interface); devices will not check their apps against it",
                path.display()
            ),
        }
        artifacts.push(("firmware".to_owned(), bytes));
    }
    release.validate()?;
    Ok((release.signed(&key), artifacts))
}

fn ago(now: u64, then: u64) -> String {
    let s = now.saturating_sub(then) / 1000;
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

async fn devices(link: &Link, json: bool) -> Result<()> {
    let rows = ops::devices(link).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let now = now();
    println!(
        "{:<14} {:<10} {:<24} {:<14} {:<4} {:<8} {:<12} LAST SEEN",
        "DEVICE", "GROUP", "RELEASE", "FIRMWARE", "SLOT", "HEALTH", "PHASE"
    );
    for row in rows {
        let group = row.group.as_deref().unwrap_or("-");
        match &row.reported {
            Some(r) => {
                let phase = match (r.phase.as_str(), r.progress) {
                    (p, Some(pct)) if p != "idle" && p != "failed" => format!("{p} {pct}%"),
                    (p, _) => p.to_owned(),
                };
                println!(
                    "{:<14} {:<10} {:<24} {:<14} {:<4} {:<8} {:<12} {}{}",
                    row.device,
                    group,
                    r.release.as_deref().unwrap_or("-"),
                    r.firmware,
                    r.slot.as_deref().unwrap_or("-"),
                    if r.healthy { "healthy" } else { "sick" },
                    phase,
                    ago(now, row.last_seen_ms.unwrap_or(r.seen_ms)),
                    r.error.as_deref().map(|e| format!("  error: {e}")).unwrap_or_default()
                );
            }
            None => println!(
                "{:<14} {group:<10} {:<24} {:<14} {:<4} {:<8} {:<12} never",
                row.device, "-", "-", "-", "-", "-"
            ),
        }
    }
    Ok(())
}

/// The status text of a rollout.
#[must_use]
pub fn describe(r: &Rollout) -> String {
    let mut out = String::new();
    let waves = r.plan.waves.len();
    let current = if r.state == State::Done { waves } else { (r.wave as usize + 1).min(waves) };
    let _ =
        writeln!(out, "rollout {}: {} to group {}: {:?}, wave {current} of {waves}", r.id, r.release, r.group, r.state);
    let mut per_wave: BTreeMap<u32, (usize, usize, usize)> = BTreeMap::new();
    for m in r.members.values() {
        let e = per_wave.entry(m.wave).or_default();
        match m.outcome {
            Outcome::Updated => e.0 += 1,
            Outcome::Failed => e.1 += 1,
            Outcome::Pending => e.2 += 1,
        }
    }
    for (i, size) in r.plan.waves.iter().enumerate() {
        let (updated, failed, pending) =
            per_wave.get(&u32::try_from(i).unwrap_or(u32::MAX)).copied().unwrap_or_default();
        let _ = writeln!(out, "  wave {} ({size}): {updated} updated, {failed} failed, {pending} pending", i + 1);
    }
    for (d, m) in r.members.iter().filter(|(_, m)| m.outcome == Outcome::Failed) {
        let _ = writeln!(out, "  {d}: failed (attempt {}): {}", m.attempt + 1, m.error.as_deref().unwrap_or("?"));
    }
    if let Some(reason) = &r.reason {
        let _ = writeln!(out, "  {reason}");
    }
    out
}

async fn status(link: &Link, id: Option<&str>, follow: bool, json: bool) -> Result<()> {
    let id = match id {
        Some(id) => id.to_owned(),
        None => match ops::rollouts(link).await?.pop() {
            Some(r) => r.id,
            None => bail!("there are no rollouts"),
        },
    };
    let mut last = None;
    loop {
        let (r, _) = ops::rollout(link, &id).await?;
        if last.as_ref() != Some(&r) {
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                print!("{}", describe(&r));
            }
            last = Some(r.clone());
        }
        if !follow || r.state.finished() || r.state == State::Halted {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn server_config(args: &ServerConfigArgs) -> Result<()> {
    let devices = args
        .devices
        .iter()
        .map(|d| match d.split_once(':') {
            Some((device, group)) => Ok(DeviceUser { device: device.to_owned(), group: group.to_owned() }),
            None => bail!("--device {d:?} is not ID:GROUP"),
        })
        .collect::<Result<Vec<_>>>()?;
    let config = ServerConfig {
        name: args.name.clone(),
        listen: args.listen,
        store_dir: args.store.clone(),
        tls: Tls { cert: args.server_cert.clone(), key: args.server_key.clone(), ca: args.client_ca.clone() },
        cluster: args.cluster.map(|listen| Cluster { name: "trellis".into(), listen, routes: args.routes.clone() }),
        operators: args.operators.clone(),
        devices,
        previous_agents: args.previous_agents,
    };
    println!("{}", config.render());
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn app(name: &str, built: Option<&str>) -> (Manifest, Option<String>, Vec<u8>) {
        let text = format!("name = \"{name}\"\nversion = \"1.0.0\"\ndescription = \"x\"\n");
        (Manifest::from_toml(&text).unwrap(), built.map(str::to_owned), Vec::new())
    }

    #[test]
    fn a_release_needs_the_newest_interface_its_apps_were_built_for() {
        let apps = [app("a", Some("0.1.1")), app("b", Some("0.1.0")), app("c", None)];
        assert_eq!(needed_interface(None, &apps).unwrap(), "0.1.1");
        // Given by hand: every app must run on it.
        assert_eq!(needed_interface(Some("0.1.2".into()), &apps).unwrap(), "0.1.2");
        let err = needed_interface(Some("0.1.0".into()), &apps).unwrap_err().to_string();
        assert!(err.contains("app a 1.0.0 was built for 0.1.1"), "{err}");
        // Apps of two lines: no interface runs both.
        let err = needed_interface(None, &[app("a", Some("0.1.1")), app("d", Some("1.0.0"))]).unwrap_err().to_string();
        assert!(err.contains("app a 1.0.0 was built for 0.1.1") && err.contains("1.0.0 (the newest"), "{err}");
        let err = needed_interface(None, &[app("e", Some(""))]).unwrap_err().to_string();
        assert!(err.contains("app e 1.0.0 imports trellis:app without a version"), "{err}");
        assert!(needed_interface(Some("one".into()), &apps).is_err());
        // No app imports the interface: this build's.
        let wit = wit_interface();
        assert!(semver_triple(&wit).is_some(), "{wit:?}");
        assert_eq!(needed_interface(None, &[app("c", None)]).unwrap(), wit);
    }
}
