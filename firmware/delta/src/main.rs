//! `trellis-delta`: make a firmware delta on the build machine, rebuild an image
//! from one, show one, and the bundle's slot hook on the device.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use trellis_delta::format::{Delta, Recipe};
use trellis_delta::rauc::{self, HookEnv, Outcome, SystemConf};
use trellis_delta::squashfs::{self, Tools};

#[derive(Parser)]
#[command(
    name = "trellis-delta",
    version,
    about = "Firmware deltas: root filesystem images rebuilt from the running slot"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make the delta from image BASE to image NEW, packed by the mksquashfs
    /// options after `--`; checked by rebuilding NEW from BASE before it is kept.
    Make {
        #[arg(long)]
        base: PathBuf,
        #[arg(long)]
        new: PathBuf,
        #[arg(long, short)]
        out: PathBuf,
        /// An environment variable mksquashfs ran with (SOURCE_DATE_EPOCH=...).
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// The file given to mksquashfs's -sort.
        #[arg(long)]
        sort: Option<PathBuf>,
        /// mksquashfs's options, without the source and the destination.
        #[arg(last = true, required = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Rebuild the delta's image from BASE (a file or a slot's device) into OUT.
    Apply {
        #[arg(long)]
        base: PathBuf,
        #[arg(long)]
        delta: PathBuf,
        #[arg(long, short)]
        out: PathBuf,
    },
    /// What a delta holds.
    Show {
        delta: PathBuf,
        /// The whole header as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The bundle's slot hook before RAUC writes the root filesystem
    /// (`slot-pre-install`). Never fails the install: what it cannot rebuild,
    /// RAUC fetches.
    RaucSlotPreInstall,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).with_target(false).without_time().init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trellis-delta: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A scratch directory under the system's temporary directory, removed on drop.
fn scratch(name: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix(&format!("trellis-delta-{name}-")).tempdir().context("a scratch directory")
}

fn run(cli: Cli) -> Result<()> {
    let tools = Tools::default();
    match cli.command {
        Command::Make { base, new, out, env, sort, args } => {
            let mut vars = BTreeMap::new();
            for e in env {
                let Some((k, v)) = e.split_once('=') else { bail!("--env {e}: not NAME=VALUE") };
                vars.insert(k.to_string(), v.to_string());
            }
            let sort = sort
                .map(|p| std::fs::read_to_string(&p).with_context(|| format!("the sort file {}", p.display())))
                .transpose()?;
            let recipe = Recipe { args, env: vars, sort };
            let work = scratch("make")?;
            let made = squashfs::make(&tools, &base, &new, &recipe, work.path(), &out)?;
            let s = &made.stats;
            println!(
                "{}: {} bytes ({:.2} % of the {}-byte image): {} entries, {} removed; {} files patched, {} whole, {} moved, {} with new metadata; rebuilds the image bit for bit",
                out.display(),
                made.bytes,
                100.0 * made.bytes as f64 / made.header.image.size as f64,
                made.header.image.size,
                made.header.entries.len(),
                made.header.removed.len(),
                s.patched,
                s.whole,
                s.moved,
                s.meta_only
            );
        }
        Command::Apply { base, delta, out } => {
            let delta = Delta::open(&delta)?;
            let work = scratch("apply")?;
            let got = squashfs::rebuild(&tools, &base, &delta, work.path(), &out)?;
            if got != delta.header.image {
                bail!(
                    "{}: rebuilt {} bytes with SHA-256 {}, not the delta's image ({} bytes, {})",
                    out.display(),
                    got.size,
                    got.sha256,
                    delta.header.image.size,
                    delta.header.image.sha256
                );
            }
            println!("{}: the delta's image, {} bytes, SHA-256 {}", out.display(), got.size, got.sha256);
        }
        Command::Show { delta, json } => {
            let d = Delta::open(&delta)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&d.header)?);
            } else {
                let h = &d.header;
                println!("base  {} ({} bytes)", h.base.sha256, h.base.size);
                println!("image {} ({} bytes)", h.image.sha256, h.image.size);
                println!("mksquashfs {}", h.recipe.args.join(" "));
                println!(
                    "{} entries, {} removed, {} bytes of payload",
                    h.entries.len(),
                    h.removed.len(),
                    h.payload_bytes()
                );
            }
        }
        Command::RaucSlotPreInstall => slot_pre_install(&tools),
    }
    Ok(())
}

/// The slot hook: every outcome and error is logged (RAUC shows the hook's
/// output in its log), none fails the install.
fn slot_pre_install(tools: &Tools) {
    let env = match HookEnv::from_vars(|k| std::env::var(k).ok()) {
        Ok(env) => env,
        Err(e) => {
            tracing::warn!("{e}; RAUC fetches what the slots lack");
            return;
        }
    };
    let conf_path = trellis_layout::paths::RAUC_SYSTEM_CONF;
    let conf = match std::fs::read_to_string(conf_path) {
        Ok(text) => SystemConf::parse(&text),
        Err(e) => {
            tracing::warn!("{conf_path}: {e}; RAUC fetches what the slots lack");
            return;
        }
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let work = PathBuf::from(trellis_layout::paths::DELTA_WORK);
    match rauc::slot_pre_install(&env, &conf, tools, &work, &mountinfo) {
        Ok(Outcome::NoDelta { slot }) => tracing::info!("slot {slot}: no delta in the bundle"),
        Ok(Outcome::NoBase { slot, delta }) => {
            tracing::info!("slot {slot}: no other slot holds the base of {}", delta.display());
        }
        Ok(Outcome::Rebuilt { slot, from, delta, identical, millis }) => tracing::info!(
            "slot {slot}: rebuilt from slot {from} and {} in {millis} ms: {}",
            delta.display(),
            if identical {
                "the bundle's image, bit for bit"
            } else {
                "not the bundle's image; RAUC fetches what differs"
            }
        ),
        Err(e) => tracing::warn!("slot {}: {e}; RAUC fetches what the slots lack", env.slot.name),
    }
}
