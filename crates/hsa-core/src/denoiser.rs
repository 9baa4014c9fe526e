//! The contract between samplers and models.

use candle_core::Tensor;

use crate::Result;

/// Classifier-free guidance branch. Each branch has its own text context and its own K/V cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Branch {
    Cond,
    Uncond,
}

impl Branch {
    /// Index of the branch in per-branch storage (cond = 0, uncond = 1).
    pub fn index(self) -> usize {
        match self {
            Branch::Cond => 0,
            Branch::Uncond => 1,
        }
    }
}

/// The token grid of a latent video after patching: `frames x height x width` tokens in
/// (frame, row, col) row-major order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenGrid {
    pub frames: usize,
    pub height: usize,
    pub width: usize,
}

impl TokenGrid {
    pub fn new(frames: usize, height: usize, width: usize) -> Self {
        Self {
            frames,
            height,
            width,
        }
    }

    /// Number of tokens N.
    pub fn len(&self) -> usize {
        self.frames * self.height * self.width
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (frame, row, col) of token `n`.
    pub fn position(&self, n: usize) -> (usize, usize, usize) {
        let per_frame = self.height * self.width;
        (n / per_frame, (n % per_frame) / self.width, n % self.width)
    }
}

/// A sorted, duplicate-free set of token indices, kept both as a host vector and as a `u32`
/// tensor on the model's device (the form `index_select` wants).
#[derive(Debug, Clone)]
pub struct ActiveSet {
    ids: Vec<u32>,
    tensor: Tensor,
}

impl ActiveSet {
    /// Builds the set; `ids` must be strictly increasing and below `n_tokens`.
    pub fn new(ids: Vec<u32>, n_tokens: usize, device: &candle_core::Device) -> Result<Self> {
        if let Some(w) = ids.windows(2).find(|w| w[0] >= w[1]) {
            return Err(crate::CoreError::InvalidSetting(format!(
                "active token indices must be strictly increasing, found {} then {}",
                w[0], w[1]
            )));
        }
        if let Some(&last) = ids.last() {
            if last as usize >= n_tokens {
                return Err(crate::CoreError::InvalidSetting(format!(
                    "active token index {last} is out of range for {n_tokens} tokens"
                )));
            }
        }
        let tensor = Tensor::from_slice(&ids, ids.len(), device)?;
        Ok(Self { ids, tensor })
    }

    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A velocity model driven by a sampler.
///
/// The sampler's state is a tensor `[N, P]` (f32): N tokens of P values each, in the model's
/// own patch layout. The denoiser decides how tokens map to pixels or latents; the sampler only
/// needs N, P and the token grid (for maps and spatial smoothing).
pub trait Denoiser {
    /// Token grid of the state; N = `grid().len()`.
    fn grid(&self) -> TokenGrid;

    /// Values per token in the sampler's state (P).
    fn token_dim(&self) -> usize;

    /// Whether an unconditional branch is available for classifier-free guidance.
    fn has_uncond(&self) -> bool;

    /// Forgets all per-generation state (K/V caches); called before a new generation.
    fn reset(&mut self) -> Result<()>;

    /// Velocity at model timestep `timestep` for the CFG `branch`.
    ///
    /// `x` is the full state `[N, P]`. With `active = None` every token is evaluated (a dense
    /// step) and the branch's K/V cache is overwritten; the result is `[N, P]`. With
    /// `Some(set)` only those tokens are evaluated: their K/V rows are written into the cache
    /// and they attend over all N cached keys; the result is `[|A|, P]` in the set's order.
    fn velocity(
        &mut self,
        x: &Tensor,
        timestep: f64,
        branch: Branch,
        active: Option<&ActiveSet>,
    ) -> Result<Tensor>;

    /// TeaCache's skip indicator at `timestep`: the model's timestep embedding (`e`, or the
    /// six-fold projection `e0`). `None` when the model offers no such signal.
    fn timestep_indicator(
        &mut self,
        _timestep: f64,
        _kind: IndicatorKind,
    ) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// Asks the model to keep the block-stack residual of every dense call, for
    /// [`Denoiser::velocity_reusing_residual`]. Models that cannot do this return an error.
    fn enable_residual_capture(&mut self) -> Result<()> {
        Err(crate::CoreError::Denoiser(
            "this model does not support block-residual reuse (TeaCache)".into(),
        ))
    }

    /// Dense velocity that skips the block stack: the input embedding plus the block-stack
    /// residual stored by the last dense [`Denoiser::velocity`] call of `branch`, then the head.
    /// Models that cannot do this return an error.
    fn velocity_reusing_residual(
        &mut self,
        _x: &Tensor,
        _timestep: f64,
        _branch: Branch,
    ) -> Result<Tensor> {
        Err(crate::CoreError::Denoiser(
            "this model does not support block-residual reuse (TeaCache)".into(),
        ))
    }
}

/// Which timestep embedding TeaCache watches (wan-spec §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndicatorKind {
    /// The time MLP output `e` (TeaCache's default mode).
    Embedding,
    /// The modulation projection `e0` (TeaCache's `use_ret_steps` mode).
    Projection,
}
