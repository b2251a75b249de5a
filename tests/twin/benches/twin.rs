//! The device twin's benchmarks (`make bench-twin`): boot time split into kernel
//! and userspace, root filesystem size, the runtime's memory with the example
//! apps, and partial update time (file written → new version running) inside
//! the twin. Medians over repeated runs; results go to docs/benchmarks.md.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use trellis_appfmt::{AppFile, component_code, pack};
use trellis_twin::guest::Ports;
use trellis_twin::operator::{Cli, text};
use trellis_twin::timing::{printk_seconds, rfc3339_seconds};
use trellis_twin::{
    BOOT_TIMEOUT, EMULATED_CALL_MS, EXAMPLES, Error, GPIO_SIM, Guest, MOUNT_SHARE, Twin, add_custom_section, pi_app,
};

const BOOTS: usize = 5;
const SWAPS: usize = 5;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

#[derive(Debug, Clone, Copy)]
struct BootTimes {
    kernel: f64,
    userspace: f64,
}

/// Kernel start → `Run /sbin/init` (the kernel's own clock), then that line →
/// the first app event on the console (host clock).
fn boot_times(device: &mut Guest) -> Result<BootTimes, Error> {
    let init = device.wait_for("Run /sbin/init as init process", BOOT_TIMEOUT)?;
    let first_app = device.wait_for(" app: ", BOOT_TIMEOUT)?;
    let kernel = printk_seconds(&init.text).unwrap_or(f64::NAN);
    Ok(BootTimes { kernel, userspace: (first_app.at - init.at).as_secs_f64() })
}

/// `app` with a new version; `nonce` (if any) goes into a custom section of
/// the component so its code hash is new and the runtime must compile it.
fn app_version(app: &str, version: &str, nonce: Option<u32>) -> Vec<u8> {
    let bytes = std::fs::read(root().join(format!("build/apps/{app}.wasm"))).expect("make apps");
    let mut manifest = AppFile::parse(&bytes).expect("app").manifest;
    manifest.version = version.into();
    let mut code = component_code(&bytes).expect("component");
    if let Some(n) = nonce {
        add_custom_section(&mut code, b"bench-nonce", &n.to_le_bytes());
    }
    pack(&code, &manifest).expect("pack")
}

/// Copy `bytes` as `/data/apps/APP.wasm` and time file written → new version running,
/// both on the guest's clock. Returns (seconds, the runtime's own "ms" figure).
fn swap(twin: &Twin, device: &mut Guest, app: &str, bytes: &[u8], version: &str) -> Result<(f64, f64), Error> {
    std::fs::write(twin.share().join(format!("{app}.wasm")), bytes).expect("share");
    // busybox's date has no %N; adjtimex prints the clock in microseconds.
    let out = device.sh(&format!(
        "cp /mnt/{app}.wasm /tmp/{app}.wasm && adjtimex | grep time.tv_ && cp /tmp/{app}.wasm /data/apps/{app}.wasm"
    ))?;
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .expect("adjtimex prints the time")
    };
    // The moment before the copy starts: the figure includes writing the file.
    let written = field("time.tv_sec:") + field("time.tv_usec:") / 1e6;
    let line = device.wait_for(&format!("app running app=\"{app}\" version={version}"), BOOT_TIMEOUT)?;
    let running = rfc3339_seconds(&line.text).expect("a timestamp on the runtime's line");
    let ms = line.text.split("ms=").nth(1).and_then(|t| t.split_whitespace().next()).and_then(|t| t.parse().ok());
    Ok((running - written, ms.unwrap_or(f64::NAN)))
}

