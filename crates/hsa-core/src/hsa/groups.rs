//! Group specs: which fraction of the tokens is evaluated at which stride.
//!
//! A spec is a list of `(fraction p_k, stride m_k)`, written `0.2:1,0.3:2,0.5:4`. After the
//! warm-up the ranked tokens are cut into groups of `floor(p_k·N)` tokens (the remainder goes
//! to the last group); group k is evaluated every `m_k`-th step of the heterogeneous phase.

use std::fmt;
use std::str::FromStr;

use crate::{CoreError, Result};

/// Tolerance on `Σ p_k = 1`.
pub const FRACTION_SUM_TOLERANCE: f64 = 1e-6;

/// Slack added before flooring `p_k·N`, so that a fraction written in decimal (0.29 of 100
/// is 28.999999999999996 in binary) gives the group size a reader expects.
const FLOOR_SLACK: f64 = 1e-9;

/// One group of a spec: a fraction of the tokens and the stride at which they are evaluated.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Group {
    pub fraction: f64,
    pub stride: usize,
}

/// A validated group spec: fractions in (0, 1] summing to 1, first stride 1, strides strictly
/// increasing. The first group is the most dynamic one and is evaluated at every step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GroupSpec {
    groups: Vec<Group>,
}

impl GroupSpec {
    /// Validates and builds a spec.
    pub fn new(groups: Vec<Group>) -> Result<Self> {
        let bad = |msg: String| Err(CoreError::InvalidSetting(format!("group spec: {msg}")));
        if groups.is_empty() {
            return bad("no groups given (expected e.g. 0.2:1,0.3:2,0.5:4)".into());
        }
        for (k, g) in groups.iter().enumerate() {
            if !(g.fraction.is_finite() && g.fraction > 0.0 && g.fraction <= 1.0) {
                return bad(format!(
                    "group {} has fraction {}, but every fraction must be in (0, 1]",
                    k + 1,
                    g.fraction
                ));
            }
        }
        if groups[0].stride != 1 {
            return bad(format!(
                "the first group must have stride 1 (the most dynamic tokens are evaluated at \
                 every step), got stride {}",
                groups[0].stride
            ));
        }
        if let Some(w) = groups.windows(2).find(|w| w[1].stride <= w[0].stride) {
            return bad(format!(
                "strides must be strictly increasing, found {} then {}",
                w[0].stride, w[1].stride
            ));
        }
        let sum: f64 = groups.iter().map(|g| g.fraction).sum();
        if (sum - 1.0).abs() > FRACTION_SUM_TOLERANCE {
            return bad(format!("fractions must sum to 1, they sum to {sum}"));
        }
        Ok(Self { groups })
    }

    /// The spec `1.0:1`: every token at every step (plain FM Euler).
    pub fn dense() -> Self {
        Self {
            groups: vec![Group {
                fraction: 1.0,
                stride: 1,
            }],
        }
    }

    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// Number of groups K.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Always false: a valid spec has at least one group.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Strides `m_k` in group order.
    pub fn strides(&self) -> Vec<usize> {
        self.groups.iter().map(|g| g.stride).collect()
    }

    /// Group sizes for `n` tokens: `floor(p_k·n)` for all but the last group, which takes the
    /// remainder. The sizes always sum to `n`.
    pub fn sizes(&self, n: usize) -> Vec<usize> {
        let mut left = n;
        let mut sizes = Vec::with_capacity(self.groups.len());
        for g in &self.groups[..self.groups.len() - 1] {
            let s = ((g.fraction * n as f64 + FLOOR_SLACK).floor() as usize).min(left);
            sizes.push(s);
            left -= s;
        }
        sizes.push(left);
        sizes
    }
}

impl FromStr for GroupSpec {
    type Err = CoreError;

    /// Parses `fraction:stride` pairs separated by commas, e.g. `0.2:1,0.3:2,0.5:4`.
    fn from_str(s: &str) -> Result<Self> {
        let mut groups = Vec::new();
        for item in s.split(',') {
            let item = item.trim();
            let bad = || {
                CoreError::InvalidSetting(format!(
                    "group spec '{s}': cannot read '{item}', expected fraction:stride as in \
                     0.2:1,0.3:2,0.5:4"
                ))
            };
            let (fraction, stride) = item.split_once(':').ok_or_else(bad)?;
            let fraction: f64 = fraction.trim().parse().map_err(|_| bad())?;
            let stride: usize = stride.trim().parse().map_err(|_| bad())?;
            groups.push(Group { fraction, stride });
        }
        Self::new(groups)
    }
}

impl fmt::Display for GroupSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, g) in self.groups.iter().enumerate() {
            if k > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}:{}", g.fraction, g.stride)?;
        }
        Ok(())
    }
}

impl TryFrom<String> for GroupSpec {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<GroupSpec> for String {
    fn from(spec: GroupSpec) -> String {
        spec.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        s.parse::<GroupSpec>().unwrap_err().to_string()
    }

    #[test]
    fn parses_and_prints_round_trip() {
        let spec: GroupSpec = " 0.2:1, 0.3:2,0.5:4 ".parse().unwrap();
        assert_eq!(spec.strides(), vec![1, 2, 4]);
        assert_eq!(spec.to_string(), "0.2:1,0.3:2,0.5:4");
        assert_eq!(spec.to_string().parse::<GroupSpec>().unwrap(), spec);
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(json, "\"0.2:1,0.3:2,0.5:4\"");
        assert_eq!(serde_json::from_str::<GroupSpec>(&json).unwrap(), spec);
    }

    #[test]
    fn invalid_specs_say_what_is_wrong() {
        assert!(err("").contains("cannot read"));
        assert!(err("0.5:1,0.5").contains("expected fraction:stride"));
        assert!(err("0.5:1,x:2").contains("cannot read 'x:2'"));
        assert!(err("0.5:2,0.5:4").contains("first group must have stride 1"));
        assert!(err("0.5:1,0.5:1").contains("strictly increasing"));
        assert!(err("0.3:1,0.3:4,0.4:2").contains("strictly increasing"));
        assert!(err("0.5:1,0.4:2").contains("sum to 1"));
        assert!(err("1.2:1,-0.2:2").contains("(0, 1]"));
        assert!(err("1.0:1,0:2").contains("(0, 1]"));
        assert!(err("nan:1").contains("(0, 1]"));
        assert!(GroupSpec::new(vec![]).is_err());
    }

    #[test]
    fn sizes_floor_and_give_the_remainder_to_the_last_group() {
        let spec: GroupSpec = "0.2:1,0.3:2,0.5:4".parse().unwrap();
        assert_eq!(spec.sizes(10), vec![2, 3, 5]);
        assert_eq!(spec.sizes(7), vec![1, 2, 4]);
        assert_eq!(spec.sizes(0), vec![0, 0, 0]);
        let spec: GroupSpec = "0.29:1,0.71:2".parse().unwrap();
        assert_eq!(spec.sizes(100), vec![29, 71]);
        let spec: GroupSpec = "0.3333333:1,0.3333333:2,0.3333334:4".parse().unwrap();
        assert_eq!(spec.sizes(3), vec![0, 0, 3]);
        assert_eq!(GroupSpec::dense().sizes(5), vec![5]);
    }
}
