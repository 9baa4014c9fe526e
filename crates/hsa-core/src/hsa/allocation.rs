//! Allocation: per-token scores from the warm-up velocities, ranking, and the cut into groups.
//!
//! Everything here works on host vectors of N per-token numbers; the only tensor work is the
//! per-token L1 norm of a velocity (or of a velocity difference), reduced on the device.

use std::str::FromStr;

use candle_core::{DType, Tensor};

use super::GroupSpec;
use crate::{CoreError, Result, TokenGrid};

/// Added to the denominator of the relative change (design §2).
pub const RELATIVE_CHANGE_EPS: f64 = 1e-6;

/// How tokens are scored for the allocation (design §2; paper Fig. 3 compares them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScoreKind {
    /// Default. Mean relative L1 change of the token's velocity between consecutive warm-up
    /// steps, `|v_i - v_{i-1}|_1 / (|v_{i-1}|_1 + 1e-6)` over `i` in `[max(1, W/2), W)`.
    RelativeChange,
    /// Mean L1 norm of the token's velocity over the same window.
    Magnitude,
    /// Uniform random scores (splitmix64 of the seed and the token index): the control.
    Random { seed: u64 },
    /// Relative change ranked ascending: the calmest tokens get every step. Must lose.
    Inverse,
}

impl ScoreKind {
    /// Whether the score is computed from warm-up velocities.
    pub fn needs_velocities(self) -> bool {
        !matches!(self, ScoreKind::Random { .. })
    }
}

impl FromStr for ScoreKind {
    type Err = CoreError;
    /// `relative-change`, `magnitude` (or `velocity-magnitude`), `inverse`, `random` (seed 0)
    /// or `random:SEED`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "relative-change" => Ok(Self::RelativeChange),
            "magnitude" | "velocity-magnitude" => Ok(Self::Magnitude),
            "inverse" => Ok(Self::Inverse),
            "random" => Ok(Self::Random { seed: 0 }),
            _ => match s.strip_prefix("random:").map(str::parse) {
                Some(Ok(seed)) => Ok(Self::Random { seed }),
                _ => Err(CoreError::InvalidSetting(format!(
                    "unknown allocation score '{s}' (expected relative-change, magnitude, \
                     inverse, random or random:SEED)"
                ))),
            },
        }
    }
}

/// The score window `[max(1, W/2), W)` of warm-up steps.
pub fn score_window(warmup: usize) -> std::ops::Range<usize> {
    (warmup / 2).max(1)..warmup
}

/// Per-token L1 norm `Σ_p |t[n, p]|` of a `[N, P]` tensor, on the host.
pub fn per_token_l1(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.abs()?.sum(1)?.to_vec1::<f32>()?)
}

/// Accumulates the allocation score over the warm-up, keeping only the previous velocity and a
/// running per-token sum (never the whole warm-up history).
#[derive(Debug)]
pub struct ScoreAccumulator {
    kind: ScoreKind,
    window: std::ops::Range<usize>,
    n_tokens: usize,
    prev: Option<(usize, Tensor)>,
    sum: Vec<f64>,
    count: usize,
}

impl ScoreAccumulator {
    pub fn new(kind: ScoreKind, warmup: usize, n_tokens: usize) -> Self {
        Self {
            kind,
            window: score_window(warmup),
            n_tokens,
            prev: None,
            sum: vec![0.0; n_tokens],
            count: 0,
        }
    }

    /// Feeds the dense guided velocity `v [N, P]` of warm-up step `step`. `after_switch` marks
    /// the first step of a new expert: the change from the previous step measures the switch,
    /// not the token, so that pair is left out of the relative change.
    pub fn observe(&mut self, step: usize, v: &Tensor, after_switch: bool) -> Result<()> {
        if !self.kind.needs_velocities() || step + 1 < self.window.start || step >= self.window.end
        {
            return Ok(());
        }
        if self.window.contains(&step) {
            match self.kind {
                ScoreKind::Magnitude => self.add(&per_token_l1(v)?, None),
                ScoreKind::RelativeChange | ScoreKind::Inverse => {
                    if let Some((_, prev)) = self.prev.as_ref().filter(|(p, _)| p + 1 == step) {
                        if !after_switch {
                            let change = per_token_l1(&(v - prev)?)?;
                            let base = per_token_l1(prev)?;
                            self.add(&change, Some(&base));
                        }
                    }
                }
                ScoreKind::Random { .. } => {}
            }
        }
        let pairs = matches!(self.kind, ScoreKind::RelativeChange | ScoreKind::Inverse);
        if pairs && step + 1 < self.window.end {
            self.prev = Some((step, v.clone()));
        } else {
            self.prev = None;
        }
        Ok(())
    }

