//! Shifted flow-matching sigma schedules.
//!
//! Three published variants differ in small details (where the grid starts, whether the model
//! timestep is truncated to an integer); each is reproduced exactly so that a run can be
//! compared step for step with the implementation a user knows.

use crate::{CoreError, Result};

/// Number of training timesteps of every Wan-class model (`t = 1000·sigma`).
pub const NUM_TRAIN_TIMESTEPS: f64 = 1000.0;

/// The timestep shift `S(s) = k·s / (1 + (k-1)·s)`, which spends more steps at high noise.
pub fn shift_sigma(sigma: f64, shift: f64) -> f64 {
    shift * sigma / (1.0 + (shift - 1.0) * sigma)
}

/// Which published schedule to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// `S(linspace(1, 0, T+1))`, model timestep `1000·sigma` (the HSA design's definition).
    Linear,
    /// diffusers `FlowMatchEulerDiscreteScheduler(shift)`: the grid runs from 1 to the shifted
    /// training minimum and is shifted again; float timesteps.
    FlowMatchEuler,
    /// diffusers `UniPCMultistepScheduler(use_flow_sigmas, flow_shift)`: grid from 1 to 1/1000,
    /// first sigma nudged below 1, integer (truncated) timesteps.
    DiffusersUniPc,
    /// The official Wan `FlowUniPCMultistepScheduler`: grid from 0.999 to 0, integer timesteps.
    WanOfficial,
}

impl std::str::FromStr for ScheduleKind {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "linear" => Ok(Self::Linear),
            "flow-match-euler" | "diffusers-euler" => Ok(Self::FlowMatchEuler),
            "diffusers-unipc" => Ok(Self::DiffusersUniPc),
            "wan" | "wan-official" => Ok(Self::WanOfficial),
            other => Err(CoreError::InvalidSetting(format!(
                "unknown schedule '{other}' (expected linear, flow-match-euler, diffusers-unipc or wan)"
            ))),
        }
    }
}

/// A sampling schedule of T steps: `sigmas` has T+1 entries ending at 0, `timesteps` has T
/// entries (the model's timestep input at each step).
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub sigmas: Vec<f64>,
    pub timesteps: Vec<f64>,
}

impl Schedule {
    /// Builds the `kind` schedule for `steps` steps at timestep shift `shift`.
    pub fn new(kind: ScheduleKind, steps: usize, shift: f64) -> Result<Self> {
        if steps == 0 {
            return Err(CoreError::InvalidSetting(
                "the number of steps must be at least 1".into(),
            ));
        }
        if !(shift.is_finite() && shift > 0.0) {
            return Err(CoreError::InvalidSetting(format!(
                "shift must be a positive number, got {shift}"
            )));
        }
        let n = steps;
        let (mut sigmas, integer_t): (Vec<f64>, bool) = match kind {
            ScheduleKind::Linear => (
                linspace(1.0, 0.0, n + 1)[..n]
                    .iter()
                    .map(|&s| shift_sigma(s, shift))
                    .collect(),
                false,
            ),
            ScheduleKind::FlowMatchEuler => {
                // The training table's smallest sigma is the shifted 1/1000 (stored in f32).
                let sigma_min = shift_sigma(1.0 / NUM_TRAIN_TIMESTEPS, shift) as f32 as f64;
                let t = linspace(NUM_TRAIN_TIMESTEPS, sigma_min * NUM_TRAIN_TIMESTEPS, n);
                let s = t
                    .iter()
                    .map(|&t| shift_sigma(t / NUM_TRAIN_TIMESTEPS, shift) as f32 as f64);
                (s.collect(), false)
            }
            ScheduleKind::DiffusersUniPc => {
                let grid = linspace(1.0, 1.0 / NUM_TRAIN_TIMESTEPS, n + 1);
                let mut s: Vec<f64> = grid[..n].iter().map(|&s| shift_sigma(s, shift)).collect();
                if (s[0] - 1.0).abs() < 1e-6 {
                    s[0] -= 1e-6;
                }
                (s, true)
            }
            ScheduleKind::WanOfficial => {
                // The official scheduler reads its largest training sigma back out of an f32 tensor.
                let sigma_max = (1.0 - 1.0 / NUM_TRAIN_TIMESTEPS) as f32 as f64;
                let grid = linspace(sigma_max, 0.0, n + 1);
                (
                    grid[..n].iter().map(|&s| shift_sigma(s, shift)).collect(),
                    true,
                )
            }
        };
        let timesteps = sigmas
            .iter()
            .map(|&s| {
                let t = s * NUM_TRAIN_TIMESTEPS;
                if integer_t {
                    t.trunc()
                } else {
                    t
                }
            })
            .collect();
        sigmas.push(0.0);
        Ok(Self { sigmas, timesteps })
    }

    /// Number of steps T.
    pub fn steps(&self) -> usize {
        self.timesteps.len()
    }

    /// First step whose timestep is below `boundary` (Wan2.2 A14B: where the low-noise expert
    /// takes over, boundary = ratio·1000), if that happens after step 0.
    pub fn expert_switch_step(&self, boundary: f64) -> Option<usize> {
        self.timesteps
            .iter()
            .position(|&t| t < boundary)
            .filter(|&i| i > 0)
    }
}

/// `numpy.linspace(start, stop, num)` with the endpoint included.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => vec![],
        1 => vec![start],
        _ => {
            let step = (stop - start) / (num - 1) as f64;
            let mut v: Vec<f64> = (0..num).map(|i| start + i as f64 * step).collect();
            v[num - 1] = stop;
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_keeps_endpoints_and_moves_the_middle_up() {
        assert_eq!(shift_sigma(0.0, 5.0), 0.0);
        assert_eq!(shift_sigma(1.0, 5.0), 1.0);
        assert!(shift_sigma(0.5, 5.0) > 0.8);
    }

    #[test]
    fn every_schedule_ends_at_zero_and_decreases() {
        for kind in [
            ScheduleKind::Linear,
            ScheduleKind::FlowMatchEuler,
            ScheduleKind::DiffusersUniPc,
            ScheduleKind::WanOfficial,
        ] {
            let s = Schedule::new(kind, 7, 3.0).unwrap();
            assert_eq!(s.sigmas.len(), 8);
            assert_eq!(*s.sigmas.last().unwrap(), 0.0);
            assert!(s.sigmas.windows(2).all(|w| w[0] > w[1]), "{kind:?}");
        }
    }

    #[test]
    fn bad_settings_are_errors() {
        assert!(Schedule::new(ScheduleKind::Linear, 0, 3.0).is_err());
        assert!(Schedule::new(ScheduleKind::Linear, 4, 0.0).is_err());
        assert!("nope".parse::<ScheduleKind>().is_err());
    }
}
