//! Devices over the network: the registry of devices this operator manages
//! (`trellis device add`) and the commands that talk to a device's
//! management API over mutual TLS (docs/api.md).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use trellis_api::client::{Client, ClientError, Credentials, Upload};
use trellis_appfmt::AppFile;
use trellis_control::socket::Reply;
use trellis_control::{Bundle, DeviceStatus, Phase, UpdateRecord};

/// The files `scripts/dev-keys.sh` makes for the API, in its `api/` directory.
pub const PKI_FILES: [&str; 3] = ["device-ca.pem", "operator.pem", "operator.key"];
/// The name development images' certificates carry.
pub const DEV_SERVER_NAME: &str = "trellis.local";
/// The API's port.
pub const PORT: u16 = 8443;

/// One device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DeviceEntry {
    /// `host:port`.
    pub address: String,
    /// The name its certificate must carry.
    pub server_name: String,
    /// The credentials.
    #[serde(flatten)]
    pub credentials: Credentials,
}

/// The devices this operator manages (`devices.toml`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Registry {
    /// The device commands use when none is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// By name.
    #[serde(default)]
    pub devices: BTreeMap<String, DeviceEntry>,
}

/// Where the registry lives: `$TRELLIS_CONFIG`, else
/// `$XDG_CONFIG_HOME/trellis/devices.toml`, else `~/.config/trellis/devices.toml`.
///
/// # Errors
/// None of those variables is set.
pub fn registry_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TRELLIS_CONFIG") {
        return Ok(PathBuf::from(p));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(x) => PathBuf::from(x),
        None => {
            PathBuf::from(std::env::var_os("HOME").context("neither TRELLIS_CONFIG nor HOME is set")?).join(".config")
        }
    };
    Ok(base.join("trellis/devices.toml"))
}

impl Registry {
    /// Read it (empty when the file does not exist yet).
    ///
    /// # Errors
    /// The file cannot be read or is not a registry.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("{}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("{}", path.display())),
        }
    }

    /// Write it (atomically).
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
        }
        crate::write_atomic(path, toml::to_string(self)?.as_bytes())
    }

    /// The device called `name`, or the default one, or the only one.
    ///
    /// # Errors
    /// No such device, or none named and several to choose from.
    pub fn pick(&self, name: Option<&str>) -> Result<(String, &DeviceEntry)> {
        let name = match (name, self.default.as_deref()) {
            (Some(n), _) | (None, Some(n)) => n.to_owned(),
            (None, None) if self.devices.len() == 1 => self.devices.keys().next().cloned().unwrap_or_default(),
            (None, None) if self.devices.is_empty() => {
                bail!("no device yet: add one with `trellis device add NAME ADDRESS`")
            }
            (None, None) => bail!(
                "several devices ({}): name one with --device NAME",
                self.devices.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        };
        let entry =
            self.devices.get(&name).with_context(|| format!("no device called {name:?} (see `trellis devices`)"))?;
        Ok((name, entry))
    }
}

/// `trellis device add`: check the credentials exist and record the device.
///
/// # Errors
/// A credential file is missing or the registry cannot be written.
pub fn add(name: &str, address: &str, server_name: &str, pki: &Path, make_default: bool) -> Result<()> {
    if !trellis_appfmt::valid_name(name) {
        bail!("{name:?} is not a device name ([a-z0-9][a-z0-9_-]*)");
    }
    let address = if address.contains(':') { address.to_owned() } else { format!("{address}:{PORT}") };
    let [ca, cert, key] = PKI_FILES.map(|f| pki.join(f));
    for f in [&ca, &cert, &key] {
        if !f.is_file() {
            bail!("{}: missing (make one with scripts/dev-keys.sh, or name the directory with --pki)", f.display());
        }
    }
    let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let credentials = Credentials { ca: abs(ca), cert: abs(cert), key: abs(key) };
    Client::new(&credentials, &address, server_name)?;
    let path = registry_path()?;
    let mut registry = Registry::load(&path)?;
    registry.devices.insert(
        name.to_owned(),
        DeviceEntry { address: address.clone(), server_name: server_name.to_owned(), credentials },
    );
    if make_default || registry.default.is_none() {
        registry.default = Some(name.to_owned());
    }
    registry.save(&path)?;
    println!("added {name} at {address} ({})", path.display());
    Ok(())
}

