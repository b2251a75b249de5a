//! The fleet benchmark (`make bench`; results in docs/benchmarks.md): time
//! from `deploy` to every device reporting the new app running and healthy,
//! for fleets of simulated devices (the real agent driving the shared fake
//! device) plus real `trellis-runtime`s beside them, all on this machine
//! with one `nats-server`; the server's CPU time and memory while it
//! converges. In the same run, the baseline: the same app pushed device by
//! device through each device's management API, as a script of `trellis
//! push` would.
//!
//! Environment: `FLEET_SIZES` (default `10,100,1000`), `FLEET_RUNS` (runs
//! per size, the median reported; default 3), `FLEET_RUNTIMES`
//! (real runtimes beside them, default 10), `TRELLIS_RUNTIME_BIN` (default
//! `target/debug/trellis-runtime`), `FLEET_APP` (default `build/apps/counter.wasm`).
//!
//! Then one artifact of `FLEET_ARTIFACT_MIB` (default 20) read from the
//! object store the two ways there are: through the client library's
//! object store (an ordered push consumer) and by direct gets
//! (`trellis_fleet::object::Reader`, what the agent does); time and the
//! server's CPU time, medians of `FLEET_RUNS`; over loopback, and through
//! a relay that adds a WAN's latency (`trellis_assets::relay`).

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use trellis_api::ApiConfig;
use trellis_api::client::{Client, Credentials as ApiCredentials, Upload};
use trellis_fleet::clock::SystemClock;
use trellis_fleet::controller::Controller;
use trellis_fleet::names::REPORTED;
use trellis_fleet::rollout::{Plan, WaveSize};
use trellis_fleet::sim::{self, Pki, Sim};
use trellis_fleet::{Release, ReportedState, ops};

const GROUP: &str = "bench";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// CPU seconds (user + system) of process `pid` so far.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(") ").map(|(_, r)| r.split(' ').collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident and peak memory of `pid`, MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
    };
    (kib("VmRSS:").unwrap_or(0.0) / 1024.0, kib("VmHWM:").unwrap_or(0.0) / 1024.0)
}

