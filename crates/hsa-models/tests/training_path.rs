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
        .map(|i| ((i as f32 * 0.37 + seed).sin() * 1.3))
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
