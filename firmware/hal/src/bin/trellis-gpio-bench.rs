//! `trellis-gpio-bench`: the native side of the twin's GPIO benchmarks
//! (`make bench-twin`), on the same Linux backend the runtime uses.
//!
//! ```text
//! trellis-gpio-bench toggle CHIP LINE COUNT     toggle an output COUNT times; print the rate
//! trellis-gpio-bench reflex CHIP IN OUT         copy every edge of IN to OUT until killed
//! trellis-gpio-bench latency SIMDIR IN OUT N    pull IN (gpio-sim) N times; time until OUT follows
//! ```
//!
//! `latency` drives gpio-sim's `sim_gpioIN/pull` and watches `sim_gpioOUT/value`:
//! the time from the pull to the output following is the kernel's edge event,
//! the reflex's handler (a native one, or an app in the runtime) and its write.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_hal::gpio::{self, Edge, GpioChip, Level, LineConfig};
use trellis_hal::linux::LinuxGpioChip;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result =
        match args.as_slice() {
            ["toggle", chip, line, count] => toggle(chip, num(line), num(count)),
            ["reflex", chip, input, output] => reflex(chip, num(input), num(output)),
            ["latency", sim, input, output, n] => latency(Path::new(sim), num(input), num(output), num(n)),
            _ => Err("usage: trellis-gpio-bench toggle CHIP LINE COUNT | reflex CHIP IN OUT | latency SIMDIR IN OUT N"
                .into()),
        };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trellis-gpio-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn num(s: &str) -> u32 {
    s.parse().unwrap_or(u32::MAX)
}

fn toggle(chip: &str, line: u32, count: u32) -> Result<(), String> {
    let chip = LinuxGpioChip::find(chip).map_err(|e| e.to_string())?;
    let mut out =
        chip.request_output(line, Level::Low, LineConfig::default(), "gpio-bench").map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    for i in 0..count {
        gpio::write(out.as_mut(), Level::from_bool(i % 2 == 0)).map_err(|e| e.to_string())?;
    }
    let ns = t0.elapsed().as_nanos();
    println!("gpio toggles: {count} in {ns} ns");
    Ok(())
}

fn reflex(chip: &str, input: u32, output: u32) -> Result<(), String> {
    let chip = LinuxGpioChip::find(chip).map_err(|e| e.to_string())?;
    let out =
        chip.request_output(output, Level::Low, LineConfig::default(), "gpio-bench").map_err(|e| e.to_string())?;
    let out = Arc::new(std::sync::Mutex::new(out));
    let o = Arc::clone(&out);
    let sink = Box::new(move |e: gpio::EdgeEvent| {
        let mut pin = o.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = gpio::write(pin.as_mut(), e.level);
    });
    let mut inp =
        chip.request_input(input, Edge::Both, LineConfig::default(), "gpio-bench", sink).map_err(|e| e.to_string())?;
    let now = gpio::read_input(inp.as_mut()).map_err(|e| e.to_string())?;
    gpio::write(out.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_mut(), now)
        .map_err(|e| e.to_string())?;
    println!("reflex: GPIO {input} -> GPIO {output}");
    loop {
        std::thread::park();
    }
}

fn latency(sim: &Path, input: u32, output: u32, n: u32) -> Result<(), String> {
    let pull: PathBuf = sim.join(format!("sim_gpio{input}/pull"));
    let value: PathBuf = sim.join(format!("sim_gpio{output}/value"));
    let read =
        || std::fs::read_to_string(&value).map(|v| v.trim() == "1").map_err(|e| format!("{}: {e}", value.display()));
    let mut samples = Vec::new();
    for i in 0..n {
        let high = i % 2 == 0;
        let t0 = Instant::now();
        std::fs::write(&pull, if high { "pull-up" } else { "pull-down" })
            .map_err(|e| format!("{}: {e}", pull.display()))?;
        while read()? != high {
            if t0.elapsed() > Duration::from_secs(5) {
                return Err(format!("GPIO {output} did not follow GPIO {input} within 5 s (is a reflex running?)"));
            }
        }
        samples.push(t0.elapsed());
        std::thread::sleep(Duration::from_millis(10));
    }
    samples.sort();
    let at = |q: f64| {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).map_or(0, Duration::as_micros)
    };
    println!("edge latency: n={} median={}us p90={}us max={}us", samples.len(), at(0.5), at(0.9), at(1.0));
    Ok(())
}
