//! The methods an evaluation compares and how each is set to a runtime budget.
//!
//! A method is written `NAME[:KEY=VALUE]...`, e.g. `hsa`, `hsa:score=random`,
//! `hsa:warmup=4:tail=2`, `hsa:groups=0.1@1+0.6@2+0.3@4` (explicit groups, fraction@stride),
//! `teacache:mode=e0`. Budgets are fractions of the reference FM(T)
//! run's cost:
//! * `fm`: round(budget * T) Euler steps (cost is proportional to steps);
//! * `hsa`: the planner's token-step budget;
//! * `ras`: the keep ratio that gives the budget's token-step fraction (closed form);
//! * `teacache`: the threshold is searched (see [`crate::harness`]) because its cost depends
//!   on the model's outputs.

use hsa_pipeline::sampling::SamplerOptions;

use crate::{EvalError, Result};

/// Which sampler family a method runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodKind {
    Fm,
    Hsa,
    TeaCache,
    Ras,
}

/// A method with its options, as written on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Method {
    /// The text it was parsed from; names its results.
    pub label: String,
    pub kind: MethodKind,
    pub options: Vec<(String, String)>,
}

const HSA_KEYS: &[&str] = &["score", "warmup", "tail", "smoothing", "groups"];
const RAS_KEYS: &[&str] = &["warmup", "tail"];
const TEACACHE_KEYS: &[&str] = &["mode", "coefficients"];

impl std::str::FromStr for Method {
    type Err = EvalError;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let mut parts = s.split(':');
        let name = parts.next().unwrap_or_default();
        let (kind, keys): (_, &[&str]) = match name {
            "fm" => (MethodKind::Fm, &[]),
            "hsa" => (MethodKind::Hsa, HSA_KEYS),
            "teacache" => (MethodKind::TeaCache, TEACACHE_KEYS),
            "ras" => (MethodKind::Ras, RAS_KEYS),
            other => {
                return Err(EvalError::Invalid(format!(
                    "unknown method '{other}' (expected fm, hsa, teacache or ras)"
                )))
            }
        };
        let mut options = Vec::new();
        for p in parts {
            let (k, v) = p.split_once('=').ok_or_else(|| {
                EvalError::Invalid(format!("method option '{p}' in '{s}' is not KEY=VALUE"))
            })?;
            if !keys.contains(&k) {
                return Err(EvalError::Invalid(format!(
                    "method '{name}' has no option '{k}' (options: {})",
                    if keys.is_empty() {
                        "none".to_string()
                    } else {
                        keys.join(", ")
                    }
                )));
            }
            options.push((k.to_string(), v.to_string()));
        }
        Ok(Self {
            label: s.to_string(),
            kind,
            options,
        })
    }
}

/// Parses a comma-separated method list; duplicates are an error.
pub fn parse_methods(s: &str) -> Result<Vec<Method>> {
    let methods: Vec<Method> = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(str::parse)
        .collect::<Result<_>>()?;
    if methods.is_empty() {
        return Err(EvalError::Invalid("--methods is empty".into()));
    }
    for (i, m) in methods.iter().enumerate() {
        if methods[..i].iter().any(|o| o.label == m.label) {
            return Err(EvalError::Invalid(format!(
                "method '{}' is listed twice",
                m.label
            )));
        }
    }
    Ok(methods)
}

impl Method {
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A whole-number option, if given.
    fn usize_option(&self, key: &str) -> Result<Option<usize>> {
        self.option(key)
            .map(|v| {
                v.parse().map_err(|_| {
                    EvalError::Invalid(format!("option {key}={v}: expected a whole number"))
                })
            })
            .transpose()
    }

    /// Steps the method runs with when the reference uses `steps` (fewer for `fm`).
    pub fn steps_at(&self, steps: usize, budget: f64) -> usize {
        match self.kind {
            MethodKind::Fm => ((budget * steps as f64).round() as usize).clamp(1, steps),
            _ => steps,
        }
    }

