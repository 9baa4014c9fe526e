//! The evaluation's report: aggregates per method and budget, `report.json`, `report.md`, the
//! Pareto plot `pareto.png` and side-by-side videos.

use std::path::Path;

use candle_core::Tensor;
use hsa_pipeline::io::write_bytes_atomic;
use hsa_pipeline::video::{write_video, VideoFormat, VideoFrames};

use crate::harness::{EvalConfig, EvalResults, Harness, RunRecord, Skipped};
use crate::plot::{render, Canvas, Panel, Series, PALETTE};
use crate::{EvalError, Result};

/// Means over the (prompt, seed) pairs of one method at one budget.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Aggregate {
    pub method: String,
    pub budget: f64,
    pub runs: usize,
    /// Resolved setting (e.g. TeaCache's threshold), from the first run.
    pub setting: String,
    /// Σ median wall time / Σ FM(T)'s time measured in the same session as each run
    /// ([`session_unit`]).
    pub runtime_fraction: f64,
    /// Mean of work / reference work (token-weighted model calls).
    pub work_fraction: f64,
    pub nfe: f64,
    pub psnr: f64,
    pub ssim: f64,
    pub motion_ratio: Option<f64>,
    pub checker: Option<f64>,
}

/// The reference's own numbers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReferenceSummary {
    pub runs: usize,
    pub steps: usize,
    pub mean_wall_seconds: f64,
    pub nfe: f64,
    pub checker: Option<f64>,
}

/// FM(T)'s time in the session that wrote a record whose start-up baseline was `baseline`:
/// the lowest of that baseline and the wall times of the references the same session timed
/// (records of one session carry the same baseline value).
///
/// Why: the start-up baseline is a single timing, and a transient load on the machine while
/// it ran (another process starting up) inflated it by 1.8x in one session, which made every
/// method of that session look 1.8x faster. The references are FM(T) too (on other prompts,
/// at the same cost), so they re-time the unit across the session; the lowest is the one least
/// disturbed. It can only lower the unit, so runtime fractions can only rise: a conservative
/// correction.
pub fn session_unit(baseline: f64, references: &[RunRecord]) -> f64 {
    references
        .iter()
        .filter(|x| x.baseline_seconds == baseline && x.wall_seconds > 0.0)
        .map(|x| x.wall_seconds)
        .fold(baseline, f64::min)
}

/// All aggregates of a results set.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub reference: ReferenceSummary,
    pub aggregates: Vec<Aggregate>,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn mean_opt(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = v.flatten().filter(|x| x.is_finite()).collect();
    (!v.is_empty()).then(|| mean(&v))
}

/// Aggregates the runs, in the configuration's method and budget order.
pub fn summarize(cfg: &EvalConfig, res: &EvalResults) -> Summary {
    let find_ref = |r: &RunRecord| {
        res.references
            .iter()
            .find(|x| x.prompt_index == r.prompt_index && x.seed == r.seed)
    };
    let mut aggregates = Vec::new();
    for m in &cfg.methods {
        for &b in &cfg.budgets {
            let runs: Vec<&RunRecord> = res
                .runs
                .iter()
                .filter(|r| r.method == m.label && (r.budget - b).abs() < 1e-9)
                .collect();
            if runs.is_empty() {
                continue;
            }
            let pairs: Vec<(&RunRecord, &RunRecord)> = runs
                .iter()
                .filter_map(|r| find_ref(r).map(|x| (*r, x)))
                .collect();
            let wall: f64 = pairs.iter().map(|(r, _)| r.wall_seconds).sum();
            // Each run against FM(T) timed in its own session (older records: the reference).
            let ref_wall: f64 = pairs
                .iter()
                .map(|(r, x)| {
                    if r.baseline_seconds > 0.0 {
                        session_unit(r.baseline_seconds, &res.references)
                    } else {
                        x.wall_seconds
                    }
                })
                .sum();
            let work: Vec<f64> = pairs.iter().map(|(r, x)| r.work / x.work).collect();
            aggregates.push(Aggregate {
                method: m.label.clone(),
                budget: b,
                runs: runs.len(),
                setting: runs[0].setting.clone(),
                runtime_fraction: wall / ref_wall,
                work_fraction: mean(&work),
                nfe: mean(&runs.iter().map(|r| r.nfe as f64).collect::<Vec<_>>()),
                psnr: mean(&runs.iter().filter_map(|r| r.psnr).collect::<Vec<_>>()),
                ssim: mean(&runs.iter().filter_map(|r| r.ssim).collect::<Vec<_>>()),
                motion_ratio: mean_opt(runs.iter().map(|r| r.motion_ratio)),
                checker: mean_opt(runs.iter().map(|r| r.checker)),
            });
        }
    }
    let refs = &res.references;
    Summary {
        reference: ReferenceSummary {
            runs: refs.len(),
            steps: cfg.steps,
            mean_wall_seconds: mean(&refs.iter().map(|r| r.wall_seconds).collect::<Vec<_>>()),
            nfe: mean(&refs.iter().map(|r| r.nfe as f64).collect::<Vec<_>>()),
            checker: mean_opt(refs.iter().map(|r| r.checker)),
        },
        aggregates,
    }
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.decimals$}"))
}

