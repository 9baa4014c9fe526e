//! Fused, tiled ("flash-style") attention for the CPU.
//!
//! `softmax(q·kᵀ·scale)·v` for `q [B,H,Lq,d]`, `k [B,H,Lk,d]`, `v [B,H,Lk,dv]` without ever
//! holding an `Lq x Lk` score matrix: every task owns one block of queries of one
//! `(batch, head)` and walks the keys in blocks, keeping a running row maximum and row sum
//! (online softmax) and an unnormalised f32 output accumulator that is rescaled whenever
//! the maximum grows; one division at the end normalises it.
//!
//! Inner kernels (picked by [`Kernel`]):
//! - [`Kernel::Avx2`]: hand-written AVX2/FMA register-tiled micro-kernels (6 rows x 16
//!   columns) for `S = Q·Kᵀ` (K is packed once per head into 16-key panels) and
//!   `O = α·O + P·V` (V is read in place), plus a vectorised `exp`. About 90% of the AVX2
//!   FMA peak of one core.
//! - [`Kernel::Gemm`]: the same loop with both products done by `gemm::gemm` on tiles
//!   (with gemm's AVX2 kernels ~10% slower than [`Kernel::Avx2`]; with its AVX-512 kernels,
//!   cargo feature `avx512` = `gemm/x86-v4`, ~1.6x faster on a CPU with full-width AVX-512).
//! - [`Kernel::Scalar`]: portable scalar code (reference for the tests).
//!
//! [`Kernel::Auto`] picks `Gemm` for fewer than 16 queries per head (no K packing; gemv-like),
//! `Gemm` with the `avx512` feature on a CPU with AVX-512F, else `Avx2` on a CPU with AVX2 +
//! FMA, else `Gemm` (gemm has NEON and generic kernels). The intrinsics kernels need this
//! crate optimised: at opt-level 0 (un-inlined intrinsics) they run ~40x slower, which is why
//! the workspace builds hsa-models at opt-level 3 in the dev profile too.
//!
//! f32, bf16 and f16 inputs are supported; tiles are converted to f32 for compute and the
//! output has the dtype of the inputs. Work is spread over rayon's global pool (the one
//! candle uses) across `(batch, head)` pairs and query blocks.

use std::borrow::Cow;

use candle_core::{DType, Storage, Tensor};
use half::{bf16, f16, slice::HalfFloatSliceExt};
use rayon::prelude::*;

use crate::{ModelError, Result};

/// Inner-kernel choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernel {
    /// The fastest kernel for this build and CPU (see the module docs).
    #[default]
    Auto,
    /// AVX2 + FMA micro-kernels; falls back to [`Kernel::Gemm`] on CPUs without them.
    Avx2,
    /// `gemm::gemm` on tiles (softmax vectorised where AVX2 is available).
    Gemm,
    /// Portable scalar code.
    Scalar,
}

/// Tiling parameters of [`attention_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub kernel: Kernel,
    /// Queries per task (rows of the score tile).
    pub q_block: usize,
    /// Keys per step of the online softmax (columns of the score tile); rounded up to 16.
    pub k_block: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            kernel: Kernel::Auto,
            q_block: 96,
            k_block: 256,
        }
    }
}

/// Whether [`attention`] can run these inputs: CPU tensors of rank 4 with one dtype among
/// f32/bf16/f16, `q [B,H,Lq,d]`, `k [B,H,Lk,d]`, `v [B,H,Lk,dv]`, `Lk > 0` and `d > 0`.
pub fn supports(q: &Tensor, k: &Tensor, v: &Tensor) -> bool {
    let cpu = q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu();
    let dtype = q.dtype();
    let dtype_ok = matches!(dtype, DType::F32 | DType::BF16 | DType::F16)
        && k.dtype() == dtype
        && v.dtype() == dtype;
    let shapes_ok = match (q.dims4(), k.dims4(), v.dims4()) {
        (Ok((b, h, _, d)), Ok((bk, hk, lk, dk)), Ok((bv, hv, lv, _))) => {
            b == bk && b == bv && h == hk && h == hv && d == dk && lk == lv && lk > 0 && d > 0
        }
        _ => false,
    };
    cpu && dtype_ok && shapes_ok
}

