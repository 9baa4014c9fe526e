//! HSA on the real (tiny) Wan DiT: the `1.0:1` spec is FM Euler bit for bit, and every partial
//! step reads, for inactive tokens, exactly the K/V rows written at their last evaluation.

mod common;

use std::collections::HashMap;

use candle_core::{Device, IndexOp, Tensor};
use common::{load, wan_case};
use hsa_core::{
    sample_fm_euler, sample_hsa, ActiveSet, Branch, Denoiser, GroupSpec, Guidance, HsaConfig,
    Schedule, ScheduleKind, TokenGrid,
};
use hsa_models::wan::patch::{grid_for, patchify};
use hsa_models::wan::{WanDenoiser, WanModel};

struct Setup {
    model: WanModel,
    fx: HashMap<String, Tensor>,
    noise: Tensor,
    grid: TokenGrid,
}

fn setup() -> Setup {
    let fx = load(&wan_case("euler_cfg.safetensors"));
    let model = WanModel::load_dir(&wan_case("t2v"), None, &Device::Cpu).unwrap();
    let noise = patchify(&fx["noise"], [1, 2, 2]).unwrap().i(0).unwrap();
    let (_, _, f, h, w) = fx["noise"].dims5().unwrap();
    let grid = grid_for(f, h, w, [1, 2, 2]).unwrap();
    Setup {
        model,
        fx,
        noise,
        grid,
    }
}

#[test]
fn dense_spec_reproduces_fm_euler_bit_for_bit_with_and_without_cfg() {
    let s = setup();
    let schedule = Schedule::new(ScheduleKind::FlowMatchEuler, 8, 3.0).unwrap();
    for g in [1.0, 5.0] {
        let guidance = Guidance::new(g).unwrap();
        let den = || {
            WanDenoiser::new(
                &s.model,
                s.grid,
                &s.fx["encoder_hidden_states"],
                Some(&s.fx["negative_encoder_hidden_states"]),
                None,
            )
            .unwrap()
        };
        let fm = sample_fm_euler(&mut den(), &s.noise, &schedule, guidance, &mut |_| {}).unwrap();
        let cfg = HsaConfig::new("1.0:1".parse::<GroupSpec>().unwrap(), 3, 0);
        let hsa = sample_hsa(&mut den(), &s.noise, &schedule, guidance, &cfg, &mut |_| {}).unwrap();
        let diff = (&fm - &hsa.latents)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0, "guidance {g}");
    }
}

/// Per token: the (K, V) rows written at its last evaluation, if any.
type WrittenRows = Vec<Option<(Tensor, Tensor)>>;

/// Wraps the Wan denoiser and checks the K/V cache around every call.
struct Instrumented<'m> {
    inner: WanDenoiser<'m>,
    /// (branch, layer) -> the rows each token wrote.
    written: HashMap<(usize, usize), WrittenRows>,
    partial_calls: usize,
    checked_rows: usize,
}

impl Instrumented<'_> {
    fn rows(&self, branch: Branch, layer: usize, token: usize) -> (Tensor, Tensor) {
        let kv = self.inner.cache(branch).layer(layer).expect("cache filled");
        (
            kv.k.i((.., .., token, ..)).unwrap(),
            kv.v.i((.., .., token, ..)).unwrap(),
        )
    }
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    hsa_models::nn::max_abs_diff(a, b).unwrap() == 0.0
}

impl Denoiser for Instrumented<'_> {
    fn grid(&self) -> TokenGrid {
        self.inner.grid()
    }
    fn token_dim(&self) -> usize {
        self.inner.token_dim()
    }
    fn has_uncond(&self) -> bool {
        self.inner.has_uncond()
    }
    fn reset(&mut self) -> hsa_core::Result<()> {
        self.written.clear();
        self.inner.reset()
    }
    fn velocity(
        &mut self,
        x: &Tensor,
        t: f64,
        branch: Branch,
        active: Option<&ActiveSet>,
    ) -> hsa_core::Result<Tensor> {
        let v = self.inner.velocity(x, t, branch, active)?;
        let n = self.grid().len();
        let layers = self.inner.cache(branch).num_layers();
        let evaluated: Vec<usize> = match active {
            None => (0..n).collect(),
            Some(s) => s.ids().iter().map(|&i| i as usize).collect(),
        };
        if active.is_some() {
            self.partial_calls += 1;
            let inactive: Vec<usize> = (0..n).filter(|i| !evaluated.contains(i)).collect();
            for layer in 0..layers {
                for &tok in &inactive {
                    let (k, v) = self.rows(branch, layer, tok);
                    let (wk, wv) = self.written[&(branch.index(), layer)][tok]
                        .clone()
                        .expect("token evaluated before");
                    assert!(
                        same(&k, &wk) && same(&v, &wv),
                        "stale K/V of token {tok}, layer {layer}"
                    );
                    self.checked_rows += 1;
                }
            }
        }
        for layer in 0..layers {
            let mut rows = self
                .written
                .remove(&(branch.index(), layer))
                .unwrap_or_else(|| vec![None; n]);
            for &tok in &evaluated {
                rows[tok] = Some(self.rows(branch, layer, tok));
            }
            self.written.insert((branch.index(), layer), rows);
        }
        Ok(v)
    }
}

#[test]
fn partial_steps_read_the_kv_rows_of_each_tokens_last_evaluation() {
    let s = setup();
    let inner = WanDenoiser::new(
        &s.model,
        s.grid,
        &s.fx["encoder_hidden_states"],
        Some(&s.fx["negative_encoder_hidden_states"]),
        None,
    )
    .unwrap();
    let mut den = Instrumented {
        inner,
        written: HashMap::new(),
        partial_calls: 0,
        checked_rows: 0,
    };
    let schedule = Schedule::new(ScheduleKind::FlowMatchEuler, 12, 3.0).unwrap();
    let cfg = HsaConfig::new("0.25:1,0.25:2,0.5:4".parse::<GroupSpec>().unwrap(), 3, 1);
    let run = sample_hsa(
        &mut den,
        &s.noise,
        &schedule,
        Guidance::new(4.0).unwrap(),
        &cfg,
        &mut |_| {},
    )
    .unwrap();
    assert!(
        den.partial_calls >= 8,
        "{} partial calls",
        den.partial_calls
    );
    assert!(den.checked_rows > 1000, "{} rows checked", den.checked_rows);
    assert!(run.stats.token_step_fraction < 0.8);
}
