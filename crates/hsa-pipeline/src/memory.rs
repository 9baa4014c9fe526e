//! Process memory: the peak for run reports, and the memory plan `hsa generate` checks before
//! it loads a model (weights, K/V cache, activations, VAE decode) against what the machine has.

use hsa_models::clip::ClipVisionConfig;
use hsa_models::umt5::UMT5Config;
use hsa_models::wan::{WanConfig, WanVaeConfig};

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Memory the kernel can give without swapping (Linux `MemAvailable` in /proc/meminfo), if
/// known.
pub fn available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Parameters of a Wan DiT (diffusers `WanTransformer3DModel`) from its config: embeddings,
/// blocks and head, counted tensor by tensor (the image branch of I2V models included).
pub fn dit_parameters(c: &WanConfig) -> u64 {
    let d = c.dim() as u64;
    let f = c.ffn_dim as u64;
    let k: u64 = c.patch_size.iter().product::<usize>() as u64;
    let lin = |i: u64, o: u64| i * o + o;
    let mut n = lin(c.in_channels as u64 * k, d) // patch embedding
        + lin(c.freq_dim as u64, d) + lin(d, d) // time embedding
        + lin(d, 6 * d) // time projection
        + lin(c.text_dim as u64, d) + lin(d, d); // text embedding
    let mut block = 8 * (d * d + d) + lin(d, f) + lin(f, d) + 6 * d;
    if c.qk_norm {
        block += 4 * d;
    }
    if c.cross_attn_norm {
        block += 2 * d;
    }
    if let Some(img) = c.image_dim {
        let img = img as u64;
        n += 2 * img + lin(img, img) + lin(img, d) + 2 * d;
        block += 2 * (d * d + d) + if c.qk_norm { d } else { 0 };
        if let Some(s) = c.pos_embed_seq_len {
            n += s as u64 * img;
        }
    }
    n + c.num_layers as u64 * block + lin(d, c.out_channels as u64 * k) + 2 * d
}

/// Parameters of a umT5 encoder: embedding, per-layer attention with its own position bias,
/// gated or plain FFN, norms.
pub fn umt5_parameters(c: &UMT5Config) -> u64 {
    let (d, inner, ff) = (c.d_model as u64, c.inner_dim() as u64, c.d_ff as u64);
    let ffn = if c.gated { 3 * d * ff } else { 2 * d * ff };
    let layer =
        4 * d * inner + (c.relative_attention_num_buckets * c.num_heads) as u64 + ffn + 2 * d;
    c.vocab_size as u64 * d + c.num_layers as u64 * layer + d
}

/// Parameters of the Wan VAE decoder (post-quant conv, decoder), approximate within a few
/// percent: every 3×3×3 convolution of the residual blocks, the mid block and the resamplers.
pub fn vae_decoder_parameters(c: &WanVaeConfig) -> u64 {
    let conv3 = |i: usize, o: usize| (27 * i * o + o) as u64;
    let res = |i: usize, o: usize| {
        conv3(i, o) + conv3(o, o) + (i + o) as u64 + if i != o { (i * o + o) as u64 } else { 0 }
    };
    let levels = c.decoder_levels();
    let top = levels.first().map(|l| l.in_dim).unwrap_or(0);
    let z = c.z_dim;
    let mut n = (z * z + z) as u64 + conv3(z, top); // post_quant_conv, conv_in
    n += 2 * res(top, top) + (4 * top * top + 4 * top) as u64; // mid block
    for l in &levels {
        n += res(l.in_dim, l.out_dim) + c.num_res_blocks as u64 * res(l.out_dim, l.out_dim);
        if l.spatial {
            let o = if c.is_residual {
                l.out_dim
            } else {
                l.out_dim / 2
            };
            n += (9 * l.out_dim * o + o) as u64;
            if l.temporal {
                n += (3 * l.out_dim * 2 * l.out_dim + 2 * l.out_dim) as u64;
            }
        }
    }
    let last = levels.last().map(|l| l.out_dim).unwrap_or(0);
    n + last as u64 + conv3(last, c.out_channels)
}

/// What one `hsa generate` run is expected to hold in memory, phase by phase (the text encoder
/// is freed before the DiT loads, the DiT before the VAE decodes). Estimates, not
/// measurements: activations are a rule of thumb (see [`plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryPlan {
    /// DiT weights (both experts for Wan2.2 A14B) in the compute dtype.
    pub weights: u64,
    /// Text encoder weights and activations, while prompts are encoded.
    pub text_encoder: u64,
    /// K/V cache of the token-level samplers: 2·layers·N·D per CFG branch (and expert).
    pub kv_cache: u64,
    /// DiT activations of one dense forward plus the sampler's state tensors.
    pub activations: u64,
    /// VAE weights, one decoded chunk with its time caches, and the output clip.
    pub vae_decode: u64,
    /// Image to video: VAE encoder with the conditioning video, and the CLIP tower (Wan2.1
    /// I2V), while the image is encoded (before the DiT loads); 0 otherwise.
    pub image_encode: u64,
}

