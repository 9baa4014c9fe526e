//! AVX2/FMA micro-kernels of the fused CPU attention: the `Q·Kᵀ` tile product over packed
//! 16-key panels, the online-softmax step with a vectorised `exp`, and `O = α·O + P·V`.

use std::arch::x86_64::*;

/// Rows per register tile.
const MR: usize = 6;

/// `s[r][j] = Σ_p q[r][p]·k[j][p]` for `rows` queries (row-major, stride `d`) and
/// `panels` 16-key panels of packed K (`[panel][d][16]`). Writes `panels·16` columns.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn qk(
    q: &[f32],
    rows: usize,
    d: usize,
    kp: &[f32],
    panels: usize,
    s: &mut [f32],
    lds: usize,
) {
    debug_assert!(q.len() >= rows * d);
    debug_assert!(kp.len() >= panels * d * 16);
    debug_assert!(s.len() >= (rows - 1) * lds + panels * 16);
    let (q, kp, s) = (q.as_ptr(), kp.as_ptr(), s.as_mut_ptr());
    for pj in 0..panels {
        let b = kp.add(pj * d * 16);
        let mut i = 0;
        while i < rows {
            let a = q.add(i * d);
            let c = s.add(i * lds + pj * 16);
            match rows - i {
                1 => qk_tile::<1>(a, d, b, c, lds),
                2 => qk_tile::<2>(a, d, b, c, lds),
                3 => qk_tile::<3>(a, d, b, c, lds),
                4 => qk_tile::<4>(a, d, b, c, lds),
                5 => qk_tile::<5>(a, d, b, c, lds),
                _ => qk_tile::<MR>(a, d, b, c, lds),
            }
            i += MR;
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn qk_tile<const R: usize>(a: *const f32, d: usize, b: *const f32, c: *mut f32, ldc: usize) {
    let mut acc0 = [_mm256_setzero_ps(); R];
    let mut acc1 = [_mm256_setzero_ps(); R];
    for p in 0..d {
        let b0 = _mm256_loadu_ps(b.add(p * 16));
        let b1 = _mm256_loadu_ps(b.add(p * 16 + 8));
        for r in 0..R {
            let x = _mm256_broadcast_ss(&*a.add(r * d + p));
            acc0[r] = _mm256_fmadd_ps(x, b0, acc0[r]);
            acc1[r] = _mm256_fmadd_ps(x, b1, acc1[r]);
        }
    }
    for r in 0..R {
        _mm256_storeu_ps(c.add(r * ldc), acc0[r]);
        _mm256_storeu_ps(c.add(r * ldc + 8), acc1[r]);
    }
}

/// `o[r] = alpha[r]·o[r] + Σ_{j<n} p[r][j]·v[j]` over `ldv` columns (a multiple of 16).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn pv(
    p: &[f32],
    ldp: usize,
    rows: usize,
    n: usize,
    v: &[f32],
    ldv: usize,
    o: &mut [f32],
    alpha: &[f32],
) {
    debug_assert!(ldv.is_multiple_of(16));
    debug_assert!(p.len() >= (rows - 1) * ldp + n);
    debug_assert!(v.len() >= n * ldv);
    debug_assert!(o.len() >= rows * ldv);
    let (p, v, o, al) = (p.as_ptr(), v.as_ptr(), o.as_mut_ptr(), alpha.as_ptr());
    for cj in (0..ldv).step_by(16) {
        let mut i = 0;
        while i < rows {
            let a = p.add(i * ldp);
            let c = o.add(i * ldv + cj);
            let b = v.add(cj);
            let al = al.add(i);
            match rows - i {
                1 => pv_tile::<1>(a, ldp, b, ldv, n, c, al),
                2 => pv_tile::<2>(a, ldp, b, ldv, n, c, al),
                3 => pv_tile::<3>(a, ldp, b, ldv, n, c, al),
                4 => pv_tile::<4>(a, ldp, b, ldv, n, c, al),
                5 => pv_tile::<5>(a, ldp, b, ldv, n, c, al),
                _ => pv_tile::<MR>(a, ldp, b, ldv, n, c, al),
            }
            i += MR;
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn pv_tile<const R: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    n: usize,
    c: *mut f32,
    alpha: *const f32,
) {
    let mut acc0 = [_mm256_setzero_ps(); R];
    let mut acc1 = [_mm256_setzero_ps(); R];
    for r in 0..R {
        let al = _mm256_broadcast_ss(&*alpha.add(r));
        acc0[r] = _mm256_mul_ps(al, _mm256_loadu_ps(c.add(r * ldb)));
        acc1[r] = _mm256_mul_ps(al, _mm256_loadu_ps(c.add(r * ldb + 8)));
    }
    for j in 0..n {
        let b0 = _mm256_loadu_ps(b.add(j * ldb));
        let b1 = _mm256_loadu_ps(b.add(j * ldb + 8));
        for r in 0..R {
            let x = _mm256_broadcast_ss(&*a.add(r * lda + j));
            acc0[r] = _mm256_fmadd_ps(x, b0, acc0[r]);
            acc1[r] = _mm256_fmadd_ps(x, b1, acc1[r]);
        }
    }
    for r in 0..R {
        _mm256_storeu_ps(c.add(r * ldb), acc0[r]);
        _mm256_storeu_ps(c.add(r * ldb + 8), acc1[r]);
    }
}

/// Vectorised `exp` (Cephes `expf` scheme: `2^n · p(r)`, degree-6 polynomial), relative
/// error about 1e-7; inputs below -87.3 give ~1e-38 instead of 0.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn exp(x: __m256) -> __m256 {
    let x = _mm256_min_ps(x, _mm256_set1_ps(88.376_26));
    let x = _mm256_max_ps(x, _mm256_set1_ps(-87.336_55));
    let fx = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut y = _mm256_set1_ps(1.987_569_1e-4);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.398_2e-3));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.333_452e-3));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.166_579_6e-2));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.666_666_5e-1));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(0.5));
    let r2 = _mm256_mul_ps(r, r);
    y = _mm256_fmadd_ps(y, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
    let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(fx),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(y, _mm256_castsi256_ps(e))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hmax(x: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_shuffle_ps::<1>(m, m));
    _mm_cvtss_f32(m)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum(x: __m256) -> f32 {
    let m = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
    let m = _mm_add_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_add_ss(m, _mm_shuffle_ps::<1>(m, m));
    _mm_cvtss_f32(m)
}

/// Lane mask with the first `k` (0..=8) lanes set.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn head_mask(k: usize) -> __m256 {
    let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(k as i32), idx))
}

