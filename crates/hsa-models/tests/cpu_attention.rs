//! The fused CPU attention kernel against the matmul → softmax → matmul reference.

use candle_core::{DType, Device, Tensor};
use hsa_models::cpu_attention::{attention, attention_with, supports, Kernel, Options};
use hsa_models::wan::attention::{scaled_dot_product, scaled_dot_product_reference};

const KERNELS: [Kernel; 4] = [Kernel::Auto, Kernel::Avx2, Kernel::Gemm, Kernel::Scalar];

/// Deterministic standard-normal-ish data (sum of uniforms), `seed`-dependent.
fn randn(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let data: Vec<f32> = (0..n)
        .map(|_| (0..4).map(|_| next()).sum::<f32>() * 1.732 - 3.464)
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

/// `||a - b|| / ||b||` in f64.
fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a: Vec<f64> = a
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let b: Vec<f64> = b
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let num: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den.max(1e-300)).sqrt()
}

/// `(b, h, lq, lk, d, dv)`.
type Shape = (usize, usize, usize, usize, usize, usize);

fn inputs((b, h, lq, lk, d, dv): Shape, seed: u64) -> (Tensor, Tensor, Tensor) {
    (
        randn(&[b, h, lq, d], seed),
        randn(&[b, h, lk, d], seed + 1),
        randn(&[b, h, lk, dv], seed + 2),
    )
}

const SHAPES: [Shape; 7] = [
    (1, 1, 37, 37, 12, 12),   // odd lengths, d = 12
    (1, 2, 5, 300, 64, 64),   // partial: 5 queries over 300 keys
    (1, 3, 1, 300, 128, 128), // a single query
    (2, 3, 20, 50, 64, 64),   // B = 2, H = 3
    (1, 1, 24, 1000, 128, 128),
    (1, 2, 9, 33, 16, 12), // dv != d
    (1, 1, 100, 17, 8, 8), // more queries than keys
];

fn check_f32(opts: Options, scale: f64, bound: f64) {
    for (i, &shape) in SHAPES.iter().enumerate() {
        let (q, k, v) = inputs(shape, 10 * i as u64 + 1);
        let want = scaled_dot_product_reference(&q, &k, &v, scale).unwrap();
        let got = attention_with(&q, &k, &v, scale, opts).unwrap();
        assert_eq!(got.dtype(), DType::F32);
        let err = rel_l2(&got, &want);
        assert!(
            err <= bound,
            "{opts:?} shape {shape:?} scale {scale}: rel L2 {err:e} > {bound:e}"
        );
    }
}

#[test]
fn f32_matches_reference_default_tiles() {
    for kernel in KERNELS {
        let opts = Options {
            kernel,
            ..Options::default()
        };
        check_f32(opts, 0.125, 1e-5);
    }
}

#[test]
fn f32_matches_reference_small_tiles() {
    // Many key blocks per query block: exercises the online-softmax rescaling and the
    // partial last tiles (q_block 7 leaves row tails of every size; k_block 16 < Lk).
    for kernel in KERNELS {
        for (q_block, k_block) in [(7, 16), (1, 48), (13, 100)] {
            let opts = Options {
                kernel,
                q_block,
                k_block,
            };
            check_f32(opts, 0.125, 1e-5);
        }
    }
}

#[test]
fn f32_sharp_softmax() {
    // Large scores (scale 1 on unit-variance data): the running maximum moves a lot.
    for kernel in KERNELS {
        let opts = Options {
            kernel,
            q_block: 8,
            k_block: 32,
        };
        check_f32(opts, 1.0, 1e-5);
    }
}

#[test]
fn half_dtypes_match_f32_reference_on_rounded_inputs() {
    for (dtype, bound) in [(DType::BF16, 8e-3), (DType::F16, 1.5e-3)] {
        for kernel in KERNELS {
            for (i, &shape) in SHAPES.iter().enumerate() {
                let (q, k, v) = inputs(shape, 100 + i as u64);
                let (q, k, v) = (
                    q.to_dtype(dtype).unwrap(),
                    k.to_dtype(dtype).unwrap(),
                    v.to_dtype(dtype).unwrap(),
                );
                let f32_ = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
                let want =
                    scaled_dot_product_reference(&f32_(&q), &f32_(&k), &f32_(&v), 0.125).unwrap();
                let opts = Options {
                    kernel,
                    q_block: 7,
                    k_block: 64,
                };
                let got = attention_with(&q, &k, &v, 0.125, opts).unwrap();
                assert_eq!(got.dtype(), dtype);
                let err = rel_l2(&got, &want);
                assert!(
                    err <= bound,
                    "{dtype:?} {kernel:?} shape {shape:?}: rel L2 {err:e} > {bound:e}"
                );
            }
        }
    }
}

#[test]
fn scaled_dot_product_uses_the_kernel_and_accepts_strided_inputs() {
    // [B, L, H, d] transposed to [B, H, L, d] without a copy, as attention heads are split.
    let (b, h, lq, lk, d) = (2, 3, 11, 40, 64);
    let q = randn(&[b, lq, h, d], 7).transpose(1, 2).unwrap();
    let k = randn(&[b, lk, h, d], 8).transpose(1, 2).unwrap();
    let v = randn(&[b, lk, h, d], 9).transpose(1, 2).unwrap();
    assert!(supports(&q, &k, &v));
    let scale = 1.0 / (d as f64).sqrt();
    // (The reference's batched matmul wants a contiguous kᵀ.)
    let c = |t: &Tensor| t.contiguous().unwrap();
    let want = scaled_dot_product_reference(&c(&q), &c(&k), &c(&v), scale).unwrap();
    let got = scaled_dot_product(&q, &k, &v, scale).unwrap();
    assert_eq!(got.dims(), &[b, h, lq, d]);
    assert!(rel_l2(&got, &want) <= 1e-5);
    let direct = attention(&q, &k, &v, scale).unwrap();
    assert!(rel_l2(&direct, &want) <= 1e-5);
}

#[test]
fn unsupported_inputs_fall_back_to_the_reference() {
    let (q, k, v) = inputs((1, 2, 4, 9, 8, 8), 3);
    let f64_ = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
    let (q64, k64, v64) = (f64_(&q), f64_(&k), f64_(&v));
    assert!(!supports(&q64, &k64, &v64));
    assert!(attention(&q64, &k64, &v64, 0.5).is_err());
    let got = scaled_dot_product(&q64, &k64, &v64, 0.5).unwrap();
    let want = scaled_dot_product_reference(&q, &k, &v, 0.5).unwrap();
    assert_eq!(got.dtype(), DType::F64);
    assert!(rel_l2(&got, &want) <= 1e-5);
    // Mixed dtypes are not the kernel's either.
    assert!(!supports(&q, &k.to_dtype(DType::BF16).unwrap(), &v));
}

#[test]
fn empty_query_set() {
    let (q, k, v) = inputs((1, 2, 0, 9, 8, 8), 5);
    let got = attention(&q, &k, &v, 0.5).unwrap();
    assert_eq!(got.dims(), &[1, 2, 0, 8]);
}
