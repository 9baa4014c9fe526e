//! Progress bars and the one-line run summary.

use hsa_core::{RunStats, StepEvent};
use indicatif::{ProgressBar, ProgressStyle};

/// A bar over sampler steps (hidden when stderr is not a terminal).
pub fn steps_bar(steps: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} steps, {elapsed} elapsed, eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    bar
}

pub fn on_step(bar: &ProgressBar, e: &StepEvent) {
    bar.set_position((e.index + 1) as u64);
}

/// VAE decoding: the same bar counts latent frames (`done` of `total`).
pub fn on_decode(bar: &ProgressBar, done: usize, total: usize) {
    if done == 0 {
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {pos}/{len} latent frames, {elapsed} elapsed, eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message("decoding");
        bar.set_length(total as u64);
    }
    bar.set_position(done as u64);
}

/// `sampler hsa: 40 steps, NFE 80, token-step fraction 0.500, 12.3 s, peak 1.2 GiB`.
pub fn summary(stats: &RunStats) -> String {
    let peak = hsa_pipeline::memory::peak_rss_bytes()
        .map(|b| format!(", peak memory {:.2} GiB", b as f64 / (1u64 << 30) as f64))
        .unwrap_or_default();
    format!(
        "sampler {}: {} steps, NFE {}, token-step fraction {:.3}, {:.2} s{}",
        hsa_eval::harness::round_numbers(&stats.sampler, 3),
        stats.total_steps,
        stats.nfe,
        stats.token_step_fraction,
        stats.wall_seconds,
        peak
    )
}

/// Run statistics as JSON, with the process's peak memory added.
pub fn stats_json(stats: &RunStats) -> anyhow::Result<String> {
    let mut v = serde_json::to_value(stats)?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "peak_rss_bytes".into(),
            serde_json::json!(hsa_pipeline::memory::peak_rss_bytes()),
        );
    }
    Ok(serde_json::to_string_pretty(&v)?)
}
