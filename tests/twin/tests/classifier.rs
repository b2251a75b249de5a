//! On-device inference: the classifier example (MobileNetV2 through rten,
//! `wasm-apps/examples/classifier`) runs in the twin and finds the same
//! top-5 classes, in the same order, as the same engine built natively for
//! the host (`classifier-bench`, built by `make lang-apps`). The app is the
//! one `make lang-apps` compiled ahead of time for aarch64 and signed with the
//! development app key the image trusts: the twin loads its code instead of
//! compiling the engine under emulation (about a minute).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use trellis_twin::{EXAMPLES, Outcome, Twin, install, pi_app};

/// Loading the engine's code and the 14 MB model under emulation, then one
/// inference (seconds natively, tens of times that under TCG).
const FIRST_RESULT: Duration = Duration::from_secs(900);

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
        m.config.insert("runs".into(), "1".into());
        m.config.insert("period-ms".into(), "3600000".into());
    });
    install(&twin, &mut device, "classifier", &bytes)?;
    let running = device.wait_for("app running app=\"classifier\"", FIRST_RESULT)?;
    assert!(running.text.contains("compile=Native"), "the precompiled code was not loaded: {}", running.text);
    let line = device.wait_for("wasm engine=rten runs=1", FIRST_RESULT)?;
    let listed = line.text.split("top5=").nth(1).unwrap_or_else(|| panic!("no top-5: {}", line.text));
    let on_device: Vec<usize> = listed
        .split(',')
        .map(|c| c.split(':').next().and_then(|n| n.trim().parse().ok()).expect("class:logit"))
        .collect();
    assert_eq!(on_device, native, "the device's top-5 classes (Wasm) against the host's (native): {}", line.text);
    Ok(())
}
