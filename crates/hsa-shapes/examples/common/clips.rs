//! The clips the caption diagnostics (`caption_sensitivity`, `caption_prior`) measure, shared
//! so that both read the same clips: generator seeds from 7,000 on, kept where the first
//! object moves straight. `SINGLE=1` draws single movers, `MULTI=1` multi movers, otherwise
//! the training world.

use hsa_shapes::{
    generate_multi_mover, generate_single_mover, generate_train, ClipConfig, Example, Motion,
};

/// The first `clips` such examples, and what they are in words.
pub fn moving_examples(clips: usize, cfg: &ClipConfig) -> (Vec<Example>, &'static str) {
    let single = std::env::var("SINGLE").is_ok_and(|v| v == "1");
    let multi = std::env::var("MULTI").is_ok_and(|v| v == "1");
    let examples = (0..)
        .map(|seed| match (single, multi) {
            (true, _) => generate_single_mover(7_000 + seed, cfg),
            (false, true) => generate_multi_mover(7_000 + seed, cfg),
            (false, false) => generate_train(7_000 + seed, cfg),
        })
        .filter(|ex| matches!(ex.spec.objects[0].motion, Motion::Moving(_)))
        .take(clips)
        .collect();
    let kind = match (single, multi) {
        (true, _) => "single movers",
        (false, true) => "multi movers",
        (false, false) => "training clips",
    };
    (examples, kind)
}
