//! A twin in a fleet: its provisioning (its own certificate, the servers'
//! CA, where the servers are) written to the data partition through the
//! harness's share, as a factory would, and the operator's `trellis fleet`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use trellis_fleet::sim::Pki;

use crate::{BOOT_TIMEOUT, Error, Guest, MOUNT_SHARE, Twin};

/// Where the twin keeps its fleet identity.
pub const IDENTITY_DIR: &str = "/data/trellis/fleet-identity";

/// Provision the running twin `device` as fleet device `id` of `group`
/// (its certificate issued by `pki`), talking to the server at
/// `10.0.2.2:port` (the host, as QEMU's user network shows it); then restart
/// its runtime so the agent starts, and wait until it has.
///
/// # Errors
/// The share cannot be written, or the agent does not start.
pub fn provision(twin: &Twin, device: &mut Guest, pki: &Pki, port: u16, id: &str, group: &str) -> Result<(), Error> {
    let share = twin.share().join("fleet");
    std::fs::create_dir_all(&share).map_err(|e| Error::io(&share, e))?;
    let (cert, key) = pki.issue(id, false);
    for (from, to) in [(pki.ca(), "ca.pem"), (cert, "device.pem"), (key, "device.key")] {
        std::fs::copy(&from, share.join(to)).map_err(|e| Error::io(&from, e))?;
    }
    let config = format!(
        "servers = [\"tls://10.0.2.2:{port}\"]\nca = \"{IDENTITY_DIR}/ca.pem\"\ncert = \"{IDENTITY_DIR}/device.pem\"\n\
         key = \"{IDENTITY_DIR}/device.key\"\ndevice = \"{id}\"\ngroup = \"{group}\"\npoll-s = 2\nheartbeat-s = 5\n"
    );
    let path = share.join("fleet.toml");
    std::fs::write(&path, config).map_err(|e| Error::io(&path, e))?;
    device.wait_console()?;
    device.sh(&format!(
        "{MOUNT_SHARE} && mkdir -p {IDENTITY_DIR} && cp /mnt/fleet/*.pem /mnt/fleet/*.key {IDENTITY_DIR}/ \
         && chmod 600 {IDENTITY_DIR}/device.key && cp /mnt/fleet/fleet.toml /data/trellis/fleet.toml && sync \
         && kill $(pidof trellis-runtime)"
    ))?;
    device.seen("fleet agent started", BOOT_TIMEOUT)?;
    Ok(())
}

/// The operator's `trellis fleet`, with a context file for one server.
#[derive(Debug)]
pub struct Operator {
    bin: PathBuf,
    context: PathBuf,
    /// Print each command and what it said.
    pub echo: bool,
}