/// `trellis device remove`.
///
/// # Errors
/// No such device, or the registry cannot be written.
pub fn remove(name: &str) -> Result<()> {
    let path = registry_path()?;
    let mut registry = Registry::load(&path)?;
    if registry.devices.remove(name).is_none() {
        bail!("no device called {name:?}");
    }
    if registry.default.as_deref() == Some(name) {
        registry.default = None;
    }
    registry.save(&path)
}

/// The chosen device's client.
///
/// # Errors
/// No such device, or its credentials are unusable.
pub fn connect(device: Option<&str>) -> Result<(String, Client)> {
    let registry = Registry::load(&registry_path()?)?;
    let (name, entry) = registry.pick(device)?;
    let client = Client::new(&entry.credentials, &entry.address, &entry.server_name)
        .with_context(|| format!("device {name}"))?;
    Ok((name, client))
}

fn status_of(client: &Client) -> Result<DeviceStatus, ClientError> {
    client.get("/v1/status")?.json()
}

/// `trellis devices`: every device added, with whether it answers, and the
/// devices that announce themselves over mDNS within `browse` (zero: none).
///
/// # Errors
/// The registry exists but cannot be read.
pub fn devices(json: bool, browse: Duration) -> Result<()> {
    // No registry (a device's own console has no home directory): nothing added yet.
    let registry = match registry_path() {
        Ok(path) => Registry::load(&path)?,
        Err(_) => Registry::default(),
    };
    let mut rows = Vec::new();
    for (name, entry) in &registry.devices {
        let answer = Client::new(&entry.credentials, &entry.address, &entry.server_name)
            .map(|c| c.with_timeout(Duration::from_secs(5)))
            .and_then(|c| status_of(&c));
        rows.push((name, entry, answer));
    }
    let found = if browse.is_zero() { Ok(Vec::new()) } else { trellis_api::mdns::browse(browse) };
    let added_as =
        |address: &String| registry.devices.iter().find(|(_, e)| &e.address == address).map(|(n, _)| n.clone());
    if json {
        let list: Vec<_> = rows
            .iter()
            .map(|(name, entry, answer)| {
                serde_json::json!({
                    "name": name,
                    "address": entry.address,
                    "default": registry.default.as_deref() == Some(name.as_str()),
                    "status": answer.as_ref().ok(),
                    "error": answer.as_ref().err().map(ToString::to_string),
                })
            })
            .collect();
        let discovered: Vec<_> = found
            .as_ref()
            .map(|f| {
                f.iter()
                    .map(|d| {
                        let added = d.addresses.iter().find_map(added_as);
                        serde_json::json!({ "name": d.name, "addresses": d.addresses, "txt": d.txt, "added-as": added })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let value = serde_json::json!({
            "devices": list,
            "discovered": discovered,
            "discovery-error": found.as_ref().err().map(ToString::to_string),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no devices added (trellis device add NAME ADDRESS)");
    }
    for (name, entry, answer) in rows {
        let mark = if registry.default.as_deref() == Some(name.as_str()) { "*" } else { " " };
        let state = match answer {
            Ok(s) => {
                let running = s.apps.iter().filter(|a| a.state == "running").count();
                format!("up {}, {running}/{} apps running", clock(s.uptime_ms / 1000), s.apps.len())
            }
            Err(e) => format!("unreachable: {e}"),
        };
        println!("{mark} {name:<12} {:<22} {state}", entry.address);
    }
    match found {
        Ok(found) if !browse.is_zero() => {
            println!("on the local network (mDNS, {} s):", browse.as_secs());
            if found.is_empty() {
                println!("  none");
            }
            for d in found {
                let address = d.addresses.first().cloned().unwrap_or_default();
                let version = d.txt.get("version").map_or("?", String::as_str);
                let hint = match d.addresses.iter().find_map(added_as) {
                    Some(n) => format!("added as {n}"),
                    None => format!("trellis device add NAME {address}"),
                };
                println!("  {:<16} {address:<22} {version:<14} {hint}", d.name);
            }
        }
        Ok(_) => {}
        Err(e) => println!("on the local network: {e}"),
    }
    Ok(())
}

fn clock(secs: u64) -> String {
    format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// `trellis status`.
///
/// # Errors
/// The device cannot be reached or refused.
pub fn status(device: Option<&str>, json: bool) -> Result<()> {
    let (name, client) = connect(device)?;
    let status = status_of(&client).with_context(|| format!("device {name}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        println!("device:      {name} ({})", client.address());
        print!("{}", crate::device::describe(&status));
    }
    Ok(())
}

/// Upload progress on standard error: a line redrawn on a terminal, a line
/// per quarter otherwise.
struct Bar {
    what: &'static str,
    total: u64,
    started: Instant,
    tty: bool,
    shown: u64,
}

impl Bar {
    fn new(what: &'static str, total: u64) -> Self {
        Self { what, total, started: Instant::now(), tty: std::io::stderr().is_terminal(), shown: 0 }
    }

    #[allow(clippy::cast_precision_loss)]
    fn show(&mut self, done: u64) {
        let quarter = (done * 4).checked_div(self.total).unwrap_or(4);
        if !self.tty && quarter == self.shown && done < self.total {
            return;
        }
        self.shown = quarter;
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let percent = (done * 100).checked_div(self.total).unwrap_or(100);
        let width = 30;
        let filled = usize::try_from(percent).unwrap_or(100) * width / 100;
        let mut line = String::new();
        let _ = write!(
            line,
            "{:<7} [{}{}] {percent:3}% {:.1}/{:.1} MiB {:.1} MiB/s",
            self.what,
            "#".repeat(filled),
            " ".repeat(width - filled),
            mib(done),
            mib(self.total),
            mib(done) / secs
        );
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r{line}");
            if done >= self.total {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{line}");
        }
    }
}

/// `trellis push`: send an app file; the device checks it, swaps it in and
/// answers once it runs (or why it refused it: then the old version runs on).
///
/// # Errors
/// Not an app file, the device cannot be reached, or it refused the app.
pub fn push(device: Option<&str>, app: &Path) -> Result<()> {
    let bytes = std::fs::read(app).with_context(|| format!("{}", app.display()))?;
    let file = AppFile::parse(&bytes).with_context(|| format!("{} is not an app file", app.display()))?;
    let (app_name, version) = (file.manifest.name.clone(), file.manifest.version.clone());
    let (name, client) = connect(device)?;
    let started = Instant::now();
    let mut reader: &[u8] = &bytes;
    let mut bar = Bar::new("upload", bytes.len() as u64);
    let upload = Upload { reader: &mut reader, len: bytes.len() as u64, sent: &mut |n| bar.show(n) };
    let answer = client
        .send("PUT", &format!("/v1/apps/{app_name}"), Some(upload))
        .and_then(trellis_api::client::Incoming::ok)
        .with_context(|| format!("pushing {app_name} {version} to {name}"))?;
    let state = answer
        .text()
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("state").and_then(|s| s.as_str()).map(str::to_owned));
    let secs = started.elapsed().as_secs_f64();
    if state.as_deref() == Some("stopped") {
        println!(
            "{app_name} {version} is in place on {name}, stopped ({secs:.2} s from the first byte): \
             `trellis app start {app_name}` runs it"
        );
    } else {
        println!("{app_name} {version} is running on {name} ({secs:.2} s from the first byte)");
    }
    Ok(())
}

/// `trellis app stop|start|remove NAME`: over the management API; answers
/// once the device has done it.
///
/// # Errors
/// The device cannot be reached or refused (its reason).
pub fn app(device: Option<&str>, app: &str, op: crate::device::AppOp, json: bool) -> Result<()> {
    use crate::device::AppOp;
    if !trellis_appfmt::valid_name(app) {
        bail!("{app:?} is not an app name ([a-z0-9][a-z0-9_-]*)");
    }
    let (name, client) = connect(device)?;
    let context = || format!("{} {app} on {name}", op.verb());
    let summary = match op {
        AppOp::Stop | AppOp::Start => {
            let action = if op == AppOp::Stop { "stop" } else { "start" };
            let summary: trellis_control::AppSummary = client
                .send("POST", &format!("/v1/apps/{app}/{action}"), None)
                .and_then(|a| a.json())
                .with_context(context)?;
            Some(summary)
        }
        AppOp::Remove => {
            let answer = client
                .send("DELETE", &format!("/v1/apps/{app}"), None)
                .and_then(trellis_api::client::Incoming::ok)
                .with_context(context)?;
            let _ = answer.text();
            None
        }
    };
    crate::device::print_app(app, summary.as_ref(), &name, json)
}

/// `trellis update`: upload a bundle with a progress bar (or, for a URL or
/// `asset:<id>`, ask the device to stream it), follow RAUC's installation, then (unless
/// `no_wait`) wait for the trial boot and report whether the device
/// committed the new firmware or went back.
///
/// # Errors
/// The device cannot be reached, refused the bundle, failed to install it,
/// or rolled back.
pub fn update(device: Option<&str>, bundle: &str, no_wait: bool, wait: Duration) -> Result<()> {
    let source = Bundle::parse(bundle).map_err(anyhow::Error::msg)?;
    let (name, client) = connect(device)?;
    let client = client.with_timeout(Duration::from_secs(600));
    let answer = match &source {
        Bundle::File(path) => {
            let mut file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
            let len = file.metadata().with_context(|| format!("{}", path.display()))?.len();
            let mut bar = Bar::new("upload", len);
            let upload = Upload { reader: &mut file, len, sent: &mut |n| bar.show(n) };
            client.send("PUT", "/v1/firmware", Some(upload))
        }
        Bundle::Url(_) | Bundle::Asset(_) => {
            let body = serde_json::to_vec(&serde_json::json!({ "url": source.to_string() }))?;
            let upload = Upload { reader: &mut body.as_slice(), len: body.len() as u64, sent: &mut |_| {} };
            client.send("POST", "/v1/firmware", Some(upload))
        }
    }
    .and_then(trellis_api::client::Incoming::ok)
    .with_context(|| format!("updating {name} with {source}"))?;
    let mut installed: Option<UpdateRecord> = None;
    for line in answer.lines() {
        let line = line.with_context(|| format!("{name}: following the installation"))?;
        match serde_json::from_str::<Reply>(&line) {
            Ok(Reply::Progress(p)) => eprintln!("install {:3}% {}", p.percent, p.message),
            Ok(Reply::Installed(r)) => installed = Some(r),
            Ok(Reply::Error(e)) => bail!("{name}: the installation failed, the running firmware is untouched: {e}"),
            Ok(Reply::Status(_) | Reply::App(_) | Reply::Removed(_)) | Err(_) => {}
        }
    }
    let Some(record) = installed else {
        bail!("{name}: the connection ended before the installation did (see `trellis status`)")
    };
    println!(
        "installed {} into slot {} of {name}; it reboots into a trial boot",
        record.version.as_deref().unwrap_or("?"),
        record.to.as_deref().unwrap_or("?")
    );
    if no_wait {
        return Ok(());
    }
    wait_for_verdict(&name, &client, &record, wait)
}

/// Poll the device until the update's record is final.
fn wait_for_verdict(name: &str, client: &Client, record: &UpdateRecord, wait: Duration) -> Result<()> {
    let client = client.clone().with_timeout(Duration::from_secs(10));
    let deadline = Instant::now() + wait;
    let mut said = String::new();
    loop {
        let now = match status_of(&client) {
            Ok(s) => match s.firmware.last_update {
                Some(r) if r.boot_id == record.boot_id && r.started == record.started => match r.phase {
                    Phase::Committed => {
                        println!(
                            "committed: {name} runs {} from slot {}",
                            r.version.as_deref().unwrap_or("?"),
                            r.to.as_deref().unwrap_or("?")
                        );
                        return Ok(());
                    }
                    Phase::RolledBack | Phase::Failed => bail!(
                        "{name} rolled back to slot {}: {}",
                        r.from,
                        r.reason.as_deref().unwrap_or("no reason recorded")
                    ),
                    Phase::Installing | Phase::Trial => "trial boot: waiting for the health gate".to_owned(),
                },
                _ => "waiting for the update's record".to_owned(),
            },
            Err(_) => "waiting for the device to come back".to_owned(),
        };
        if now != said {
            eprintln!("{now}");
            said = now;
        }
        if Instant::now() > deadline {
            bail!("{name}: no verdict on the update within {} s (see `trellis status`)", wait.as_secs());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `trellis logs`: the device's recent log, and with `follow` each new line.
///
/// # Errors
/// The device cannot be reached or the stream broke.
pub fn logs(device: Option<&str>, follow: bool, json: bool) -> Result<()> {
    let (name, client) = connect(device)?;
    let client = client.with_timeout(Duration::from_secs(60));
    let path = if follow { "/v1/logs" } else { "/v1/logs?follow=false" };
    let answer =
        client.get(path).and_then(trellis_api::client::Incoming::ok).with_context(|| format!("device {name}"))?;
    let mut out = std::io::stdout().lock();
    for event in answer.events() {
        let event = event.with_context(|| format!("device {name}: the log stream"))?;
        let line = if json { event } else { describe_entry(&event) };
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return Ok(()); // the reader went away (`| head`)
        }
    }
    Ok(())
}

/// A log entry as text: `HH:MM:SS.mmm app level message` (UTC).
#[must_use]
pub fn describe_entry(entry: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(entry) else { return entry.to_owned() };
    let field = |k: &str| v.get(k).and_then(serde_json::Value::as_str).unwrap_or("?").to_owned();
    let time = v.get("time").and_then(serde_json::Value::as_f64).unwrap_or(0.0);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ms = (time * 1000.0) as u64;
    let s = ms / 1000 % 86400;
    format!(
        "{:02}:{:02}:{:02}.{:03} {:<12} {:<5} {}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms % 1000,
        field("app"),
        field("level"),
        field("message")
    )
}

/// `trellis reboot`; with `wait`, until the device answers again.
///
/// # Errors
/// The device cannot be reached, refused, or did not come back in time.
pub fn reboot(device: Option<&str>, wait: Option<Duration>) -> Result<()> {
    let (name, client) = connect(device)?;
    let before = status_of(&client).with_context(|| format!("device {name}"))?.uptime_ms;
    let answer = client
        .send("POST", "/v1/reboot", None)
        .and_then(trellis_api::client::Incoming::ok)
        .with_context(|| format!("device {name}"))?;
    let _ = answer.text();
    println!("{name} is rebooting");
    let Some(wait) = wait else { return Ok(()) };
    let client = client.with_timeout(Duration::from_secs(10));
    let deadline = Instant::now() + wait;
    std::thread::sleep(Duration::from_secs(1));
    loop {
        if let Ok(s) = status_of(&client)
            && s.uptime_ms < before
        {
            println!("{name} is back (up {})", clock(s.uptime_ms / 1000));
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{name} did not come back within {} s", wait.as_secs());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(address: &str) -> DeviceEntry {
        DeviceEntry {
            address: address.into(),
            server_name: DEV_SERVER_NAME.into(),
            credentials: Credentials { ca: "ca.pem".into(), cert: "op.pem".into(), key: "op.key".into() },
        }
    }

    #[test]
    fn the_device_named_or_the_default_or_the_only_one() {
        let mut r = Registry::default();
        assert!(r.pick(None).unwrap_err().to_string().contains("trellis device add"));
        r.devices.insert("twin".into(), entry("127.0.0.1:8443"));
        assert_eq!(r.pick(None).unwrap().0, "twin");
        r.devices.insert("pi".into(), entry("10.0.0.2:8443"));
        assert!(r.pick(None).unwrap_err().to_string().contains("several devices (pi, twin)"));
        r.default = Some("pi".into());
        assert_eq!(r.pick(None).unwrap().0, "pi");
        assert_eq!(r.pick(Some("twin")).unwrap().0, "twin");
        assert!(r.pick(Some("nope")).unwrap_err().to_string().contains("no device called \"nope\""));
        let text = toml::to_string(&r).unwrap();
        assert_eq!(toml::from_str::<Registry>(&text).unwrap(), r, "{text}");
    }

    #[test]
    fn log_entries_read_as_lines() {
        let e = r#"{"time": 3723.5, "app": "blinky", "level": "info", "message": "led on"}"#;
        assert_eq!(describe_entry(e), "01:02:03.500 blinky       info  led on");
        assert_eq!(describe_entry("not json"), "not json");
    }
}