/// A real runtime with the fleet agent and the management API.
struct RealRuntime {
    child: Child,
    api: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for RealRuntime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn real_runtime(pki: &Pki, server: std::net::SocketAddr, id: &str, api_cert: &(PathBuf, PathBuf)) -> RealRuntime {
    let bin = PathBuf::from(env_or(
        "TRELLIS_RUNTIME_BIN",
        &root().join("target/debug/trellis-runtime").display().to_string(),
    ));
    assert!(bin.exists(), "{}: build it (cargo build -p trellis-runtime)", bin.display());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = pki.issue(id, false);
    let api = sim::free_port();
    let state = dir.path().join("state");
    std::fs::create_dir_all(dir.path().join("apps")).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let config = format!(
        "apps-dir = \"{apps}\"\nstate-dir = \"{state}\"\ntrust = []\n[api]\nlisten = \"{api}\"\nclient-ca = \"{ca}\"\n\
         cert = \"{c}\"\nkey = \"{k}\"\nannounce = false\n",
        apps = dir.path().join("apps").display(),
        state = state.display(),
        ca = pki.ca().display(),
        c = api_cert.0.display(),
        k = api_cert.1.display(),
    );
    std::fs::write(dir.path().join("runtime.toml"), config).unwrap();
    let trust = dir.path().join("release.pub");
    std::fs::write(&trust, std::fs::read(pki.dir.path().join("release.pub")).unwrap()).unwrap();
    std::fs::write(
        state.join("fleet.toml"),
        format!(
            "servers = [\"tls://{server}\"]\nca = \"{ca}\"\ncert = \"{c}\"\nkey = \"{k}\"\ndevice = \"{id}\"\ngroup = \"{GROUP}\"\n\
             board = \"{board}\"\npoll-s = 30\nheartbeat-s = 30\ntrust = [\"{t}\"]\n",
            ca = pki.ca().display(),
            c = cert.display(),
            k = key.display(),
            board = sim::BOARD,
            t = trust.display(),
        ),
    )
    .unwrap();
    let child = Command::new(&bin)
        .args(["--board", "sim", "--config"])
        .arg(dir.path().join("runtime.toml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    RealRuntime { child, api, _dir: dir }
}

fn push(client: &Client, app: &str, bytes: &[u8]) {
    let mut reader = bytes;
    let upload = Upload { reader: &mut reader, len: bytes.len() as u64, sent: &mut |_| {} };
    let answer =
        client.send("PUT", &format!("/v1/apps/{app}"), Some(upload)).and_then(trellis_api::client::Incoming::ok);
    let _ = answer.unwrap_or_else(|e| panic!("push to {}: {e}", client.address())).text();
}

struct Row {
    sims: usize,
    runtimes: usize,
    connect_s: f64,
    converge_s: f64,
    server_cpu_s: f64,
    server_rss_mib: f64,
    server_peak_mib: f64,
    baseline_s: f64,
}

#[allow(clippy::too_many_lines)]
async fn measure(n: usize, runtimes: usize, app: &[u8], app_next: &[u8]) -> Row {
    let pki = Pki::new();
    let key = trellis_appfmt::generate_key();
    std::fs::write(pki.dir.path().join("release.pub"), hex::encode(key.public_key_bytes())).unwrap();
    let sims_ids: Vec<String> = (0..n).map(|i| format!("sim-{i:04}")).collect();
    let rt_ids: Vec<String> = (0..runtimes).map(|i| format!("rt-{i:02}")).collect();
    let users: Vec<(&str, &str)> = sims_ids.iter().chain(&rt_ids).map(|d| (d.as_str(), GROUP)).collect();
    let server = sim::single(&pki, &["operator", "controller"], &users);
    let pid = server.pid().unwrap();
    let operator = sim::operator(&pki, &[server.addr()], 1).await;
    for d in sims_ids.iter().chain(&rt_ids) {
        ops::register(&operator, d, GROUP, sim::BOARD).await.unwrap();
    }
    let t_connect = Instant::now();
    let trust = sim::trust(&key);
    let api_cert = pki.issue("localhost", true);
    let mut sims = Vec::new();
    let mut apis = Vec::new();
    for id in &sims_ids {
        let mut s = Sim::new(&pki, &[server.addr()], id, GROUP, trust.clone());
        let mut config = s.config();
        config.poll = Duration::from_secs(30);
        config.heartbeat = Duration::from_secs(30);
        s.start_with(config).await;
        let mut api = ApiConfig::new("127.0.0.1:0".parse().unwrap(), pki.ca(), api_cert.0.clone(), api_cert.1.clone());
        api.announce = false;
        apis.push(trellis_api::serve(&api, s.device.clone()).unwrap());
        sims.push(s);
    }
    let reals: Vec<RealRuntime> = rt_ids.iter().map(|id| real_runtime(&pki, server.addr(), id, &api_cert)).collect();

    // Every device's reports, as they change.
    let reported = operator.kv(REPORTED).await.unwrap();
    let mut watch = reported.watch_with_history(">").await.unwrap();
    let everyone = n + runtimes;
    let mut seen = BTreeSet::new();
    while seen.len() < everyone {
        let e = tokio::time::timeout(Duration::from_secs(120), watch.next()).await.unwrap().unwrap().unwrap();
        seen.insert(e.key);
    }
    let connect_s = t_connect.elapsed().as_secs_f64();

    let controller_link =
        trellis_fleet::link::Link::connect(&sim::credentials(&pki, &[server.addr()], "controller"), None, false)
            .await
            .unwrap();
    let controller =
        tokio::spawn(Controller::new(controller_link, Arc::new(SystemClock), Duration::from_millis(100)).run());
    let id = format!("counter-bench-{n}");
    let file = trellis_appfmt::AppFile::parse(app).unwrap();
    let release = Release::new(&id, sim::BOARD, "0.1.1").with_app("counter", &file.manifest.version, app).signed(&key);
    ops::publish(&operator, &release, &[("counter".into(), app.to_vec())]).await.unwrap();

    let cpu0 = cpu_s(pid);
    let t0 = Instant::now();
    let plan = Plan { waves: vec![WaveSize::Percent(100)], soak_s: 0, error_pct: 100, ..Plan::default() };
    ops::deploy(&operator, &id, GROUP, plan, trellis_fleet::clock::Clock::now_ms(&SystemClock)).await.unwrap();
    let mut done = BTreeSet::new();
    while done.len() < everyone {
        let e = tokio::time::timeout(Duration::from_secs(300), watch.next()).await.unwrap().unwrap().unwrap();
        let r: ReportedState = serde_json::from_slice(&e.value).unwrap();
        let running =
            r.apps.iter().any(|a| a.name == "counter" && a.version == file.manifest.version && a.state == "running");
        if r.release.as_deref() == Some(id.as_str()) && r.healthy && running {
            done.insert(e.key);
        }
    }
    let converge_s = t0.elapsed().as_secs_f64();
    let server_cpu_s = cpu_s(pid) - cpu0;
    let (server_rss_mib, server_peak_mib) = memory_mib(pid);
    controller.abort();

    // The baseline: the next version pushed to each device through its API, one after the other.
    let (cert, key_file) = pki.issue("bench-operator", false);
    let creds = ApiCredentials { ca: pki.ca(), cert, key: key_file };
    let addresses: Vec<String> =
        apis.iter().map(|a| a.addr().to_string()).chain(reals.iter().map(|r| r.api.to_string())).collect();
    let t1 = Instant::now();
    tokio::task::spawn_blocking({
        let app_next = app_next.to_vec();
        move || {
            for address in addresses {
                let client = Client::new(&creds, &address, "localhost").unwrap();
                push(&client, "counter", &app_next);
            }
        }
    })
    .await
    .unwrap();
    let baseline_s = t1.elapsed().as_secs_f64();
    drop(sims);
    drop(reals);
    Row { sims: n, runtimes, connect_s, converge_s, server_cpu_s, server_rss_mib, server_peak_mib, baseline_s }
}

fn main() {
    let sizes: Vec<usize> =
        env_or("FLEET_SIZES", "10,100,1000").split(',').map(|s| s.trim().parse().unwrap()).collect();
    let runtimes: usize = env_or("FLEET_RUNTIMES", "10").parse().unwrap();
    let app_path = PathBuf::from(env_or("FLEET_APP", &root().join("build/apps/counter.wasm").display().to_string()));
    let app = std::fs::read(&app_path).unwrap_or_else(|e| panic!("{}: {e} (make apps)", app_path.display()));
    let repack = |version: &str| {
        let mut manifest = trellis_appfmt::AppFile::parse(&app).unwrap().manifest;
        manifest.version = version.into();
        trellis_appfmt::pack(&trellis_appfmt::component_code(&app).unwrap(), &manifest).unwrap()
    };
    let (first, next) = (repack("9.0.0"), repack("9.0.1"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned()))
        })
        .unwrap_or_default();
    let server_version = Command::new("nats-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut out = format!(
        "Fleet convergence, measured {} on {cpus} cores ({model}), {server_version}, one server, app {} ({} bytes)\n\n\
         Medians of {runs} runs, each on a fresh server.\n\n\
         | devices (simulated + real runtimes) | connect, all reported | deploy → all running | server CPU | server RSS (peak) | baseline: API push one by one | ratio |\n\
         |---|---|---|---|---|---|---|\n",
        std::process::Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%d")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default(),
        app_path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        first.len(),
        runs = env_or("FLEET_RUNS", "3"),
    );
    let runs: usize = env_or("FLEET_RUNS", "3").parse().unwrap();
    for n in sizes {
        // Each run is a fresh server and fleet; the row is the run with the median convergence.
        let mut rows: Vec<Row> = (0..runs.max(1)).map(|_| rt.block_on(measure(n, runtimes, &first, &next))).collect();
        rows.sort_by(|a, b| a.converge_s.total_cmp(&b.converge_s));
        let mut baselines: Vec<f64> = rows.iter().map(|r| r.baseline_s).collect();
        baselines.sort_by(f64::total_cmp);
        let mut row = rows.swap_remove(rows.len() / 2);
        row.baseline_s = baselines[baselines.len() / 2];
        let line = format!(
            "| {} + {} | {:.1} s | **{:.2} s** | {:.2} s | {:.0} MiB ({:.0} MiB) | {:.2} s | {:.1}× |\n",
            row.sims,
            row.runtimes,
            row.connect_s,
            row.converge_s,
            row.server_cpu_s,
            row.server_rss_mib,
            row.server_peak_mib,
            row.baseline_s,
            row.baseline_s / row.converge_s
        );
        eprint!("{line}");
        out.push_str(&line);
    }
    let mib: usize = env_or("FLEET_ARTIFACT_MIB", "20").parse().unwrap();
    out.push_str(&format!(
        "\nAn artifact of {mib} MiB read from the object store, medians of {runs} runs, each on a fresh server:\n\n\
         | link | read | time | MiB/s | server CPU |\n|---|---|---|---|---|\n"
    ));
    for wan in [None, Some(WAN)] {
        let mut reads: Vec<[(f64, f64); 2]> = (0..runs.max(1)).map(|_| rt.block_on(artifact_reads(mib, wan))).collect();
        let link = wan.map_or_else(|| "loopback".to_owned(), |d| format!("{} ms round trip", 2 * d.as_millis()));
        for (way, what) in [
            (0, "client library's object store (ordered push consumer)".to_owned()),
            (1, format!("direct gets, up to {} chunks ahead", trellis_fleet::object::Window::MAX)),
        ] {
            reads.sort_by(|a, b| a[way].0.total_cmp(&b[way].0));
            let (time, cpu) = reads[reads.len() / 2][way];
            let line = format!("| {link} | {what} | {time:.2} s | {:.1} | {cpu:.2} s |\n", mib as f64 / time);
            eprint!("{line}");
            out.push_str(&line);
        }
    }
    print!("{out}");
    let dir = root().join("build/bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("fleet.md"), &out);
}

/// The WAN link of the artifact reads: a relay adds this each way (a 50 ms
/// round trip; this host's kernel has no `netem`).
const WAN: Duration = Duration::from_millis(25);

/// Read one artifact of `mib` MiB through the client library and by direct
/// gets, on a fresh server, over loopback or through a relay adding `delay`
/// each way: (seconds, the server's CPU seconds) of each.
async fn artifact_reads(mib: usize, delay: Option<Duration>) -> [(f64, f64); 2] {
    use tokio::io::AsyncReadExt;
    let pki = Pki::new();
    let server = sim::single(&pki, &["operator"], &[]);
    let pid = server.pid().unwrap();
    let operator = sim::operator(&pki, &[server.addr()], 1).await;
    let bytes: Vec<u8> = (0..mib << 20).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3]).collect();
    operator.artifacts().await.unwrap().put("bench", &mut bytes.as_slice()).await.unwrap();
    let reader = match delay {
        None => operator,
        Some(delay) => {
            let relay = trellis_assets::relay::relay(&server.addr().to_string(), delay).unwrap();
            sim::operator(&pki, &[relay.parse().unwrap()], 1).await
        }
    };
    let (t, cpu) = (Instant::now(), cpu_s(pid));
    let mut read = Vec::with_capacity(bytes.len());
    reader.artifacts().await.unwrap().get("bench").await.unwrap().read_to_end(&mut read).await.unwrap();
    let library = (t.elapsed().as_secs_f64(), cpu_s(pid) - cpu);
    assert!(read == bytes);
    let (t, cpu) = (Instant::now(), cpu_s(pid));
    let mut chunks =
        trellis_fleet::object::Reader::open(&reader, trellis_fleet::names::ARTIFACTS, "bench").await.unwrap();
    let mut read = Vec::with_capacity(bytes.len());
    while let Some(chunk) = chunks.next_chunk().await.unwrap() {
        read.extend_from_slice(&chunk);
    }
    let direct = (t.elapsed().as_secs_f64(), cpu_s(pid) - cpu);
    assert!(read == bytes);
    [library, direct]
}
