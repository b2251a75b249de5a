//! MobileNetV2 inference with a pure-Rust engine: the wrapper shared by the
//! `classifier` app (built for `wasm32-wasip2` with SIMD128) and its native
//! benchmark (`classifier-bench`), so both run the same engine code on the same
//! model and the same input.
//!
//! Engines (cargo features; rten by default, tract with `--features trellis-inference/tract`): [rten](https://crates.io/crates/rten)
//! 0.27 (loads ONNX directly) and [tract](https://crates.io/crates/tract-onnx)
//! 0.23. Both run on one thread.
//!
//! The model is `build/models/mobilenetv2.onnx`, written by
//! `scripts/mobilenetv2.py` (weights from a fixed seed); [`MODEL`] embeds it.

use std::fmt;

/// The ONNX model, embedded at build time (`make apps` writes it first).
pub static MODEL: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../build/models/mobilenetv2.onnx"));

/// Input height and width.
pub const SIZE: usize = 224;
/// Input shape, NCHW.
pub const INPUT_SHAPE: [usize; 4] = [1, 3, SIZE, SIZE];
/// Number of classes (logits).
pub const CLASSES: usize = 1000;

/// Which engine runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// rten.
    Rten,
    /// tract (tract-onnx).
    Tract,
}

impl EngineKind {
    /// Every engine compiled in.
    pub const ALL: &[Self] = &[
        #[cfg(feature = "rten")]
        Self::Rten,
        #[cfg(feature = "tract")]
        Self::Tract,
    ];
}

impl std::str::FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rten" => Ok(Self::Rten),
            "tract" => Ok(Self::Tract),
            _ => Err(format!("unknown engine {s:?} (rten or tract)")),
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rten => "rten",
            Self::Tract => "tract",
        })
    }
}

/// A deterministic synthetic 224x224 RGB image, `seed` choosing the pattern:
/// smooth gradients and rings plus a little pseudo-random noise, normalised
/// with ImageNet's mean and standard deviation, NCHW (1x3x224x224).
#[must_use]
pub fn synthetic_image(seed: u32) -> Vec<f32> {
    const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
    const STD: [f32; 3] = [0.229, 0.224, 0.225];
    let mut state = u64::from(seed).wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    let mut out = vec![0.0f32; 3 * SIZE * SIZE];
    let phase = seed as f32 * 0.37;
    for c in 0..3 {
        for y in 0..SIZE {
            for x in 0..SIZE {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let noise = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
                let (fx, fy) = (x as f32 / SIZE as f32, y as f32 / SIZE as f32);
                let r = ((fx - 0.5).powi(2) + (fy - 0.5).powi(2)).sqrt();
                let v = match c {
                    0 => 0.5 + 0.4 * (fx * 6.0 + phase).sin(),
                    1 => 0.5 + 0.4 * (r * 20.0 - phase).cos(),
                    _ => 0.3 + 0.6 * fy * fx,
                };
                let v = (v + noise).clamp(0.0, 1.0);
                out[(c * SIZE + y) * SIZE + x] = (v - MEAN[c]) / STD[c];
            }
        }
    }
    out
}

/// A loaded model, ready to run.
pub struct Classifier {
    kind: EngineKind,
    inner: Inner,
}

enum Inner {
    #[cfg(feature = "rten")]
    Rten(Box<rten::Model>),
    #[cfg(feature = "tract")]
    Tract(std::sync::Arc<tract_onnx::prelude::TypedRunnableModel>),
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classifier").field("engine", &self.kind).finish_non_exhaustive()
    }
}

