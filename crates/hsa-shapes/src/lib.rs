//! The synthetic moving-shapes world: a procedural, seed-deterministic video generator with
//! template captions, a held-out split of the caption space, and the checker that scores a
//! clip against its caption (the semantic metric of the eval harness).
//!
//! ```
//! use hsa_shapes::{caption, check, render, sample_train, ClipConfig};
//! let spec = sample_train(7);
//! let clip = render(&spec, &ClipConfig::default(), 7); // [3, 17, 32, 32] in [-1, 1]
//! let report = check(&clip, &caption(&spec)).unwrap();
//! assert!(report.overall > 0.5);
//! ```
//!
//! * [`scene`]: the semantic content ([`SceneSpec`]), samplers and the held-out split;
//! * [`caption`](mod@caption): the caption grammar, printer, parser and vocabulary;
//! * [`render`](mod@render): nuisance parameters ([`Layout`]) and the renderer;
//! * [`check`](mod@check): the checker and [`motion_energy`];
//! * [`clip`]: the [`Clip`] container (`[3, F, H, W]`, values in [-1, 1]);
//! * [`displacement`]: the exact per-pixel motion of a layout (the motion head's target).

pub mod caption;
pub mod check;
pub mod clip;
pub mod displacement;
pub mod png;
pub mod render;
pub mod rng;
pub mod scene;
pub mod train;

pub use caption::{caption, parse_caption, tokenize, vocabulary};
pub use check::{check, check_spec, motion_energy, CheckReport, CheckerParams, ObjectReport};
pub use clip::Clip;
pub use displacement::displacement_field;
pub use render::{fastest_step_px, layout, render, render_layout, ClipConfig, Layout};
pub use scene::{
    is_held_out, is_held_out_triple, is_multi_mover, is_single_mover, sample_eval,
    sample_multi_mover, sample_scene, sample_single_mover, sample_train, Axis, Background,
    BgColour, Colour, Direction, Motion, ObjectSpec, Pan, Pattern, SceneSpec, Shape,
};

/// Errors of the shapes world.
#[derive(Debug, thiserror::Error)]
pub enum ShapesError {
    /// A caption that does not follow the grammar in [`caption`](mod@caption).
    #[error("cannot parse caption {caption:?} at word {position}: {message}")]
    Parse {
        caption: String,
        position: usize,
        message: String,
    },
    /// A scene that breaks an invariant (object count, distinct colours, background).
    #[error("invalid scene: {0}")]
    InvalidScene(String),
    /// Clip dimensions that do not match the data or are too small.
    #[error("clip shape: {0}")]
    ClipShape(String),
    /// A tensor that could not be read back (device or dtype failure).
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, ShapesError>;

/// One generated training or evaluation example.
#[derive(Clone, Debug)]
pub struct Example {
    pub spec: SceneSpec,
    pub caption: String,
    pub clip: Clip,
    /// The nuisance parameters the clip was drawn with (tracks, camera): the trainer's
    /// displacement targets come from them.
    pub layout: Layout,
}

/// A training example: scene from [`sample_train`]`(seed)`, rendered with `seed`.
pub fn generate_train(seed: u64, cfg: &ClipConfig) -> Example {
    example(sample_train(seed), seed, cfg)
}

/// A training example of one straight mover without pan: scene from
/// [`sample_single_mover`]`(seed)`, rendered with `seed`.
pub fn generate_single_mover(seed: u64, cfg: &ClipConfig) -> Example {
    example(sample_single_mover(seed), seed, cfg)
}

/// A training example of two or three straight movers in different directions without pan:
/// scene from [`sample_multi_mover`]`(seed)`, rendered with `seed`.
pub fn generate_multi_mover(seed: u64, cfg: &ClipConfig) -> Example {
    example(sample_multi_mover(seed), seed, cfg)
}

/// An evaluation (held-out) example: scene from [`sample_eval`]`(seed)`, rendered with `seed`.
pub fn generate_eval(seed: u64, cfg: &ClipConfig) -> Example {
    example(sample_eval(seed), seed, cfg)
}

fn example(spec: SceneSpec, seed: u64, cfg: &ClipConfig) -> Example {
    let layout = layout(&spec, cfg, seed);
    Example {
        caption: caption(&spec),
        clip: render_layout(&layout, cfg),
        spec,
        layout,
    }
}
