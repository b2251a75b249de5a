//! A site's LAN in network namespaces, for the LAN's tests (`tests/swarm.rs`)
//! and its benchmark (`benches/lan.rs`): a bridge, an origin (`trellis asset
//! serve`) behind a 10 Mbit/s uplink (`tc` tbf), and devices running
//! `trellis asset fetch|sync` in their own namespaces. Needs root (`ip
//! netns`, `tc`). Everything made is removed when the [`Lan`] is dropped.

#![allow(dead_code, clippy::unwrap_used, clippy::missing_panics_doc)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use trellis_assets::{BlockStore, Index};

pub const TRELLIS: &str = env!("CARGO_BIN_EXE_trellis");
pub const PORT: u16 = 8470;
/// Bounds every wait of these tests.
pub const DEADLINE: Duration = Duration::from_secs(240);

pub fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Namespaces on one bridge: node 0 is the origin, 1.. the devices.
pub struct Lan {
    tag: String,
    pub nodes: usize,
}

impl Lan {
    pub fn new(test: &str, nodes: usize) -> Self {
        let tag = format!("tsw-{}-{test}", std::process::id());
        let lan = Self { tag, nodes };
        let hub = lan.hub();
        run(&["ip", "netns", "add", &hub]);
        run(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &hub, "link", "set", "br0", "up"]);
        for k in 0..nodes {
            let ns = lan.ns(k);
            let port = format!("p{k}");
            run(&["ip", "netns", "add", &ns]);
            run(&["ip", "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port, "netns", &hub]);
            run(&["ip", "-n", &hub, "link", "set", &port, "master", "br0", "up"]);
            run(&["ip", "-n", &ns, "addr", "add", &format!("{}/24", lan.ip(k)), "dev", "eth0"]);
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        // The origin's uplink to the site: 10 Mbit/s out of it. The bucket
        // holds what the link carries in 8 ms.
        run(&[
            "ip",
            "netns",
            "exec",
            &lan.ns(0),
            "tc",
            "qdisc",
            "add",
            "dev",
            "eth0",
            "root",
            "tbf",
            "rate",
            "10mbit",
            "burst",
            "10kb",
            "latency",
            "400ms",
        ]);
        lan
    }

    /// The origin's uplink (node 0's link, out of it) at `rate` (`tc`
    /// notation) instead of 10 Mbit/s.
    #[allow(dead_code)] // the tests keep 10 Mbit/s
    pub fn uplink(&self, rate: &str) {
        run(&[
            "ip",
            "netns",
            "exec",
            &self.ns(0),
            "tc",
            "qdisc",
            "replace",
            "dev",
            "eth0",
            "root",
            "tbf",
            "rate",
            rate,
            "burst",
            "10kb",
            "latency",
            "400ms",
        ]);
    }

    /// Node `k`'s link to the bridge limited to `rate` (`tc` notation,
    /// `100mbit`) each way: its uploads on its side, its downloads on the
    /// bridge's port. The bucket holds what the link carries in 5 ms.
    pub fn shape(&self, k: usize, rate: &str) {
        let (ns, hub, port) = (self.ns(k), self.hub(), format!("p{k}"));
        for (ns, dev) in [(ns.as_str(), "eth0"), (hub.as_str(), port.as_str())] {
            run(&[
                "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst",
                "64kb", "latency", "100ms",
            ]);
        }
    }

    pub fn hub(&self) -> String {
        format!("{}-hub", self.tag)
    }

    pub fn ns(&self, k: usize) -> String {
        format!("{}-{k}", self.tag)
    }

    pub fn ip(&self, k: usize) -> String {
        format!("10.99.0.{}", k + 1)
    }

    pub fn addr(&self, k: usize) -> String {
        format!("{}:{PORT}", self.ip(k))
    }

    /// Bytes node `k` sent on its link.
    pub fn sent(&self, k: usize) -> u64 {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(k), "cat", "/sys/class/net/eth0/statistics/tx_bytes"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    /// `program` with `args` in node `k`'s namespace; its stdout's lines come on the channel.
    pub fn start_program(&self, k: usize, program: &Path, args: &[String]) -> Node {
        Node::spawn(Command::new("ip").args(["netns", "exec", &self.ns(k)]).arg(program).args(args))
    }

    /// `trellis` with `args` in node `k`'s namespace; its stdout's lines come on the channel.
    pub fn start(&self, k: usize, args: &[String]) -> Node {
        Node::spawn(Command::new("ip").args(["netns", "exec", &self.ns(k), TRELLIS]).args(args))
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for k in 0..self.nodes {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(k)]).status();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.hub()]).status();
    }
}

