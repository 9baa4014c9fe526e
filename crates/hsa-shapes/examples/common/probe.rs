//! A linear probe shared by the diagnostics (`position_probe`, `binding_probe`): ridge
//! regression from feature rows to one-hot labels, read by arg max. Linear because the DiT's
//! attention reads its inputs through linear maps: what a linear probe finds, a head can.

/// Ridge strength, relative to the mean diagonal of the Gram matrix.
const RIDGE: f64 = 1e-3;

/// Fitted weights: `(d + 1) x classes`, the last row the bias.
pub struct LinearProbe {
    w: Vec<f64>,
    d: usize,
    classes: usize,
}

impl LinearProbe {
    /// Fits rows (all of one length) to labels in `0..classes`.
    pub fn fit(rows: &[Vec<f32>], labels: &[usize], classes: usize) -> Self {
        let d = rows[0].len() + 1;
        let mut gram = vec![0f64; d * d];
        let mut rhs = vec![0f64; d * classes];
        for (r, &y) in rows.iter().zip(labels) {
            let x = features(r);
            for i in 0..d {
                for j in 0..=i {
                    gram[i * d + j] += x[i] * x[j];
                }
                rhs[i * classes + y] += x[i];
            }
        }
        let mean_diag = (0..d).map(|i| gram[i * d + i]).sum::<f64>() / d as f64;
        for i in 0..d {
            gram[i * d + i] += RIDGE * mean_diag;
            for j in 0..i {
                gram[j * d + i] = gram[i * d + j];
            }
        }
        let w = solve_spd(gram, rhs, d, classes);
        Self {
            w,
            d: d - 1,
            classes,
        }
    }

    /// The label the probe gives `row`.
    pub fn predict(&self, row: &[f32]) -> usize {
        assert_eq!(row.len(), self.d, "probe fitted on rows of another length");
        let x = features(row);
        let scores: Vec<f64> = (0..self.classes)
            .map(|c| {
                x.iter()
                    .enumerate()
                    .map(|(j, v)| v * self.w[j * self.classes + c])
                    .sum()
            })
            .collect();
        (0..self.classes)
            .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
            .unwrap()
    }
}

/// A row with the bias feature appended.
fn features(row: &[f32]) -> Vec<f64> {
    row.iter().map(|&v| f64::from(v)).chain([1.0]).collect()
}

/// Solves `a x = b` for a symmetric positive definite `a` (d x d) and `b` (d x m) by Cholesky.
fn solve_spd(mut a: Vec<f64>, mut b: Vec<f64>, d: usize, m: usize) -> Vec<f64> {
    for j in 0..d {
        let mut diag = a[j * d + j];
        for k in 0..j {
            diag -= a[j * d + k] * a[j * d + k];
        }
        let diag = diag.sqrt();
        a[j * d + j] = diag;
        for i in j + 1..d {
            let mut v = a[i * d + j];
            for k in 0..j {
                v -= a[i * d + k] * a[j * d + k];
            }
            a[i * d + j] = v / diag;
        }
    }
    for c in 0..m {
        for i in 0..d {
            let mut v = b[i * m + c];
            for k in 0..i {
                v -= a[i * d + k] * b[k * m + c];
            }
            b[i * m + c] = v / a[i * d + i];
        }
        for i in (0..d).rev() {
            let mut v = b[i * m + c];
            for k in i + 1..d {
                v -= a[k * d + i] * b[k * m + c];
            }
            b[i * m + c] = v / a[i * d + i];
        }
    }
    b
}
