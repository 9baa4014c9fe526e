//! The quality-runtime harness: every method at every budget against a cached FM(T) reference.
//!
//! Layout of the report folder (everything is written atomically, so an interrupted run
//! resumes where it stopped: finished runs are read back, not recomputed):
//! * `eval_config.json`: the settings that define the references; a later run in the same
//!   folder must agree on them (methods and budgets may change);
//! * `reference/p{i}_s{seed}.{json,safetensors}`: the FM(T) clip and its record;
//! * `teacache.json`: TeaCache's fitted coefficients and searched thresholds;
//! * `runs/{method}/b{budget}/p{i}_s{seed}.json` (+ `.safetensors` for clips shown side by side).
//!
//! Runtime is wall time in-process: one warm-up generation first, then each run's sampling
//! time is the median of `repeats` repeats (outputs are bit-identical across repeats). Runtime
//! fractions divide by FM(T)'s time measured in the same session, right after the warm-up
//! (stored in every record), so a resumed evaluation on a machine that is busier or idler than
//! before still reports fractions, not a mix of two machines.
//! The cost of a run is also counted exactly as its *work*: Σ over steps of the evaluated token
//! fraction times the model calls, relative to the reference's.
//!
//! TeaCache's calibration and threshold search: [`crate::teacache_search`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use hsa_core::RunStats;
use hsa_pipeline::generate::{GenerateRequest, LoadedModel, PromptEmbeds, RunSettings};
use hsa_pipeline::io::{load_tensors, save_tensors, write_bytes_atomic};
use hsa_pipeline::sampling::SamplerOptions;
use hsa_pipeline::PipelineError;

use crate::methods::{Method, MethodKind};
use crate::metrics::{motion_energy, motion_ratio, psnr, ssim, ClipView};
pub use crate::teacache_search::TeaCacheState;
use crate::{EvalError, Result};

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    pub model_dir: PathBuf,
    pub prompts: Vec<String>,
    pub seeds: Vec<u64>,
    pub steps: usize,
    pub budgets: Vec<f64>,
    pub methods: Vec<Method>,
    pub out_dir: PathBuf,
    /// Timing repeats per run (median).
    pub repeats: usize,
    pub guidance: Option<f64>,
    /// Prompts (first seed) whose clips are kept for side-by-side videos.
    pub side_by_side: usize,
}

/// One finished run (or reference) with its measurements.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunRecord {
    /// Method label, or `reference`.
    pub method: String,
    pub budget: f64,
    pub prompt_index: usize,
    pub seed: u64,
    pub steps: usize,
    /// The sampler and its resolved setting, e.g. `teacache threshold 0.031`.
    pub setting: String,
    /// Median sampling wall time over the repeats.
    pub wall_seconds: f64,
    pub wall_samples: Vec<f64>,
    /// FM(T) sampling time measured in the same session (see [`Harness::new`]): runtime
    /// fractions divide by it, so runs timed in different sessions, under different machine
    /// load, stay comparable. 0 in records from before it existed.
    #[serde(default)]
    pub baseline_seconds: f64,
    pub nfe: usize,
    /// Σ_steps active fraction × model calls.
    pub work: f64,
    pub motion_energy: f64,
    pub psnr: Option<f64>,
    pub ssim: Option<f64>,
    pub motion_ratio: Option<f64>,
    /// Shapes checker agreement with the caption (prompts of the shapes world only).
    pub checker: Option<f64>,
}

/// A (method, budget) cell that cannot run, and why (e.g. RAS cannot reach 0.25 of 10 steps
/// with its dense steps). The report lists it instead of aborting the whole evaluation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Skipped {
    pub method: String,
    pub budget: f64,
    pub reason: String,
}

/// Everything the harness measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalResults {
    pub references: Vec<RunRecord>,
    pub runs: Vec<RunRecord>,
    pub skipped: Vec<Skipped>,
    pub teacache: TeaCacheState,
}