/// `softmax(q·kᵀ·scale)·v` with the default [`Options`]; returns `[B,H,Lq,dv]` in the
/// dtype of the inputs. Errors where [`supports`] is false.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    attention_with(q, k, v, scale, Options::default())
}

/// [`attention`] with explicit kernel and tile sizes.
pub fn attention_with(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    opts: Options,
) -> Result<Tensor> {
    if !supports(q, k, v) {
        return Err(ModelError::Input(format!(
            "cpu attention needs CPU tensors q [B,H,Lq,d], k [B,H,Lk,d], v [B,H,Lk,dv] of one \
             dtype among f32/bf16/f16 with Lk > 0; got q {:?} {:?}, k {:?} {:?}, v {:?} {:?}",
            q.dims(),
            q.dtype(),
            k.dims(),
            k.dtype(),
            v.dims(),
            v.dtype()
        )));
    }
    let (b, h, lq, d) = q.dims4()?;
    let lk = k.dim(2)?;
    let dv = v.dim(3)?;
    let dims = Dims {
        bh: b * h,
        lq,
        lk,
        d,
        dv,
    };
    let kernel = resolve(opts.kernel, lq);
    let tiles = Tiles {
        q_block: opts.q_block.max(1),
        k_block: opts.k_block.max(1).div_ceil(16) * 16,
    };
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let scale = scale as f32;
    let device = q.device().clone();
    let shape = (b, h, lq, dv);
    match q.dtype() {
        DType::F32 => {
            let out = with_slices::<f32, _>(&q, &k, &v, |q, k, v| {
                run(q, k, v, dims, scale, kernel, tiles)
            })?;
            Ok(Tensor::from_vec(out, shape, &device)?)
        }
        DType::BF16 => {
            let out = with_slices::<bf16, _>(&q, &k, &v, |q, k, v| {
                run(q, k, v, dims, scale, kernel, tiles)
            })?;
            Ok(Tensor::from_vec(out, shape, &device)?)
        }
        DType::F16 => {
            let out = with_slices::<f16, _>(&q, &k, &v, |q, k, v| {
                run(q, k, v, dims, scale, kernel, tiles)
            })?;
            Ok(Tensor::from_vec(out, shape, &device)?)
        }
        other => Err(ModelError::Input(format!(
            "cpu attention: unsupported dtype {other:?}"
        ))),
    }
}

#[derive(Debug, Clone, Copy)]
struct Dims {
    bh: usize,
    lq: usize,
    lk: usize,
    d: usize,
    dv: usize,
}

#[derive(Debug, Clone, Copy)]
struct Tiles {
    q_block: usize,
    k_block: usize,
}

/// The concrete kernel after CPU feature detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolved {
    Avx2,
    Gemm,
    Scalar,
}

/// Below this many queries per head [`Kernel::Auto`] prefers `gemm` (no K packing: the
/// per-head packing of the AVX2 kernel then costs more than the products).
const SMALL_LQ: usize = 16;

