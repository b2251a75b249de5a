//! The classifier's inference run natively with the same engine code as the
//! app: load the embedded MobileNetV2, run it on the synthetic image, print
//! the median time per inference and the top-5 classes.
//!
//! ```text
//! classifier-bench [--engine rten|tract|all] [--runs N] [--seed S] [--logits-out FILE]
//! ```
//!
//! One line per engine: `native engine=rten runs=20 median_ms=… min_ms=… load_ms=… top5=…`.
//! `--logits-out FILE` writes the last run's 1000 logits (little-endian f32) to
//! `FILE.<engine>`: the agreement test compares them with the app's.

use std::time::Instant;

use trellis_inference::{Classifier, EngineKind, MODEL, logits_to_bytes, median, synthetic_image, top_k};

fn main() {
    if let Err(e) = run() {
        eprintln!("classifier-bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut engines = EngineKind::ALL.to_vec();
    let mut runs = 20usize;
    let mut seed = 1u32;
    let mut logits_out = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--engine" => {
                let v = value()?;
                engines = if v == "all" { EngineKind::ALL.to_vec() } else { vec![v.parse()?] };
            }
            "--runs" => runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--seed" => seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--logits-out" => logits_out = Some(value()?),
            _ => {
                return Err(format!(
                    "unknown argument {arg}; usage: classifier-bench [--engine rten|tract|all] [--runs N] [--seed S] [--logits-out FILE]"
                ));
            }
        }
    }
    let input = synthetic_image(seed);
    for kind in engines {
        let t = Instant::now();
        let classifier = Classifier::load(kind, MODEL)?;
        let load_ms = t.elapsed().as_secs_f64() * 1e3;
        // One warm-up run (first-touch allocations, weight packing), not counted.
        let mut logits = classifier.run(&input)?;
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            logits = classifier.run(&input)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let min = times.iter().copied().fold(f64::INFINITY, f64::min);
        let top5: Vec<String> = top_k(&logits, 5).iter().map(|(c, l)| format!("{c}:{l:.3}")).collect();
        println!(
            "native engine={kind} runs={runs} median_ms={:.2} min_ms={min:.2} load_ms={load_ms:.1} top5={}",
            median(&times),
            top5.join(",")
        );
        if let Some(path) = &logits_out {
            let path = format!("{path}.{kind}");
            std::fs::write(&path, logits_to_bytes(&logits)).map_err(|e| format!("{path}: {e}"))?;
        }
    }
    Ok(())
}
