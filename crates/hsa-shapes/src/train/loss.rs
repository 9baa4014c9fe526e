//! The training objective: flow matching (plain or motion-weighted) and, where the run
//! trains one, the motion head's displacement loss.

use candle_core::{Device, Tensor, Var};
use hsa_models::wan::WanModel;

use super::text_stack::TextStack;
use super::{motion_head, BatchDraw, Result, TrainConfig};

/// The losses of one update.
pub struct StepLoss {
    /// What the update minimises: `velocity + displacement_weight · displacement`.
    pub total: Tensor,
    /// The flow-matching loss (plain or motion-weighted mean).
    pub velocity: Tensor,
    /// The motion head's loss, where the run trains one.
    pub displacement: Option<Tensor>,
}

/// The losses of one drawn batch. `head` holds the motion head's variables (empty when the
/// run trains none).
pub fn training_loss(
    model: &WanModel,
    head: &[Var],
    text: &TextStack,
    cfg: &TrainConfig,
    draw: &BatchDraw,
    device: &Device,
) -> Result<StepLoss> {
    let shape = (cfg.batch, 3, cfg.frames, cfg.height, cfg.width);
    let x0 = Tensor::from_slice(&draw.x0, shape, device)?;
    let eps = Tensor::from_slice(&draw.eps, shape, device)?;
    let ctx = text.embed_batch(&draw.prompts)?;
    let sigmas = Tensor::from_slice(&draw.sigmas, cfg.batch, device)?;
    let read = (!head.is_empty()).then(|| motion_head::trace_name(cfg));
    let (err, hidden) = velocity_error(model, &x0, &eps, &sigmas, &ctx, read.as_deref())?;
    let velocity = if draw.weights.is_empty() {
        err.mean_all()?
    } else {
        let weights = Tensor::from_slice(
            &draw.weights,
            (cfg.batch, 1, cfg.frames, cfg.height, cfg.width),
            device,
        )?;
        weighted_mean(&err, &weights)?
    };
    let displacement = match hidden {
        Some(h) => {
            let target = Tensor::from_slice(
                &draw.displacement,
                (cfg.batch, 2, cfg.frames, cfg.height, cfg.width),
                device,
            )?;
            Some(motion_head::loss(cfg, head, &h, &target)?)
        }
        None => None,
    };
    let total = match &displacement {
        Some(d) => (&velocity + (d * cfg.displacement_weight)?)?,
        None => velocity.clone(),
    };
    Ok(StepLoss {
        total,
        velocity,
        displacement,
    })
}

/// Wan's flow-matching objective: `mean((v − (ε − x₀))²)` where `v` is the model's velocity
/// at `x_σ = (1 − σ)·x₀ + σ·ε` and timestep `1000·σ`. `x0`, `eps` `[B, C, F, H, W]`,
/// `sigmas` `[B]`, `ctx` the text encoder's output `[B, S, text_dim]`.
pub fn flow_matching_loss(
    model: &WanModel,
    x0: &Tensor,
    eps: &Tensor,
    sigmas: &Tensor,
    ctx: &Tensor,
) -> Result<Tensor> {
    Ok(velocity_error(model, x0, eps, sigmas, ctx, None)?
        .0
        .mean_all()?)
}

/// The flow-matching objective as a weighted mean: `Σ w·(v − (ε − x₀))² / Σ w`, with
/// `weights` `[B, 1, F, H, W]` shared by the three channels. Equal weights give
/// [`flow_matching_loss`].
pub fn weighted_flow_matching_loss(
    model: &WanModel,
    x0: &Tensor,
    eps: &Tensor,
    sigmas: &Tensor,
    ctx: &Tensor,
    weights: &Tensor,
) -> Result<Tensor> {
    weighted_mean(
        &velocity_error(model, x0, eps, sigmas, ctx, None)?.0,
        weights,
    )
}

/// `Σ w·err / (C · Σ w)` for `err` `[B, C, F, H, W]` and `weights` `[B, 1, F, H, W]`.
fn weighted_mean(err: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let total = (weights.sum_all()? * err.dim(1)? as f64)?;
    Ok(err
        .broadcast_mul(weights)?
        .sum_all()?
        .broadcast_div(&total)?)
}

/// `(v − (ε − x₀))²` per value, `[B, C, F, H, W]`, and, when `read` names one, that DiT
/// trace entry (a hidden state `[B, N, dim]`, [`motion_head::trace_name`]) on the gradient path.
fn velocity_error(
    model: &WanModel,
    x0: &Tensor,
    eps: &Tensor,
    sigmas: &Tensor,
    ctx: &Tensor,
    read: Option<&str>,
) -> Result<(Tensor, Option<Tensor>)> {
    let s = sigmas.reshape((sigmas.elem_count(), 1, 1, 1, 1))?;
    let xt = (x0.broadcast_mul(&(1.0 - &s)?)? + eps.broadcast_mul(&s)?)?;
    let mut hidden = None;
    let mut keep = |name: &str, t: &Tensor| {
        if Some(name) == read {
            hidden = Some(t.clone());
        }
    };
    let trace: Option<hsa_models::wan::dit::Trace> = match read {
        Some(_) => Some(&mut keep),
        None => None,
    };
    let v = model.forward(
        &with_positions(model, &xt)?,
        &(sigmas * 1000.0)?,
        ctx,
        None,
        trace,
    )?;
    Ok(((v - (eps - x0)?)?.sqr()?, hidden))
}

