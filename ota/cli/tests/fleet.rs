//! `trellis fleet` as an operator runs it, against a real `nats-server`
//! with simulated devices running the real agent: a release made from an app
//! file, a rollout in waves followed to its end, pause, resume, abort, pins,
//! `--json`, and one-line errors that name the cause.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use trellis_fleet::sim::{self, Pki, Sim};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

struct Op {
    context: PathBuf,
}

impl Op {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_trellis"));
        c.arg("fleet").arg("--context").arg(&self.context).args(args);
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "trellis fleet {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(!o.status.success(), "trellis fleet {args:?} succeeded: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        // One line (clap adds its hint to usage errors).
        let lines: Vec<&str> =
            err.trim().lines().filter(|l| !l.is_empty() && !l.starts_with("For more information")).collect();
        assert_eq!(lines.len(), 1, "one line: {err}");
        err
    }
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).unwrap()
    }
    fn wait_state(&self, id: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.json(&["rollout", "status", id]);
            if r["state"] == state {
                return r;
            }
            assert!(Instant::now() < deadline, "rollout {id} not {state}: {r}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The example app `counter` packed at `version`.
fn counter(dir: &Path, version: &str) -> PathBuf {
    let out = dir.join(format!("counter-{version}.wasm"));
    let component = repo().join("wasm-apps/target/wasm32-wasip2/release/counter.wasm");
    assert!(component.exists(), "{}: build the apps first with `make apps`", component.display());
    let o = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["app", "pack", s(&component), "-m", s(&repo().join("wasm-apps/examples/counter/trellis.toml"))])
        .args(["--version", version, "-o", s(&out)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    out
}

#[test]
fn an_operator_rolls_a_release_out_and_steers_it() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let ids = ["pi-1", "pi-2", "pi-3", "pi-4"];
    let users: Vec<(&str, &str)> = ids.iter().map(|d| (*d, "north")).collect();
    let server = sim::single(&pki, &["operator"], &users);
    let (cert, key) = pki.issue("operator", false);
    let context = dir.path().join("fleet.toml");
    std::fs::write(
        &context,
        format!(
            "servers = [\"tls://{}\"]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            server.addr(),
            s(&pki.ca()),
            s(&cert),
            s(&key)
        ),
    )
    .unwrap();
    let op = Op { context };

    // A release-signing key; the devices trust its public half.
    let o = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["app", "keygen", "--dir", s(dir.path()), "--name", "release"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let release_key = dir.path().join("release.key");
    let trust = trellis_appfmt::TrustList::load(&[dir.path().join("release.pub")]).unwrap();

    assert_eq!(op.json(&["setup"])["replicas"], 1);
    for d in ids {
        assert!(op.ok(&["register", d, "--group", "north"]).contains(&format!("registered {d} in group north")));
    }
    let mut devices: Vec<Sim> =
        ids.iter().map(|d| Sim::new(&pki, &[server.addr()], d, "north", trust.clone())).collect();
    rt.block_on(async {
        for d in &mut devices {
            d.start().await;
        }
    });
    let _controller = Killed(op.command(&["controller", "--tick-ms", "200"]).spawn().unwrap());

    // Errors name the cause, on one line.
    assert!(op.fails(&["deploy", "nothing-1.0.0", "--group", "north"]).contains("no release nothing-1.0.0"));
    // A wildcard is not a release's id (it would read whichever release came last).
    let err = op.fails(&["deploy", "*", "--group", "north"]);
    assert!(err.contains("trellis-releases/\"*\"") && err.contains("no wildcard"), "{err}");
    assert!(op.fails(&["deploy", "x", "--group", "north", "--waves", "0%"]).contains("wave size \"0%\""));
    let err = op.fails(&["release", "create", "bad", "--key", s(&release_key), "--app", s(&release_key)]);
    assert!(err.contains("release.key"), "{err}");

    // A release from an app file, then a rollout in two waves, followed to its end.
    let app = counter(dir.path(), "9.0.0");
    let said = op.ok(&["release", "create", "counter-9.0.0", "--key", s(&release_key), "--app", s(&app)]);
    assert!(said.contains("published release counter-9.0.0 (1 app(s))"), "{said}");
    let err = op.fails(&["release", "create", "counter-9.0.0", "--key", s(&release_key), "--app", s(&app)]);
    assert!(err.contains("release counter-9.0.0 exists"), "{err}");
    let listed = op.json(&["release", "list"]);
    assert_eq!(listed[0]["apps"][0]["version"], "9.0.0", "{listed}");
    let r = op.json(&["deploy", "counter-9.0.0", "--group", "north", "--waves", "1,100%", "--soak-s", "0"]);
    let id = r["id"].as_str().unwrap().to_owned();
    let err = op.fails(&["deploy", "counter-9.0.0", "--group", "north"]);
    assert!(err.contains(&format!("rollout {id}")) && err.contains("abort it first"), "{err}");
    let followed = op.command(&["rollout", "status", &id, "-f"]).output().unwrap();
    let followed = text(&followed);
    assert!(
        followed.contains("Done, wave 2 of 2") && followed.contains("wave 2 (100%): 3 updated, 0 failed, 0 pending"),
        "{followed}"
    );
    assert!(devices.iter().all(|d| d.runs("counter", "9.0.0")));
    let table = op.ok(&["devices"]);
    for d in ids {
        assert!(
            table.lines().any(|l| l.starts_with(d) && l.contains("counter-9.0.0") && l.contains("healthy")),
            "{table}"
        );
    }

    // Pinned: the next rollout skips pi-4. Paused: no wave starts. Resumed: it finishes. A pinned group refuses deploys.
    op.ok(&["pin", "--device", "pi-4", "counter-9.0.0"]);
    let next = counter(dir.path(), "9.1.0");
    op.ok(&["release", "create", "counter-9.1.0", "--key", s(&release_key), "--app", s(&next)]);
    let r = op.json(&["deploy", "counter-9.1.0", "--group", "north", "--waves", "1,100%", "--soak-s", "3"]);
    let id = r["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !devices[0].runs("counter", "9.1.0") {
        assert!(Instant::now() < deadline, "the first wave");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(op.json(&["pause", &id])["state"], "paused");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(op.json(&["rollout", "status", &id])["members"].as_object().unwrap().len(), 1, "paused: no second wave");
    assert!(op.ok(&["resume", &id]).contains("Running"));
    let done = op.wait_state(&id, "done");
    assert!(done["members"].get("pi-4").is_none(), "the pinned device was left alone: {done}");
    assert!(devices[3].runs("counter", "9.0.0") && devices[2].runs("counter", "9.1.0"));
    op.ok(&["unpin", "--device", "pi-4"]);
    let err = op.fails(&["unpin", "--device", "pi-4"]);
    assert!(err.contains("not pinned"), "{err}");
    // Unpinned, pi-4 follows its group, which the finished rollout set.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !devices[3].runs("counter", "9.1.0") {
        assert!(Instant::now() < deadline, "pi-4 follows its group again");
        std::thread::sleep(Duration::from_millis(100));
    }
    op.ok(&["pin", "--group", "north", "counter-9.1.0"]);
    let err = op.fails(&["deploy", "counter-9.0.0", "--group", "north"]);
    assert!(err.contains("group north is pinned to counter-9.1.0"), "{err}");
    op.ok(&["unpin", "--group", "north"]);

    // Aborted: devices that had not updated follow their group again.
    let r = op.json(&["deploy", "counter-9.0.0", "--group", "north", "--waves", "1,100%", "--soak-s", "600"]);
    let id = r["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !devices[0].runs("counter", "9.0.0") {
        assert!(Instant::now() < deadline, "the first wave of the third rollout");
        std::thread::sleep(Duration::from_millis(100));
    }
    let aborted = op.json(&["abort", &id]);
    assert_eq!(aborted["state"], "aborted");
    assert!(op.fails(&["abort", &id]).contains("already Aborted"));
    assert!(devices[1].runs("counter", "9.1.0"), "the rest stayed");
    assert_eq!(op.json(&["rollout", "list"]).as_array().unwrap().len(), 3);
    drop(devices);
}

#[test]
fn without_a_fleet_the_error_says_how_to_name_one() {
    let o = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["fleet", "devices"])
        .env("HOME", "/nonexistent")
        .env_remove("TRELLIS_FLEET_CONTEXT")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("no fleet to talk to: pass --context FILE"), "{}", text(&o));
}