fn resolve(kernel: Kernel, lq: usize) -> Resolved {
    match kernel {
        Kernel::Auto if lq < SMALL_LQ => Resolved::Gemm,
        Kernel::Auto if cfg!(feature = "avx512") && has_avx512() => Resolved::Gemm,
        Kernel::Auto | Kernel::Avx2 if has_avx2() => Resolved::Avx2,
        Kernel::Auto | Kernel::Avx2 | Kernel::Gemm => Resolved::Gemm,
        Kernel::Scalar => Resolved::Scalar,
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx2() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    is_x86_feature_detected!("avx512f")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx512() -> bool {
    false
}

/// Calls `f` on the element slices of three contiguous CPU tensors (no copy).
fn with_slices<T: Element, R>(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    f: impl FnOnce(&[T], &[T], &[T]) -> R,
) -> Result<R> {
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    fn slice<'a, T: Element>(s: &'a Storage, l: &candle_core::Layout) -> Result<&'a [T]> {
        let Storage::Cpu(cpu) = s else {
            return Err(ModelError::Input(
                "cpu attention: tensor is not on the CPU".into(),
            ));
        };
        let (start, end) = l
            .contiguous_offsets()
            .ok_or_else(|| ModelError::Input("cpu attention: tensor is not contiguous".into()))?;
        Ok(&cpu.as_slice::<T>()?[start..end])
    }
    Ok(f(slice(&qs, ql)?, slice(&ks, kl)?, slice(&vs, vl)?))
}

/// Input element types: converted to f32 tile by tile.
trait Element: candle_core::WithDType + Copy + Send + Sync + 'static {
    fn to_f32_slice(src: &[Self], dst: &mut [f32]);
    fn from_f32_slice(src: &[f32], dst: &mut [Self]);
    /// The data itself when it already is f32.
    fn as_f32(_src: &[Self]) -> Option<&[f32]> {
        None
    }
}

impl Element for f32 {
    fn to_f32_slice(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    fn from_f32_slice(src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src);
    }
    fn as_f32(src: &[Self]) -> Option<&[f32]> {
        Some(src)
    }
}

impl Element for bf16 {
    fn to_f32_slice(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
    fn from_f32_slice(src: &[f32], dst: &mut [Self]) {
        dst.convert_from_f32_slice(src);
    }
}

impl Element for f16 {
    fn to_f32_slice(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
    fn from_f32_slice(src: &[f32], dst: &mut [Self]) {
        dst.convert_from_f32_slice(src);
    }
}

/// K and V of one `(batch, head)` in the layout the kernel wants.
struct HeadKv<'a> {
    /// Avx2: K in panels of 16 keys, `[ceil(Lk/16)][d][16]`, zero-padded keys.
    /// Gemm/Scalar: K row-major `[Lk][d]`.
    k: Cow<'a, [f32]>,
    /// V row-major `[Lk][ldv]`.
    v: Cow<'a, [f32]>,
    ldv: usize,
}

impl<'a> HeadKv<'a> {
    fn new<T: Element>(k: &'a [T], v: &'a [T], dims: Dims, kernel: Resolved) -> Self {
        let Dims { lk, d, dv, .. } = dims;
        let k = match kernel {
            Resolved::Avx2 => Cow::Owned(pack_k_panels(k, lk, d)),
            Resolved::Gemm | Resolved::Scalar => to_f32_cow(k),
        };
        // The AVX2 PV kernel works on 16-column strips of V: pad odd head dims.
        let ldv = match kernel {
            Resolved::Avx2 => dv.div_ceil(16) * 16,
            Resolved::Gemm | Resolved::Scalar => dv,
        };
        let v = if ldv == dv {
            to_f32_cow(v)
        } else {
            let mut out = vec![0f32; lk * ldv];
            for (src, dst) in v.chunks_exact(dv).zip(out.chunks_exact_mut(ldv)) {
                T::to_f32_slice(src, &mut dst[..dv]);
            }
            Cow::Owned(out)
        };
        Self { k, v, ldv }
    }
}

fn to_f32_cow<T: Element>(x: &[T]) -> Cow<'_, [f32]> {
    match T::as_f32(x) {
        Some(s) => Cow::Borrowed(s),
        None => {
            let mut out = vec![0f32; x.len()];
            T::to_f32_slice(x, &mut out);
            Cow::Owned(out)
        }
    }
}