/// The DiT's input for the noisy clips `xt` `[B, 3, F, H, W]`: `xt` itself, or, for a model
/// with position channels ([`TrainConfig::position_channels`]), `xt` with them appended.
pub fn with_positions(model: &WanModel, xt: &Tensor) -> Result<Tensor> {
    let cfg = model.config();
    if cfg.in_channels == cfg.out_channels {
        return Ok(xt.clone());
    }
    let (b, _, f, h, w) = xt.dims5()?;
    let p = hsa_models::wan::position_channels(f, h, w, xt.device())?
        .to_dtype(xt.dtype())?
        .broadcast_as((b, hsa_models::wan::POSITION_CHANNELS, f, h, w))?;
    Ok(Tensor::cat(&[xt, &p], 1)?)
}

#[cfg(test)]
mod tests {
    use super::super::tests::tiny_with_text;
    use super::super::{draw_batch, initial_weights, model_over};
    use super::*;
    use candle_core::DType;
    use hsa_models::wan::dit::init_values;
    use hsa_models::wan::weights::expected_tensors;

    #[test]
    fn the_weighted_loss_is_a_weighted_mean_of_the_squared_velocity_error() {
        let (cfg, text, _dir) = tiny_with_text();
        let (names, vars) = initial_weights(&cfg, &Device::Cpu).unwrap();
        let model = model_over(&cfg, &names, &vars).unwrap();
        let draw = draw_batch(&cfg, 0, 1);
        let dims = (cfg.batch, 3, cfg.frames, cfg.height, cfg.width);
        let x0 = Tensor::from_slice(&draw.x0, dims, &Device::Cpu).unwrap();
        let eps = Tensor::from_slice(&draw.eps, dims, &Device::Cpu).unwrap();
        let sig = Tensor::from_slice(&draw.sigmas, cfg.batch, &Device::Cpu).unwrap();
        let ctx = text.embed_batch(&draw.prompts).unwrap();
        let wdims = (cfg.batch, 1, cfg.frames, cfg.height, cfg.width);
        let scalar = |t: Tensor| t.to_scalar::<f32>().unwrap();
        // Equal weights (of any size) give the plain mean.
        let equal = Tensor::full(2.5f32, wdims, &Device::Cpu).unwrap();
        let plain = scalar(flow_matching_loss(&model, &x0, &eps, &sig, &ctx).unwrap());
        let weighted =
            scalar(weighted_flow_matching_loss(&model, &x0, &eps, &sig, &ctx, &equal).unwrap());
        assert!(
            (plain - weighted).abs() <= 1e-6 * plain,
            "{plain} vs {weighted}"
        );
        // Weight only on the first frame: the mean error of that frame alone.
        let first = Tensor::ones(wdims, DType::F32, &Device::Cpu)
            .unwrap()
            .narrow(2, 0, 1)
            .unwrap()
            .pad_with_zeros(2, 0, cfg.frames - 1)
            .unwrap();
        let err = velocity_error(&model, &x0, &eps, &sig, &ctx, None)
            .unwrap()
            .0;
        let want = scalar(err.narrow(2, 0, 1).unwrap().mean_all().unwrap());
        let got =
            scalar(weighted_flow_matching_loss(&model, &x0, &eps, &sig, &ctx, &first).unwrap());
        assert!((want - got).abs() <= 1e-5 * want, "{want} vs {got}");
        assert!((want - plain).abs() > 1e-3 * plain, "frames differ");
    }

    /// The run's DiT with every weight random (training zeroes some, whose inputs would then
    /// get no gradient), as named variables and the model over them.
    fn random_model(cfg: &TrainConfig) -> (Vec<String>, Vec<Var>, WanModel) {
        let wcfg = cfg.dit_config();
        let (names, shapes): (Vec<String>, Vec<Vec<usize>>) =
            expected_tensors(&wcfg).into_iter().unzip();
        let vars: Vec<Var> = names
            .iter()
            .zip(&shapes)
            .map(|(n, s)| {
                Var::from_vec(init_values(n, s, wcfg.dim(), 1), s.as_slice(), &Device::Cpu).unwrap()
            })
            .collect();
        let model = model_over(cfg, &names, &vars).unwrap();
        (names, vars, model)
    }

