//! Progress bars, the one-line run summary and the reports a sampling run may write.

use std::fmt::Display;
use std::path::PathBuf;

use anyhow::Context;
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
fn stats_json(stats: &RunStats) -> anyhow::Result<String> {
    let mut v = serde_json::to_value(stats)?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "peak_rss_bytes".into(),
            serde_json::json!(hsa_pipeline::memory::peak_rss_bytes()),
        );
    }
    Ok(serde_json::to_string_pretty(&v)?)
}

/// `--stats` and `--group-map`: what a sampling command may write about its run.
#[derive(clap::Args, Debug, Clone)]
pub struct RunReports {
    /// Write run statistics as JSON (per-step sigma, active fraction, wall time; NFE,
    /// token-step fraction, runtime, peak memory, group map).
    #[arg(long)]
    stats: Option<PathBuf>,
    /// Write the per-token step budget as a PNG heat map (hsa and ras runs).
    #[arg(long)]
    group_map: Option<PathBuf>,
}

impl RunReports {
    /// Refuses, before any work, a group map asked of a sampler that has none (one that is
    /// not token-level), so no video is written by a command that then fails.
    pub fn check(&self, sampler: &str) -> anyhow::Result<()> {
        if self.group_map.is_some() && !hsa_pipeline::sampling::is_token_level(sampler) {
            anyhow::bail!(no_group_map(sampler));
        }
        Ok(())
    }

    /// Writes the requested reports. A group map asked of a sampler that has none is an
    /// error naming the sampler (where [`RunReports::check`] could not tell beforehand: the
    /// sampler was the model's default).
    pub fn write(&self, stats: &RunStats, sampler: impl Display) -> anyhow::Result<()> {
        if let Some(path) = &self.stats {
            hsa_pipeline::io::write_bytes_atomic(path, stats_json(stats)?.as_bytes())?;
        }
        if let Some(path) = &self.group_map {
            let map = stats
                .group_map
                .as_ref()
                .with_context(|| no_group_map(sampler))?;
            hsa_pipeline::group_map::write_png(map, path)?;
        }
        Ok(())
    }
}

fn no_group_map(sampler: impl Display) -> String {
    format!("--group-map needs a token-level sampler (hsa or ras), not {sampler}")
}
