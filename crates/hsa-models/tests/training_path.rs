//! candle's fused CPU kernels (norms, softmax, RoPE, attention) have no backward pass; when
//! gradients are tracked the layers switch to plain ops. Both paths must give the same values,
//! and the tracked one must reach every variable.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::rel_l2;
use hsa_models::nn::{LayerNorm, RmsNorm};
use hsa_models::wan::{attention::scaled_dot_product, rope};

fn var(shape: &[usize], seed: f32) -> Var {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| (i as f32 * 0.37 + seed).sin() * 1.3)
        .collect();
    Var::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn check(name: &str, f: impl Fn(&Tensor) -> Tensor, x: &Var) {
    let plain = f(&x.as_tensor().detach());
    let tracked = f(x.as_tensor());
    assert!(!plain.track_op() && tracked.track_op(), "{name}: tracking");
    assert!(rel_l2(&tracked, &plain) <= 1e-5, "{name}: paths differ");
    let grads = tracked
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g = grads
        .get(x.as_tensor())
        .unwrap_or_else(|| panic!("{name}: no gradient"));
    assert!(
        g.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0,
        "{name}: zero gradient"
    );
}

#[test]
fn differentiable_paths_match_the_fused_kernels_and_carry_gradients() {
    let dev = Device::Cpu;
    let x = var(&[2, 5, 12], 0.1);
    let ln = LayerNorm::affine(
        var(&[12], 0.3).as_tensor().detach(),
        var(&[12], 0.7).as_tensor().detach(),
        1e-6,
    )
    .unwrap();
    check("layer norm", |t| ln.forward(t).unwrap(), &x);
    let rms = RmsNorm::new(var(&[12], 0.5).as_tensor().detach(), 1e-6).unwrap();
    check("rms norm", |t| rms.forward(t).unwrap(), &x);

    let q = var(&[1, 2, 7, 12], 0.2);
    let cos = Tensor::ones((7, 6), DType::F32, &dev)
        .unwrap()
        .affine(0.6, 0.0)
        .unwrap();
    let sin = Tensor::ones((7, 6), DType::F32, &dev)
        .unwrap()
        .affine(0.8, 0.0)
        .unwrap();
    check("rope", |t| rope::apply(t, &cos, &sin).unwrap(), &q);

    let k = var(&[1, 2, 9, 12], 0.9).as_tensor().detach();
    let v = var(&[1, 2, 9, 12], 1.7).as_tensor().detach();
    check(
        "attention",
        |t| scaled_dot_product(t, &k, &v, 0.3).unwrap(),
        &q,
    );
}

/// An optimiser writes new values into the variables in place; the model built on them must
/// see every update (a weight copied once at build time would silently stay frozen in the
/// forward pass while its variable drifts).
#[test]
fn a_model_built_on_variables_sees_their_updates() {
    use hsa_models::wan::weights::expected_tensors;
    use hsa_models::wan::{WanConfig, WanModel};
    let dev = Device::Cpu;
    let cfg = WanConfig {
        num_heads: 2,
        head_dim: 8,
        in_channels: 3,
        out_channels: 3,
        text_dim: 8,
        ffn_dim: 16,
        num_layers: 1,
        ..WanConfig::wan21_t2v_1_3b()
    };
    let vars: std::collections::HashMap<String, Var> = expected_tensors(&cfg)
        .into_iter()
        .enumerate()
        .map(|(i, (n, s))| (n, var(&s, i as f32)))
        .collect();
    let model = WanModel::build(&cfg, DType::F32, &dev, &|n, _| {
        Ok(vars[n].as_tensor().clone())
    })
    .unwrap();
    // Distinct tokens, so attention weights depend on the queries.
    let x = var(&[1, 3, 1, 4, 4], 2.5).as_tensor().detach();
    let t = Tensor::new(&[500f32], &dev).unwrap();
    let ctx = var(&[1, 2, 8], 4.5).as_tensor().detach();
    let before = model.forward(&x, &t, &ctx, None, None).unwrap();
    for name in [
        "patch_embedding.weight",
        "proj_out.weight",
        "blocks.0.attn1.norm_q.weight",
    ] {
        let v = &vars[name];
        let old = v.as_tensor().copy().unwrap();
        v.set(&(v.as_tensor() * 0.5).unwrap()).unwrap();
        let after = model.forward(&x, &t, &ctx, None, None).unwrap();
        assert!(
            rel_l2(&after, &before) > 1e-6,
            "updating {name} did not change the output"
        );
        v.set(&old).unwrap();
    }
}
