//! An app's lifecycle timed from the operator's side, after Paradrop (Liu et
//! al., SEC 2016), which reports its chutes' deploy, start, stop and delete
//! times (527, 5, 17 and 7 s, the deploy mostly a Docker image build).
//!
//! Each operation is the host's `trellis` CLI over the management API
//! ([`Cli`]), timed from starting the command on the host until it returns
//! with the device's answer, which the device gives only once the operation
//! is done:
//!
//! | operation | command | the device answers once |
//! |---|---|---|
//! | deploy | `trellis push APP.wasm` (an app the device does not have) | the app runs (checked, compiled, started; its file in place) |
//! | stop | `trellis app stop APP` | the app handled `shutdown` and its worker ended |
//! | start | `trellis app start APP` | the app runs again |
//! | delete | `trellis app remove APP` | the app stopped and its file is gone |
//!
//! Deploys come in two kinds: *cold*, code the device has never seen (a
//! nonce in a custom section gives it a new hash, so the runtime compiles
//! it with Cranelift, as Paradrop builds an image), and *warm*, the same code
//! again (from the compile cache). After each command the harness checks
//! what it did: the console's `app running` line, the state in `trellis
//! status --json`, the app gone. A stop of the app already stopped (the
//! device has nothing to do: process start, TLS handshake, one request
//! through the runtime's supervisor) is timed too: the floor under every
//! figure. (`trellis status` is no floor: it asks RAUC for the slots over
//! D-Bus.)
//!
//! [`experiment`] is what `tests/app_lifecycle.rs` asserts on and what `make
//! bench-twin` prints ([`table`]).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::operator::{Cli, text};
use crate::{BOOT_TIMEOUT, Error, Guest, add_custom_section};

/// The app deployed: the `counter` example (`make apps`) under this name.
pub const APP: &str = "lifecycle";

/// How many times each operation is timed by `make bench-twin`.
pub const RUNS: usize = 5;

/// Paradrop's figures (SEC 2016, Table 3), in seconds: deploy, start, stop, delete.
pub const PARADROP_S: [(&str, f64); 4] = [("deploy", 527.0), ("start", 5.0), ("stop", 17.0), ("delete", 7.0)];

/// Every time measured, in seconds, one entry per run.
#[derive(Debug, Clone, Default)]
pub struct Times {
    /// Push of code the device never saw → running.
    pub deploy_cold: Vec<f64>,
    /// Push of code in the compile cache → running.
    pub deploy_warm: Vec<f64>,
    /// Stop → stopped.
    pub stop: Vec<f64>,
    /// Start → running.
    pub start: Vec<f64>,
    /// Remove → gone.
    pub delete: Vec<f64>,
    /// `trellis app stop` of a stopped app: the CLI's round trip alone.
    pub floor: Vec<f64>,
}

/// The median of `v` (the upper one of an even count); NaN when empty.
#[must_use]
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The `counter` example (`build/apps`) as app [`APP`], `version`; with a
/// `nonce`, a custom section that gives its code a new hash.
///
/// # Panics
/// The app is not built (`make apps`).
#[must_use]
pub fn app_file(version: &str, nonce: Option<u64>) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../build/apps/counter.wasm");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (make apps)", path.display()));
    let mut manifest = trellis_appfmt::AppFile::parse(&bytes).expect("a packed example").manifest;
    APP.clone_into(&mut manifest.name);
    version.clone_into(&mut manifest.version);
    let mut code = trellis_appfmt::component_code(&bytes).expect("a component");
    if let Some(n) = nonce {
        add_custom_section(&mut code, b"lifecycle-nonce", &n.to_le_bytes());
    }
    trellis_appfmt::pack(&code, &manifest).expect("packs")
}

/// Run `trellis ARGS`; it must succeed and print `expect`. Its time, in seconds.
fn timed(cli: &Cli, args: &[&str], expect: &str) -> Result<f64, Error> {
    let t = Instant::now();
    let o = cli.run(args);
    let secs = t.elapsed().as_secs_f64();
    let out = text(&o);
    if !o.status.success() || !out.contains(expect) {
        return Err(Error::Command {
            command: format!("trellis {}", args.join(" ")),
            code: o.status.code().unwrap_or(-1),
            output: format!("expected {expect:?}:\n{out}"),
        });
    }
    Ok(secs)
}

/// [`APP`]'s `(version, state)` in `trellis status --json`, if it is there.
fn state(cli: &Cli) -> Result<Option<(String, String)>, Error> {
    let o = cli.run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).map_err(|e| Error::Command {
        command: "trellis status --json".into(),
        code: o.status.code().unwrap_or(-1),
        output: format!("{e}:\n{}", text(&o)),
    })?;
    let apps = status["apps"].as_array().cloned().unwrap_or_default();
    Ok(apps.iter().find(|a| a["name"] == APP).map(|a| {
        let field = |k: &str| a[k].as_str().unwrap_or("").to_owned();
        (field("version"), field("state"))
    }))
}

/// The app must now be in `want` (`None`: gone).
fn expect_state(cli: &Cli, after: &str, want: Option<(&str, &str)>) -> Result<(), Error> {
    let now = state(cli)?;
    if now.as_ref().map(|(v, s)| (v.as_str(), s.as_str())) == want {
        return Ok(());
    }
    Err(Error::Command {
        command: format!("trellis status --json, after {after}"),
        code: 0,
        output: format!("{APP} should be {want:?}, the status says {now:?}"),
    })
}