/// Settings that define the references: a folder's runs are only comparable under the same.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct ReferenceKey {
    model_dir: String,
    prompts: Vec<String>,
    seeds: Vec<u64>,
    steps: usize,
    guidance: Option<f64>,
}

/// Progress events for a bar.
pub enum Progress<'a> {
    Total(usize),
    Done(&'a str),
}

pub(crate) fn io_err(path: &Path, e: impl std::fmt::Display) -> EvalError {
    EvalError::Io(format!("{}: {e}", path.display()))
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| io_err(path, format!("unreadable ({e}); delete it to recompute")))
}

pub(crate) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    }
    let text = serde_json::to_string_pretty(value).map_err(|e| io_err(path, e))?;
    write_bytes_atomic(path, text.as_bytes())?;
    Ok(())
}

/// A file-name-safe form of a method label (`hsa:score=random` -> `hsa_score-random`).
pub fn safe_label(label: &str) -> String {
    label
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c,
            '=' => '-',
            _ => '_',
        })
        .collect()
}

/// Work of a run: Σ over steps of active fraction × model calls.
pub fn work_of(stats: &RunStats) -> f64 {
    stats
        .steps
        .iter()
        .map(|s| s.active_fraction * s.nfe as f64)
        .sum()
}

/// Rounds every decimal number in `s` to `decimals` places (sampler names print full floats).
pub fn round_numbers(s: &str, decimals: usize) -> String {
    let mut out = String::new();
    let mut num = String::new();
    let flush = |num: &mut String, out: &mut String| {
        match num.parse::<f64>() {
            Ok(v) if num.contains('.') && num.len() > decimals + 2 => {
                let r = format!("{v:.decimals$}");
                out.push_str(r.trim_end_matches('0').trim_end_matches('.'))
            }
            _ => out.push_str(num),
        }
        num.clear();
    };
    for c in s.chars() {
        if c.is_ascii_digit() || (c == '.' && !num.is_empty()) {
            num.push(c);
        } else {
            flush(&mut num, &mut out);
            out.push(c);
        }
    }
    flush(&mut num, &mut out);
    out
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// A clip's values and `[C, F, H, W]` dims.
pub(crate) struct ClipData {
    data: Vec<f32>,
    dims: (usize, usize, usize, usize),
}

impl ClipData {
    fn from_tensor(t: &Tensor) -> Result<Self> {
        Ok(Self {
            dims: t.dims4()?,
            data: t.flatten_all()?.to_vec1()?,
        })
    }

    fn view(&self) -> Result<ClipView<'_>> {
        let (c, f, h, w) = self.dims;
        ClipView::new(&self.data, c, f, h, w)
    }
}

fn checker_score(clip: &ClipData, prompt: &str) -> Option<f64> {
    let (c, f, h, w) = clip.dims;
    if c != 3 || hsa_shapes::parse_caption(prompt).is_err() {
        return None;
    }
    let clip = hsa_shapes::Clip::from_cfhw(f, h, w, clip.data.clone()).ok()?;
    hsa_shapes::check(&clip, prompt)
        .ok()
        .map(|r| r.overall as f64)
}

/// The harness: a loaded model, encoded prompts and the report folder.
pub struct Harness<'a> {
    pub(crate) cfg: &'a EvalConfig,
    pub(crate) model: LoadedModel,
    pub(crate) embeds: Vec<PromptEmbeds>,
    pub(crate) settings: RunSettings,
    device: Device,
    baseline_seconds: f64,
}

