//! The `trellis` command: run apps on a laptop against simulated hardware,
//! pack, sign and inspect app files, and inspect firmware update bundles.

mod asset;
pub mod bundle;
pub mod device;
pub mod fleet;
pub mod remote;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
#[cfg(feature = "run")]
use clap::Args;
use clap::{Parser, Subcommand};
use trellis_appfmt::{AppFile, Manifest, generate_key, interface_imports, load_signing_key, write_key_pair};
#[cfg(feature = "run")]
use trellis_hal::sim::SimBoard;
#[cfg(feature = "run")]
use trellis_runtime::{Runtime, RuntimeConfig};

#[derive(Debug, Parser)]
#[command(
    name = "trellis",
    version,
    about = "Trellis: run, pack, sign and inspect WebAssembly apps for Trellis devices"
)]
struct Cli {
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run apps on this machine against simulated hardware, swapping them when their files change.
    #[cfg(feature = "run")]
    Run(RunArgs),
    /// Make, sign and look into app files; stop, start and remove apps on a device.
    #[command(subcommand)]
    App(AppCommand),
    /// Look into firmware update bundles (RAUC).
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Assets apps read on demand: name one, serve them.
    #[command(subcommand)]
    Asset(asset::AssetCommand),
    /// Devices: add and remove them here; on a device, its state and firmware
    /// updates through the runtime's control socket.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// The devices added with `trellis device add` and whether they answer,
    /// and the devices on the local network that announce themselves (mDNS).
    Devices {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// How long to listen for announcements, in seconds (0: not at all).
        #[arg(long, default_value_t = 2)]
        browse_s: u64,
    },
    /// A device's firmware (booted and primary slot, last update), apps and uptime, over the network.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send an app file to a device: it answers once the new version runs, or
    /// why it refused it (the old version runs on).
    Push {
        /// The app file (`trellis app pack`).
        app: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Update a device's firmware: upload the bundle (or give the device its
    /// URL to stream it from), follow the installation, then wait for the
    /// trial boot and report commit or rollback.
    Update {
        /// The RAUC bundle (`make bundle`), or the `http(s)://` URL of one on a
        /// server that answers range requests: the device's RAUC streams it,
        /// nothing is uploaded or stored; or `asset:<id>` (its piece root: the
        /// hex `trellis asset index` prints after `sha256:`): streamed from
        /// the device's asset sources,
        /// its LAN peers and the asset origin.
        bundle: String,
        #[command(flatten)]
        target: Target,
        /// Return once it is installed, without waiting for the trial boot's verdict.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the verdict, in seconds.
        #[arg(long, default_value_t = 600)]
        wait_s: u64,
    },
    /// A device's log (its apps and the runtime's events about them).
    Logs {
        #[command(flatten)]
        target: Target,
        /// Keep following new lines.
        #[arg(short, long)]
        follow: bool,
        /// Print each entry as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A fleet on NATS JetStream: devices, releases, staged rollouts (docs/fleet.md).
    Fleet {
        #[command(flatten)]
        connection: fleet::Connection,
        #[command(subcommand)]
        command: Box<fleet::FleetCommand>,
    },
    /// Reboot a device.
    Reboot {
        #[command(flatten)]
        target: Target,
        /// Wait until it answers again (at most this many seconds).
        #[arg(long, value_name = "SECONDS")]
        wait: Option<u64>,
    },
}

/// Which device.
#[derive(Debug, clap::Args)]
struct Target {
    /// The device's name (`trellis devices`) [default: $TRELLIS_DEVICE, the default device, or the only one].
    #[arg(short, long, env = "TRELLIS_DEVICE")]
    device: Option<String>,
}

/// Where an app command goes: a device over the network (`-d`), or with
/// `--local` this device's runtime through its control socket.
#[derive(Debug, clap::Args)]
struct AppTarget {
    #[command(flatten)]
    target: Target,
    /// On this device (run on the device itself), through the runtime's control socket.
    #[arg(long)]
    local: bool,
    /// The runtime's control socket (implies --local) [default: /run/trellis/control.sock].
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl AppTarget {
    fn run(&self, name: &str, op: device::AppOp) -> Result<()> {
        match (&self.socket, self.local) {
            (Some(socket), _) => device::app(socket, name, op, self.json),
            (None, true) => device::app(Path::new(device::SOCKET), name, op, self.json),
            (None, false) => remote::app(self.target.device.as_deref(), name, op, self.json),
        }
    }
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Remember a device (its API at ADDRESS, `host[:port]`, port 8443 by default).
    Add {
        /// What to call it.
        name: String,
        /// `host[:port]`.
        address: String,
        /// The name its certificate carries.
        #[arg(long, default_value = remote::DEV_SERVER_NAME)]
        server_name: String,
        /// The directory with device-ca.pem, operator.pem and operator.key.
        #[arg(long, env = "TRELLIS_PKI", default_value = "build/keys/api")]
        pki: PathBuf,
        /// Make it the default device.
        #[arg(long)]
        default: bool,
    },
    /// Forget a device.
    Remove {
        /// Its name.
        name: String,
    },
    /// Firmware (booted and primary slot, last update and why), apps, uptime.
    Status {
        /// The runtime's control socket.
        #[arg(long, default_value = device::SOCKET)]
        socket: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Install a firmware bundle into the other slot, then trial-boot it: the
    /// device commits it when healthy, or goes back to this slot by itself.
    Update {
        /// The bundle, on the device (`/data/update.raucb`), or the URL of one
        /// on an HTTP(S) server that answers range requests: RAUC streams it,
        /// nothing is stored on the data partition, and an install cut by the
        /// network starts again where it was; or `asset:<id>` (its piece
        /// root): streamed from the device's peers and asset origin.
        bundle: String,
        /// The runtime's control socket.
        #[arg(long, default_value = device::SOCKET)]
        socket: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum BundleCommand {
    /// Show a bundle's compatible, version, images and signer (read by `rauc info`).
    Inspect {
        /// The bundle (`update.raucb`, from `make bundle`).
        bundle: PathBuf,
        /// Check the signature against this keyring (the device's CA certificate,
        /// `build/keys/ca.cert.pem` for development builds).
        #[arg(long)]
        keyring: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[cfg(feature = "run")]
#[derive(Debug, Args)]
struct RunArgs {
    /// A directory of apps (`NAME.wasm`), or one app file (then only that app runs; it is still swapped when the file changes).
    path: PathBuf,
    /// Where key-value stores, the compile cache and last-good copies go
    /// [default: `.trellis/` inside the apps directory].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Refuse apps not signed by a key in `--trust`.
    #[arg(long)]
    require_signatures: bool,
    /// Trusted public keys (`.pub` files or directories of them).
    #[arg(long)]
    trust: Vec<PathBuf>,
    /// Simulated temperature of the TMP102 on I2C-1 at 0x48, in °C.
    #[arg(long, default_value_t = 21.5)]
    temperature: f32,
    /// Make the simulated room warm up while GPIO 22 (the heater) is high and cool down otherwise.
    #[arg(long)]
    room: bool,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    seconds: Option<u64>,
    /// Announce the apps' compiled code to `perf`: `perfmap` (`perf report` names app
    /// functions) or `jitdump` (`perf annotate` shows their instructions; docs/runtime.md).
    #[arg(long, value_name = "PROFILER")]
    profile: Option<trellis_runtime::Profiler>,
}

#[derive(Debug, Subcommand)]
enum AppCommand {
    /// Embed a manifest into a component, making an app file.
    Pack {
        /// The component (`target/wasm32-wasip2/release/NAME.wasm`).
        component: PathBuf,
        /// The manifest (`trellis.toml`).
        #[arg(short, long)]
        manifest: PathBuf,
        /// Override the manifest's version.
        #[arg(long)]
        version: Option<String>,
        /// Override config values (`KEY=VALUE`, repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Output file [default: `NAME.wasm` in the current directory].
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Sign an app file with an ed25519 key (in place unless `--output`).
    Sign {
        /// The app file.
        app: PathBuf,
        /// The secret key file (`NAME.key`, from `trellis app keygen`).
        #[arg(short, long)]
        key: PathBuf,
        /// Output file [default: overwrite the input].
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Compile an app file's code ahead of time for a device's target and
    /// add it to the file (in place unless `--output`), so the device loads
    /// it instead of compiling it. Sign the result: a device loads
    /// precompiled code only from a file signed by a key it trusts.
    #[cfg(feature = "run")]
    Precompile {
        /// The app file.
        app: PathBuf,
        /// The device's target triple.
        #[arg(long, default_value = "aarch64-unknown-linux-gnu")]
        target: String,
        /// Output file [default: overwrite the input].
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Show an app file's manifest, interface, hash and signature.
    Inspect {
        /// The app file.
        app: PathBuf,
        /// Check the signature against these trusted keys.
        #[arg(long)]
        trust: Vec<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop an app on a device: it stays stopped, across reboots and new
    /// versions, until it is started (its file and stored data stay).
    Stop {
        /// The app.
        name: String,
        #[command(flatten)]
        on: AppTarget,
    },
    /// Run a stopped app on a device again (from its file, as any load).
    Start {
        /// The app.
        name: String,
        #[command(flatten)]
        on: AppTarget,
    },
    /// Stop an app on a device and remove its file.
    Remove {
        /// The app.
        name: String,
        #[command(flatten)]
        on: AppTarget,
    },
    /// Make an app-signing key pair (`NAME.key`, `NAME.pub`) in a directory.
    Keygen {
        /// Directory to write into.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Base name of the files.
        #[arg(long, default_value = "app-signing")]
        name: String,
    },
}

/// Run the CLI with the process's arguments.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match cli.verbose {
        // The fleet's connection events are for -v, not for every command.
        0 => "info,cranelift=warn,wasmtime=warn,async_nats=warn,trellis_fleet::link=warn",
        1 => "debug,cranelift=warn,wasmtime=warn",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| filter.into()))
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        #[cfg(feature = "run")]
        Command::Run(args) => run_apps(&args),
        Command::Device(DeviceCommand::Status { socket, json }) => device::status(&socket, json),
        Command::Device(DeviceCommand::Update { bundle, socket }) => device::update(&socket, &bundle),
        Command::Device(DeviceCommand::Add { name, address, server_name, pki, default }) => {
            remote::add(&name, &address, &server_name, &pki, default)
        }
        Command::Device(DeviceCommand::Remove { name }) => remote::remove(&name),
        Command::Devices { json, browse_s } => remote::devices(json, Duration::from_secs(browse_s)),
        Command::Status { target, json } => remote::status(target.device.as_deref(), json),
        Command::Push { app, target } => remote::push(target.device.as_deref(), &app),
        Command::Update { bundle, target, no_wait, wait_s } => {
            remote::update(target.device.as_deref(), &bundle, no_wait, Duration::from_secs(wait_s))
        }
        Command::Logs { target, follow, json } => remote::logs(target.device.as_deref(), follow, json),
        Command::Fleet { connection, command } => fleet::run(&connection, *command),
        Command::Asset(command) => asset::run(command),
        Command::Reboot { target, wait } => remote::reboot(target.device.as_deref(), wait.map(Duration::from_secs)),
        Command::App(AppCommand::Pack { component, manifest, version, set, output }) => {
            pack(&component, &manifest, version, &set, output)
        }
        Command::App(AppCommand::Sign { app, key, output }) => sign(&app, &key, output),
        #[cfg(feature = "run")]
        Command::App(AppCommand::Precompile { app, target, output }) => precompile(&app, &target, output),
        Command::App(AppCommand::Stop { name, on }) => on.run(&name, device::AppOp::Stop),
        Command::App(AppCommand::Start { name, on }) => on.run(&name, device::AppOp::Start),
        Command::App(AppCommand::Remove { name, on }) => on.run(&name, device::AppOp::Remove),
        Command::App(AppCommand::Inspect { app, trust, json }) => inspect(&app, &trust, json),
        Command::Bundle(BundleCommand::Inspect { bundle: path, keyring, json }) => {
            let info = bundle::inspect(&path, keyring.as_deref())?;
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if json {
                let images: Vec<_> = info
                    .images
                    .iter()
                    .map(|i| {
                        serde_json::json!({"class": i.class, "filename": i.filename, "size": i.size,
                            "sha256": i.sha256, "hooks": i.hooks})
                    })
                    .collect();
                let v = serde_json::json!({"compatible": info.compatible, "version": info.version,
                    "description": info.description, "app-interface": info.app_interface, "size": size, "images": images,
                    "signer": if keyring.is_some() { info.signer.clone() } else { None }});
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", bundle::describe(&info, size, keyring.is_some()));
            }
            Ok(())
        }
        Command::App(AppCommand::Keygen { dir, name }) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let (secret, public) = write_key_pair(&generate_key(), &dir, &name)?;
            println!("secret key: {}\npublic key: {}", secret.display(), public.display());
            Ok(())
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Write through a temporary file and a rename, so a watcher never sees half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    trellis_layout::write_atomic(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn pack(
    component: &Path,
    manifest: &Path,
    version: Option<String>,
    set: &[String],
    output: Option<PathBuf>,
) -> Result<()> {
    let text = std::fs::read_to_string(manifest).with_context(|| format!("cannot read {}", manifest.display()))?;
    let mut m = Manifest::from_toml(&text).with_context(|| format!("{}", manifest.display()))?;
    if let Some(v) = version {
        m.version = v;
    }
    for kv in set {
        let (k, v) = kv.split_once('=').with_context(|| format!("--set {kv:?}: expected KEY=VALUE"))?;
        m.config.insert(k.to_owned(), v.to_owned());
    }
    let app = trellis_appfmt::pack(&read(component)?, &m).with_context(|| format!("{}", component.display()))?;
    let out = output.unwrap_or_else(|| trellis_layout::AppsDir::new("").path(&m.name));
    write_atomic(&out, &app)?;
    println!("{} {} -> {} ({} bytes)", m.name, m.version, out.display(), app.len());
    Ok(())
}

fn sign(app: &Path, key: &Path, output: Option<PathBuf>) -> Result<()> {
    let key = load_signing_key(key)?;
    let signed = trellis_appfmt::sign(&read(app)?, &key).with_context(|| format!("{}", app.display()))?;
    let out = output.unwrap_or_else(|| app.to_owned());
    write_atomic(&out, &signed)?;
    println!("signed {} with key {}", out.display(), trellis_appfmt::KeyId::of(&key.public_key_bytes()));
    Ok(())
}

#[cfg(feature = "run")]
fn precompile(app: &Path, target: &str, output: Option<PathBuf>) -> Result<()> {
    let t0 = std::time::Instant::now();
    let bytes = read(app)?;
    let with = trellis_runtime::precompile(&bytes, target).with_context(|| format!("{}", app.display()))?;
    let out = output.unwrap_or_else(|| app.to_owned());
    write_atomic(&out, &with)?;
    let native = AppFile::parse(&with).ok().and_then(|f| f.native).map_or(0, |n| n.range.len());
    println!(
        "precompiled {} for {target} in {:.1} s: {native} bytes of native code (compressed), {} bytes in all, unsigned",
        out.display(),
        t0.elapsed().as_secs_f64(),
        with.len()
    );
    Ok(())
}

fn inspect(path: &Path, trust: &[PathBuf], json: bool) -> Result<()> {
    let bytes = read(path)?;
    let file = AppFile::inspect(&bytes).with_context(|| format!("{}", path.display()))?;
    let code = file.check_code().map_err(|e| e.to_string());
    // A damaged component is still reported on (its digests say what changed).
    let imports = interface_imports(&bytes).map_err(|e| e.to_string());
    let verified = if trust.is_empty() {
        None
    } else {
        let list = trellis_appfmt::TrustList::load(trust)?;
        Some(file.verify(&bytes, &list).map(|k| k.to_string()).map_err(|e| e.to_string()))
    };
    let m = &file.manifest;
    if json {
        let v = serde_json::json!({
            "file": path,
            "size": file.size,
            "sha256": file.sha256_hex(),
            "code": {
                "digest": file.code_digest(),
                "recorded": m.code_digest,
                "matches": code.is_ok(),
                "error": code.as_ref().err(),
            },
            "manifest": m,
            "imports": imports.as_ref().ok(),
            "signature": file.signature.as_ref().map(|s| s.key_id().to_string()),
            "native": file.native.as_ref().map(|n| serde_json::json!({
                "target": n.target,
                "bytes": n.range.len(),
                "for-this-code": n.code_sha256 == file.code_sha256,
            })),
            "verified": verified.as_ref().map(|r| match r { Ok(k) => serde_json::json!({"key": k}), Err(e) => serde_json::json!({"error": e}) }),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("app:         {} {}", m.name, m.version);
    if !m.description.is_empty() {
        println!("description: {}", m.description);
    }
    println!("file:        {} ({} bytes)", path.display(), file.size);
    println!("sha256:      {}", file.sha256_hex());
    println!(
        "code:        {} ({})",
        file.code_digest(),
        code.as_ref().map_or_else(|e| format!("DOES NOT MATCH: {e}"), |()| "matches the manifest".to_owned())
    );
    if let Some(n) = &file.native {
        let stale = if n.code_sha256 == file.code_sha256 { "" } else { ", compiled from OTHER code: not used" };
        println!("native:      {} ({} bytes compressed{stale})", n.target, n.range.len());
    }
    println!("signature:   {}", file.signature.as_ref().map_or("none".to_owned(), |s| format!("key {}", s.key_id())));
    if let Some(v) = &verified {
        println!("verified:    {}", v.as_ref().map_or_else(|e| format!("NO: {e}"), |k| format!("yes, key {k}")));
    }
    let p = &m.permissions;
    println!(
        "permissions: gpio-outputs {:?}, gpio-inputs {:?}, i2c {:?}, spi {:?}",
        p.gpio_outputs,
        p.gpio_inputs,
        p.i2c.iter().map(|g| format!("{}:{:#04x}", g.bus, g.address)).collect::<Vec<_>>(),
        p.spi
    );
    println!("             publish {:?}, subscribe {:?}, hotplug {:?}", p.publish, p.subscribe, p.hotplug);
    println!(
        "limits:      memory {} KiB, {} ms per call, storage {} KiB",
        m.limits.memory_kib, m.limits.call_ms, m.limits.storage_kib
    );
    for (k, v) in &m.config {
        println!("config:      {k} = {v}");
    }
    println!("imports:");
    for i in imports.as_deref().unwrap_or_default() {
        println!("  {i}");
    }
    if let Err(e) = code {
        bail!("{}: {e}", path.display());
    }
    if let Err(e) = imports {
        bail!("{}: {e}", path.display());
    }
    if let Some(Err(_)) = verified {
        bail!("signature check failed");
    }
    Ok(())
}

#[cfg(feature = "run")]
fn run_apps(args: &RunArgs) -> Result<()> {
    let meta = std::fs::metadata(&args.path).with_context(|| format!("cannot open {}", args.path.display()))?;
    let (apps_dir, only) = if meta.is_dir() {
        (args.path.clone(), None)
    } else {
        let dir = args.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_owned();
        (dir, args.path.file_name().map(PathBuf::from))
    };
    let state_dir = args.state_dir.clone().unwrap_or_else(|| apps_dir.join(".trellis"));
    let mut config = RuntimeConfig::new(&apps_dir, &state_dir);
    if let Some(file) = only {
        let Some(name) = trellis_layout::AppsDir::name(&file) else {
            bail!("{}: an app file is named NAME.wasm (NAME as in its manifest)", args.path.display());
        };
        config.only = Some(vec![name]);
    }
    config.require_signatures = args.require_signatures;
    config.trust.clone_from(&args.trust);
    config.profiler = args.profile.unwrap_or_default();
    let board = SimBoard::standard();
    board.temperature.set(args.temperature);
    board.gpio.on_output_change(|line, level| tracing::info!(target: "sim", "GPIO {line} -> {level:?}"));
    let runtime = Runtime::start(config, board.board())?;
    let subscription = runtime.subscribe("#");
    tracing::info!(dir = %apps_dir.display(), "running; replace a .wasm file there to swap it (Ctrl-C to stop)");
    let deadline = args.seconds.map(|s| std::time::Instant::now() + Duration::from_secs(s));
    loop {
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            break;
        }
        print_messages(&subscription);
        if args.room {
            let heater = board.gpio.level(22).map(trellis_hal::gpio::Level::is_high).unwrap_or(false);
            let t = board.temperature.get();
            board.temperature.set(t + if heater { 0.02 } else { -0.01 });
        }
    }
    runtime.shutdown();
    Ok(())
}

/// Print the messages published since the last call, after waiting 100 ms.
/// (Loads, refusals and crashes are logged by the runtime itself.)
#[cfg(feature = "run")]
fn print_messages(messages: &trellis_runtime::MessageReceiver) {
    std::thread::sleep(Duration::from_millis(100));
    for m in messages.try_iter() {
        let payload = trellis_runtime::printable::payload(&m.payload, 1024);
        tracing::info!(target: "pubsub", "{} {}: {payload}", m.from, m.topic);
    }
}