pub struct Node {
    child: Child,
    pub lines: mpsc::Receiver<String>,
    /// The last lines it wrote on stderr (what a failure shows).
    errors: Arc<Mutex<VecDeque<String>>>,
}

impl Node {
    /// The first line containing `text`, within the deadline.
    pub fn wait_containing(&self, text: &str, what: &str) -> String {
        self.wait_line(|line| line.contains(text), &format!("containing {text:?}"), what, DEADLINE)
    }

    /// The first line `wanted` accepts (described as `which`), within `deadline`.
    fn wait_line(&self, wanted: impl Fn(&str) -> bool, which: &str, what: &str, deadline: Duration) -> String {
        let end = Instant::now() + deadline;
        loop {
            match self.lines.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(line) if wanted(&line) => return line,
                Ok(_) => {}
                Err(e) => {
                    let errors = self.errors.lock().unwrap().iter().cloned().collect::<Vec<_>>().join("\n");
                    panic!("{what}: no line {which} ({e}); its stderr ended:\n{errors}")
                }
            }
        }
    }

    /// Start `command`; its stdout's lines come on the channel.
    pub fn spawn(command: &mut Command) -> Self {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let errors = Arc::new(Mutex::new(VecDeque::new()));
        let tail = Arc::clone(&errors);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut tail = tail.lock().unwrap();
                if tail.len() == 20 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        Node { child, lines, errors }
    }

    /// The first line starting with `prefix`, within the deadline.
    pub fn wait_for(&self, prefix: &str, what: &str) -> String {
        self.wait_within(prefix, what, DEADLINE)
    }

    /// The first line starting with `prefix`, within `deadline`.
    pub fn wait_within(&self, prefix: &str, what: &str, deadline: Duration) -> String {
        self.wait_line(|line| line.starts_with(prefix), &format!("starting {prefix:?}"), what, deadline)
    }

    /// The JSON report `trellis asset fetch` prints when it holds the release.
    pub fn report(&self, what: &str) -> serde_json::Value {
        self.report_within(what, DEADLINE)
    }

    /// The same within `deadline`.
    pub fn report_within(&self, what: &str, deadline: Duration) -> serde_json::Value {
        serde_json::from_str(&self.wait_within("{", what, deadline)).unwrap()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

#[path = "../../../../firmware/assets/tests/common/mod.rs"]
mod assets_common;
/// `size` bytes of noise, the same for the same `seed`.
pub use assets_common::noise_from as noise;

/// A release of `size` bytes at the origin: its bytes and id.
pub fn release_of(dir: &Path, size: usize) -> (Vec<u8>, String) {
    let bytes = noise(size, 0x9E37_79B9_7F4A_7C15);
    std::fs::create_dir_all(dir.join("origin")).unwrap();
    std::fs::write(dir.join("origin/update.raucb"), &bytes).unwrap();
    let id = Index::of(&bytes).id().to_string();
    (bytes, id)
}

pub fn origin(lan: &Lan, dir: &Path) -> Node {
    let args = ["asset", "serve", &dir.join("origin").display().to_string(), "--listen", &lan.addr(0), "--push", "0"];
    let node = lan.start(0, &args.map(String::from));
    node.wait_for("serving on", "the origin");
    node
}

/// `trellis asset fetch` on device `k`, its store under `dir`, every other device its peer.
pub fn device(lan: &Lan, k: usize, id: &str, dir: &Path, extra_peers: &[String]) -> Node {
    let mut args: Vec<String> =
        ["asset", "fetch", id, "--origin", &lan.addr(0), "--share", &lan.addr(k), "--linger"].map(String::from).into();
    args.extend(["--store".into(), store(dir, k).display().to_string()]);
    for j in (1..lan.nodes).filter(|&j| j != k) {
        args.extend(["--peer".into(), lan.addr(j)]);
    }
    for p in extra_peers {
        args.extend(["--peer".into(), p.clone()]);
    }
    lan.start(k, &args)
}

pub fn store(dir: &Path, k: usize) -> PathBuf {
    dir.join(format!("device-{k}"))
}

/// Device `k` holds every block of the release, and only the publisher's bytes.
pub fn holds(dir: &Path, k: usize, bytes: &[u8]) {
    let index = Index::of(bytes);
    let store = BlockStore::open(&store(dir, k), &index.id(), &index).unwrap();
    assert_eq!(store.held(), index.count(), "device {k} holds every block");
    assert!(store.read(0, index.size).unwrap() == bytes, "device {k} holds the publisher's bytes");
}

pub fn fetched(report: &serde_json::Value) -> u64 {
    report["from-origin"].as_u64().unwrap()
        + report["from-peers"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum::<u64>()
}