    /// Squared norm of `var`'s gradient, `None` where it has none.
    fn grad_norm(grads: &candle_core::backprop::GradStore, var: &Var) -> Option<f32> {
        let g = grads.get(var.as_tensor())?;
        Some(
            g.sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
        )
    }

    #[test]
    fn every_parameter_receives_a_gradient() {
        let (cfg, text, _dir) = tiny_with_text();
        let (names, vars, model) = random_model(&cfg);
        let draw = draw_batch(&cfg, 0, 2);
        let loss = training_loss(&model, &[], &text, &cfg, &draw, &Device::Cpu).unwrap();
        let grads = loss.total.backward().unwrap();
        for (name, var) in names.iter().zip(&vars) {
            let norm = grad_norm(&grads, var).unwrap_or_else(|| panic!("no gradient for {name}"));
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{name}: gradient norm {norm}"
            );
        }
    }

    #[test]
    fn the_motion_head_adds_its_loss_and_its_gradient_reaches_every_block() {
        let (cfg, text, _dir) = tiny_with_text();
        let cfg = TrainConfig {
            layers: 2,
            motion_weight: 2.0,
            displacement_weight: 0.5,
            ..cfg
        };
        let (names, vars, model) = random_model(&cfg);
        let head = motion_head::initial(&cfg, &Device::Cpu).unwrap();
        let draw = draw_batch(&cfg, 1, 2);
        let scalar = |t: &Tensor| t.to_scalar::<f32>().unwrap();
        let with = training_loss(&model, &head, &text, &cfg, &draw, &Device::Cpu).unwrap();
        let without = training_loss(&model, &[], &text, &cfg, &draw, &Device::Cpu).unwrap();
        // The head leaves the velocity loss alone and adds its own, weighted.
        assert_eq!(scalar(&with.velocity), scalar(&without.velocity));
        assert!(without.displacement.is_none());
        let d = scalar(with.displacement.as_ref().unwrap());
        assert!(d > 0.0 && d.is_finite());
        let want = scalar(&with.velocity) + 0.5 * d;
        assert!((scalar(&with.total) - want).abs() <= 1e-6 * want);
        // Its gradient reaches both blocks and the head (the velocity loss alone gives the
        // head none).
        let grads = with.displacement.unwrap().backward().unwrap();
        let norm = |var: &Var| grad_norm(&grads, var).unwrap();
        for var in head.iter() {
            assert!(norm(var) > 0.0);
        }
        for block in [
            "blocks.0.ffn.net.0.proj.weight",
            "blocks.1.attn1.to_q.weight",
        ] {
            let i = names.iter().position(|n| n == block).unwrap();
            assert!(norm(&vars[i]) > 0.0, "{block}");
        }
        let plain = without.total.backward().unwrap();
        assert!(plain.get(head[0].as_tensor()).is_none());
    }

    #[test]
    fn a_head_on_the_first_block_trains_that_block_and_not_the_later_ones() {
        let (cfg, text, _dir) = tiny_with_text();
        let cfg = TrainConfig {
            layers: 2,
            displacement_weight: 1.0,
            displacement_layer: Some(1),
            ..cfg
        };
        cfg.validate().unwrap();
        let (names, vars, model) = random_model(&cfg);
        let head = motion_head::initial(&cfg, &Device::Cpu).unwrap();
        let draw = draw_batch(&cfg, 1, 2);
        let loss = training_loss(&model, &head, &text, &cfg, &draw, &Device::Cpu).unwrap();
        let displacement = loss.displacement.unwrap();
        let grads = displacement.backward().unwrap();
        let grad = |name: &str| {
            let i = names.iter().position(|n| n == name).unwrap();
            grad_norm(&grads, &vars[i])
        };
        assert!(grad("blocks.0.attn1.to_q.weight").is_some_and(|g| g > 0.0));
        assert!(grad("blocks.1.attn1.to_q.weight").is_none_or(|g| g == 0.0));
        assert!(grad("proj_out.weight").is_none_or(|g| g == 0.0));
        // It reads block 1's output, not the last one's: the default head's loss differs.
        let last = TrainConfig {
            displacement_layer: None,
            ..cfg.clone()
        };
        let other = training_loss(&model, &head, &text, &last, &draw, &Device::Cpu).unwrap();
        let scalar = |t: &Tensor| t.to_scalar::<f32>().unwrap();
        assert_ne!(scalar(&displacement), scalar(&other.displacement.unwrap()));
        // A layer outside the model, or without a head, is refused.
        for (layer, weight) in [(0, 1.0), (3, 1.0), (1, 0.0)] {
            let bad = TrainConfig {
                displacement_layer: Some(layer),
                displacement_weight: weight,
                ..cfg.clone()
            };
            assert!(bad.validate().is_err(), "layer {layer} weight {weight}");
        }
    }
}