    fn add(&mut self, values: &[f32], base: Option<&[f32]>) {
        for (n, s) in self.sum.iter_mut().enumerate() {
            *s += match base {
                Some(b) => values[n] as f64 / (b[n] as f64 + RELATIVE_CHANGE_EPS),
                None => values[n] as f64,
            };
        }
        self.count += 1;
    }

    /// The per-token score (higher = more dynamic = earlier group; for `Inverse` the relative
    /// change itself, which [`rank_tokens`] orders ascending).
    pub fn finish(self) -> Result<Vec<f64>> {
        if let ScoreKind::Random { seed } = self.kind {
            return Ok(random_scores(seed, self.n_tokens));
        }
        if self.count == 0 {
            return Err(CoreError::InvalidSetting(format!(
                "the {:?} allocation score needs warm-up velocities in steps {:?}, and none were \
                 usable (warm-up too short, or an expert switch inside it); use --warmup 2 or \
                 more, or the random score",
                self.kind, self.window
            )));
        }
        let count = self.count as f64;
        Ok(self.sum.into_iter().map(|s| s / count).collect())
    }
}

/// One splitmix64 step: a tiny, well-mixed deterministic generator (no `rand` dependency).
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform scores in [0, 1) for `n` tokens, fixed by `seed`.
pub fn random_scores(seed: u64, n: usize) -> Vec<f64> {
    let mut state = seed;
    (0..n)
        .map(|_| (splitmix64(&mut state) >> 11) as f64 / (1u64 << 53) as f64)
        .collect()
}

/// Spatial smoothing: each token's score becomes the max over its 3x3 neighbourhood in the same
/// frame, so a dynamic token pulls its neighbours into its group (whole moving regions).
pub fn smooth_max_3x3(scores: &[f64], grid: TokenGrid) -> Vec<f64> {
    let (h, w) = (grid.height, grid.width);
    (0..scores.len())
        .map(|n| {
            let (f, r, c) = grid.position(n);
            let mut m = f64::NEG_INFINITY;
            for rr in r.saturating_sub(1)..(r + 2).min(h) {
                for cc in c.saturating_sub(1)..(c + 2).min(w) {
                    m = m.max(scores[(f * h + rr) * w + cc]);
                }
            }
            m
        })
        .collect()
}

/// Orders `candidates` by score, descending (ascending when `ascending`), ties broken by token
/// index so the result is deterministic. Non-finite scores sort by `f64::total_cmp` (NaN
/// above +inf).
pub fn rank_tokens(scores: &[f64], candidates: &[u32], ascending: bool) -> Vec<u32> {
    let mut order = candidates.to_vec();
    order.sort_by(|&a, &b| {
        let (sa, sb) = (scores[a as usize], scores[b as usize]);
        let by_score = if ascending {
            sa.total_cmp(&sb)
        } else {
            sb.total_cmp(&sa)
        };
        by_score.then(a.cmp(&b))
    });
    order
}

/// The result of the allocation: a group for every movable token.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    /// Group index per token (into the spec), `None` for frozen tokens.
    pub group_of: Vec<Option<usize>>,
    /// Sorted token ids of each group.
    pub members: Vec<Vec<u32>>,
}