impl Classifier {
    /// Load (and optimise) the ONNX model `model` with engine `kind`.
    ///
    /// # Errors
    /// The engine's error, as text, when the model cannot be loaded.
    pub fn load(kind: EngineKind, model: &[u8]) -> Result<Self, String> {
        let inner = match kind {
            #[cfg(feature = "rten")]
            EngineKind::Rten => Inner::Rten(Box::new(
                rten::ModelOptions::with_all_ops().load(model.to_vec()).map_err(|e| format!("rten: {e}"))?,
            )),
            #[cfg(feature = "tract")]
            EngineKind::Tract => {
                use tract_onnx::prelude::*;
                let plan = tract_onnx::onnx()
                    .model_for_read(&mut std::io::Cursor::new(model))
                    .and_then(|m| m.with_input_fact(0, f32::fact(INPUT_SHAPE).into()))
                    .and_then(|m| m.into_optimized())
                    .and_then(|m| m.into_runnable())
                    .map_err(|e| format!("tract: {e:#}"))?;
                Inner::Tract(plan)
            }
            #[allow(unreachable_patterns)]
            _ => return Err(format!("engine {kind} is not compiled in")),
        };
        Ok(Self { kind, inner })
    }

    /// The engine.
    #[must_use]
    pub fn engine(&self) -> EngineKind {
        self.kind
    }

    /// Run one inference on `input` (NCHW, [`INPUT_SHAPE`]): the 1000 logits.
    ///
    /// # Errors
    /// The engine's error, as text.
    pub fn run(&self, input: &[f32]) -> Result<Vec<f32>, String> {
        if input.len() != INPUT_SHAPE.iter().product::<usize>() {
            return Err(format!("input has {} values, expected 1x3x224x224", input.len()));
        }
        let logits = match &self.inner {
            #[cfg(feature = "rten")]
            Inner::Rten(model) => {
                use rten_tensor::prelude::*;
                let tensor = rten_tensor::NdTensorView::from_data(INPUT_SHAPE, input);
                // One thread: the app's (Wasm has no threads) and the benchmark's, so they compare.
                let pool = std::sync::Arc::new(rten::ThreadPool::with_num_threads(1));
                let options = rten::RunOptions::default().with_thread_pool(Some(pool));
                let out = model.run_one(tensor.into(), Some(options)).map_err(|e| format!("rten: {e}"))?;
                let out: rten_tensor::NdTensor<f32, 2> = out.try_into().map_err(|e| format!("rten: {e:?}"))?;
                out.to_vec()
            }
            #[cfg(feature = "tract")]
            Inner::Tract(model) => {
                use tract_onnx::prelude::*;
                let tensor = Tensor::from_shape(&INPUT_SHAPE, input).map_err(|e| format!("tract: {e:#}"))?;
                let out = model.run(tvec!(tensor.into())).map_err(|e| format!("tract: {e:#}"))?;
                out[0].to_plain_array_view::<f32>().map_err(|e| format!("tract: {e:#}"))?.iter().copied().collect()
            }
        };
        if logits.len() != CLASSES {
            return Err(format!("{} logits, expected {CLASSES}", logits.len()));
        }
        Ok(logits)
    }
}

/// The `k` highest logits, highest first: (class, logit).
#[must_use]
pub fn top_k(logits: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut ranked: Vec<(usize, f32)> = logits.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(k);
    ranked
}

/// The median of `values` (the mean of the middle two for an even count); 0 when empty.
#[must_use]
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => f64::midpoint(v[n / 2 - 1], v[n / 2]),
    }
}

/// Logits as little-endian f32 bytes (what the app publishes).
#[must_use]
pub fn logits_to_bytes(logits: &[f32]) -> Vec<u8> {
    logits.iter().flat_map(|l| l.to_le_bytes()).collect()
}

/// The inverse of [`logits_to_bytes`].
#[must_use]
pub fn logits_from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_synthetic_image_is_deterministic_and_normalised() {
        let a = synthetic_image(1);
        assert_eq!(a, synthetic_image(1));
        assert_ne!(a, synthetic_image(2));
        assert!(a.iter().all(|v| v.is_finite() && v.abs() < 3.0));
    }

    #[test]
    fn median_and_top_k() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < 1e-12);
        assert!((median(&[4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < 1e-12);
        assert_eq!(top_k(&[0.1, 0.9, 0.5], 2), vec![(1, 0.9), (2, 0.5)]);
    }
}
