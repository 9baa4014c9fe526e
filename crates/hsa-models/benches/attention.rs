//! Attention benchmark: the fused CPU kernel vs the matmul → softmax → matmul reference,
//! 12 heads x 4096 tokens x head dim 128, f32, B = 1, plus partial query sets (HSA steps).
//!
//! `cargo bench -p hsa-models --bench attention` runs criterion. With
//! `HSA_ATTN_TIMING=<reps>` set it instead prints the median / min / max wall time and the
//! median process CPU time of `<reps>` runs after one warm-up per case (quick runs to
//! alternate with `tools/bench/attention_torch.py`; CPU time stays meaningful when other jobs
//! share the cores). `HSA_ATTN_CASES=fused,reference,...` picks cases; `HSA_ATTN_TILES=96x256`
//! sets the fused kernel's query/key block sizes. Cases: `fused` (`Kernel::Auto`),
//! `fused_avx2`, `fused_gemm`, `reference` (matmul path), and `fused_q2048` /
//! `reference_q2048` / `fused_q1024` / `reference_q1024` (that many queries over 4096 keys).

use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use criterion::{criterion_group, Criterion, SamplingMode};
use hsa_models::cpu_attention::{attention_with, Kernel, Options};
use hsa_models::wan::attention::scaled_dot_product_reference;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const HEADS: usize = 12;
const TOKENS: usize = 4096;
const HEAD_DIM: usize = 128;

struct Case {
    name: &'static str,
    queries: usize,
    run: fn(&Tensor, &Tensor, &Tensor, f64) -> Tensor,
}

/// Default options, with tile sizes from `HSA_ATTN_TILES=<q_block>x<k_block>` if set.
fn options(kernel: Kernel) -> Options {
    let mut opts = Options {
        kernel,
        ..Options::default()
    };
    if let Some((qb, kb)) = std::env::var("HSA_ATTN_TILES").ok().and_then(|t| {
        Some((
            t.split('x').next()?.parse().ok()?,
            t.split('x').nth(1)?.parse().ok()?,
        ))
    }) {
        opts.q_block = qb;
        opts.k_block = kb;
    }
    opts
}

fn fused(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Tensor {
    attention_with(q, k, v, scale, options(Kernel::Auto)).unwrap()
}

fn fused_avx2(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Tensor {
    attention_with(q, k, v, scale, options(Kernel::Avx2)).unwrap()
}

fn fused_gemm(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Tensor {
    attention_with(q, k, v, scale, options(Kernel::Gemm)).unwrap()
}

fn reference(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Tensor {
    scaled_dot_product_reference(q, k, v, scale).unwrap()
}

const CASES: [Case; 8] = [
    Case {
        name: "fused",
        queries: TOKENS,
        run: fused,
    },
    Case {
        name: "fused_avx2",
        queries: TOKENS,
        run: fused_avx2,
    },
    Case {
        name: "fused_gemm",
        queries: TOKENS,
        run: fused_gemm,
    },
    Case {
        name: "reference",
        queries: TOKENS,
        run: reference,
    },
    Case {
        name: "fused_q2048",
        queries: 2048,
        run: fused,
    },
    Case {
        name: "reference_q2048",
        queries: 2048,
        run: reference,
    },
    Case {
        name: "fused_q1024",
        queries: 1024,
        run: fused,
    },
    Case {
        name: "reference_q1024",
        queries: 1024,
        run: reference,
    },
];

fn inputs(queries: usize) -> (Tensor, Tensor, Tensor) {
    let dev = Device::Cpu;
    let q = Tensor::randn(0f32, 1f32, (1, HEADS, queries, HEAD_DIM), &dev).unwrap();
    let k = Tensor::randn(0f32, 1f32, (1, HEADS, TOKENS, HEAD_DIM), &dev).unwrap();
    let v = Tensor::randn(0f32, 1f32, (1, HEADS, TOKENS, HEAD_DIM), &dev).unwrap();
    (q, k, v)
}

fn selected() -> Vec<&'static Case> {
    let wanted = std::env::var("HSA_ATTN_CASES").ok();
    CASES
        .iter()
        .filter(|c| {
            wanted
                .as_deref()
                .is_none_or(|w| w.split(',').any(|n| n.trim() == c.name))
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let scale = 1.0 / (HEAD_DIM as f64).sqrt();
    let mut group = c.benchmark_group("attention_12x4096x128_f32");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(12));
    for case in selected() {
        let (q, k, v) = inputs(case.queries);
        group.bench_function(case.name, |b| b.iter(|| (case.run)(&q, &k, &v, scale)));
    }
    group.finish();
}

criterion_group!(benches, bench);

/// Median / min / max seconds of `reps` runs of each selected case, after a warm-up.
fn timing(reps: usize) {
    let scale = 1.0 / (HEAD_DIM as f64).sqrt();
    for case in selected() {
        let (q, k, v) = inputs(case.queries);
        (case.run)(&q, &k, &v, scale);
        let mut times = Vec::with_capacity(reps);
        let mut cpu = Vec::with_capacity(reps);
        for _ in 0..reps {
            let c = cpu_seconds();
            let t = Instant::now();
            std::hint::black_box((case.run)(&q, &k, &v, scale));
            times.push(t.elapsed().as_secs_f64());
            cpu.push(cpu_seconds() - c);
        }
        times.sort_by(f64::total_cmp);
        cpu.sort_by(f64::total_cmp);
        let flop = 4.0 * (HEADS * case.queries * TOKENS * HEAD_DIM) as f64;
        let med = times[times.len() / 2];
        let cpu_med = cpu[cpu.len() / 2];
        println!(
            "{:<16} lq={:<5} median {:.3} s  min {:.3}  max {:.3}  ({:.1} GFLOP/s)  \
             cpu {:.2} s ({:.1} GFLOP/cpu-s)",
            case.name,
            case.queries,
            med,
            times[0],
            times[times.len() - 1],
            flop / med / 1e9,
            cpu_med,
            flop / cpu_med / 1e9
        );
    }
}

/// User + system CPU time of this process (Linux `/proc/self/stat`, 10 ms ticks); 0 elsewhere.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit(')').next() else {
        return 0.0;
    };
    // Fields after the command name: state is field 3, utime 14, stime 15.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    match std::env::var("HSA_ATTN_TIMING")
        .ok()
        .and_then(|r| r.parse().ok())
    {
        Some(reps) => timing(reps),
        None => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}
