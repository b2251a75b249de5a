//! Apps written in C and in Python play the stories the Rust examples do, on
//! the twin's real hardware backends: blinky drives a gpio-sim line, counter
//! keeps its count across a hot swap (save/restore) and a reboot (kv). The
//! Python apps are the ones `make lang-apps` compiled ahead of time for
//! aarch64 and signed with the development app key the image trusts
//! (`build/pi-apps`): compiling their CPython under the twin's emulation
//! would take minutes, loading it takes seconds.

use std::time::{Duration, Instant};

use trellis_appfmt::Manifest;
use trellis_twin::{EMULATED_CALL_MS, EXAMPLES, Error, GPIO_SIM, Guest, Outcome, Twin, install, lang_app, pi_app};

/// Compiling a small component under emulation takes seconds; allow for a loaded host.
const COMPILE: Duration = Duration::from_secs(180);

/// Build app NAME with its manifest changed by the closure.
type Build = fn(&str, &dyn Fn(&mut Manifest)) -> Vec<u8>;

/// One language's blinky and counter, and how its apps are built.
struct Lang {
    blinky: &'static str,
    counter: &'static str,
    /// The GPIO line its blinky drives (the Rust one keeps 17).
    line: u32,
    app: Build,
}

const C: Lang = Lang { blinky: "c-blinky", counter: "c-counter", line: 5, app: |a, e| lang_app(a, e) };
/// The Python apps' calls get [`EMULATED_CALL_MS`].
const PYTHON: Lang = Lang {
    blinky: "py-blinky",
    counter: "py-counter",
    line: 6,
    app: |a, e| {
        pi_app(a, |m| {
            m.limits.call_ms = EMULATED_CALL_MS;
            e(m);
        })
    },
};

/// The first "counting from N (M ticks since boot)" line of `app` after console line `from`.
fn counted(device: &Guest, app: &str, from: usize, timeout: Duration) -> Result<(u64, u64, usize), Error> {
    let tag = format!("app=\"{app}\"");
    let start = Instant::now();
    loop {
        let lines = device.lines();
        for (i, l) in lines.iter().enumerate().skip(from) {
            if l.text.contains(&tag) && l.text.contains("counting from ") {
                let rest = l.text.split("counting from ").nth(1).unwrap_or_default();
                let words: Vec<&str> = rest.split(|c: char| !c.is_ascii_digit()).filter(|w| !w.is_empty()).collect();
                let n = words.first().and_then(|w| w.parse().ok()).unwrap_or_else(|| panic!("{}", l.text));
                let m = words.get(1).and_then(|w| w.parse().ok()).unwrap_or_else(|| panic!("{}", l.text));
                return Ok((n, m, i + 1));
            }
        }
        if start.elapsed() > timeout {
            let tail = lines.iter().rev().take(30).rev().map(|l| l.text.as_str()).collect::<Vec<_>>().join("\n");
            return Err(Error::Timeout {
                what: format!("{app}: a \"counting from\" line"),
                log: device.log_path().to_owned(),
                tail,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn toggles(device: &mut Guest, line: u32) -> Result<String, Error> {
    device.sh(&format!("for i in 1 2 3 4 5 6 7 8; do cat {GPIO_SIM}/sim_gpio{line}/value; sleep 0.2; done"))
}

/// Blinky drives its line and holds it; counter starts at 0 and hands its
/// ticks to its next version. Returns the counter's last count. With
/// `remove_blinky`, blinky is removed once it has blinked (room on the data
/// partition for the Python apps, each 31 MB with its last good copy beside it).
fn blink_and_count(twin: &Twin, device: &mut Guest, lang: &Lang, remove_blinky: bool) -> Result<u64, Error> {
    let (app, line) = (lang.blinky, lang.line);
    let t0 = Instant::now();
    let bytes = (lang.app)(app, &|m| {
        m.permissions.gpio_outputs = vec![line];
        m.config.insert("line".into(), line.to_string());
    });
    install(twin, device, app, &bytes)?;
    let running = device.wait_for(&format!("app running app=\"{app}\""), COMPILE)?;
    eprintln!(
        "{app}: {} bytes, running {:.1} s after the copy began: {}",
        bytes.len(),
        t0.elapsed().as_secs_f64(),
        running.text
    );
    let samples = toggles(device, line)?;
    assert!(samples.contains('0') && samples.contains('1'), "{app}: GPIO {line} did not toggle: {samples:?}");
    let info = device.sh("gpioinfo trellis-gpio")?;
    let consumer = info.lines().find(|l| l.contains(&format!("line {line:>3}:"))).unwrap_or_default();
    assert!(consumer.contains(&format!("\"{app}\"")) && consumer.contains("output"), "{consumer}");
    if remove_blinky {
        device.sh(&format!("rm /data/apps/{app}.wasm"))?;
        device.wait_for(&format!("app file removed: stopped app=\"{app}\""), COMPILE)?;
    }

    let app = lang.counter;
    let from = device.lines().len();
    install(twin, device, app, &(lang.app)(app, &|m| _ = m.config.insert("period-ms".into(), "200".into())))?;
    let (n, m, _) = counted(device, app, from, COMPILE)?;
    assert_eq!((n, m), (0, 0), "{app} started from a count");
    device.sh("sleep 3")?;
    let from = device.lines().len();
    let v2 = (lang.app)(app, &|m| {
        m.version = "2.0.0".into();
        m.config.insert("period-ms".into(), "200".into());
    });
    install(twin, device, app, &v2)?;
    let (n, m, _) = counted(device, app, from, COMPILE)?;
    assert!(n > 0 && m > 0, "{app} 2.0.0: counting from {n} ({m} ticks since boot): nothing carried over");
    Ok(n)
}

#[test]
fn c_and_python_apps_blink_and_count_like_the_rust_ones() -> Outcome {
    let mut twin = Twin::new("languages")?;
    let mut device = twin.boot()?;
    device.wait_apps_running(&EXAMPLES)?;
    device.wait_console()?;
    let mut counts = Vec::new();
    for (lang, remove_blinky) in [(&C, false), (&PYTHON, true)] {
        counts.push((lang.counter, blink_and_count(&twin, &mut device, lang, remove_blinky)?));
    }
    // The Python apps loaded their precompiled code: nothing was compiled.
    let log = device.lines().iter().map(|l| l.text.clone()).collect::<Vec<_>>().join("\n");
    for l in log.lines().filter(|l| l.contains("app running") && l.contains("app=\"py-")) {
        eprintln!("{l}");
        assert!(l.contains("compile=Native") || l.contains("compile=Memory"), "{l}");
    }
    assert!(!log.contains("precompiled code not used"), "{log}");

    // A reboot: the count (kv) survives, the ticks since boot (save/restore) start again.
    device.sh("sleep 2; sync")?;
    let device = twin.reboot(device)?;
    for (app, before) in counts {
        let (n, m, _) = counted(&device, app, 0, COMPILE)?;
        assert!(n >= before && m == 0, "{app} after a reboot: counting from {n} ({m} ticks), was {before}");
    }
    Ok(())
}
