//! Apps written in C play the stories the Rust examples do, on the twin's
//! real hardware backends: blinky drives a gpio-sim line, counter keeps its
//! count across a hot swap (save/restore) and a reboot (kv). (The Python
//! apps play the same stories on the host, `firmware/runtime/tests/languages.rs`:
//! compiling their 18 MB of CPython under the twin's emulation takes minutes.)

use std::time::{Duration, Instant};

use trellis_twin::{EXAMPLES, Error, GPIO_SIM, Guest, Outcome, Twin, install, lang_app};

/// Compiling a small component under emulation takes seconds; allow for a loaded host.
const COMPILE: Duration = Duration::from_secs(180);

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

#[test]
fn c_apps_blink_and_count_like_the_rust_ones() -> Outcome {
    let mut twin = Twin::new("languages")?;
    let mut device = twin.boot()?;
    device.wait_apps_running(&EXAMPLES)?;
    device.wait_console()?;

    // blinky in C on line 5 (the Rust one keeps 17).
    {
        let (app, line) = ("c-blinky", 5u32);
        let bytes = lang_app(app, |m| {
            m.permissions.gpio_outputs = vec![line];
            m.config.insert("line".into(), line.to_string());
        });
        install(&twin, &mut device, app, &bytes)?;
        device.wait_for(&format!("app running app=\"{app}\""), COMPILE)?;
        let samples = toggles(&mut device, line)?;
        assert!(samples.contains('0') && samples.contains('1'), "{app}: GPIO {line} did not toggle: {samples:?}");
        let info = device.sh("gpioinfo trellis-gpio")?;
        let consumer = info.lines().find(|l| l.contains(&format!("line {line:>3}:"))).unwrap_or_default();
        assert!(consumer.contains(&format!("\"{app}\"")) && consumer.contains("output"), "{consumer}");
    }

    // counter: starts at 0, counts, hands its ticks to a new version, keeps its count.
    let mut counts = Vec::new();
    {
        let app = "c-counter";
        let from = device.lines().len();
        install(&twin, &mut device, app, &lang_app(app, |m| _ = m.config.insert("period-ms".into(), "200".into())))?;
        let (n, m, _) = counted(&device, app, from, COMPILE)?;
        assert_eq!((n, m), (0, 0), "{app} started from a count");
        device.sh("sleep 3")?;
        let from = device.lines().len();
        let v2 = lang_app(app, |m| {
            m.version = "2.0.0".into();
            m.config.insert("period-ms".into(), "200".into());
        });
        install(&twin, &mut device, app, &v2)?;
        let (n, m, _) = counted(&device, app, from, COMPILE)?;
        assert!(n > 0 && m > 0, "{app} 2.0.0: counting from {n} ({m} ticks since boot): nothing carried over");
        counts.push((app, n));
    }

    // A reboot: the count (kv) survives, the ticks since boot (save/restore) start again.
    device.sh("sleep 2; sync")?;
    let device = twin.reboot(device)?;
    for (app, before) in counts {
        let (n, m, _) = counted(&device, app, 0, COMPILE)?;
        assert!(n >= before && m == 0, "{app} after a reboot: counting from {n} ({m} ticks), was {before}");
    }
    Ok(())
}