/// See [`super::softmax_step`]. Needs `lds >= round_up(n, 8)`; lanes past `n` are
/// written (with zeros) but never read as scores.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn softmax_step(
    s: &mut [f32],
    rows: usize,
    n: usize,
    lds: usize,
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) {
    debug_assert!(lds >= n.div_ceil(8) * 8);
    debug_assert!(s.len() >= (rows - 1) * lds + n.div_ceil(8) * 8);
    let full = n / 8 * 8;
    let tail = n - full;
    let mask = head_mask(tail);
    let neg_inf = _mm256_set1_ps(f32::NEG_INFINITY);
    for r in 0..rows {
        let row = s.as_mut_ptr().add(r * lds);
        let mut vmax0 = neg_inf;
        let mut vmax1 = neg_inf;
        let mut j = 0;
        while j + 16 <= full {
            vmax0 = _mm256_max_ps(vmax0, _mm256_loadu_ps(row.add(j)));
            vmax1 = _mm256_max_ps(vmax1, _mm256_loadu_ps(row.add(j + 8)));
            j += 16;
        }
        if j < full {
            vmax0 = _mm256_max_ps(vmax0, _mm256_loadu_ps(row.add(j)));
        }
        if tail > 0 {
            let x = _mm256_blendv_ps(neg_inf, _mm256_loadu_ps(row.add(full)), mask);
            vmax1 = _mm256_max_ps(vmax1, x);
        }
        let blk_max = hmax(_mm256_max_ps(vmax0, vmax1));
        let m_old = m[r];
        let m_new = m_old.max(blk_max);
        let a = if m_old == m_new {
            1.0
        } else {
            (m_old - m_new).exp()
        };
        let vm = _mm256_set1_ps(m_new);
        let mut sum0 = _mm256_setzero_ps();
        let mut sum1 = _mm256_setzero_ps();
        let mut j = 0;
        while j + 16 <= full {
            let e0 = exp(_mm256_sub_ps(_mm256_loadu_ps(row.add(j)), vm));
            let e1 = exp(_mm256_sub_ps(_mm256_loadu_ps(row.add(j + 8)), vm));
            _mm256_storeu_ps(row.add(j), e0);
            _mm256_storeu_ps(row.add(j + 8), e1);
            sum0 = _mm256_add_ps(sum0, e0);
            sum1 = _mm256_add_ps(sum1, e1);
            j += 16;
        }
        if j < full {
            let e0 = exp(_mm256_sub_ps(_mm256_loadu_ps(row.add(j)), vm));
            _mm256_storeu_ps(row.add(j), e0);
            sum0 = _mm256_add_ps(sum0, e0);
        }
        if tail > 0 {
            let e = exp(_mm256_sub_ps(_mm256_loadu_ps(row.add(full)), vm));
            let e = _mm256_and_ps(e, mask);
            _mm256_storeu_ps(row.add(full), e);
            sum1 = _mm256_add_ps(sum1, e);
        }
        l[r] = l[r] * a + hsum(_mm256_add_ps(sum0, sum1));
        m[r] = m_new;
        alpha[r] = a;
    }
}