/// The Markdown report: settings, the reference, one table per budget.
pub fn markdown(cfg: &EvalConfig, s: &Summary, res_skipped: &[Skipped], command: &str) -> String {
    let mut out = String::new();
    out.push_str("# HSA quality-runtime report\n\n");
    out.push_str(&format!(
        "Model `{}`; {} prompts x {} seeds; reference FM(T={}) {}; timing: median of {} repeat(s) after a warm-up, {} threads.\n\n",
        cfg.model_dir.display(),
        cfg.prompts.len(),
        cfg.seeds.len(),
        cfg.steps,
        cfg.guidance.map_or("with the model's guidance".to_string(), |g| format!("guidance {g}")),
        cfg.repeats.max(1),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    ));
    if !command.is_empty() {
        out.push_str(&format!("Command: `{command}`\n\n"));
    }
    out.push_str(&format!(
        "Reference: {} runs, {:.3} s sampling each on average, {:.0} model calls{}.\n\n",
        s.reference.runs,
        s.reference.mean_wall_seconds,
        s.reference.nfe,
        s.reference
            .checker
            .map_or(String::new(), |c| format!(", checker agreement {c:.3}"))
    ));
    out.push_str(
        "Columns: runtime = measured sampling time / FM(T)'s, its lowest timing in the same session; work = token-weighted model calls / \
         reference's; PSNR (dB) and SSIM against the reference clip; motion = frame-difference energy / \
         reference's (1 = motion kept); checker = shapes-world agreement with the caption.\n",
    );
    for &b in &cfg.budgets {
        out.push_str(&format!("\n## Budget {b}\n\n"));
        out.push_str(
            "| method | setting | runtime | work | NFE | PSNR | SSIM | motion | checker |\n",
        );
        out.push_str("|---|---|---|---|---|---|---|---|---|\n");
        let rows: Vec<&Aggregate> = s
            .aggregates
            .iter()
            .filter(|a| (a.budget - b).abs() < 1e-9)
            .collect();
        let best = rows.iter().map(|a| a.psnr).fold(f64::MIN, f64::max);
        let skipped: Vec<&Skipped> = res_skipped
            .iter()
            .filter(|k| (k.budget - b).abs() < 1e-9)
            .collect();
        for a in rows {
            let psnr = if a.psnr == best {
                format!("**{:.2}**", a.psnr)
            } else {
                format!("{:.2}", a.psnr)
            };
            out.push_str(&format!(
                "| {} | {} | {:.3} | {:.3} | {:.0} | {} | {:.4} | {} | {} |\n",
                a.method,
                a.setting,
                a.runtime_fraction,
                a.work_fraction,
                a.nfe,
                psnr,
                a.ssim,
                opt(a.motion_ratio, 3),
                opt(a.checker, 3),
            ));
        }
        for k in skipped {
            out.push_str(&format!(
                "| {} | not run: {} | | | | | | | |\n",
                k.method, k.reason
            ));
        }
    }
    out
}

