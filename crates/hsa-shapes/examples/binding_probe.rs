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

/// Rows of one object that the probe reads.
const ROWS: [&str; 5] = ["colour", "shape", "moving", "direction", "mean of all rows"];

/// Ridge strength relative to the mean diagonal of XᵀX.
const RIDGE: f64 = 1e-3;

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
    for (r, name) in ROWS.iter().enumerate() {
        let w = ridge(&fit_set, r);
        let (mut own, mut other) = (0usize, 0usize);
        for s in &test_set {
            let guess = argmax(&apply(&w, &s.rows[r]));
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
    rows: Vec<Vec<f64>>,
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
            let rows = text
                .embed(&caption(&spec))
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            objects(&spec, &rows)
        })
        .collect()
}

/// The samples of one caption, from its encoder rows (one per word, padding after).
fn objects(spec: &SceneSpec, rows: &[Vec<f32>]) -> Vec<Sample> {
    let words = tokenize(&caption(spec));
    let row = |i: usize| rows[i].iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    let mean: Vec<f64> = (0..rows[0].len())
        .map(|c| (0..words.len()).map(|i| f64::from(rows[i][c])).sum::<f64>() / words.len() as f64)
        .collect();
    // Each object's words begin with its article: "a|an <colour> <shape> moving <direction..>".
    let starts: Vec<usize> = (0..words.len())
        .filter(|&i| i == 0 || words[i - 1] == "and")
        .collect();
    let directions: Vec<usize> = spec
        .objects
        .iter()
        .map(|o| direction_of(o).index())
        .collect();
    starts
        .iter()
        .zip(&spec.objects)
        .enumerate()
        .map(|(k, (&at, o))| {
            assert_eq!(words[at + 1], o.colour.name(), "caption layout");
            assert_eq!(words[at + 3], "moving", "caption layout");
            Sample {
                rows: vec![
                    row(at + 1),
                    row(at + 2),
                    row(at + 3),
                    row(at + 4),
                    mean.clone(),
                ],
                direction: direction_of(o).index(),
                others: (0..directions.len())
                    .filter(|&j| j != k)
                    .map(|j| directions[j])
                    .collect(),
            }
        })
        .collect()
}

/// Ridge regression from row `r` (with a bias column) to the one-hot direction: `[d + 1][8]`.
fn ridge(set: &[Sample], r: usize) -> Vec<[f64; 8]> {
    let d = set[0].rows[r].len() + 1;
    let mut xtx = vec![vec![0.0; d]; d];
    let mut xty = vec![[0.0; 8]; d];
    for s in set {
        let x: Vec<f64> = s.rows[r].iter().copied().chain([1.0]).collect();
        for i in 0..d {
            for j in 0..d {
                xtx[i][j] += x[i] * x[j];
            }
            xty[i][s.direction] += x[i];
        }
    }
    let scale = RIDGE * (0..d).map(|i| xtx[i][i]).sum::<f64>() / d as f64;
    for (i, row) in xtx.iter_mut().enumerate() {
        row[i] += scale;
    }
    solve(xtx, xty)
}

/// Solves `a · x = b` (Gaussian elimination with partial pivoting; `a` is 65 x 65, so no
/// library is worth it).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<[f64; 8]>) -> Vec<[f64; 8]> {
    let d = a.len();
    for col in 0..d {
        let pivot = (col..d)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap();
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (done, rest) = a.split_at_mut(col + 1);
        let (b_done, b_rest) = b.split_at_mut(col + 1);
        let (top, b_top) = (&done[col], &b_done[col]);
        for (row, b_row) in rest.iter_mut().zip(b_rest) {
            let f = row[col] / top[col];
            for (x, t) in row[col..].iter_mut().zip(&top[col..]) {
                *x -= f * t;
            }
            for (x, t) in b_row.iter_mut().zip(b_top) {
                *x -= f * t;
            }
        }
    }
    for col in (0..d).rev() {
        let (head, solved) = b.split_at_mut(col + 1);
        let x = &mut head[col];
        for (a_cj, bj) in a[col][col + 1..].iter().zip(solved.iter()) {
            for (xk, bk) in x.iter_mut().zip(bj) {
                *xk -= a_cj * bk;
            }
        }
        for xk in x.iter_mut() {
            *xk /= a[col][col];
        }
    }
    b
}

fn apply(w: &[[f64; 8]], row: &[f64]) -> [f64; 8] {
    let mut out = w[row.len()]; // the bias row
    for (x, wi) in row.iter().zip(w) {
        for (o, wk) in out.iter_mut().zip(wi) {
            *o += x * wk;
        }
    }
    out
}

fn argmax(v: &[f64; 8]) -> usize {
    (0..8).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap()
}
