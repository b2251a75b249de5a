//! On-device inference: the classifier example (MobileNetV2 through rten,
//! `wasm-apps/examples/classifier`) runs in the twin and finds the same
//! top-5 classes, in the same order, as the same engine built natively for
//! the host (`classifier-bench`, built by `make lang-apps`). The app is the
//! one `make lang-apps` compiled ahead of time for aarch64 and signed with the
//! development app key the image trusts: the twin loads its code instead of
//! compiling the engine under emulation (about a minute).
//!
//! The same engine built natively for the device's aarch64 (`classifier-bench`
//! cross-built by `make cross-inference`) then runs in the guest on the same input:
//! its top-5 and their logits agree with the app's, and the two times per
//! inference, printed side by side, are the twin's Wasm-vs-native ratio
//! (`docs/benchmarks.md`; under TCG a figure of the emulator, not of a Pi).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use trellis_twin::{EXAMPLES, Outcome, Twin, install, pi_app};

/// Loading the engine's code and the 14 MB model under emulation, then one
/// inference (seconds natively, tens of times that under TCG).
const FIRST_RESULT: Duration = Duration::from_secs(900);

/// Inferences per round, in the app and natively in the guest: their median is reported.
const RUNS: usize = 5;

/// `top5=class:logit,...` of a line the app or `classifier-bench` printed.
fn listed_top5(line: &str) -> Vec<(usize, f32)> {
    let listed = line.split("top5=").nth(1).unwrap_or_else(|| panic!("no top-5: {line}"));
    listed
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .split(',')
        .map(|c| {
            let (class, logit) = c.split_once(':').unwrap_or_else(|| panic!("not class:logit: {c} in {line}"));
            (class.parse().expect("a class"), logit.parse().expect("a logit"))
        })
        .collect()
}

/// The `median_ms=` of a line the app or `classifier-bench` printed.
fn median_ms(line: &str) -> f64 {
    let value = line.split("median_ms=").nth(1).and_then(|v| v.split_whitespace().next());
    value.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no median_ms: {line}"))
}

/// The 5 highest classes of 1000 little-endian f32 logits, highest first.
fn top5(bytes: &[u8]) -> Vec<usize> {
    assert_eq!(bytes.len(), 4000, "1000 f32 logits");
    let logits: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|a, b| logits[*b].total_cmp(&logits[*a]));
    order.truncate(5);
    order
}

#[test]
fn the_classifier_runs_on_the_device_and_agrees_with_native() -> Outcome {
    // The native run on the host, same engine, same synthetic image.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bench = root.join("wasm-apps/target/agreement/classifier-bench");
    assert!(bench.exists(), "{}: build it with `make lang-apps`", bench.display());
    let mut twin = Twin::new("inference")?;
    let out = twin.share().join("native");
    let status = Command::new(&bench)
        .args(["--engine", "rten", "--runs", "1", "--seed", "1", "--logits-out"])
        .arg(&out)
        .status()
        .expect("classifier-bench runs");
    assert!(status.success(), "classifier-bench: {status}");
    let native = top5(&std::fs::read(format!("{}.rten", out.display())).expect("the native logits"));

    let mut device = twin.boot()?;
    device.wait_apps_running(&EXAMPLES)?;
    device.wait_console()?;
    let bytes = pi_app("classifier", |m| {
        m.config.insert("runs".into(), RUNS.to_string());
        m.config.insert("period-ms".into(), "3600000".into());
    });
    install(&twin, &mut device, "classifier", &bytes)?;
    let running = device.wait_for("app running app=\"classifier\"", FIRST_RESULT)?;
    assert!(running.text.contains("compile=Native"), "the precompiled code was not loaded: {}", running.text);
    let wasm = device.wait_for(&format!("wasm engine=rten runs={RUNS}"), FIRST_RESULT)?.text;
    let on_device: Vec<usize> = listed_top5(&wasm).iter().map(|(c, _)| *c).collect();
    assert_eq!(on_device, native, "the device's top-5 classes (Wasm) against the host's (native): {wasm}");

    // The same engine natively on the device's aarch64, in the guest.
    let cross = root.join("wasm-apps/target/aarch64-unknown-linux-gnu/agreement/classifier-bench");
    assert!(cross.exists(), "{}: build it with `make cross-inference`", cross.display());
    std::fs::copy(&cross, twin.share().join("classifier-bench")).expect("copy classifier-bench for the guest");
    let said = device
        .sh_timeout(&format!("/mnt/classifier-bench --engine rten --runs {RUNS} --seed 1"), Duration::from_secs(600))?;
    let aarch64 = said.lines().find(|l| l.starts_with("native engine=rten")).unwrap_or_else(|| panic!("{said}"));
    let (app, natively) = (listed_top5(&wasm), listed_top5(aarch64));
    assert_eq!(
        app.iter().map(|(c, _)| c).collect::<Vec<_>>(),
        natively.iter().map(|(c, _)| c).collect::<Vec<_>>(),
        "the device's top-5 classes, Wasm against native aarch64: {wasm} / {aarch64}"
    );
    for ((class, a), (_, n)) in app.iter().zip(&natively) {
        // Printed to three decimals: half a unit each, and the engines' own difference.
        assert!((a - n).abs() <= 2e-3, "class {class}: logit {a} (Wasm) against {n} (native aarch64)");
    }
    let (w, n) = (median_ms(&wasm), median_ms(aarch64));
    eprintln!("in the twin, rten, median of {RUNS}: Wasm {w:.1} ms, native aarch64 {n:.1} ms, {:.2}x", w / n);
    Ok(())
}
