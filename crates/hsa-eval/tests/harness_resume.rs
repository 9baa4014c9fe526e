//! The harness on the bundled model: an interrupted evaluation resumes (finished runs are read
//! back, missing ones recomputed identically), a folder refuses other reference settings, and
//! every method lands near its budget.

use std::path::PathBuf;

use candle_core::Device;
use hsa_eval::harness::{EvalConfig, Harness, RunRecord};
use hsa_eval::methods::parse_methods;

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/shapes-wan")
}

fn config(out: PathBuf, methods: &str) -> EvalConfig {
    EvalConfig {
        model_dir: model_dir(),
        prompts: (0..2)
            .map(|i| hsa_shapes::caption(&hsa_shapes::sample_eval(i)))
            .collect(),
        seeds: vec![3],
        steps: 8,
        budgets: vec![0.5],
        methods: parse_methods(methods).unwrap(),
        out_dir: out,
        repeats: 1,
        guidance: None,
        side_by_side: 1,
    }
}

fn key(r: &RunRecord) -> (String, usize) {
    (r.method.clone(), r.prompt_index)
}

#[test]
fn an_interrupted_evaluation_resumes_and_recomputes_only_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path().to_path_buf(), "fm,hsa,ras,teacache");
    let first = {
        let h = Harness::new(&cfg, &Device::Cpu).unwrap();
        h.run(&mut |_| {}).unwrap()
    };
    assert_eq!(first.runs.len(), 8);
    assert!(first.skipped.is_empty(), "{:?}", first.skipped);
    // Every method lands near the budget in work (RAS and HSA exactly by construction,
    // TeaCache by the threshold search, FM by its step count).
    for r in &first.runs {
        let rf = first
            .references
            .iter()
            .find(|x| x.prompt_index == r.prompt_index)
            .unwrap();
        let work = r.work / rf.work;
        assert!(
            (0.3..=0.7).contains(&work),
            "{} p{}: work fraction {work}",
            r.method,
            r.prompt_index
        );
        assert!(r.psnr.unwrap() > 5.0 && r.ssim.unwrap() > 0.0);
    }

    // "Interrupt": lose one run of HSA and one of FM, as if the process died before them.
    let runs = dir.path().join("runs");
    std::fs::remove_file(runs.join("hsa/b0.500/p1_s3.json")).unwrap();
    std::fs::remove_file(runs.join("fm/b0.500/p0_s3.json")).unwrap();
    let second = {
        let h = Harness::new(&cfg, &Device::Cpu).unwrap();
        h.run(&mut |_| {}).unwrap()
    };
    assert_eq!(second.runs.len(), first.runs.len());
    for (a, b) in first.runs.iter().zip(&second.runs) {
        assert_eq!(key(a), key(b));
        let lost = matches!((a.method.as_str(), a.prompt_index), ("hsa", 1) | ("fm", 0));
        // Outputs are deterministic: metrics agree whether read back or recomputed.
        assert_eq!(
            (a.psnr, a.ssim, a.checker, a.work),
            (b.psnr, b.ssim, b.checker, b.work)
        );
        // Read-back runs keep their recorded timings; recomputed ones were timed again.
        assert_eq!(
            a.wall_samples == b.wall_samples,
            !lost,
            "{} p{}",
            a.method,
            a.prompt_index
        );
    }
    assert_eq!(first.references, second.references, "references are cached");
    assert_eq!(first.teacache.thresholds, second.teacache.thresholds);

    // The same folder with another step count is refused, not silently mixed.
    let mut other = cfg.clone();
    other.steps = 10;
    let err = Harness::new(&other, &Device::Cpu).err().expect("refused");
    assert!(err.to_string().contains("another output folder"), "{err}");
}

#[test]
fn an_unreachable_budget_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path().to_path_buf(), "ras");
    cfg.prompts.truncate(1);
    cfg.budgets = vec![0.1];
    let h = Harness::new(&cfg, &Device::Cpu).unwrap();
    let res = h.run(&mut |_| {}).unwrap();
    assert!(res.runs.is_empty());
    assert_eq!(res.skipped.len(), 1);
    assert!(
        res.skipped[0].reason.contains("cannot reach"),
        "{}",
        res.skipped[0].reason
    );
}
