//! The device on the network, driven from the host by the `trellis` CLI as an
//! operator would: the twin gets its address from QEMU's DHCP server through
//! init's `network` service, and the management API is reached through a
//! forwarded port with the development PKI (`build/keys/api`). Needs `make
//! bundle` and the host CLI (`target/debug/trellis`; make test-twin has both).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;
use trellis_twin::ntp::NtpServer;
use trellis_twin::operator::{Cli, text};
use trellis_twin::{BOOT_TIMEOUT, EXAMPLES, Outcome, Twin, add_custom_section, repack};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The first line from `lines` holding every one of `needles`.
fn wait_line(lines: &Receiver<String>, needles: &[&str], timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(l) if needles.iter().all(|n| l.contains(n)) => return l,
            Ok(l) => seen.push(l),
            Err(_) => break,
        }
    }
    panic!("no line with {needles:?} within {timeout:?}; got:\n{}", seen.join("\n"));
}

/// `app` (a packed app file) with a custom section of `pad` bytes in its
/// component: a large, still valid app.
fn padded(app: Vec<u8>, pad: usize) -> Vec<u8> {
    let manifest = trellis_appfmt::AppFile::parse(&app).expect("an app").manifest;
    let mut code = trellis_appfmt::component_code(&app).expect("a component");
    add_custom_section(&mut code, b"padding", &vec![0; pad]);
    trellis_appfmt::pack(&code, &manifest).expect("packs")
}

/// One app's `(version, state)` in a status.
fn app(status: &Value, name: &str) -> (String, String) {
    let apps = status["apps"].as_array().unwrap_or_else(|| panic!("no apps in {status}"));
    let a = apps.iter().find(|a| a["name"] == name).unwrap_or_else(|| panic!("no {name} in {status}"));
    (a["version"].as_str().unwrap_or("").to_owned(), a["state"].as_str().unwrap_or("").to_owned())
}

fn uptime_ms(status: &Value) -> u64 {
    status["uptime-ms"].as_u64().unwrap_or_else(|| panic!("no uptime in {status}"))
}

/// How far the harness's NTP server moves its clock from the host's: far
/// enough that only NTP can have set the twin's clock there.
const NTP_OFFSET_S: i64 = 400 * 86_400;