    /// Sampler options at `budget`; `teacache_threshold` must be given for TeaCache (found by
    /// the harness's search) together with its polynomial coefficients.
    pub fn sampler_options(
        &self,
        budget: f64,
        teacache: Option<(f64, Vec<f64>)>,
    ) -> Result<SamplerOptions> {
        let mut o = SamplerOptions::default();
        match self.kind {
            MethodKind::Fm => o.sampler = "fm".into(),
            MethodKind::Hsa => {
                o.sampler = "hsa".into();
                o.budget = Some(budget.to_string());
                o.score = self.option("score").map(str::to_string);
                // `fraction@stride+...` on the method line (':' and ',' are taken there).
                o.groups = self
                    .option("groups")
                    .map(|g| g.replace('@', ":").replace('+', ","));
                o.warmup = self.usize_option("warmup")?;
                o.tail = self.usize_option("tail")?;
                o.smoothing = match self.option("smoothing") {
                    None | Some("no") | Some("false") => false,
                    Some("yes") | Some("true") => true,
                    Some(v) => {
                        return Err(EvalError::Invalid(format!(
                            "option smoothing={v}: expected yes or no"
                        )))
                    }
                };
            }
            MethodKind::Ras => {
                o.sampler = "ras".into();
                o.budget = Some(budget.to_string());
                o.warmup = self.usize_option("warmup")?;
                o.tail = self.usize_option("tail")?;
            }
            MethodKind::TeaCache => {
                let (threshold, coefficients) = teacache.ok_or_else(|| {
                    EvalError::Invalid("TeaCache needs a searched threshold".into())
                })?;
                o.sampler = "teacache".into();
                o.teacache_threshold = Some(threshold);
                o.teacache_mode = self.option("mode").map(str::to_string);
                o.teacache_coefficients = Some(coefficients);
            }
        }
        Ok(o)
    }

    /// `e` or `e0` (TeaCache's indicator).
    pub fn teacache_mode(&self) -> &str {
        self.option("mode").unwrap_or("e")
    }

    /// Whether TeaCache uses the published Wan2.1 coefficients instead of a fit on this model.
    pub fn teacache_published(&self) -> Result<bool> {
        match self.option("coefficients") {
            None | Some("fit") => Ok(false),
            Some("published") => Ok(true),
            Some(v) => Err(EvalError::Invalid(format!(
                "option coefficients={v}: expected fit or published"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse_with_options_and_reject_nonsense() {
        let m = parse_methods("fm, hsa:score=random:warmup=4,teacache:mode=e0,ras").unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].kind, MethodKind::Hsa);
        assert_eq!(m[1].option("warmup"), Some("4"));
        assert_eq!(m[2].teacache_mode(), "e0");
        for bad in [
            "sdxl",
            "hsa:warmup",
            "fm:score=x",
            "hsa,hsa",
            "",
            "ras:ratio=0.5",
        ] {
            assert!(parse_methods(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn budgets_become_sampler_settings() {
        let fm: Method = "fm".parse().unwrap();
        assert_eq!(fm.steps_at(40, 0.5), 20);
        assert_eq!(fm.steps_at(40, 0.01), 1);
        let g: Method = "hsa:groups=0.1@1+0.9@2".parse().unwrap();
        let o = g.sampler_options(0.5, None).unwrap();
        assert_eq!(o.groups.as_deref(), Some("0.1:1,0.9:2"));
        let hsa: Method = "hsa:tail=2".parse().unwrap();
        let o = hsa.sampler_options(0.25, None).unwrap();
        assert_eq!(
            (o.sampler.as_str(), o.budget.as_deref()),
            ("hsa", Some("0.25"))
        );
        assert_eq!(o.tail, Some(2));
        let tc: Method = "teacache".parse().unwrap();
        assert!(tc.sampler_options(0.5, None).is_err());
        let o = tc
            .sampler_options(0.5, Some((0.1, vec![1.0, 0.0])))
            .unwrap();
        assert_eq!(o.teacache_threshold, Some(0.1));
        let bad: Method = "hsa:warmup=many".parse().unwrap();
        assert!(bad.sampler_options(0.5, None).is_err());
    }
}