/// `[Lk][d]` -> `[ceil(Lk/16)][d][16]` f32 (key index fastest), zero-padded.
fn pack_k_panels<T: Element>(k: &[T], lk: usize, d: usize) -> Vec<f32> {
    let panels = lk.div_ceil(16);
    let mut out = vec![0f32; panels * d * 16];
    let mut row = vec![0f32; d];
    for (j, src) in k.chunks_exact(d).enumerate().take(lk) {
        T::to_f32_slice(src, &mut row);
        let panel = &mut out[(j / 16) * d * 16..][..d * 16];
        let jj = j % 16;
        for (p, &x) in row.iter().enumerate() {
            panel[p * 16 + jj] = x;
        }
    }
    out
}

/// Per-task buffers, reused across the tasks a rayon job runs.
struct Scratch {
    /// Scaled queries `[q_block][d]`.
    q: Vec<f32>,
    /// Scores, then probabilities `[q_block][k_block]`.
    s: Vec<f32>,
    /// Unnormalised output `[q_block][ldv]`.
    o: Vec<f32>,
    /// Running row maximum, row sum, and this step's rescale factor.
    m: Vec<f32>,
    l: Vec<f32>,
    alpha: Vec<f32>,
}

impl Scratch {
    fn new(dims: Dims, tiles: Tiles, ldv: usize) -> Self {
        let rows = tiles.q_block.min(dims.lq.max(1));
        Self {
            q: vec![0.0; rows * dims.d],
            s: vec![0.0; rows * tiles.k_block],
            o: vec![0.0; rows * ldv],
            m: vec![0.0; rows],
            l: vec![0.0; rows],
            alpha: vec![0.0; rows],
        }
    }
}

fn run<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    dims: Dims,
    scale: f32,
    kernel: Resolved,
    tiles: Tiles,
) -> Vec<T> {
    let Dims { bh, lq, lk, d, dv } = dims;
    let mut out = vec![T::zero(); bh * lq * dv];
    if out.is_empty() {
        return out;
    }
    let q_block = tiles.q_block.min(lq);
    out.par_chunks_mut(lq * dv)
        .enumerate()
        .for_each(|(head, out_h)| {
            let q_h = &q[head * lq * d..][..lq * d];
            let kv = HeadKv::new(
                &k[head * lk * d..][..lk * d],
                &v[head * lk * dv..][..lk * dv],
                dims,
                kernel,
            );
            out_h
                .par_chunks_mut(q_block * dv)
                .enumerate()
                .for_each_init(
                    || Scratch::new(dims, tiles, kv.ldv),
                    |scratch, (blk, out_blk)| {
                        let rows = out_blk.len() / dv;
                        let q_blk = &q_h[blk * q_block * d..][..rows * d];
                        query_block(
                            q_blk, &kv, out_blk, rows, dims, scale, kernel, tiles, scratch,
                        );
                    },
                );
        });
    out
}

