//! classifier: on-device inference. Runs MobileNetV2 (224x224x3, 1000
//! classes; the model is embedded in the component) on a deterministic
//! synthetic image with a pure-Rust engine, and reports the top-5 classes and
//! the time per inference, measured with the clocks interface.
//!
//! Config: `engine` (`rten` or `tract`, default rten), `runs` (inferences per
//! round, 5), `period-ms` (a round every period, 10000; the first one at
//! once), `seed` (the synthetic image, 1).
//!
//! Publishes, each round: `classifier/result` (text: engine, runs, median and
//! min ms per inference, top-5 as class:logit) and `classifier/logits` (the
//! last run's 1000 logits, little-endian f32).

use trellis_inference::{Classifier, EngineKind, MODEL, logits_to_bytes, median, synthetic_image, top_k};
use trellis_sdk::{App, Start, clocks, pubsub, timers};

struct ClassifierApp {
    classifier: Classifier,
    input: Vec<f32>,
    runs: usize,
}

fn now_ms() -> f64 {
    clocks::monotonic_now() as f64 / 1e6
}

impl App for ClassifierApp {
    fn start(start: &Start) -> Result<Self, String> {
        let engine: EngineKind = start.get("engine", "rten".to_owned())?.parse()?;
        let runs = start.get("runs", 5usize)?.max(1);
        let period = start.get("period-ms", 10_000u32)?;
        let input = synthetic_image(start.get("seed", 1u32)?);
        let t = now_ms();
        let classifier = Classifier::load(engine, MODEL)?;
        trellis_sdk::info(&format!("{engine}: MobileNetV2 loaded in {:.0} ms", now_ms() - t));
        timers::set_timeout(0);
        timers::set_interval(period)?;
        Ok(Self { classifier, input, runs })
    }

    fn on_timer(&mut self, _id: u32) -> Result<(), String> {
        let mut times = Vec::with_capacity(self.runs);
        let mut logits = Vec::new();
        for _ in 0..self.runs {
            let t = now_ms();
            logits = self.classifier.run(&self.input)?;
            times.push(now_ms() - t);
        }
        let min = times.iter().copied().fold(f64::INFINITY, f64::min);
        let top5: Vec<String> = top_k(&logits, 5).iter().map(|(c, l)| format!("{c}:{l:.3}")).collect();
        let result = format!(
            "wasm engine={} runs={} median_ms={:.2} min_ms={min:.2} top5={}",
            self.classifier.engine(),
            self.runs,
            median(&times),
            top5.join(",")
        );
        trellis_sdk::info(&result);
        pubsub::publish("classifier/logits", &logits_to_bytes(&logits))?;
        pubsub::publish("classifier/result", result.as_bytes())?;
        Ok(())
    }
}

trellis_sdk::app!(ClassifierApp);