/// The sizes a [`MemoryPlan`] is computed from.
#[derive(Debug, Clone)]
pub struct PlanInputs<'a> {
    pub dit: &'a WanConfig,
    /// 1, or 2 for Wan2.2 A14B.
    pub experts: usize,
    /// Bytes per element of the DiT's compute dtype.
    pub dit_bytes: usize,
    /// Video tokens N.
    pub tokens: usize,
    /// 2 under classifier-free guidance, else 1.
    pub branches: usize,
    /// Whether the sampler keeps a K/V cache (hsa, ras).
    pub kv_cache: bool,
    pub text: &'a UMT5Config,
    pub text_bytes: usize,
    pub text_len: usize,
    /// VAE config and the output clip (frames, height, width); `None` for pixel-space models.
    pub vae: Option<(&'a WanVaeConfig, usize, usize, usize)>,
    /// Image to video: whether the VAE encodes a conditioning video, and the CLIP tower's
    /// config when there is one.
    pub image: Option<Option<&'a ClipVisionConfig>>,
}

/// Computes the plan. Activations: `N·(8·D + 2·F)` f32 values for one dense forward (hidden
/// state, modulated input, q/k/v, attention output, FFN hidden before and after the GELU) plus
/// six `[N, P]` f32 state tensors; the VAE chunk: 48 feature maps of the top decoder level
/// (the stacked time taps, caches and residuals of its 3×3×3 convolutions) plus the output
/// clip twice (chunks and their concatenation).
pub fn plan(p: &PlanInputs) -> MemoryPlan {
    let c = p.dit;
    let (n, d) = (p.tokens as u64, c.dim() as u64);
    let weights = p.experts as u64 * dit_parameters(c) * p.dit_bytes as u64;
    let kv_cache = if p.kv_cache {
        (p.experts * p.branches) as u64 * 2 * c.num_layers as u64 * n * d * p.dit_bytes as u64
    } else {
        0
    };
    let token = c.out_token_dim() as u64;
    let activations = 4 * (n * (8 * d + 2 * c.ffn_dim as u64) + 6 * n * token);
    let t = p.text;
    let text_encoder = umt5_parameters(t) * p.text_bytes as u64
        + 4 * p.text_len as u64 * (4 * t.d_model as u64 + 2 * t.d_ff as u64);
    let vae_decode = match p.vae {
        None => 0,
        Some((v, frames, h, w)) => {
            let top = v.decoder_levels().last().map(|l| l.out_dim).unwrap_or(0) as u64;
            let patch = v.patch() as u64;
            let frame = top * (h as u64 / patch) * (w as u64 / patch) * 4;
            vae_decoder_parameters(v) * 4 + 48 * frame + 2 * 3 * (frames * h * w) as u64 * 4
        }
    };
    let image_encode = match (p.image, p.vae) {
        (Some(clip), Some((v, frames, h, w))) => {
            // The encoder mirrors the decoder's widths; its first level runs at full size.
            let patch = v.patch() as u64;
            let frame = (v.base_dim as u64) * (h as u64 / patch) * (w as u64 / patch) * 4;
            let clip_bytes = clip.map_or(0, |c| {
                let (hd, mlp) = (c.hidden_size as u64, c.intermediate_size as u64);
                let p = c.patch_size as u64;
                let tokens = (c.image_size as u64 / p.max(1)).pow(2) + 1;
                // Weights (blocks, patch and position embeddings), then one block's activations.
                4 * (c.num_hidden_layers as u64 * (4 * hd * hd + 2 * hd * mlp)
                    + 3 * p * p * hd
                    + tokens * hd
                    + tokens * (4 * hd + mlp))
            });
            vae_decoder_parameters(v) * 4
                + 48 * frame
                + 3 * (frames * h * w) as u64 * 4
                + clip_bytes
        }
        _ => 0,
    };
    MemoryPlan {
        weights,
        text_encoder,
        kv_cache,
        activations,
        vae_decode,
        image_encode,
    }
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

impl MemoryPlan {
    /// Peak over the phases: text encoding, image encoding, sampling, decoding.
    pub fn peak(&self) -> u64 {
        self.text_encoder
            .max(self.image_encode)
            .max(self.weights + self.kv_cache + self.activations)
            .max(self.vae_decode)
    }

    /// An error message with advice when the peak exceeds `available` bytes.
    pub fn check(&self, available: u64) -> Result<(), String> {
        if self.peak() <= available {
            return Ok(());
        }
        Err(format!(
            "this run needs about {:.1} GiB ({self}) but only {:.1} GiB is available; \
             try a lower --size, fewer --frames, --dtype bf16, or a sampler without a K/V cache",
            gib(self.peak()),
            gib(available)
        ))
    }
}

/// Bytes as GiB, or MiB below 1 GiB.
fn size(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.2} GiB", gib(b))
    } else {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

impl std::fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "weights {}, K/V cache {}, activations {}, text encoder {}, ",
            size(self.weights),
            size(self.kv_cache),
            size(self.activations),
            size(self.text_encoder),
        )?;
        if self.image_encode > 0 {
            write!(f, "image encoding {}, ", size(self.image_encode))?;
        }
        write!(
            f,
            "VAE decode {}; peak {}",
            size(self.vae_decode),
            size(self.peak())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rss_is_reported_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(super::peak_rss_bytes().unwrap() > 1 << 20);
            assert!(super::available_bytes().unwrap() > 1 << 20);
        }
    }

    fn tiny_t2v() -> WanConfig {
        WanConfig::from_json(
            r#"{"attention_head_dim": 12, "cross_attn_norm": true, "eps": 1e-06, "ffn_dim": 32,
            "freq_dim": 256, "in_channels": 16, "num_attention_heads": 2, "num_layers": 2,
            "out_channels": 16, "patch_size": [1, 2, 2], "qk_norm": "rms_norm_across_heads",
            "rope_max_seq_len": 32, "text_dim": 32}"#,
        )
        .unwrap()
    }

    #[test]
    fn parameter_counts_match_the_stored_tensors() {
        // The tiny t2v fixture stores 28328 parameters (embeddings 13320, 2 blocks of 6680,
        // head 1648; see hsa inspect's test).
        assert_eq!(dit_parameters(&tiny_t2v()), 28328);
        // Wan2.1 T2V-1.3B: 1.42 B parameters.
        let p = dit_parameters(&WanConfig::wan21_t2v_1_3b()) as f64;
        assert!((p / 1e9 - 1.42).abs() < 0.01, "{p}");
        // umT5-XXL encoder: 5.68 B parameters (embedding 1.05 B).
        let t = umt5_parameters(&UMT5Config::umt5_xxl()) as f64;
        assert!((t / 1e9 - 5.68).abs() < 0.02, "{t}");
    }

    #[test]
    fn plan_arithmetic_on_a_known_config() {
        let c = tiny_t2v();
        let text = UMT5Config::umt5_xxl();
        let inputs = PlanInputs {
            dit: &c,
            experts: 1,
            dit_bytes: 4,
            tokens: 100,
            branches: 2,
            kv_cache: true,
            text: &text,
            text_bytes: 2,
            text_len: 512,
            vae: None,
            image: None,
        };
        let p = plan(&inputs);
        assert_eq!(p.weights, 28328 * 4);
        // 2 branches x 2 (K and V) x 2 layers x 100 tokens x 24 dims x 4 bytes.
        assert_eq!(p.kv_cache, 2 * 2 * 2 * 100 * 24 * 4);
        // 100 tokens x (8·24 + 2·32) + 6 state tensors of 100 x 64, in f32.
        assert_eq!(p.activations, 4 * (100 * (8 * 24 + 2 * 32) + 6 * 100 * 64));
        assert_eq!(p.vae_decode, 0);
        assert_eq!(
            p.peak(),
            p.text_encoder.max(p.weights + p.kv_cache + p.activations)
        );
        let two = plan(&PlanInputs {
            experts: 2,
            kv_cache: false,
            ..inputs.clone()
        });
        assert_eq!((two.weights, two.kv_cache), (2 * p.weights, 0));
        assert!(p.check(p.peak()).is_ok());
        let err = p.check(p.peak() - 1).unwrap_err();
        assert!(err.contains("--size") && err.contains("bf16"), "{err}");
    }

    #[test]
    fn wan21_at_480p_needs_a_big_machine_for_hsa() {
        // 81 frames at 832x480: 21 x 30 x 52 = 32760 tokens; K/V per branch
        // 2 x 30 layers x 32760 x 1536 x 2 bytes (bf16) = 5.6 GiB.
        let c = WanConfig::wan21_t2v_1_3b();
        let text = UMT5Config::umt5_xxl();
        let vae = WanVaeConfig::wan21();
        let p = plan(&PlanInputs {
            dit: &c,
            experts: 1,
            dit_bytes: 2,
            tokens: 32760,
            branches: 2,
            kv_cache: true,
            text: &text,
            text_bytes: 2,
            text_len: 512,
            vae: Some((&vae, 81, 480, 832)),
            image: None,
        });
        assert_eq!(p.kv_cache, 2 * 2 * 30 * 32760 * 1536 * 2);
        assert!(p.vae_decode > 4 << 30 && p.vae_decode < 16 << 30, "{p}");
        assert!(p.check(1 << 30).is_err());
    }
}