/// One block of `rows` queries against every key of one head.
#[allow(clippy::too_many_arguments)]
fn query_block<T: Element>(
    q_blk: &[T],
    kv: &HeadKv<'_>,
    out: &mut [T],
    rows: usize,
    dims: Dims,
    scale: f32,
    kernel: Resolved,
    tiles: Tiles,
    sc: &mut Scratch,
) {
    let Dims { lk, d, dv, .. } = dims;
    let ldv = kv.ldv;
    let lds = tiles.k_block;
    let qs = &mut sc.q[..rows * d];
    T::to_f32_slice(q_blk, qs);
    qs.iter_mut().for_each(|x| *x *= scale);
    let o = &mut sc.o[..rows * ldv];
    o.fill(0.0);
    let m = &mut sc.m[..rows];
    m.fill(f32::NEG_INFINITY);
    let l = &mut sc.l[..rows];
    l.fill(0.0);
    let alpha = &mut sc.alpha[..rows];
    let s = &mut sc.s[..rows * lds];

    let mut kb = 0;
    while kb < lk {
        let n = tiles.k_block.min(lk - kb);
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Resolved::Avx2 => unsafe {
                let panels = n.div_ceil(16);
                avx2::qk(qs, rows, d, &kv.k[(kb / 16) * d * 16..], panels, s, lds);
                avx2::softmax_step(s, rows, n, lds, m, l, alpha);
                avx2::pv(s, lds, rows, n, &kv.v[kb * ldv..], ldv, o, alpha);
            },
            Resolved::Gemm => {
                let k_blk = &kv.k[kb * d..(kb + n) * d];
                unsafe {
                    gemm::gemm(
                        rows,
                        n,
                        d,
                        s.as_mut_ptr(),
                        1,
                        lds as isize,
                        false,
                        qs.as_ptr(),
                        1,
                        d as isize,
                        k_blk.as_ptr(),
                        d as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                softmax_step(s, rows, n, lds, m, l, alpha);
                for (row, &a) in o.chunks_exact_mut(ldv).zip(alpha.iter()) {
                    if a != 1.0 {
                        row.iter_mut().for_each(|x| *x *= a);
                    }
                }
                let v_blk = &kv.v[kb * ldv..(kb + n) * ldv];
                unsafe {
                    gemm::gemm(
                        rows,
                        dv,
                        n,
                        o.as_mut_ptr(),
                        1,
                        ldv as isize,
                        true,
                        s.as_ptr(),
                        1,
                        lds as isize,
                        v_blk.as_ptr(),
                        1,
                        ldv as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
            _ => {
                let k_blk = &kv.k[kb * d..(kb + n) * d];
                for (qr, sr) in qs.chunks_exact(d).zip(s.chunks_exact_mut(lds)) {
                    for (kr, x) in k_blk.chunks_exact(d).zip(sr.iter_mut()) {
                        *x = qr.iter().zip(kr).map(|(a, b)| a * b).sum();
                    }
                }
                scalar::softmax_step(s, rows, n, lds, m, l, alpha);
                let v_blk = &kv.v[kb * ldv..(kb + n) * ldv];
                for ((orow, sr), &a) in o
                    .chunks_exact_mut(ldv)
                    .zip(s.chunks_exact(lds))
                    .zip(alpha.iter())
                {
                    if a != 1.0 {
                        orow.iter_mut().for_each(|x| *x *= a);
                    }
                    for (&p, vr) in sr[..n].iter().zip(v_blk.chunks_exact(ldv)) {
                        for (x, &y) in orow.iter_mut().zip(vr) {
                            *x += p * y;
                        }
                    }
                }
            }
        }
        kb += n;
    }

    // Normalise and convert.
    for ((orow, dst), &sum) in o
        .chunks_exact_mut(ldv)
        .zip(out.chunks_exact_mut(dv))
        .zip(l.iter())
    {
        let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
        orow[..dv].iter_mut().for_each(|x| *x *= inv);
        T::from_f32_slice(&orow[..dv], dst);
    }
}

/// One online-softmax step over an `rows x n` score tile (row stride `lds`): updates the
/// running max `m` and sum `l`, turns scores into unnormalised probabilities in place, and
/// writes the factor `alpha` by which the output accumulated so far must be rescaled.
fn softmax_step(
    s: &mut [f32],
    rows: usize,
    n: usize,
    lds: usize,
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 and FMA are available.
        unsafe { avx2::softmax_step(s, rows, n, lds, m, l, alpha) };
        return;
    }
    scalar::softmax_step(s, rows, n, lds, m, l, alpha)
}

mod scalar {
    pub(super) fn softmax_step(
        s: &mut [f32],
        rows: usize,
        n: usize,
        lds: usize,
        m: &mut [f32],
        l: &mut [f32],
        alpha: &mut [f32],
    ) {
        for r in 0..rows {
            let row = &mut s[r * lds..r * lds + n];
            let blk_max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let m_new = m[r].max(blk_max);
            let a = if m[r] == m_new {
                1.0
            } else {
                (m[r] - m_new).exp()
            };
            let mut sum = 0.0;
            for x in row.iter_mut() {
                *x = (*x - m_new).exp();
                sum += *x;
            }
            l[r] = l[r] * a + sum;
            m[r] = m_new;
            alpha[r] = a;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;