/// Quality against measured runtime fraction, one line per method.
pub fn pareto(cfg: &EvalConfig, s: &Summary) -> Canvas {
    type Metric = fn(&Aggregate) -> Option<f64>;
    let mut metrics: Vec<(&str, &str, Metric)> = vec![
        ("PSNR vs reference", "dB", |a| Some(a.psnr)),
        ("SSIM vs reference", "SSIM", |a| Some(a.ssim)),
        ("motion kept", "ratio", |a| a.motion_ratio),
    ];
    if s.aggregates.iter().any(|a| a.checker.is_some()) {
        metrics.push(("shapes checker", "agreement", |a| a.checker));
    }
    let panels: Vec<Panel> = metrics
        .iter()
        .map(|(title, unit, f)| Panel {
            title: title.to_string(),
            x_label: "runtime / FM(T)".into(),
            y_label: unit.to_string(),
            x_range: Some((0.0, 1.05)),
            series: cfg
                .methods
                .iter()
                .enumerate()
                .map(|(i, m)| Series {
                    name: m.label.clone(),
                    color: PALETTE[i % PALETTE.len()],
                    points: s
                        .aggregates
                        .iter()
                        .filter(|a| a.method == m.label)
                        .filter_map(|a| f(a).map(|y| (a.runtime_fraction, y)))
                        .collect(),
                })
                .collect(),
        })
        .collect();
    render(&panels, 360, 300)
}

/// Columns (reference, then each method) side by side with a label strip above each, upscaled
/// so 32-pixel clips stay visible.
fn side_by_side(columns: &[(String, Tensor)], fps: f64) -> Result<VideoFrames> {
    let (c, f, h, w) = columns[0].1.dims4()?;
    let k = (128 / w.max(1)).max(1);
    let (cw, ch, strip) = (w * k, h * k, 12);
    let total_w = cw * columns.len();
    let total_h = ch + strip;
    let mut buf = vec![-1.0f32; c * f * total_h * total_w];
    for (col, (label, t)) in columns.iter().enumerate() {
        if t.dims4()? != (c, f, h, w) {
            return Err(EvalError::Invalid(
                "side-by-side clips differ in shape".into(),
            ));
        }
        let data: Vec<f32> = t.flatten_all()?.to_vec1()?;
        let mut text = Canvas::new(cw, strip);
        text.rgb.iter_mut().for_each(|v| *v = 0);
        let label: String = label.chars().take(cw / 8).collect();
        text.text(2, 2, &label, [255, 255, 255]);
        for ci in 0..c {
            for fi in 0..f {
                let plane = (ci * f + fi) * total_h * total_w;
                for y in 0..strip {
                    for x in 0..cw {
                        let v = text.rgb[(y * cw + x) * 3 + ci.min(2)] as f32 / 127.5 - 1.0;
                        buf[plane + y * total_w + col * cw + x] = v;
                    }
                }
                for y in 0..ch {
                    for x in 0..cw {
                        let src = ((ci * f + fi) * h + y / k) * w + x / k;
                        buf[plane + (strip + y) * total_w + col * cw + x] = data[src];
                    }
                }
            }
        }
    }
    Ok(VideoFrames::from_cfhw(&buf, f, total_h, total_w, fps)?)
}