fn main() -> Result<(), Error> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let mut twin = Twin::new("bench")?;
    let mut device = twin.boot()?;
    let first = boot_times(&mut device)?;
    device.wait_apps_running(&EXAMPLES)?;
    let first_all = device.lines().last().map(|l| (l.at - device.powered_on).as_secs_f64()).unwrap_or(f64::NAN);

    let mut boots = Vec::new();
    for _ in 0..BOOTS {
        device.wait_console()?;
        device = twin.reboot(device)?;
        boots.push(boot_times(&mut device)?);
        device.wait_apps_running(&EXAMPLES)?;
    }
    device.wait_console()?;
    device.sh("sleep 5")?;
    let rss = device.sh("grep -E 'VmRSS|VmHWM' /proc/$(pidof trellis-runtime)/status")?;
    let init_rss = device.sh("grep VmRSS /proc/1/status")?;

    device.sh(MOUNT_SHARE)?;
    let gpio = gpio_bench(&twin, &mut device)?;
    // Per-app CPU shares (Paradrop's 512/1024 on one core); the apps are removed again.
    let shares = trellis_twin::shares::experiment(&twin, &mut device, trellis_twin::shares::WINDOW)?;
    // Per-app rate limits (Paradrop's bandwidth experiment, seven limits); each app is removed again.
    let runs: Vec<u32> = trellis_twin::bandwidth::LIMITS_KBIT.into_iter().chain([0]).collect();
    let bandwidth = trellis_twin::bandwidth::experiment(&twin, &mut device, &runs)?;
    // An app's lifecycle over the API (Paradrop's deploy, start, stop, delete); the app is removed again.
    let lifecycle = {
        let cli = Cli::new(&twin, &root().join("build/twin/runs/bench"));
        let dir = root().join("build/twin/runs/bench/lifecycle");
        trellis_twin::lifecycle::experiment(&cli, &mut device, &dir, trellis_twin::lifecycle::RUNS)?
    };
    let (mut warm, mut warm_ms, mut cold, mut cold_ms) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..SWAPS {
        let v = format!("1.1.{i}");
        let (s, ms) = swap(&twin, &mut device, "blinky", &app_version("blinky", &v, None), &v)?;
        warm.push(s);
        warm_ms.push(ms);
        let v = format!("1.2.{i}");
        let nonce = u32::try_from(i).unwrap_or(0) + std::process::id();
        let (s, ms) = swap(&twin, &mut device, "blinky", &app_version("blinky", &v, Some(nonce)), &v)?;
        cold.push(s);
        cold_ms.push(ms);
    }

    // A Python app (CPython inside, `make lang-apps`): py-blinky's code precompiled
    // for aarch64 and signed with the key the image trusts, loaded as it is; then
    // py-counter's file, the same but unsigned, so the twin compiles its code.
    // Neither code was loaded before in this run. The calls get EMULATED_CALL_MS.
    let native = pi_app("py-blinky", |m| {
        m.permissions.gpio_outputs = vec![6];
        m.config.insert("line".into(), "6".into());
        m.limits.call_ms = EMULATED_CALL_MS;
    });
    let (py_native, py_native_ms) = swap(&twin, &mut device, "py-blinky", &native, "1.0.0")?;
    device.sh("rm /data/apps/py-blinky.wasm")?;
    let signed = pi_app("py-counter", |m| m.limits.call_ms = EMULATED_CALL_MS);
    let unsigned = pack(&signed, &AppFile::parse(&signed).expect("packed").manifest).expect("packs");
    let (py_compiled, py_compiled_ms) = swap(&twin, &mut device, "py-counter", &unsigned, "1.0.0")?;
    device.sh("rm /data/apps/py-counter.wasm")?;

    // Over the network: the host's CLI, the twin's API through QEMU's user network.
    let cli = Cli::new(&twin, &root().join("build/twin/runs/bench"));
    let blinky = app_version("blinky", "1.3.0", None);
    let (mut pushes, mut app_copies) = (Vec::new(), Vec::new());
    for i in 0..SWAPS {
        let v = format!("1.3.{i}");
        let file = root().join("build/twin/runs/bench/blinky.wasm");
        std::fs::write(&file, app_version("blinky", &v, None)).expect("write");
        let t = Instant::now();
        let said = cli.ok(&["push", file.to_str().unwrap_or("")]);
        pushes.push(t.elapsed().as_secs_f64());
        assert!(said.contains(&format!("blinky {v} is running")), "{said}");
        app_copies.push(plain_copy(&twin, &mut device, &blinky)?);
    }

    // Full update: the signed bundle into slot B through the API (`trellis
    // update`: upload, RAUC's install), the trial boot, every app running again.
    let bundle = root().join("build/twin/update.raucb");
    let bundle_bytes = std::fs::read(&bundle).expect("make bundle");
    let bundle_copy = plain_copy(&twin, &mut device, &bundle_bytes)?;
    device.sh("sync")?;
    let t = Instant::now();
    let update = cli.run(&["update", bundle.to_str().unwrap_or(""), "--no-wait"]);
    let install = t.elapsed().as_secs_f64();
    assert!(update.status.success(), "{}", text(&update));
    let upload_rate = text(&update)
        .lines()
        .filter(|l| l.starts_with("upload") && l.contains("100%"))
        .find_map(|l| l.split_whitespace().rev().nth(1).and_then(|r| r.parse::<f64>().ok()))
        .unwrap_or(f64::NAN);
    // The runtime reboots into the trial by itself and commits when healthy.
    let t = Instant::now();
    device = twin.restarted(device, Duration::from_secs(120))?;
    device.wait_apps_running(&EXAMPLES)?;
    let trial = t.elapsed().as_secs_f64();
    device.seen("phase=Committed", BOOT_TIMEOUT)?;
    let committed = t.elapsed().as_secs_f64();
    device.wait_console()?;
    // Its floor: the same two slot images written raw into slot A, and one boot of A.
    for f in ["boot.vfat", "rootfs.squashfs"] {
        std::fs::copy(root().join("build/twin").join(f), twin.share().join(f)).expect("slot images");
    }
    device.sh(MOUNT_SHARE)?;
    let t = Instant::now();
    device.sh_timeout(
        "cat /mnt/boot.vfat > /dev/vda2 && cat /mnt/rootfs.squashfs > /dev/vda5 && sync",
        Duration::from_secs(900),
    )?;
    let raw_write = t.elapsed().as_secs_f64();
    device.sh("trellis-boot set-primary A && echo '0 tryboot' > /run/trellis/reboot-param")?;
    let t = Instant::now();
    device = twin.reboot(device)?;
    device.wait_apps_running(&EXAMPLES)?;
    let floor_boot = t.elapsed().as_secs_f64();
    assert_eq!(device.partition, 2, "the floor boots the raw-written slot A");
    let bundle_size = std::fs::metadata(&bundle).map(|m| m.len()).unwrap_or(0);

    let squashfs = std::fs::metadata(root().join("build/twin/rootfs.squashfs")).map(|m| m.len()).unwrap_or(0);
    let kernel = std::fs::metadata(root().join("build/twin/Image")).map(|m| m.len()).unwrap_or(0);
    #[allow(clippy::cast_precision_loss)]
    let mib = |b: u64| b as f64 / 1_048_576.0;
    let kernel_s = median(boots.iter().map(|b| b.kernel).collect());
    let user_s = median(boots.iter().map(|b| b.userspace).collect());
    println!("| figure | median | runs |");
    println!("|---|---|---|");
    println!("| boot: kernel start → first app event | {:.2} s | {BOOTS} |", kernel_s + user_s);
    println!("| — kernel share (kernel start → /sbin/init) | {kernel_s:.2} s | {BOOTS} |");
    println!("| — userspace share (/sbin/init → first app event) | {user_s:.2} s | {BOOTS} |");
    println!(
        "| first boot (format data partition, seed, compile 6 apps): kernel {:.2} s + userspace {:.2} s; all 6 running {:.1} s after power-on | — | 1 |",
        first.kernel, first.userspace, first_all
    );
    println!(
        "| partial update, warm (same code, new manifest): file written → new version running | {:.0} ms (runtime's own figure {:.0} ms) | {SWAPS} |",
        median(warm.clone()) * 1000.0,
        median(warm_ms)
    );
    println!(
        "| partial update, cold (new code, compiled in the twin) | {:.0} ms (runtime's own figure {:.0} ms) | {SWAPS} |",
        median(cold) * 1000.0,
        median(cold_ms)
    );
    println!(
        "| Python app, file written → running: py-blinky ({:.1} MiB) precompiled for aarch64 and signed (`compile=Native`) | {py_native:.2} s (runtime's own figure {py_native_ms:.0} ms) | 1 |",
        mib(native.len() as u64)
    );
    println!(
        "| — py-counter ({:.1} MiB), the same but unsigned: compiled in the twin | {py_compiled:.1} s (runtime's own figure {py_compiled_ms:.0} ms; {:.0}× the precompiled) | 1 |",
        mib(unsigned.len() as u64),
        py_compiled / py_native
    );
    let full = install + trial;
    let floor = raw_write + floor_boot;
    println!(
        "| full update: `trellis update` from the host (upload over the twin's network + RAUC install) {install:.1} s + trial boot to all apps running {trial:.1} s (committed by the health gate at {committed:.1} s) | {full:.1} s | 1 |"
    );
    println!(
        "| its floor: raw write of the same slot images {raw_write:.1} s + one boot to all apps running {floor_boot:.1} s | {floor:.1} s (full/floor {:.2}×) | 1 |",
        full / floor
    );
    println!(
        "| partial (warm swap) vs full update | {:.0} ms vs {full:.1} s: {:.0}× faster | — |",
        median(warm.clone()) * 1000.0,
        full / median(warm.clone())
    );
    println!("| bundle size (verity) | {:.1} MiB | — |", mib(bundle_size));
    println!(
        "| app push over the twin's network: `trellis push` (mutual TLS, verified, swapped) → new version running, {} KiB | {:.0} ms | {SWAPS} |",
        blinky.len() / 1024,
        median(pushes) * 1000.0
    );
    println!(
        "| — a plain copy of the same bytes over the same network (`nc` into /data, like scp without crypto) | {:.0} ms | {SWAPS} |",
        median(app_copies) * 1000.0
    );
    println!(
        "| bundle upload through the API (`trellis update`: mutual TLS, streamed to /data, synced) vs a plain copy of the same {:.1} MiB (`nc` into /data) | {upload_rate:.1} vs {:.1} MiB/s | 1 |",
        mib(bundle_size),
        mib(bundle_size) / bundle_copy
    );
    println!("| root filesystem (squashfs, zstd) | {:.1} MiB | — |", mib(squashfs));
    println!("| kernel Image | {:.1} MiB | — |", mib(kernel));
    println!(
        "| runtime memory with the 6 example apps (`/proc/PID/status`) | {} | 1 |",
        rss.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    println!("| init memory | {} | 1 |", init_rss.split_whitespace().collect::<Vec<_>>().join(" "));
    println!(
        "| GPIO toggles on gpio-sim, app (wasm, one host call each) vs native Rust (same HAL backend) | {:.0} vs {:.0} toggles/s ({:.2}×) | {GPIO_RUNS} × {TOGGLES} |",
        gpio.app_rate,
        gpio.native_rate,
        gpio.native_rate / gpio.app_rate
    );
    println!(
        "| GPIO edge → handler → output (gpio-sim pull to the output following), app vs native | median {} vs {} µs, p90 {} vs {} µs | {EDGES} |",
        gpio.app_latency.0, gpio.native_latency.0, gpio.app_latency.1, gpio.native_latency.1
    );
    println!("\nPer-app CPU shares: two spin apps confined to CPU 0 (docs/benchmarks.md)\n");
    print!("{}", trellis_twin::shares::table(&shares));
    println!("\nPer-app rate limits: the fetch fixture POSTing to a sink on the host, one limit at a time\n");
    print!("{}", trellis_twin::bandwidth::table(&bandwidth));
    println!("\nAn app's lifecycle over the management API, the host's CLI timed to the device's answer\n");
    print!("{}", trellis_twin::lifecycle::table(&lifecycle));
    Ok(())
}