/// Ranks the `movable` tokens (sorted ids) by `scores` (after optional smoothing) and cuts the
/// ranking into the groups of `spec`. Frozen tokens take no part in ranking or smoothing.
pub fn allocate(
    scores: &[f64],
    kind: ScoreKind,
    smoothing: Option<TokenGrid>,
    movable: &[u32],
    spec: &GroupSpec,
) -> Allocation {
    let n = scores.len();
    let mut key = vec![f64::NEG_INFINITY; n];
    for &m in movable {
        key[m as usize] = scores[m as usize];
    }
    if let Some(grid) = smoothing {
        key = smooth_max_3x3(&key, grid);
    }
    let ranking = rank_tokens(&key, movable, kind == ScoreKind::Inverse);
    let mut group_of = vec![None; n];
    let mut members = Vec::with_capacity(spec.len());
    let mut start = 0;
    for (k, size) in spec.sizes(movable.len()).into_iter().enumerate() {
        let mut ids = ranking[start..start + size].to_vec();
        ids.sort_unstable();
        for &id in &ids {
            group_of[id as usize] = Some(k);
        }
        members.push(ids);
        start += size;
    }
    Allocation { group_of, members }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn window_starts_at_half_the_warmup() {
        assert_eq!(score_window(6), 3..6);
        assert_eq!(score_window(2), 1..2);
        assert_eq!(score_window(1), 1..1);
        assert_eq!(score_window(7), 3..7);
    }

    #[test]
    fn relative_change_matches_the_formula() {
        let dev = Device::Cpu;
        let v = |rows: &[[f32; 2]; 2]| Tensor::new(rows, &dev).unwrap();
        let vs = [
            v(&[[9., 9.], [9., 9.]]),
            v(&[[1., -1.], [2., 0.]]),
            v(&[[2., -1.], [2., 0.]]),
            v(&[[2., 1.], [1., 0.]]),
        ];
        let mut acc = ScoreAccumulator::new(ScoreKind::RelativeChange, 4, 2);
        for (i, v) in vs.iter().enumerate() {
            acc.observe(i, v, false).unwrap();
        }
        let s = acc.finish().unwrap();
        // Window [2, 4): pairs (1,2) and (2,3); step 0 is never used.
        let t0 = (1.0 / (2.0 + 1e-6) + 2.0 / (3.0 + 1e-6)) / 2.0;
        let t1 = (0.0 / (2.0 + 1e-6) + 1.0 / (2.0 + 1e-6)) / 2.0;
        assert!(
            (s[0] - t0).abs() < 1e-12 && (s[1] - t1).abs() < 1e-12,
            "{s:?}"
        );

        let mut acc = ScoreAccumulator::new(ScoreKind::Magnitude, 4, 2);
        for (i, v) in vs.iter().enumerate() {
            acc.observe(i, v, false).unwrap();
        }
        assert_eq!(acc.finish().unwrap(), vec![3.0, 1.5]);
    }

    #[test]
    fn a_pair_across_an_expert_switch_is_skipped() {
        let dev = Device::Cpu;
        let a = Tensor::new(&[[1f32], [1.]], &dev).unwrap();
        let b = Tensor::new(&[[5f32], [1.]], &dev).unwrap();
        let mut acc = ScoreAccumulator::new(ScoreKind::RelativeChange, 2, 2);
        acc.observe(0, &a, false).unwrap();
        acc.observe(1, &b, true).unwrap();
        assert!(acc.finish().unwrap_err().to_string().contains("warm-up"));
        // W = 1 leaves an empty window: a clear error, but random scoring still works.
        assert!(ScoreAccumulator::new(ScoreKind::Magnitude, 1, 2)
            .finish()
            .is_err());
        assert_eq!(
            ScoreAccumulator::new(ScoreKind::Random { seed: 3 }, 0, 4)
                .finish()
                .unwrap()
                .len(),
            4
        );
    }

    #[test]
    fn ranking_breaks_ties_by_token_index() {
        let s = [0.5, 0.9, 0.5, 0.9, 0.1];
        let all = [0, 1, 2, 3, 4];
        assert_eq!(rank_tokens(&s, &all, false), vec![1, 3, 0, 2, 4]);
        assert_eq!(rank_tokens(&s, &all, true), vec![4, 0, 2, 1, 3]);
        assert_eq!(rank_tokens(&s, &[4, 2, 0], false), vec![0, 2, 4]);
    }

    #[test]
    fn random_scores_are_deterministic_and_seeded() {
        let a = random_scores(7, 100);
        assert_eq!(a, random_scores(7, 100));
        assert_ne!(a, random_scores(8, 100));
        assert!(a.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = a.iter().sum::<f64>() / 100.0;
        assert!((mean - 0.5).abs() < 0.1);
    }

    #[test]
    fn smoothing_takes_the_3x3_max_within_a_frame() {
        let grid = TokenGrid::new(2, 3, 4);
        let mut s = vec![0.0; 24];
        s[5] = 1.0; // frame 0, row 1, col 1
        s[12 + 3] = 2.0; // frame 1, row 0, col 3
        let m = smooth_max_3x3(&s, grid);
        let ones: Vec<usize> = (0..24).filter(|&n| m[n] == 1.0).collect();
        assert_eq!(ones, vec![0, 1, 2, 4, 5, 6, 8, 9, 10]);
        let twos: Vec<usize> = (0..24).filter(|&n| m[n] == 2.0).collect();
        assert_eq!(twos, vec![14, 15, 18, 19]);
    }

    #[test]
    fn allocate_cuts_the_ranking_and_skips_frozen_tokens() {
        let spec: GroupSpec = "0.25:1,0.25:2,0.5:4".parse().unwrap();
        let scores = [9.0, 1.0, 5.0, 7.0, 3.0, 100.0, 2.0, 8.0, 4.0];
        let movable = [0, 1, 2, 3, 4, 6, 7, 8];
        let a = allocate(&scores, ScoreKind::RelativeChange, None, &movable, &spec);
        assert_eq!(a.members, vec![vec![0, 7], vec![2, 3], vec![1, 4, 6, 8]]);
        assert_eq!(a.group_of[5], None);
        assert_eq!(a.group_of[0], Some(0));
        let inv = allocate(&scores, ScoreKind::Inverse, None, &movable, &spec);
        assert_eq!(inv.members[0], vec![1, 6]);
    }
}
