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
}

/// Runs the WebAssembly apps in the apps directory and swaps them when their files change.
#[derive(Debug, Parser)]
#[command(name = "trellis-runtime", version)]
struct Args {
    /// Configuration file (missing file: defaults).
    #[arg(long, default_value = paths::CONFIG_FILE)]
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
    /// GPIO chip for `--board linux`.
    #[arg(long, default_value = "/dev/gpiochip0")]
    gpio_chip: PathBuf,
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
    let board = match args.board {
        BoardKind::Sim => trellis_hal::sim::SimBoard::standard().board(),
        BoardKind::Linux => linux_board(&args.gpio_chip)?,
    };
    let _runtime = Runtime::start(config, board).context("starting the runtime")?;
    tracing::info!("runtime started");
    // Runs until killed; init restarts it if it dies.
    loop {
        std::thread::park();
    }
}

#[cfg(feature = "linux")]
fn linux_board(chip: &std::path::Path) -> Result<trellis_hal::Board> {
    trellis_hal::linux::board(chip).with_context(|| format!("opening {}", chip.display()))
}

#[cfg(not(feature = "linux"))]
fn linux_board(_chip: &std::path::Path) -> Result<trellis_hal::Board> {
    anyhow::bail!("this build has no Linux hardware support (feature `linux`); use --board sim")
}