/// Send `bytes` to `nc -l` in the twin (through the forwarded copy port) into
/// /data: the time from connecting until the twin has them all and closed.
fn plain_copy(twin: &Twin, device: &mut Guest, bytes: &[u8]) -> Result<f64, Error> {
    let port = Ports::GUEST_COPY;
    device.sh(&format!("rm -f /data/copy.bin; (nc -l -p {port} >/data/copy.bin </dev/null &) ; sleep 1"))?;
    let io = |e: std::io::Error| Error::Qemu(format!("plain copy to the twin: {e}"));
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", twin.ports().copy)).map_err(io)?;
    s.write_all(bytes).map_err(io)?;
    s.shutdown(std::net::Shutdown::Write).map_err(io)?;
    let _ = s.read_to_end(&mut Vec::new());
    let secs = t.elapsed().as_secs_f64();
    let got = device.sh("wc -c </data/copy.bin && rm /data/copy.bin")?;
    assert_eq!(got.trim().parse::<usize>().ok(), Some(bytes.len()), "the copy arrived whole");
    Ok(secs)
}

const GPIO_RUNS: usize = 5;
const TOGGLES: u32 = 2000;
const EDGES: u32 = 200;

struct GpioFigures {
    app_rate: f64,
    native_rate: f64,
    /// (median, p90) in µs.
    app_latency: (u64, u64),
    native_latency: (u64, u64),
}

