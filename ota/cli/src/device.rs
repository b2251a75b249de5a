//! `trellis device`: the device's state and firmware updates, through the
//! runtime's control socket.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use trellis_control::socket::{self as control, Reply, Request};
use trellis_control::{AppSummary, Bundle, DeviceStatus, Phase, UpdateRecord};

/// The runtime's control socket on a device.
pub const SOCKET: &str = trellis_layout::paths::CONTROL_SOCKET;

/// Print the device's state.
///
/// # Errors
/// The socket cannot be reached or the runtime answered an error.
pub fn status(socket: &Path, json: bool) -> Result<()> {
    let mut status = None;
    let mut error = None;
    control::request(socket, &Request::Status, |r| match r {
        Reply::Status(s) => status = Some(s),
        Reply::Error(e) => error = Some(e),
        _ => {}
    })
    .context("is trellis-runtime running with an [update] section?")?;
    if let Some(e) = error {
        bail!("{e}");
    }
    let Some(status) = status else { bail!("{}: no status in the answer", socket.display()) };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", describe(&status));
    }
    Ok(())
}

/// Install `bundle` (a file on the device, an `http(s)://` URL RAUC streams
/// it from, or `asset:<id>`, streamed from the device's asset sources) and print the progress; the device then reboots into the trial.
///
/// # Errors
/// Not a path, URL or `asset:<id>`, the socket cannot be reached, or the installation
/// failed (RAUC's reason).
pub fn update(socket: &Path, bundle: &str) -> Result<()> {
    let bundle = match Bundle::parse(bundle).map_err(anyhow::Error::msg)? {
        Bundle::File(path) => Bundle::File(std::path::absolute(&path).with_context(|| format!("{}", path.display()))?),
        url => url,
    };
    let mut outcome: Option<Result<UpdateRecord, String>> = None;
    control::request(socket, &Request::Install { bundle }, |r| match r {
        Reply::Progress(p) => println!("{:3}% {}", p.percent, p.message),
        Reply::Installed(rec) => outcome = Some(Ok(rec)),
        Reply::Error(e) => outcome = Some(Err(e)),
        Reply::Status(_) | Reply::App(_) | Reply::Removed(_) => {}
    })?;
    match outcome {
        Some(Ok(r)) => {
            println!(
                "installed {} into slot {}; rebooting into a trial boot (committed when healthy, \
                 otherwise slot {} boots again)",
                r.version.as_deref().unwrap_or("?"),
                r.to.as_deref().unwrap_or("?"),
                r.from
            );
            Ok(())
        }
        Some(Err(e)) => bail!("update failed: {e}"),
        None => bail!("{}: the runtime closed the connection without an answer", socket.display()),
    }
}

/// What `trellis app stop|start|remove` asks of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppOp {
    /// Stop it and keep it stopped.
    Stop,
    /// Run it again.
    Start,
    /// Stop it and remove its file.
    Remove,
}

impl AppOp {
    /// The verb, for messages.
    #[must_use]
    pub const fn verb(self) -> &'static str {
        match self {
            Self::Stop => "stopping",
            Self::Start => "starting",
            Self::Remove => "removing",
        }
    }
}

/// `trellis app stop|start|remove NAME --local`: through the control socket.
///
/// # Errors
/// The socket cannot be reached or the runtime refused (its reason).
pub fn app(socket: &Path, name: &str, op: AppOp, json: bool) -> Result<()> {
    let request = match op {
        AppOp::Stop => Request::StopApp { app: name.to_owned() },
        AppOp::Start => Request::StartApp { app: name.to_owned() },
        AppOp::Remove => Request::RemoveApp { app: name.to_owned() },
    };
    let mut answer: Option<Result<Option<AppSummary>, String>> = None;
    control::request(socket, &request, |r| match r {
        Reply::App(a) => answer = Some(Ok(Some(a))),
        Reply::Removed(_) => answer = Some(Ok(None)),
        Reply::Error(e) => answer = Some(Err(e)),
        Reply::Status(_) | Reply::Progress(_) | Reply::Installed(_) => {}
    })
    .context("is trellis-runtime running?")?;
    match answer {
        Some(Ok(summary)) => print_app(name, summary.as_ref(), "this device", json),
        Some(Err(e)) => bail!("{} {name}: {e}", op.verb()),
        None => bail!("{}: the runtime closed the connection without an answer", socket.display()),
    }
}

/// The outcome of an app command: the app's status (`None`: removed).
///
/// # Errors
/// JSON cannot be written.
pub fn print_app(name: &str, summary: Option<&AppSummary>, device: &str, json: bool) -> Result<()> {
    match (summary, json) {
        (Some(a), true) => println!("{}", serde_json::to_string_pretty(a)?),
        (None, true) => println!("{}", serde_json::json!({ "name": name, "state": "removed" })),
        (Some(a), false) => println!("{} {} is {} on {device}", a.name, a.version, a.state),
        (None, false) => println!("{name} is removed from {device}"),
    }
    Ok(())
}

/// The status as text.
#[must_use]
pub fn describe(s: &DeviceStatus) -> String {
    let mut out = String::new();
    let secs = s.uptime_ms / 1000;
    let _ = writeln!(out, "uptime:      {}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    let fw = &s.firmware;
    match &fw.slots {
        Some(slots) => {
            let version =
                |b: &str| slots.by_bootname(b).and_then(|x| x.version.clone()).unwrap_or_else(|| "factory".into());
            let _ = writeln!(out, "booted:      slot {} ({})", slots.booted, version(&slots.booted));
            let _ = writeln!(out, "primary:     slot {}", slots.primary.as_deref().unwrap_or("unknown"));
            let _ = writeln!(out, "compatible:  {}", slots.compatible);
            for x in &slots.slots {
                let _ = writeln!(
                    out,
                    "  slot {} ({}): {}, {}, {}",
                    x.bootname,
                    x.name,
                    x.state,
                    x.boot_status.as_deref().unwrap_or("?"),
                    x.version.as_deref().unwrap_or("factory")
                );
            }
        }
        None => {
            let _ = writeln!(out, "slots:       unknown ({})", fw.slots_error.as_deref().unwrap_or("?"));
        }
    }
    let _ = writeln!(out, "operation:   {}", fw.operation);
    if let Some(p) = &fw.progress {
        let _ = writeln!(out, "progress:    {}% {}", p.percent, p.message);
    }
    match &fw.last_update {
        None => {
            let _ = writeln!(out, "last update: none");
        }
        Some(r) => {
            let phase = match r.phase {
                Phase::Installing => "installing",
                Phase::Trial => "trial",
                Phase::Committed => "committed",
                Phase::RolledBack => "rolled back",
                Phase::Failed => "failed",
            };
            let _ = writeln!(
                out,
                "last update: {phase}: {} {} -> {} ({})",
                r.version.as_deref().unwrap_or("?"),
                r.from,
                r.to.as_deref().unwrap_or("?"),
                r.bundle
            );
            if let Some(why) = &r.reason {
                let _ = writeln!(out, "  why:       {why}");
            }
        }
    }
    let _ = writeln!(out, "apps:");
    for a in &s.apps {
        #[allow(clippy::cast_precision_loss)]
        let mib = a.memory_bytes as f64 / f64::from(1 << 20);
        let _ = write!(out, "  {:<12} {:<10} {:<10} {mib:5.1} MiB {:>7} ms cpu", a.name, a.version, a.state, a.cpu_ms);
        if a.restarts > 0 {
            let _ = write!(out, ", {} restarts", a.restarts);
        }
        out.push('\n');
    }
    out
}