/// Deploy, stop, start and delete [`APP`] `runs` times on a booted twin
/// whose API `cli` reaches, each checked; then one warm deploy and delete per
/// run. Files go to `dir`. Leaves the device without the app.
///
/// # Errors
/// An operation failed or did not do what it said (the command and what the
/// device showed), or its `app running` line did not come.
pub fn experiment(cli: &Cli, device: &mut Guest, dir: &Path, runs: usize) -> Result<Times, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut times = Times::default();
    // A nonce per run and per harness run: code no device has compiled before.
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    for i in 0..runs {
        let version = format!("1.0.{i}");
        let file = dir.join(format!("{APP}-{version}.wasm"));
        let bytes = app_file(&version, Some(seed * 100 + i as u64));
        std::fs::write(&file, &bytes).map_err(|e| Error::io(&file, e))?;
        let path = file.to_str().unwrap_or_default();
        let running = format!("app running app=\"{APP}\" version={version}");

        times.deploy_cold.push(timed(cli, &["push", path], &format!("{APP} {version} is running"))?);
        device.wait_for(&running, BOOT_TIMEOUT)?;
        expect_state(cli, "deploy", Some((&version, "running")))?;

        times.stop.push(timed(cli, &["app", "stop", APP], &format!("{APP} {version} is stopped"))?);
        expect_state(cli, "stop", Some((&version, "stopped")))?;
        times.floor.push(timed(cli, &["app", "stop", APP], &format!("{APP} {version} is stopped"))?);

        times.start.push(timed(cli, &["app", "start", APP], &format!("{APP} {version} is running"))?);
        device.wait_for(&running, BOOT_TIMEOUT)?;
        expect_state(cli, "start", Some((&version, "running")))?;

        times.delete.push(timed(cli, &["app", "remove", APP], &format!("{APP} is removed"))?);
        expect_state(cli, "delete", None)?;

        // The same file again: its code is in the compile cache now.
        times.deploy_warm.push(timed(cli, &["push", path], &format!("{APP} {version} is running"))?);
        device.wait_for(&running, BOOT_TIMEOUT)?;
        expect_state(cli, "a warm deploy", Some((&version, "running")))?;
        timed(cli, &["app", "remove", APP], &format!("{APP} is removed"))?;
        expect_state(cli, "delete", None)?;
    }
    Ok(times)
}

/// The medians as a Markdown table next to Paradrop's figures.
#[must_use]
pub fn table(t: &Times) -> String {
    let paradrop =
        |op: &str| PARADROP_S.iter().find(|(o, _)| *o == op).map_or("—".to_owned(), |(_, s)| format!("{s:.0} s"));
    let row = |name: &str, v: &[f64], op: &str| {
        format!("| {name} | {:.0} ms | {} | {} |\n", median(v) * 1000.0, v.len(), paradrop(op))
    };
    let mut out = String::from("| operation (host CLI → device's answer) | Trellis, median | runs | Paradrop |\n");
    out.push_str("|---|---|---|---|\n");
    out.push_str(&row("deploy: `trellis push`, new code (compiled) → running", &t.deploy_cold, "deploy"));
    out.push_str(&row("deploy: `trellis push`, code in the cache → running", &t.deploy_warm, "-"));
    out.push_str(&row("start: `trellis app start` → running", &t.start, "start"));
    out.push_str(&row("stop: `trellis app stop` → stopped", &t.stop, "stop"));
    out.push_str(&row("delete: `trellis app remove` → gone", &t.delete, "delete"));
    out.push_str(&row("(floor: `trellis app stop` of a stopped app: CLI, TLS, one request)", &t.floor, "-"));
    out
}

/// Every time measured is a time a command can take: finite, above zero,
/// below `ceiling`; the offending figure otherwise.
///
/// # Errors
/// The first implausible figure, named.
pub fn plausible(t: &Times, ceiling: Duration) -> Result<(), String> {
    let all = [
        ("deploy (cold)", &t.deploy_cold),
        ("deploy (warm)", &t.deploy_warm),
        ("stop", &t.stop),
        ("start", &t.start),
        ("delete", &t.delete),
        ("floor", &t.floor),
    ];
    for (name, v) in all {
        if v.is_empty() {
            return Err(format!("no {name} time"));
        }
        if let Some(x) = v.iter().find(|x| !x.is_finite() || **x <= 0.0 || **x > ceiling.as_secs_f64()) {
            return Err(format!("{name}: {x} s is not a time a command takes (all: {v:?})"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn medians_tables_and_plausibility() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < 1e-9);
        assert!(median(&[]).is_nan());
        let t = Times {
            deploy_cold: vec![2.0, 3.0, 1.0],
            deploy_warm: vec![0.5],
            stop: vec![0.2],
            start: vec![0.4],
            delete: vec![0.3],
            floor: vec![0.1],
        };
        let table = table(&t);
        assert!(
            table.contains("| deploy: `trellis push`, new code (compiled) → running | 2000 ms | 3 | 527 s |"),
            "{table}"
        );
        assert!(table.contains("| stop: `trellis app stop` → stopped | 200 ms | 1 | 17 s |"), "{table}");
        assert!(table.contains("| 500 ms | 1 | — |"), "{table}");
        assert_eq!(plausible(&t, Duration::from_secs(60)), Ok(()));
        let bad = Times { stop: vec![0.0], ..t.clone() };
        assert!(plausible(&bad, Duration::from_secs(60)).unwrap_err().starts_with("stop: 0 s"));
        let none = Times { delete: Vec::new(), ..t };
        assert_eq!(plausible(&none, Duration::from_secs(60)), Err("no delete time".into()));
    }
}
