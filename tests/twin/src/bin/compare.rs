//! `trellis-compare` (`make compare`): the partial (app) and full (firmware)
//! update paths measured side by side on the device twin in one run.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use trellis_appfmt::{AppFile, component_code, pack};
use trellis_twin::compare::{self, Inputs, TwinTarget};
use trellis_twin::origin::Origin;
use trellis_twin::{EXAMPLES, Twin};

/// Measure both update paths on the twin and print one table.
#[derive(Debug, Parser)]
#[command(name = "trellis-compare")]
struct Args {
    /// The build directory (`make twin-image` and `make bundle` output).
    #[arg(long, default_value = "build")]
    build: PathBuf,
    /// Also write the table here.
    #[arg(long)]
    out: Option<PathBuf>,
}

const PERIOD_MS: u64 = 100;

/// The example `app` from `make apps` with `version` and a `period-ms`.
fn example(build: &Path, app: &str, version: &str, period_ms: u64) -> Result<Vec<u8>> {
    let path = build.join(format!("apps/{app}.wasm"));
    let bytes = std::fs::read(&path).with_context(|| format!("{} (make apps)", path.display()))?;
    let mut manifest = AppFile::parse(&bytes)?.manifest;
    manifest.version = version.into();
    manifest.config.insert("period-ms".into(), period_ms.to_string());
    Ok(pack(&component_code(&bytes)?, &manifest)?)
}

fn script(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]).envs(env.iter().copied());
    let o = cmd.output().with_context(|| args[0].to_owned())?;
    if !o.status.success() {
        bail!("{}: {}{}", args.join(" "), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    }
    Ok(())
}

fn run(args: &Args) -> Result<String> {
    let work = args.build.join("compare");
    std::fs::create_dir_all(&work).with_context(|| work.display().to_string())?;
    let build = args.build.to_str().context("build path is not UTF-8")?;
    let (good, bad) = (work.join("update.raucb"), work.join("unhealthy.raucb"));
    let g = good.to_str().context("path")?;
    script(&["scripts/twin-bundle.sh", build, g], &[("VERSION", "compare")])?;
    script(&["scripts/twin-broken-bundle.sh", build, "unhealthy", bad.to_str().context("path")?], &[])?;
    // Streamed from an origin on the host: a small change (one line of one file) and a
    // root filesystem with no block in common with the slots.
    let served = work.join("origin");
    std::fs::create_dir_all(&served).with_context(|| served.display().to_string())?;
    for (kind, version) in [("small", "compare-small"), ("rebuilt", "compare-rebuilt")] {
        let out = served.join(format!("{kind}.raucb"));
        script(
            &["scripts/twin-variant-bundle.sh", build, kind, out.to_str().context("path")?],
            &[("VERSION", version)],
        )?;
    }
    let origin = Origin::start(&served).context("the bundle origin")?;
    let (fast, new, broken) =
        (work.join("fast/publisher.wasm"), work.join("new/publisher.wasm"), work.join("broken/publisher.wasm"));
    for p in [&fast, &new, &broken] {
        std::fs::create_dir_all(p.parent().context("path")?)?;
    }
    std::fs::write(&fast, example(&args.build, "publisher", "1.1.0", PERIOD_MS)?)?;
    let new_bytes = example(&args.build, "publisher", "2.0.0", PERIOD_MS)?;
    std::fs::write(&new, &new_bytes)?;
    std::fs::write(&broken, &new_bytes[..new_bytes.len() / 2])?;

    let twin = Twin::flash(&args.build.join("twin/trellis.img"), &args.build.join("twin/runs/compare"))?;
    let mut t = TwinTarget::boot(twin, &EXAMPLES)?;
    // The periodic app: the publisher at 100 ms, seen through the subscriber's log lines.
    let (remote, _) = compare::Target::send(&mut t, &fast)?;
    compare::Target::sh(&mut t, &format!("cp {remote} /data/apps/publisher.wasm"), Duration::from_secs(60))?;
    compare::Target::wait_log(&mut t, "app running app=\"publisher\" version=1.1.0", Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_secs(2));

    let inputs = Inputs {
        app: "publisher",
        new_app: (&new, "2.0.0"),
        broken_app: &broken,
        tick: "demo/ticks: ",
        period: Duration::from_millis(PERIOD_MS),
        bundle: &good,
        bad_bundle: &bad,
    };
    let app = compare::partial(&mut t, &inputs)?;
    let fw = compare::full(&mut t, &inputs)?;
    let served = || origin.served();
    let small = compare::streamed(&mut t, &origin.url("small.raucb"), &served, inputs.tick)?;
    let rebuilt = compare::streamed(&mut t, &origin.url("rebuilt.raucb"), &served, inputs.tick)?;
    let streamed = [("streamed, one line changed", small), ("streamed, every block new", rebuilt)];
    Ok(compare::table(&app, &fw, &streamed, &inputs))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(table) => {
            print!("{table}");
            if let Some(out) = &args.out
                && let Err(e) = std::fs::write(out, &table)
            {
                eprintln!("error: {}: {e}", out.display());
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
