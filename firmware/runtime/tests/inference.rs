//! The classifier example (MobileNetV2, `wasm-apps/examples/classifier`) run
//! through the runtime agrees with the same engine run natively: the 1000
//! logits within a floating-point tolerance and the same top-1 class, for
//! each engine (rten, tract).
//!
//! The native side is `classifier-bench`, a binary of the wasm-apps workspace
//! built for the host by `make apps` (`make classifier`): the engines stay out
//! of this workspace's build, and this test reads the logits it writes.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{device, manifest, with_config};
use trellis_runtime::RuntimeEvent;

fn wasm_apps() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wasm-apps")
}

fn built(path: PathBuf) -> PathBuf {
    assert!(path.exists(), "{}: build it first with `make apps` (or `make classifier`)", path.display());
    path
}

fn logits(bytes: &[u8]) -> Vec<f32> {
    assert_eq!(bytes.len(), 4000, "1000 f32 logits");
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0
}

fn native_logits(engine: &str, dir: &Path) -> Vec<f32> {
    let bench = built(wasm_apps().join("target/agreement/classifier-bench"));
    let out = dir.join("native");
    let status = Command::new(bench)
        .args(["--engine", engine, "--runs", "1", "--seed", "1", "--logits-out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "classifier-bench failed: {status}");
    logits(&std::fs::read(format!("{}.{engine}", out.display())).unwrap())
}

#[test]
fn wasm_and_native_agree_for_each_engine() {
    let code = std::fs::read(built(wasm_apps().join("target/wasm32-wasip2/inference/classifier.wasm"))).unwrap();
    let dev = device(&[], |_| {});
    let results = dev.runtime.subscribe("classifier/result");
    let logits_rx = dev.runtime.subscribe("classifier/logits");
    let scratch = tempfile::tempdir().unwrap();
    // The engines the classifier was built with (`make classifier`: rten;
    // `make bench-inference` adds tract and sets this to both).
    let engines = std::env::var("TRELLIS_INFERENCE_ENGINES").unwrap_or_else(|_| "rten".into());
    for (i, engine) in engines.split_whitespace().enumerate() {
        // One version per engine: the second install is a swap (and a warm compile).
        let mut m = with_config(manifest("classifier"), &[("engine", engine), ("runs", "1"), ("seed", "1")]);
        m.version = format!("1.0.{i}");
        dev.install("classifier", &trellis_appfmt::pack(&code, &m).unwrap());
        // Compiling the 34 MB component with a debug build of wasmtime takes minutes here (the
        // first install; the second is a cache hit): longer than support's wait_started.
        let version = m.version.clone();
        dev.wait_for(
            &format!("classifier {version} started"),
            Duration::from_secs(900),
            |e| matches!(e, RuntimeEvent::Started { app, version: v, .. } if app == "classifier" && *v == version),
        );
        let wasm = logits(&logits_rx.recv_timeout(Duration::from_secs(300)).unwrap().payload);
        let result = String::from_utf8(results.recv_timeout(Duration::from_secs(60)).unwrap().payload).unwrap();
        println!("{result}");
        assert!(result.starts_with(&format!("wasm engine={engine} ")), "{result}");

        let native = native_logits(engine, scratch.path());
        assert!(wasm.iter().chain(&native).all(|l| l.is_finite()), "{engine}: a logit is not finite");
        let (lo, hi) = native.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &l| (lo.min(l), hi.max(l)));
        let range = hi - lo;
        assert!(range > 1e-3, "{engine}: the logits are (nearly) constant: {lo}..{hi}");
        let max_diff = wasm.iter().zip(&native).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        println!(
            "{engine}: logits {lo:.3}..{hi:.3}, max |wasm - native| = {max_diff:.2e} ({:.2e} of the range)",
            max_diff / range
        );
        // Different SIMD widths and FMA use change the order of the sums: rounding, not errors.
        assert!(max_diff <= 1e-4 * range, "{engine}: Wasm and native differ by {max_diff} (logit range {range})");
        assert_eq!(argmax(&wasm), argmax(&native), "{engine}: top-1 differs");
    }
}