/// `N in T ns` of a `gpio toggles:` line, as toggles per second.
fn toggle_rate(text: &str) -> f64 {
    let rest = text.split("gpio toggles: ").nth(1).unwrap_or_default();
    let mut words = rest.split_whitespace();
    let n: f64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(f64::NAN);
    let ns: f64 = words.nth(1).and_then(|w| w.parse().ok()).unwrap_or(f64::NAN);
    n / (ns / 1e9)
}

/// `median=Xus p90=Yus` of the latency driver's line.
fn latency(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.split(name).nth(1).and_then(|t| t.split("us").next()).and_then(|t| t.parse().ok()).unwrap_or(0)
    };
    (field("median="), field("p90="))
}

/// GPIO on gpio-sim: the bench fixture app against `trellis-gpio-bench`, a
/// native program on the same HAL backend, in the same boot: toggle rate of
/// an output, and the time from an edge on an input to a handler's write
/// showing on an output (gpio-sim's pull to its value, timed by the native driver).
fn gpio_bench(twin: &Twin, device: &mut Guest) -> Result<GpioFigures, Error> {
    let native = root().join("target/aarch64-unknown-linux-gnu/release/trellis-gpio-bench");
    std::fs::copy(&native, twin.share().join("trellis-gpio-bench")).expect("make cross-release");
    let code = std::fs::read(root().join("wasm-apps/target/wasm32-wasip2/release/bench.wasm")).expect("make apps");
    let manifest_text =
        std::fs::read_to_string(root().join("wasm-apps/fixtures/bench/trellis.toml")).expect("manifest");
    let bench_app = |config: &[(&str, &str)]| {
        let mut m = trellis_appfmt::Manifest::from_toml(&manifest_text).expect("manifest");
        m.permissions.gpio_outputs = vec![40, 42];
        m.permissions.gpio_inputs = vec![41];
        for (k, v) in config {
            m.config.insert((*k).into(), (*v).into());
        }
        pack(&code, &m).expect("pack")
    };
    let install = |device: &mut Guest, bytes: Vec<u8>| -> Result<(), Error> {
        std::fs::write(twin.share().join("bench.wasm"), bytes).expect("share");
        device
            .sh("cp /mnt/bench.wasm /data/apps/.bench.tmp && mv /data/apps/.bench.tmp /data/apps/bench.wasm")
            .map(drop)
    };
    let stop_app = |device: &mut Guest| -> Result<(), Error> {
        device.sh("rm /data/apps/bench.wasm")?;
        device.wait_for("app file removed: stopped app=\"bench\"", BOOT_TIMEOUT).map(drop)
    };

    let toggles = TOGGLES.to_string();
    install(device, bench_app(&[("toggle-line", "40"), ("toggles", &toggles)]))?;
    let mut app_rates = Vec::new();
    for _ in 0..GPIO_RUNS {
        app_rates.push(toggle_rate(&device.wait_for("gpio toggles: ", BOOT_TIMEOUT)?.text));
    }
    stop_app(device)?;
    let mut native_rates = Vec::new();
    for _ in 0..GPIO_RUNS {
        native_rates
            .push(toggle_rate(&device.sh(&format!("/mnt/trellis-gpio-bench toggle trellis-gpio 40 {TOGGLES}"))?));
    }

    let measure = |device: &mut Guest| -> Result<(u64, u64), Error> {
        let out = device.sh_timeout(
            &format!("/mnt/trellis-gpio-bench latency {GPIO_SIM} 41 42 {EDGES}"),
            Duration::from_secs(600),
        )?;
        Ok(latency(&out))
    };
    install(device, bench_app(&[("reflex-in", "41"), ("reflex-out", "42")]))?;
    device.wait_for("reflex: GPIO 41 -> GPIO 42", BOOT_TIMEOUT)?;
    let app_latency = measure(device)?;
    stop_app(device)?;
    device.sh(
        "/mnt/trellis-gpio-bench reflex trellis-gpio 41 42 >/tmp/reflex.log 2>&1 & echo $! >/tmp/reflex.pid; sleep 1",
    )?;
    let native_latency = measure(device)?;
    device.sh("kill $(cat /tmp/reflex.pid)")?;
    Ok(GpioFigures { app_rate: median(app_rates), native_rate: median(native_rates), app_latency, native_latency })
}
