//! The step layout shared by HSA, its planner and the RAS baseline: which steps are dense and
//! at which steps a token of a given stride gets a fresh velocity.
//!
//! Steps are `i = 0..T`. Dense steps are the warm-up `i < W`, the tail `i >= T - U`, and any
//! forced-dense step (an expert switch for HSA; switches and error resets for RAS). In the
//! heterogeneous phase `W <= i < T - U` a stride-m token is active iff `(i - W) mod m == 0`.
//! A token's *evaluation steps* are the dense steps plus its active hetero steps; at each one
//! it gets a fresh velocity and jumps (cached Euler update) to its next evaluation step, or to
//! T after the last one. Because the tail start and every forced-dense step are evaluation
//! steps of every stride, a jump never crosses them: `j = min(i + m, T - U)` (or T when
//! U = 0) as in the design, and every token sits exactly at `sigma_s` when a forced-dense
//! step `s` begins.

use std::ops::Range;

use crate::{CoreError, Result};

/// Warm-up, tail and forced-dense steps of a T-step run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepLayout {
    steps: usize,
    warmup: usize,
    tail: usize,
    forced_dense: Vec<usize>,
}

impl StepLayout {
    /// Checks `T >= 1`, `W + U <= T` and that forced-dense steps lie in `0..T` (they are
    /// sorted and de-duplicated; those inside the warm-up or tail change nothing).
    pub fn new(steps: usize, warmup: usize, tail: usize, forced_dense: &[usize]) -> Result<Self> {
        if steps == 0 {
            return Err(CoreError::InvalidSetting(
                "the number of steps T must be at least 1".into(),
            ));
        }
        if warmup + tail > steps {
            return Err(CoreError::InvalidSetting(format!(
                "warm-up ({warmup}) plus tail ({tail}) dense steps exceed the {steps} steps of the \
                 run; lower --warmup/--tail or raise --steps"
            )));
        }
        if let Some(&s) = forced_dense.iter().find(|&&s| s >= steps) {
            return Err(CoreError::InvalidSetting(format!(
                "forced-dense step {s} (expert switch or reset) is outside the steps 0..{steps}"
            )));
        }
        let mut forced_dense = forced_dense.to_vec();
        forced_dense.sort_unstable();
        forced_dense.dedup();
        Ok(Self {
            steps,
            warmup,
            tail,
            forced_dense,
        })
    }

    /// Number of steps T.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Warm-up length W.
    pub fn warmup(&self) -> usize {
        self.warmup
    }

    /// Tail length U.
    pub fn tail(&self) -> usize {
        self.tail
    }

    /// Forced-dense steps, sorted.
    pub fn forced_dense(&self) -> &[usize] {
        &self.forced_dense
    }

    /// The heterogeneous phase `W..T-U` (forced-dense steps inside it included).
    pub fn hetero_range(&self) -> Range<usize> {
        self.warmup..self.steps - self.tail
    }

    /// Whether step `i` evaluates every token.
    pub fn is_dense(&self, i: usize) -> bool {
        !self.hetero_range().contains(&i) || self.forced_dense.binary_search(&i).is_ok()
    }

    /// Whether a token of stride `stride` gets a fresh velocity at step `i`.
    #[allow(clippy::manual_is_multiple_of)] // `is_multiple_of` needs Rust 1.87; MSRV is 1.85
    pub fn is_active(&self, stride: usize, i: usize) -> bool {
        i < self.steps && (self.is_dense(i) || (i - self.warmup) % stride == 0)
    }

    /// The step a stride-`stride` token evaluated at `i` jumps to: its next evaluation step,
    /// or T after its last one.
    pub fn next_active(&self, stride: usize, i: usize) -> usize {
        (i + 1..self.steps)
            .find(|&j| self.is_active(stride, j))
            .unwrap_or(self.steps)
    }

    /// Number of steps at which a stride-`stride` token is evaluated.
    pub fn evaluations(&self, stride: usize) -> usize {
        (0..self.steps)
            .filter(|&i| self.is_active(stride, i))
            .count()
    }

    /// Number of dense steps (warm-up, tail and forced-dense).
    pub fn dense_steps(&self) -> usize {
        (0..self.steps).filter(|&i| self.is_dense(i)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_follow_the_design_grid() {
        let l = StepLayout::new(12, 3, 2, &[]).unwrap();
        assert_eq!(l.hetero_range(), 3..10);
        let active = |m| (0..12).filter(|&i| l.is_active(m, i)).collect::<Vec<_>>();
        assert_eq!(active(1), (0..12).collect::<Vec<_>>());
        assert_eq!(active(2), vec![0, 1, 2, 3, 5, 7, 9, 10, 11]);
        assert_eq!(active(4), vec![0, 1, 2, 3, 7, 10, 11]);
        // Jumps are capped at the tail start T - U = 10.
        assert_eq!(l.next_active(4, 7), 10);
        assert_eq!(l.next_active(4, 11), 12);
        assert_eq!(l.evaluations(4), 7);
    }

    #[test]
    fn without_tail_the_last_jump_ends_at_t() {
        let l = StepLayout::new(10, 2, 0, &[]).unwrap();
        assert_eq!(l.next_active(4, 6), 10);
        assert_eq!(l.next_active(16, 2), 10);
        assert_eq!(l.evaluations(16), 3);
    }

    #[test]
    fn forced_dense_steps_cap_jumps() {
        let l = StepLayout::new(20, 4, 0, &[9, 9, 2]).unwrap();
        assert_eq!(l.forced_dense(), &[2, 9]);
        assert!(l.is_dense(9) && !l.is_dense(8) && l.is_dense(2));
        assert_eq!(l.next_active(4, 8), 9);
        // After the switch the original grid (i - W) mod m continues.
        assert_eq!(l.next_active(4, 9), 12);
        assert_eq!(l.dense_steps(), 5);
    }

    #[test]
    fn bad_layouts_are_errors() {
        assert!(StepLayout::new(0, 0, 0, &[]).is_err());
        assert!(StepLayout::new(5, 4, 2, &[]).is_err());
        assert!(StepLayout::new(5, 1, 1, &[5]).is_err());
        assert!(StepLayout::new(5, 5, 0, &[]).is_ok());
    }
}