#[test]
fn apps_logs_and_reboot_over_the_network() -> Outcome {
    let mut twin = Twin::new("network")?;
    let dir = root().join("build/twin/runs/network");
    let _ntp = NtpServer::start(NTP_OFFSET_S)?;
    let mut device = twin.boot()?;
    device.wait_apps_running(&EXAMPLES)?;
    // DHCP from QEMU's user network, through init's network service.
    device.seen("network: eth0 10.0.2.15/24 router 10.0.2.2", BOOT_TIMEOUT)?;
    device.seen("management API listening", BOOT_TIMEOUT)?;
    // chronyd steps the clock to what the NTP server says.
    device.seen("System clock wrong by", BOOT_TIMEOUT)?;
    device.wait_console()?;
    // The hostname from the serial number (the twin has none: the MAC's last digits).
    assert_eq!(device.sh("hostname")?.trim(), "trellis-123456");
    assert!(device.sh("cat /etc/resolv.conf")?.contains("nameserver 10.0.2.3"));
    // The device announces its API over mDNS: its own CLI finds it on eth0.
    let seen: Value = serde_json::from_str(&device.sh("trellis devices --json --browse-s 3")?).expect("JSON");
    let me = seen["discovered"].as_array().and_then(|d| d.iter().find(|d| d["name"] == "trellis-123456"));
    let me = me.unwrap_or_else(|| panic!("the device's announcement: {seen}"));
    assert!(me["addresses"].as_array().is_some_and(|a| a.iter().any(|a| a == "10.0.2.15:8443")), "{me}");
    let guest: i64 = device.sh("date +%s")?.trim().parse().expect("date +%s");
    let host = i64::try_from(std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_secs())).unwrap_or(0);
    assert!((guest - host - NTP_OFFSET_S).abs() < 120, "the clock came from NTP: guest {guest}, host {host}");

    let cli = Cli::new(&twin, &dir);
    let status = cli.status();
    for name in EXAMPLES {
        assert_eq!(app(&status, name).1, "running", "{status}");
    }
    // Each app's resource use: linear memory (at least a page) and calls made.
    for a in status["apps"].as_array().into_iter().flatten() {
        assert!(a["memory-bytes"].as_u64().unwrap_or(0) >= 65_536 && a["calls"].as_u64().unwrap_or(0) >= 1, "{a}");
    }
    assert!(cli.ok(&["devices"]).contains("twin"), "the device answers");

    // Follow the log while an app is pushed.
    let (mut follow, lines) = cli.spawn(&["logs", "--follow"]);
    let pushed = dir.join("counter-9.wasm");
    std::fs::write(&pushed, repack("counter", |m| m.version = "9.0.0".into())).expect("write");
    let said = cli.ok(&["push", pushed.to_str().unwrap_or("")]);
    assert!(said.contains("counter 9.0.0 is running on twin"), "{said}");
    assert_eq!(app(&cli.status(), "counter").0, "9.0.0");
    wait_line(&lines, &["counter", "9.0.0 replaced"], Duration::from_secs(60));
    // And the app's own log lines keep coming through the stream.
    wait_line(&lines, &["counter", "debug", "count "], Duration::from_secs(60));
    let _ = follow.kill();
    let _ = follow.wait();

    // A full data partition: the push is refused before the upload (the CLI
    // waits for `100 Continue`), and the running version stays.
    let free_kib: u64 = device
        .sh("m=64; until fallocate -l $(( $(df -k /data | awk 'NR==2 {print $4}') - m ))k /data/fill 2>/dev/null; \
             do rm -f /data/fill; m=$((m * 2)); [ $m -le 65536 ] || exit 1; done; sync; df -k /data | awk 'NR==2 {print $4}'")?
        .trim()
        .parse()
        .expect("df");
    assert!(free_kib < 4096, "the data partition is full: {free_kib} KiB free");
    let again = dir.join("counter-10.wasm");
    std::fs::write(&again, padded(repack("counter", |m| m.version = "10.0.0".into()), 4 << 20)).expect("write");
    let refused = cli.run(&["push", again.to_str().unwrap_or("")]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains("507") && text(&refused).contains("do not fit"), "{}", text(&refused));
    assert!(!text(&refused).contains("upload  [####"), "nothing was uploaded: {}", text(&refused));
    assert_eq!(app(&cli.status(), "counter"), ("9.0.0".into(), "running".into()));
    device.sh("rm /data/fill && sync")?;

    // Reboot from the CLI: the device comes back and answers again.
    let rebooting = cli.ok(&["reboot"]);
    assert!(rebooting.contains("twin is rebooting"), "{rebooting}");
    let mut device = twin.restarted(device, Duration::from_secs(60))?;
    device.wait_apps_running(&EXAMPLES)?;
    device.seen("management API listening", BOOT_TIMEOUT)?;
    let after = cli.status();
    assert_eq!(app(&after, "counter").0, "9.0.0", "the pushed app is on the data partition");
    assert!(uptime_ms(&after) < uptime_ms(&status) + 120_000, "a new boot: {after}");
    Ok(())
}

#[test]
fn firmware_update_from_the_cli_commits() -> Outcome {
    let bundle = root().join("build/twin/update.raucb");
    assert!(bundle.exists(), "{}: make bundle", bundle.display());
    let mut twin = Twin::new("network-update")?;
    let dir = root().join("build/twin/runs/network-update");
    let mut device = twin.boot()?;
    device.wait_apps_running(&EXAMPLES)?;
    device.seen("management API listening", BOOT_TIMEOUT)?;
    let cli = Cli::new(&twin, &dir);
    assert!(cli.status()["firmware"]["last-update"].is_null());

    // The whole flow, the CLI waiting across the trial reboot while the
    // harness plays the firmware.
    let mut update = cli
        .command(&["update", bundle.to_str().unwrap_or(""), "--wait-s", "400"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("trellis update");
    let mut device = match twin.restarted(device, Duration::from_secs(300)) {
        Ok(d) => d,
        Err(e) => {
            let _ = update.kill();
            let _ = update.wait();
            return Err(e.into());
        }
    };
    assert_eq!(device.partition, 3, "the trial boot runs slot B");
    device.wait_apps_running(&EXAMPLES)?;
    device.seen("phase=Committed", BOOT_TIMEOUT)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while update.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = update.kill();
    let out = update.wait_with_output().expect("trellis update ends");
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("upload") && said.contains("100%"), "the upload's progress: {said}");
    assert!(said.contains("install 100% Installing done."), "RAUC's progress: {said}");
    assert!(said.contains("committed: twin runs") && said.contains("from slot B"), "{said}");
    let s = cli.status();
    let slots = &s["firmware"]["slots"];
    assert_eq!((slots["booted"].as_str(), slots["primary"].as_str()), (Some("B"), Some("B")), "{s}");
    // The uploaded bundle does not stay on the data partition.
    device.wait_console()?;
    assert_eq!(device.sh("ls -A /data/trellis/firmware")?.trim(), "", "the bundle was removed");
    Ok(())
}