impl Operator {
    /// The CLI (`$TRELLIS_CLI`, else `target/debug/trellis`) as operator
    /// `operator` of `pki`, for the server at `server`; its context in `dir`.
    ///
    /// # Errors
    /// The context cannot be written.
    pub fn new(pki: &Pki, server: std::net::SocketAddr, dir: &Path) -> Result<Self, Error> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let bin = std::env::var_os("TRELLIS_CLI").map_or_else(|| root.join("target/debug/trellis"), PathBuf::from);
        let (cert, key) = pki.issue("operator", false);
        let context = dir.join("fleet-context.toml");
        let text = format!(
            "servers = [\"tls://{server}\"]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            pki.ca().display(),
            cert.display(),
            key.display()
        );
        std::fs::write(&context, text).map_err(|e| Error::io(&context, e))?;
        Ok(Self { bin, context, echo: false })
    }

    /// The command `trellis fleet --context … ARGS`.
    #[must_use]
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("fleet").arg("--context").arg(&self.context).args(args);
        c
    }

    /// Start `trellis fleet controller` (stopped when the result is dropped).
    ///
    /// # Errors
    /// It cannot be started.
    pub fn controller(&self, tick_ms: u64) -> Result<Background, Error> {
        let child = self
            .command(&["controller", "--tick-ms", &tick_ms.to_string()])
            .spawn()
            .map_err(|e| Error::Qemu(format!("{}: {e}", self.bin.display())))?;
        Ok(Background(child))
    }

    /// Start `trellis asset serve DIR` on the site's origin port (what the
    /// twin's `[assets] origin` names), stopped when the result is dropped;
    /// once it answers.
    ///
    /// # Errors
    /// It cannot be started, or does not answer within 30 s.
    pub fn asset_origin(&self, dir: &Path) -> Result<Background, Error> {
        let listen = format!("127.0.0.1:{}", crate::SITE_ORIGIN_PORT);
        let child = Command::new(&self.bin)
            .args(["asset", "serve"])
            .arg(dir)
            .args(["--listen", &listen])
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| Error::Qemu(format!("{}: {e}", self.bin.display())))?;
        let origin = Background(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&listen).is_err() {
            if Instant::now() > deadline {
                return Err(Error::Qemu(format!("trellis asset serve {} did not listen on {listen}", dir.display())));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(origin)
    }

    /// Run `trellis fleet ARGS`; it must succeed. Its standard output.
    ///
    /// # Errors
    /// It failed (with what it said).
    pub fn run(&self, args: &[&str]) -> Result<String, Error> {
        let command = format!("trellis fleet {}", args.join(" "));
        let out = self.command(args).output().map_err(|e| Error::Qemu(format!("{}: {e}", self.bin.display())))?;
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        if self.echo {
            println!("$ {command}\n{said}");
        }
        if !out.status.success() {
            return Err(Error::Command {
                command,
                code: out.status.code().unwrap_or(-1),
                output: format!("{said}{}", String::from_utf8_lossy(&out.stderr)),
            });
        }
        Ok(said)
    }

    /// Wait until rollout `id` is in `state` (`done`, `halted`, …); its JSON.
    ///
    /// # Errors
    /// Not within `timeout`, or the CLI failed.
    pub fn wait_rollout(&self, id: &str, state: &str, timeout: Duration) -> Result<serde_json::Value, Error> {
        let deadline = Instant::now() + timeout;
        let echo = self.echo;
        let quiet = Self { bin: self.bin.clone(), context: self.context.clone(), echo: false };
        let mut last = String::new();
        loop {
            let said = quiet.run(&["rollout", "status", id])?;
            if echo && said != last {
                print!("{said}");
                last = said;
            }
            let json: serde_json::Value = serde_json::from_str(&quiet.run(&["rollout", "status", id, "--json"])?)
                .map_err(|e| Error::Qemu(format!("rollout status --json: {e}")))?;
            if json["state"] == state {
                return Ok(json);
            }
            if Instant::now() > deadline {
                return Err(Error::Qemu(format!("rollout {id} was not {state} within {timeout:?}: {json}")));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// A process killed when this is dropped.
#[derive(Debug)]
pub struct Background(std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The rollout id in what `trellis fleet deploy` said.
#[must_use]
pub fn rollout_id(said: &str) -> String {
    said.strip_prefix("rollout ").and_then(|r| r.split(':').next()).unwrap_or_default().to_owned()
}

/// App `app` as a `downloaded` event's reason says the device took it by
/// its piece root: `app NAME by asset:ROOT (P of F blocks from LAN peers)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenByRoot {
    /// The piece root.
    pub root: String,
    /// Blocks that crossed the network.
    pub fetched: u64,
    /// Of those, the blocks LAN peers sent.
    pub from_peers: u64,
}

/// What `how` (a `downloaded` reason) says of app `app` taken by its piece
/// root; `None` when it says something else (fetched whole, another app).
#[must_use]
pub fn taken_by_root(how: &str, app: &str) -> Option<TakenByRoot> {
    let (root, sources) = how.strip_prefix(&format!("app {app} by asset:"))?.split_once(" (")?;
    let (peers, fetched) = sources.strip_suffix(" blocks from LAN peers)")?.split_once(" of ")?;
    Some(TakenByRoot { root: root.to_owned(), fetched: fetched.parse().ok()?, from_peers: peers.parse().ok()? })
}

/// An edge node: the host build of `trellis-runtime` with no hardware
/// (`--board none`) and `[fleet]` configured as device `id` of `group` (its
/// certificate issued by `pki`), hosting `apps` (name, packed file) and
/// talking to the server at `127.0.0.1:port`. Stopped when dropped.
#[derive(Debug)]
pub struct EdgeNode {
    child: std::process::Child,
    log: PathBuf,
}

impl EdgeNode {
    /// Write its configuration and apps under `dir` and start it.
    ///
    /// # Errors
    /// A file cannot be written or the runtime cannot be started (named).
    pub fn start(
        dir: &Path,
        pki: &Pki,
        port: u16,
        id: &str,
        group: &str,
        apps: &[(&str, Vec<u8>)],
    ) -> Result<Self, Error> {
        let apps_dir = dir.join("apps");
        std::fs::create_dir_all(&apps_dir).map_err(|e| Error::io(&apps_dir, e))?;
        for (name, bytes) in apps {
            // Written before the runtime starts: nothing reads a half-written file.
            let path = apps_dir.join(format!("{name}.wasm"));
            std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
        }
        let (cert, key) = pki.issue(id, false);
        let config = format!(
            "apps-dir = \"{}\"\nstate-dir = \"{}\"\n[fleet]\nservers = [\"tls://127.0.0.1:{port}\"]\nca = \"{}\"\n\
             cert = \"{}\"\nkey = \"{}\"\ndevice = \"{id}\"\ngroup = \"{group}\"\nboard = \"edge\"\n",
            apps_dir.display(),
            dir.join("state").display(),
            pki.ca().display(),
            cert.display(),
            key.display()
        );
        let path = dir.join("runtime.toml");
        std::fs::write(&path, config).map_err(|e| Error::io(&path, e))?;
        // The host build beside this program (`make cli` builds both).
        let bin = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("trellis-runtime")))
            .unwrap_or_else(|| PathBuf::from("target/debug/trellis-runtime"));
        let log = dir.join("edge.log");
        let out = std::fs::File::create(&log).map_err(|e| Error::io(&log, e))?;
        let child = Command::new(&bin)
            .args(["--board", "none", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| Error::io(&bin, e))?;
        Ok(Self { child, log })
    }

    /// What it logged so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until its log holds `needle`; the line.
    ///
    /// # Errors
    /// Not within `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Result<String, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
                return Ok(line.to_owned());
            }
            if Instant::now() > deadline {
                return Err(Error::Command {
                    command: format!("the edge node logging {needle:?}"),
                    code: -1,
                    output: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for EdgeNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_downloaded_reason_says_where_an_apps_blocks_came_from_or_nothing() {
        let how = "app counter by asset:ab12 (2 of 3 blocks from LAN peers)";
        let taken = TakenByRoot { root: "ab12".into(), fetched: 3, from_peers: 2 };
        assert_eq!(taken_by_root(how, "counter"), Some(taken));
        assert_eq!(taken_by_root(how, "blinky"), None, "another app");
        assert_eq!(taken_by_root("app counter by asset:ab12: no source (x); fetched whole", "counter"), None);
        assert_eq!(taken_by_root("app counter by asset:ab12 (on the device already)", "counter"), None);
    }
}
