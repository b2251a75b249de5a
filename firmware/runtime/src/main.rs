//! `trellis-runtime`: the app host started by init on the device.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use trellis_runtime::{Runtime, RuntimeConfig, paths};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BoardKind {
    /// The in-memory simulated board.
    Sim,
    /// The kernel's GPIO character device, i2cdev and spidev (feature `linux`).
    Linux,
    /// No hardware at all (an edge node: apps that only compute and talk):
    /// an app granted a GPIO line is refused, I2C, SPI and PWM are `not-found`.
    None,
}

/// Runs the WebAssembly apps in the apps directory and swaps them when their files change.
#[derive(Debug, Parser)]
#[command(name = "trellis-runtime", version)]
struct Args {
    /// Configuration file (missing file: defaults).
    #[arg(long, default_value = paths::RUNTIME_CONFIG)]
    config: PathBuf,
    /// Override the configuration's apps directory.
    #[arg(long)]
    apps_dir: Option<PathBuf>,
    /// Override the configuration's state directory.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Which hardware to give apps.
    #[arg(long, value_enum, default_value_t = BoardKind::Linux)]
    board: BoardKind,
    /// GPIO chip for `--board linux` (path, name or label; overrides the
    /// configuration's `board.gpio-chip`).
    #[arg(long)]
    gpio_chip: Option<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,cranelift=warn,wasmtime=warn".into()),
        )
        .with_ansi(false)
        .init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let mut config = if args.config.exists() {
        RuntimeConfig::load(&args.config)?
    } else {
        RuntimeConfig::new(paths::APPS_DIR, paths::STATE_DIR)
    };
    if let Some(d) = args.apps_dir {
        config.apps_dir = d;
    }
    if let Some(d) = args.state_dir {
        config.state_dir = d;
    }
    if let Some(chip) = args.gpio_chip {
        config.board.gpio_chip = chip;
    }
    let board = match args.board {
        BoardKind::Sim => trellis_hal::sim::SimBoard::standard().board(),
        BoardKind::Linux => linux_board(&config.board)?,
        BoardKind::None => no_hardware(),
    };
    let runtime = std::sync::Arc::new(Runtime::start(config.clone(), board).context("starting the runtime")?);
    tracing::info!("runtime started");
    if matches!(args.board, BoardKind::Linux) {
        follow_hotplug(&runtime);
    }
    let device = start_updates(&runtime, &config)?;
    // The agent is one more client of the device; the apps run on without it.
    match trellis_runtime::fleet::configured(&config) {
        Ok(Some(fleet)) => {
            if let Err(e) = trellis_runtime::fleet::start(&config, &fleet, device) {
                tracing::error!("{e}");
            }
            if let Err(e) = trellis_runtime::fleet::start_bus(&runtime, &config, &fleet) {
                tracing::error!("{e}");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::error!("{e}"),
    }
    // Runs until killed; init restarts it if it dies.
    loop {
        std::thread::park();
    }
}

/// The firmware update lifecycle (when the configuration has an `[update]`
/// section), the control socket `trellis device` talks to, and the management
/// API (`[api]`).
///
/// Returns the device (the one the fleet agent drives too).
#[cfg(feature = "linux")]
fn start_updates(runtime: &std::sync::Arc<Runtime>, config: &RuntimeConfig) -> Result<Device> {
    use std::sync::Arc;
    use trellis_runtime::device::{self, RuntimeDevice};
    use trellis_update::{Resume, StateFile, Updater, dbus::DbusRauc, system::LinuxPlatform};

    let Some(policy) = config.update.clone() else {
        let device: Device = Arc::new(RuntimeDevice::new(Arc::clone(runtime), config.clone()));
        serve_api(config, &device);
        return Ok(device);
    };
    let platform = LinuxPlatform { reboot_param: paths::REBOOT_PARAM.into() };
    let file = StateFile::new(config.state_dir.join(paths::state::UPDATE));
    let mut rauc = DbusRauc::new(policy.stream_tls.clone());
    let stream = runtime.bundle_stream(config);
    let streams = stream.is_some();
    if let Some(server) = &stream {
        rauc = rauc.with_assets(Arc::clone(server));
    }
    let updater = Arc::new(Updater::new(rauc, platform, file, policy));
    let (u, r, c) = (Arc::clone(&updater), Arc::clone(runtime), config.clone());
    std::thread::Builder::new().name("update".into()).spawn(move || {
        // Also tells the stream server which blocks to keep (`Rauc::settled`).
        match u.resume() {
            Resume::Idle => {}
            Resume::RebootPending => {
                if let Err(e) = u.reboot_into_trial() {
                    tracing::error!("{e}");
                }
            }
            Resume::Trial => {
                u.gate(&|| device::health(&r, &c));
            }
            Resume::Install(bundle) => match u.install_again(&bundle, &mut |_| {}) {
                Ok(_) => {
                    if let Err(e) = u.reboot_into_trial() {
                        tracing::error!("{e}");
                    }
                }
                Err(e) => tracing::error!("firmware update {bundle}: {e}"),
            },
        }
    })?;
    let socket = std::path::Path::new(paths::CONTROL_SOCKET);
    let device: Device = Arc::new(
        RuntimeDevice::new(Arc::clone(runtime), config.clone()).with_firmware(updater).streaming_firmware(streams),
    );
    trellis_control::socket::serve(socket, device.clone())?;
    serve_api(config, &device);
    Ok(device)
}

/// The management API, when configured. The apps run on without it: a bad
/// certificate is an error in the log, not a crash loop.
fn serve_api(config: &RuntimeConfig, device: &Device) {
    if let Some(api) = &config.api {
        match trellis_api::serve(api, device.clone()) {
            Ok(server) if api.announce => trellis_runtime::api::announce(server.addr().port()),
            Ok(_) => {}
            Err(e) => tracing::error!("management API: {e}"),
        }
    }
}

/// The device every client drives.
type Device = std::sync::Arc<dyn trellis_control::Device>;

#[cfg(not(feature = "linux"))]
fn start_updates(runtime: &std::sync::Arc<Runtime>, config: &RuntimeConfig) -> Result<Device> {
    if config.update.is_some() {
        tracing::warn!("this build has no firmware update support (feature `linux`); [update] is ignored");
    }
    let device: Device = std::sync::Arc::new(trellis_runtime::device::RuntimeDevice::new(
        std::sync::Arc::clone(runtime),
        config.clone(),
    ));
    serve_api(config, &device);
    Ok(device)
}

/// A board with no GPIO line, I2C bus, SPI device or PWM channel.
fn no_hardware() -> trellis_hal::Board {
    use trellis_hal::sim::{SimGpioChip, SimI2c, SimPwm, SimSpi};
    trellis_hal::Board {
        gpio: std::sync::Arc::new(SimGpioChip::new("no GPIO chip (--board none)", 0)),
        i2c: std::sync::Arc::new(SimI2c::default()),
        spi: std::sync::Arc::new(SimSpi::default()),
        pwm: std::sync::Arc::new(SimPwm::new(0)),
    }
}

#[cfg(feature = "linux")]
fn linux_board(board: &trellis_runtime::BoardConfig) -> Result<trellis_hal::Board> {
    let buses = board.i2c_bus_map().map_err(anyhow::Error::msg)?;
    trellis_hal::linux::board(&board.gpio_chip, buses).with_context(|| format!("opening GPIO chip {}", board.gpio_chip))
}

#[cfg(not(feature = "linux"))]
fn linux_board(_board: &trellis_runtime::BoardConfig) -> Result<trellis_hal::Board> {
    anyhow::bail!("this build has no Linux hardware support (feature `linux`); use --board sim")
}

/// Hand the kernel's hot-plug events to the apps that follow them.
#[cfg(feature = "linux")]
fn follow_hotplug(runtime: &std::sync::Arc<Runtime>) {
    let r = std::sync::Arc::clone(runtime);
    if let Err(e) = trellis_runtime::uevent::listen(move |event| r.hotplug(event)) {
        tracing::warn!("no hot-plug events: the kernel's uevent socket: {e}");
    }
}

#[cfg(not(feature = "linux"))]
fn follow_hotplug(_runtime: &std::sync::Arc<Runtime>) {}
