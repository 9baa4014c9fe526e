//! Diagnostic: do the bundled text encoder's rows bind each direction to its object?
//!
//! The DiT's cross-attention sees the encoder's rows as a set: a pixel of the red object can
//! only move the way its caption says if some row it can find by "red" (or by its shape) also
//! holds that object's direction. The encoder is frozen and random, with each head pinned to a
//! neighbour (`train::text_stack`), so whether its rows do is a property of those weights, not
//! of training. This fits a ridge-regression probe from one row of each object (its colour
//! word, its shape word, its motion words) to that object's direction on multi-mover captions
//! (two or three straight movers in different directions), and reports on captions it was not
//! fitted on how often the probe names the object's own direction and how often another
//! object's. A row that binds names its own; a row that only holds "some direction of this
//! caption" splits between them; the mean of all rows (what a pixel that cannot tell the rows
//! apart would read) is the floor.
//!
//! Why: the ninth bundled model follows the direction words on single movers (checker
//! direction 0.93) and loses them on multi movers (0.17): its objects move partly in the
//! other objects' directions. This tells whether the text side can carry the binding at all.
//!
//!     cargo run --release -p hsa-shapes --example binding_probe -- models/shapes-wan [FIT [TEST]]
use candle_core::Device;
use hsa_shapes::train::text_stack::TextStack;
use hsa_shapes::{caption, sample_multi_mover, tokenize, Direction, Motion, SceneSpec};

#[path = "common/probe.rs"]
mod linear_probe;
use linear_probe::LinearProbe;

/// Rows of one object that the probe reads.
const ROWS: [&str; 5] = ["colour", "shape", "moving", "direction", "mean of all rows"];

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("model folder"));
    let fit: u64 = args
        .next()
        .map_or(3000, |a| a.parse().expect("fit caption count"));
    let test: u64 = args
        .next()
        .map_or(1000, |a| a.parse().expect("test caption count"));
    let text = TextStack::load(&dir, 32, &Device::Cpu).unwrap();
    let (fit_set, test_set) = (
        samples(&text, 0..fit),
        samples(&text, 1_000_000..1_000_000 + test),
    );
    println!(
        "{} objects of {fit} multi-mover captions fitted, {} of {test} tested; chance 1/8",
        fit_set.len(),
        test_set.len()
    );
    println!("row                 own direction   another object's");
    let labels: Vec<usize> = fit_set.iter().map(|s| s.direction).collect();
    for (r, name) in ROWS.iter().enumerate() {
        let rows: Vec<Vec<f32>> = fit_set.iter().map(|s| s.rows[r].clone()).collect();
        let probe = LinearProbe::fit(&rows, &labels, Direction::ALL.len());
        let (mut own, mut other) = (0usize, 0usize);
        for s in &test_set {
            let guess = probe.predict(&s.rows[r]);
            own += usize::from(guess == s.direction);
            other += usize::from(s.others.contains(&guess));
        }
        let n = test_set.len() as f64;
        println!(
            "{name:<18}  {:>13.3}   {:>16.3}",
            own as f64 / n,
            other as f64 / n
        );
    }
}

/// One object of one caption: the rows the probe reads, its direction and the others'.
struct Sample {
    rows: Vec<Vec<f32>>,
    direction: usize,
    others: Vec<usize>,
}

fn direction_of(o: &hsa_shapes::ObjectSpec) -> Direction {
    match o.motion {
        Motion::Moving(d) => d,
        other => panic!("a multi mover's objects move straight, not {other:?}"),
    }
}

fn samples(text: &TextStack, seeds: std::ops::Range<u64>) -> Vec<Sample> {
    seeds
        .flat_map(|seed| {
            let spec = sample_multi_mover(seed);
            let text_in = caption(&spec);
            let rows = text.embed(&text_in).unwrap().to_vec2::<f32>().unwrap();
            objects(&spec, &tokenize(&text_in), &rows)
        })
        .collect()
}

/// The samples of one caption, from its words and encoder rows (one per word, padding after).
fn objects(spec: &SceneSpec, words: &[String], rows: &[Vec<f32>]) -> Vec<Sample> {
    let mean: Vec<f32> = (0..rows[0].len())
        .map(|c| rows[..words.len()].iter().map(|r| r[c]).sum::<f32>() / words.len() as f32)
        .collect();
    // Each object's words begin with its article: "a|an <colour> <shape> moving <direction..>".
    let starts = (0..words.len()).filter(|&i| i == 0 || words[i - 1] == "and");
    let directions: Vec<usize> = spec
        .objects
        .iter()
        .map(|o| direction_of(o).index())
        .collect();
    starts
        .zip(&spec.objects)
        .enumerate()
        .map(|(k, (at, o))| {
            assert_eq!(words[at + 1], o.colour.name(), "caption layout");
            assert_eq!(words[at + 3], "moving", "caption layout");
            Sample {
                rows: vec![
                    rows[at + 1].clone(),
                    rows[at + 2].clone(),
                    rows[at + 3].clone(),
                    rows[at + 4].clone(),
                    mean.clone(),
                ],
                direction: directions[k],
                others: (0..directions.len())
                    .filter(|&j| j != k)
                    .map(|j| directions[j])
                    .collect(),
            }
        })
        .collect()
}