impl<'a> Harness<'a> {
    /// Loads the model, checks the folder's settings, encodes every prompt once.
    pub fn new(cfg: &'a EvalConfig, device: &Device) -> Result<Self> {
        validate(cfg)?;
        std::fs::create_dir_all(&cfg.out_dir).map_err(|e| io_err(&cfg.out_dir, e))?;
        let key = ReferenceKey {
            // The same folder reached by another path is the same model.
            model_dir: std::fs::canonicalize(&cfg.model_dir)
                .unwrap_or_else(|_| cfg.model_dir.clone())
                .display()
                .to_string(),
            prompts: cfg.prompts.clone(),
            seeds: cfg.seeds.clone(),
            steps: cfg.steps,
            guidance: cfg.guidance,
        };
        let key_path = cfg.out_dir.join("eval_config.json");
        match read_json::<ReferenceKey>(&key_path)? {
            Some(old) if old != key => {
                return Err(EvalError::Invalid(format!(
                    "{} holds an evaluation with other prompts, seeds, steps, guidance or model; \
                     use another output folder (methods and budgets may change between runs)",
                    cfg.out_dir.display()
                )))
            }
            Some(_) => {}
            None => write_json(&key_path, &key)?,
        }
        let model = LoadedModel::load(&cfg.model_dir, None, device)?;
        let settings = model.settings(&GenerateRequest {
            steps: Some(cfg.steps),
            guidance: cfg.guidance,
            ..Default::default()
        })?;
        let prompts: Vec<&str> = cfg.prompts.iter().map(String::as_str).collect();
        let embeds = model.encode_prompts(&prompts, None, settings.guidance.uses_uncond())?;
        let mut harness = Self {
            cfg,
            model,
            embeds,
            settings,
            device: device.clone(),
            baseline_seconds: 0.0,
        };
        harness.baseline_seconds = harness.time_baseline()?;
        Ok(harness)
    }

    /// Warms up (allocator, caches, lazily built kernels), then times FM(T) on the first
    /// prompt and seed: the session's runtime unit.
    fn time_baseline(&self) -> Result<f64> {
        let fm = SamplerOptions {
            sampler: "fm".into(),
            ..Default::default()
        };
        let seed = self.cfg.seeds[0];
        self.model.sample(
            &self.embeds[0],
            &self.settings_for(self.cfg.steps.min(4), seed),
            &fm,
            &mut |_| {},
        )?;
        let (_, _, samples) = self.timed(0, self.cfg.steps, seed, &fm)?;
        Ok(median(samples))
    }

    /// FM(T)'s sampling time in this session (median of the repeats).
    pub fn baseline_seconds(&self) -> f64 {
        self.baseline_seconds
    }

    pub(crate) fn settings_for(&self, steps: usize, seed: u64) -> RunSettings {
        RunSettings {
            steps,
            seed,
            ..self.settings.clone()
        }
    }

    /// Runs a sampler `repeats` times; returns the clip, its stats and the wall samples.
    fn timed(
        &self,
        p: usize,
        steps: usize,
        seed: u64,
        opts: &SamplerOptions,
    ) -> Result<(Tensor, RunStats, Vec<f64>)> {
        let s = self.settings_for(steps, seed);
        let mut samples = Vec::new();
        let mut first = None;
        for _ in 0..self.cfg.repeats.max(1) {
            let out = self.model.sample(&self.embeds[p], &s, opts, &mut |_| {})?;
            samples.push(out.seconds);
            first.get_or_insert((out.video, out.stats));
        }
        let (video, stats) = first.expect("at least one repeat");
        Ok((video, stats, samples))
    }

    fn ref_paths(&self, p: usize, seed: u64) -> (PathBuf, PathBuf) {
        let base = self
            .cfg
            .out_dir
            .join("reference")
            .join(format!("p{p}_s{seed}"));
        (
            base.with_extension("json"),
            base.with_extension("safetensors"),
        )
    }

    fn run_paths(&self, m: &Method, budget: f64, p: usize, seed: u64) -> (PathBuf, PathBuf) {
        let base = self
            .cfg
            .out_dir
            .join("runs")
            .join(safe_label(&m.label))
            .join(format!("b{budget:.3}"))
            .join(format!("p{p}_s{seed}"));
        (
            base.with_extension("json"),
            base.with_extension("safetensors"),
        )
    }

