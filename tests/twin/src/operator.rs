//! The operator's side of the twin's network: the host's `trellis` CLI with
//! its own device registry, pointed at a twin's forwarded API port.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};

use crate::Twin;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `trellis` on the host, for one twin.
#[derive(Debug)]
pub struct Cli {
    bin: PathBuf,
    config: PathBuf,
}

/// Standard output and error of a run, together.
#[must_use]
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

impl Cli {
    /// The CLI (`$TRELLIS_CLI`, else `target/debug/trellis`) with a registry
    /// in `dir` holding `twin` at the twin's forwarded port, with the
    /// development PKI (`build/keys/api`).
    ///
    /// # Panics
    /// The CLI is not built (make cli), or `trellis device add` fails.
    #[must_use]
    pub fn new(twin: &Twin, dir: &Path) -> Self {
        let bin = std::env::var_os("TRELLIS_CLI").map_or_else(|| root().join("target/debug/trellis"), PathBuf::from);
        assert!(bin.exists(), "{}: build the CLI first (make cli)", bin.display());
        let cli = Self { bin, config: dir.join("devices.toml") };
        let _ = std::fs::remove_file(&cli.config);
        let pki = root().join("build/keys/api");
        let _ = cli.ok(&["device", "add", "twin", &twin.api_address(), "--pki", pki.to_str().unwrap_or("")]);
        cli
    }

    /// The command, ready to run.
    #[must_use]
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args).env("TRELLIS_CONFIG", &self.config).env_remove("TRELLIS_DEVICE");
        c
    }

    /// Run it.
    ///
    /// # Panics
    /// It cannot be started.
    #[must_use]
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("trellis runs")
    }

    /// Run it; it must succeed. Its standard output.
    ///
    /// # Panics
    /// It failed (its output is in the message).
    #[must_use]
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "trellis {args:?} failed: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `trellis status --json` (the API's device status document).
    ///
    /// # Panics
    /// It failed or printed no JSON.
    #[must_use]
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).expect("status is JSON")
    }

    /// Start it in the background, its standard output lines on a channel.
    ///
    /// # Panics
    /// It cannot be started.
    #[must_use]
    pub fn spawn(&self, args: &[&str]) -> (Child, Receiver<String>) {
        let mut child = self.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("trellis runs");
        let (tx, rx) = channel();
        let out = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    }
}