/// Writes report.json, report.md, pareto.png and the side-by-side videos into the report
/// folder. Returns the Markdown text.
pub fn write_report(
    harness: &Harness,
    cfg: &EvalConfig,
    res: &EvalResults,
    command: &str,
) -> Result<String> {
    let s = summarize(cfg, res);
    let dir = &cfg.out_dir;
    let json = serde_json::json!({
        "command": command,
        "model": cfg.model_dir.display().to_string(),
        "prompts": cfg.prompts,
        "seeds": cfg.seeds,
        "steps": cfg.steps,
        "budgets": cfg.budgets,
        "methods": cfg.methods.iter().map(|m| m.label.clone()).collect::<Vec<_>>(),
        "summary": s,
        "results": res,
    });
    let text = serde_json::to_string_pretty(&json)
        .map_err(|e| EvalError::Invalid(format!("report.json: {e}")))?;
    write_bytes_atomic(&dir.join("report.json"), text.as_bytes())?;
    let md = markdown(cfg, &s, &res.skipped, command);
    write_bytes_atomic(&dir.join("report.md"), md.as_bytes())?;
    let plot = pareto(cfg, &s);
    let png = dir.join("pareto.png");
    hsa_pipeline::io::write_atomic(&png, |tmp| {
        plot.write_png(tmp)
            .map_err(|e| hsa_pipeline::PipelineError::Io {
                path: tmp.to_path_buf(),
                source: e,
            })
    })?;
    let vids = dir.join("side_by_side");
    for p in 0..cfg.side_by_side.min(cfg.prompts.len()) {
        for &b in &cfg.budgets {
            let mut cols = vec![(
                format!("FM {} ref", cfg.steps),
                harness.kept_clip(None, 1.0, p)?,
            )];
            for m in &cfg.methods {
                let skipped = res
                    .skipped
                    .iter()
                    .any(|k| k.method == m.label && (k.budget - b).abs() < 1e-9);
                if !skipped {
                    cols.push((m.label.clone(), harness.kept_clip(Some(m), b, p)?));
                }
            }
            let frames = side_by_side(&cols, harness.fps())?;
            std::fs::create_dir_all(&vids)
                .map_err(|e| EvalError::Invalid(format!("{}: {e}", vids.display())))?;
            let name = format!("p{p}_b{b:.2}");
            write_video(&frames, &vids.join(format!("{name}.mp4")), VideoFormat::Mp4)?;
            write_video(&frames, &vids.join(format!("{name}.gif")), VideoFormat::Gif)?;
        }
    }
    Ok(md)
}

/// Reads prompts from a file: one per line, blank lines and `#` comments skipped.
pub fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EvalError::Invalid(format!("prompt file {}: {e}", path.display())))?;
    let prompts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if prompts.is_empty() {
        return Err(EvalError::Invalid(format!(
            "prompt file {} holds no prompts",
            path.display()
        )));
    }
    Ok(prompts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::parse_methods;

    fn record(method: &str, prompt: usize, wall: f64, baseline: f64) -> RunRecord {
        RunRecord {
            method: method.into(),
            budget: if method == "reference" { 1.0 } else { 0.5 },
            prompt_index: prompt,
            seed: 0,
            steps: 40,
            setting: String::new(),
            wall_seconds: wall,
            wall_samples: vec![wall],
            baseline_seconds: baseline,
            nfe: 40,
            work: 1.0,
            motion_energy: 0.0,
            psnr: Some(30.0),
            ssim: Some(0.9),
            motion_ratio: None,
            checker: None,
        }
    }

    #[test]
    fn runtime_is_measured_against_the_least_disturbed_fm_timing_of_each_session() {
        let cfg = EvalConfig {
            model_dir: "m".into(),
            prompts: vec!["a".into(), "b".into(), "c".into()],
            seeds: vec![0],
            steps: 40,
            budgets: vec![0.5],
            methods: parse_methods("hsa").unwrap(),
            out_dir: "o".into(),
            repeats: 1,
            guidance: None,
            side_by_side: 0,
        };
        // Session A's start-up baseline (8 s) ran under load; the references it timed took
        // 4.5 and 4 s. Session B (baseline 5 s) timed no reference: its baseline stands. A
        // record from before baselines existed is measured against its reference.
        let references = vec![
            record("reference", 0, 4.5, 8.0),
            record("reference", 1, 4.0, 8.0),
            record("reference", 2, 3.0, 0.0),
        ];
        let runs = vec![
            record("hsa", 0, 2.0, 8.0),
            record("hsa", 1, 2.5, 5.0),
            record("hsa", 2, 1.5, 0.0),
        ];
        let res = EvalResults {
            references,
            runs,
            skipped: vec![],
            teacache: Default::default(),
        };
        let s = summarize(&cfg, &res);
        let got = s.aggregates[0].runtime_fraction;
        let want = (2.0 + 2.5 + 1.5) / (4.0 + 5.0 + 3.0);
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        assert_eq!(session_unit(8.0, &res.references), 4.0);
        assert_eq!(session_unit(5.0, &res.references), 5.0);
    }
}