    fn keeps_clip(&self, p: usize, seed: u64) -> bool {
        p < self.cfg.side_by_side && seed == self.cfg.seeds[0]
    }

    /// The reference record and clip of (prompt, seed), computed once and cached.
    pub(crate) fn reference(&self, p: usize, seed: u64) -> Result<(RunRecord, ClipData)> {
        let (json, clip_path) = self.ref_paths(p, seed);
        if let (Some(rec), true) = (read_json::<RunRecord>(&json)?, clip_path.exists()) {
            let t = load_tensors(&clip_path, &self.device)?;
            let video = t
                .get("video")
                .ok_or_else(|| io_err(&clip_path, "no 'video' tensor; delete it to recompute"))?;
            return Ok((rec, ClipData::from_tensor(video)?));
        }
        let opts = SamplerOptions {
            sampler: "fm".into(),
            ..Default::default()
        };
        let (video, stats, samples) = self.timed(p, self.cfg.steps, seed, &opts)?;
        let clip = ClipData::from_tensor(&video)?;
        let rec = RunRecord {
            method: "reference".into(),
            budget: 1.0,
            prompt_index: p,
            seed,
            steps: self.cfg.steps,
            setting: format!("fm {} steps", self.cfg.steps),
            wall_seconds: median(samples.clone()),
            wall_samples: samples,
            baseline_seconds: self.baseline_seconds,
            nfe: stats.nfe,
            work: work_of(&stats),
            motion_energy: motion_energy(&clip.view()?),
            psnr: None,
            ssim: None,
            motion_ratio: None,
            checker: checker_score(&clip, &self.cfg.prompts[p]),
        };
        if let Some(dir) = clip_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        }
        save_tensors(&clip_path, &[("video".to_string(), video)].into())?;
        write_json(&json, &rec)?;
        Ok((rec, clip))
    }

    /// Loads a kept clip of a run (for side-by-side videos).
    pub fn kept_clip(&self, method: Option<&Method>, budget: f64, p: usize) -> Result<Tensor> {
        let seed = self.cfg.seeds[0];
        let path = match method {
            None => self.ref_paths(p, seed).1,
            Some(m) => self.run_paths(m, budget, p, seed).1,
        };
        let t = load_tensors(&path, &self.device)?;
        t.get("video")
            .cloned()
            .ok_or_else(|| io_err(&path, "no 'video' tensor"))
    }

    /// Runs (or reads back) everything; `progress` sees the total and each finished item.
    pub fn run(&self, progress: &mut dyn FnMut(Progress)) -> Result<EvalResults> {
        let cfg = self.cfg;
        let pairs: Vec<(usize, u64)> = (0..cfg.prompts.len())
            .flat_map(|p| cfg.seeds.iter().map(move |&s| (p, s)))
            .collect();
        progress(Progress::Total(
            pairs.len() * (1 + cfg.methods.len() * cfg.budgets.len()),
        ));
        let mut references = BTreeMap::new();
        for &(p, seed) in &pairs {
            let r = self.reference(p, seed)?;
            progress(Progress::Done("reference"));
            references.insert((p, seed), r);
        }
        let state_path = cfg.out_dir.join("teacache.json");
        let mut tea: TeaCacheState = read_json(&state_path)?.unwrap_or_default();
        let mut runs = Vec::new();
        let mut skipped = Vec::new();
        for m in &cfg.methods {
            for &b in &cfg.budgets {
                let steps = m.steps_at(cfg.steps, b);
                let setting = (|| {
                    let tc = if m.kind == MethodKind::TeaCache {
                        Some(self.teacache_setting(m, b, &mut tea)?)
                    } else {
                        None
                    };
                    let opts = m.sampler_options(b, tc.clone())?;
                    // Infeasible settings (a budget the sampler cannot reach) show up here.
                    let n = self.model.grid(&self.settings)?.len();
                    opts.resolve(steps, n)?;
                    Ok::<_, EvalError>((tc, opts))
                })();
                let (tc, opts) = match setting {
                    Ok(v) => v,
                    Err(
                        e @ (EvalError::Invalid(_)
                        | EvalError::Sampling(_)
                        | EvalError::Pipeline(
                            PipelineError::Invalid(_) | PipelineError::Sampling(_),
                        )),
                    ) => {
                        skipped.push(Skipped {
                            method: m.label.clone(),
                            budget: b,
                            reason: e.to_string(),
                        });
                        (0..pairs.len()).for_each(|_| progress(Progress::Done(&m.label)));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                for &(p, seed) in &pairs {
                    let (json, clip_path) = self.run_paths(m, b, p, seed);
                    let keep = self.keeps_clip(p, seed);
                    if let Some(rec) = read_json::<RunRecord>(&json)? {
                        if !keep || clip_path.exists() {
                            runs.push(rec);
                            progress(Progress::Done(&m.label));
                            continue;
                        }
                    }
                    let (_, ref_clip) = &references[&(p, seed)];
                    let (video, stats, samples) = self.timed(p, steps, seed, &opts)?;
                    let clip = ClipData::from_tensor(&video)?;
                    let (x, r) = (clip.view()?, ref_clip.view()?);
                    let setting = match &tc {
                        Some((t, _)) => format!("teacache threshold {t:.4e}"),
                        None if m.kind == MethodKind::Fm => format!("fm {steps} steps"),
                        None => round_numbers(&stats.sampler, 3),
                    };
                    let rec = RunRecord {
                        method: m.label.clone(),
                        budget: b,
                        prompt_index: p,
                        seed,
                        steps,
                        setting,
                        wall_seconds: median(samples.clone()),
                        wall_samples: samples,
                        baseline_seconds: self.baseline_seconds,
                        nfe: stats.nfe,
                        work: work_of(&stats),
                        motion_energy: motion_energy(&x),
                        psnr: Some(psnr(&x, &r)?),
                        ssim: Some(ssim(&x, &r)?),
                        motion_ratio: motion_ratio(&x, &r)?,
                        checker: checker_score(&clip, &cfg.prompts[p]),
                    };
                    if keep {
                        if let Some(dir) = clip_path.parent() {
                            std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
                        }
                        save_tensors(&clip_path, &[("video".to_string(), video)].into())?;
                    }
                    write_json(&json, &rec)?;
                    runs.push(rec);
                    progress(Progress::Done(&m.label));
                }
            }
        }
        Ok(EvalResults {
            references: references.into_values().map(|(r, _)| r).collect(),
            runs,
            skipped,
            teacache: tea,
        })
    }

    pub fn fps(&self) -> f64 {
        self.model.defaults.fps
    }
}

fn validate(cfg: &EvalConfig) -> Result<()> {
    let bad = |m: String| Err(EvalError::Invalid(m));
    if cfg.prompts.is_empty() {
        return bad("no prompts to evaluate".into());
    }
    if cfg.seeds.is_empty() {
        return bad("--seeds is empty".into());
    }
    if cfg.steps < 2 {
        return bad(format!("--steps {} (need at least 2)", cfg.steps));
    }
    if cfg.methods.is_empty() {
        return bad("--methods is empty".into());
    }
    if let Some(b) = cfg.budgets.iter().find(|b| !(**b > 0.0 && **b <= 1.0)) {
        return bad(format!("budget {b} is not in (0, 1]"));
    }
    if cfg.budgets.is_empty() {
        return bad("--budgets is empty".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_names_get_short_numbers_and_medians_are_medians() {
        assert_eq!(
            round_numbers("hsa 0.08506944444444445:1,0.15104166666666666:2,0.5:4", 3),
            "hsa 0.085:1,0.151:2,0.5:4"
        );
        assert_eq!(
            round_numbers("ras ratio 0.2 at 40 steps", 3),
            "ras ratio 0.2 at 40 steps"
        );
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(safe_label("hsa:score=random"), "hsa_score-random");
    }
}
