//! CLIP vision tower, image preprocessing and image loading against transformers / PIL
//! (fixtures: tools/fixtures/make_clip_fixtures.py).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::{fixtures, load, rel_l2};
use hsa_models::clip::{
    load_image, ClipActivation, ClipImageProcessor, ClipKeyFormat, ClipVisionConfig,
    ClipVisionModel, ClipWeights, PilFilter, ResizeTo,
};
use hsa_models::ModelError;

fn clip_dir() -> PathBuf {
    fixtures().join("clip")
}

fn io() -> HashMap<String, Tensor> {
    load(&clip_dir().join("io.safetensors"))
}

fn model(name: &str) -> ClipVisionModel {
    ClipVisionModel::load(&clip_dir().join(name), DType::F32, &Device::Cpu).unwrap()
}

const TOL: f64 = 1e-5;

/// Every hidden state, the penultimate one, the last one and the pooled output of `name`.
fn check_model(name: &str, model: &ClipVisionModel, io: &HashMap<String, Tensor>) {
    let pixels = &io["pixel_values"];
    let n = model.config().num_hidden_layers;
    for i in 0..=n {
        let h = model.forward_hidden_states(pixels, i).unwrap();
        let e = rel_l2(&h, &io[&format!("{name}_hidden_states_{i}")]);
        println!("{name} hidden_states[{i}] rel L2 = {e:.3e}");
        assert!(e <= TOL, "{name} hidden_states[{i}]: rel L2 {e}");
    }
    let pen = model.penultimate_hidden_state(pixels).unwrap();
    assert_eq!(pen.dims(), &[2, 17, model.config().hidden_size]);
    let e = rel_l2(&pen, &io[&format!("{name}_penultimate")]);
    println!("{name} penultimate (Wan image features) rel L2 = {e:.3e}");
    assert!(e <= TOL, "{name} penultimate: rel L2 {e}");

    let out = model.forward(pixels).unwrap();
    let e = rel_l2(
        &out.last_hidden_state,
        &io[&format!("{name}_last_hidden_state")],
    );
    println!("{name} last_hidden_state rel L2 = {e:.3e}");
    assert!(e <= TOL, "{name} last: rel L2 {e}");
    let e = rel_l2(&out.pooler_output, &io[&format!("{name}_pooler_output")]);
    println!("{name} pooler_output rel L2 = {e:.3e}");
    assert!(e <= TOL, "{name} pooled: rel L2 {e}");
}

#[test]
fn gelu_tower_matches_transformers() {
    let io = io();
    let m = model("gelu");
    assert_eq!(m.config().hidden_act, ClipActivation::GeluErf);
    assert!(!m.has_projection());
    let w = ClipWeights::open_dir(&clip_dir().join("gelu")).unwrap();
    assert_eq!(w.format(), ClipKeyFormat::Bare);
    check_model("gelu", &m, &io);
    assert!(m
        .forward(&io["pixel_values"])
        .unwrap()
        .image_embeds
        .is_none());
}

#[test]
fn quick_gelu_tower_with_projection_matches_transformers() {
    let io = io();
    let m = model("quick_gelu");
    assert_eq!(m.config().hidden_act, ClipActivation::QuickGelu);
    let w = ClipWeights::open_dir(&clip_dir().join("quick_gelu")).unwrap();
    assert_eq!(w.format(), ClipKeyFormat::VisionModelPrefix);
    assert!(m.has_projection());
    check_model("quick_gelu", &m, &io);
    let emb = m
        .forward(&io["pixel_values"])
        .unwrap()
        .image_embeds
        .unwrap();
    let e = rel_l2(&emb, &io["quick_gelu_image_embeds"]);
    println!("quick_gelu image_embeds rel L2 = {e:.3e}");
    assert!(e <= TOL, "image_embeds: rel L2 {e}");
}

/// Copies `src`'s tensors into `dst/model.safetensors` with keys renamed (or dropped: `None`)
/// by `f`, and the config alongside.
fn rewrite(src: &str, dst: &Path, f: impl Fn(&str, &Tensor) -> Option<(String, Tensor)>) {
    let tensors = load(&clip_dir().join(src).join("model.safetensors"));
    let out: HashMap<String, Tensor> = tensors.iter().filter_map(|(k, t)| f(k, t)).collect();
    candle_core::safetensors::save(&out, dst.join("model.safetensors")).unwrap();
    std::fs::copy(
        clip_dir().join(src).join("config.json"),
        dst.join("config.json"),
    )
    .unwrap();
}

#[test]
fn loads_prefixed_bare_and_full_clip_layouts() {
    let io = io();
    let pixels = &io["pixel_values"];
    let want = &io["gelu_penultimate"];

    // The bare transformers-5 names under `vision_model.` (transformers 4 / diffusers' Wan repos),
    // plus the text half of a full CLIPModel and an old position_ids buffer, with a full
    // CLIPConfig whose vision_config is the tiny one.
    let tmp = tempfile::tempdir().unwrap();
    rewrite("gelu", tmp.path(), |k, t| {
        Some((format!("vision_model.{k}"), t.clone()))
    });
    let mut extra = load(&tmp.path().join("model.safetensors"));
    let dev = Device::Cpu;
    extra.insert(
        "text_model.embeddings.token_embedding.weight".into(),
        Tensor::zeros((10, 8), DType::F32, &dev).unwrap(),
    );
    extra.insert(
        "text_projection.weight".into(),
        Tensor::zeros((16, 8), DType::F32, &dev).unwrap(),
    );
    extra.insert(
        "logit_scale".into(),
        Tensor::zeros((), DType::F32, &dev).unwrap(),
    );
    extra.insert(
        "vision_model.embeddings.position_ids".into(),
        Tensor::arange(0i64, 17, &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap(),
    );
    candle_core::safetensors::save(&extra, tmp.path().join("model.safetensors")).unwrap();
    let vision: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(clip_dir().join("gelu/config.json")).unwrap(),
    )
    .unwrap();
    let full = serde_json::json!({
        "model_type": "clip",
        "projection_dim": 16,
        "text_config": {"hidden_size": 8, "model_type": "clip_text_model"},
        "vision_config": vision,
    });
    std::fs::write(tmp.path().join("config.json"), full.to_string()).unwrap();
    let w = ClipWeights::open_dir(tmp.path()).unwrap();
    assert_eq!(w.format(), ClipKeyFormat::VisionModelPrefix);
    let m = ClipVisionModel::load(tmp.path(), DType::F32, &dev).unwrap();
    let e = rel_l2(&m.penultimate_hidden_state(pixels).unwrap(), want);
    assert!(e <= TOL, "prefixed full-CLIP layout: rel L2 {e}");

    // Bare names from the prefixed quick_gelu checkpoint.
    let tmp = tempfile::tempdir().unwrap();
    rewrite("quick_gelu", tmp.path(), |k, t| {
        Some((
            k.strip_prefix("vision_model.").unwrap_or(k).to_string(),
            t.clone(),
        ))
    });
    let m = ClipVisionModel::load(tmp.path(), DType::F32, &dev).unwrap();
    assert!(m.has_projection());
    let e = rel_l2(
        &m.penultimate_hidden_state(pixels).unwrap(),
        &io["quick_gelu_penultimate"],
    );
    assert!(e <= TOL, "bare quick_gelu: rel L2 {e}");
}

#[test]
fn reduced_precision_runs_close() {
    // bf16 matmuls with f32 norms/residuals: a smoke test of the dtype plumbing, not parity.
    let io = io();
    let m = ClipVisionModel::load(&clip_dir().join("gelu"), DType::BF16, &Device::Cpu).unwrap();
    let pen = m.penultimate_hidden_state(&io["pixel_values"]).unwrap();
    assert_eq!(pen.dtype(), DType::F32);
    let e = rel_l2(&pen, &io["gelu_penultimate"]);
    println!("bf16 penultimate rel L2 = {e:.3e}");
    assert!(e < 3e-2, "bf16 rel L2 {e}");
}

#[test]
fn weight_errors_name_the_tensor() {
    let dev = Device::Cpu;
    // Missing tensor, named as the checkpoint spells it.
    let tmp = tempfile::tempdir().unwrap();
    rewrite("quick_gelu", tmp.path(), |k, t| {
        (k != "vision_model.encoder.layers.1.mlp.fc1.bias").then(|| (k.to_string(), t.clone()))
    });
    let err = ClipVisionModel::load(tmp.path(), DType::F32, &dev).unwrap_err();
    println!("{err}");
    assert!(
        matches!(&err, ModelError::MissingTensor { name, expected, .. }
            if name == "vision_model.encoder.layers.1.mlp.fc1.bias" && expected == &vec![37]),
        "{err}"
    );

    // Wrong shape.
    let tmp = tempfile::tempdir().unwrap();
    rewrite("gelu", tmp.path(), |k, t| {
        let t = if k == "embeddings.position_embedding.weight" {
            t.narrow(0, 0, 16).unwrap()
        } else {
            t.clone()
        };
        Some((k.to_string(), t))
    });
    let err = ClipVisionModel::load(tmp.path(), DType::F32, &dev).unwrap_err();
    println!("{err}");
    assert!(
        matches!(&err, ModelError::ShapeMismatch { name, expected, found }
            if name == "embeddings.position_embedding.weight" && expected == &vec![17, 32] && found == &vec![16, 32]),
        "{err}"
    );

    // Weights of a different config (a layer more than the config has).
    let tmp = tempfile::tempdir().unwrap();
    rewrite("gelu", tmp.path(), |k, t| Some((k.to_string(), t.clone())));
    let cfg = ClipVisionConfig::from_file(&tmp.path().join("config.json")).unwrap();
    let fewer = ClipVisionConfig {
        num_hidden_layers: 2,
        ..cfg
    };
    let w = ClipWeights::open_dir(tmp.path()).unwrap();
    let err = ClipVisionModel::from_weights(&w, &fewer, DType::F32, &dev).unwrap_err();
    assert!(
        matches!(&err, ModelError::UnexpectedTensor { name, .. } if name.starts_with("encoder.layers.2.")),
        "{err}"
    );

    // Not a CLIP checkpoint at all.
    let tmp = tempfile::tempdir().unwrap();
    rewrite("gelu", tmp.path(), |k, t| {
        Some((format!("something.{k}"), t.clone()))
    });
    let err = ClipWeights::open_dir(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, ModelError::Config { message, .. } if message.contains("not a CLIP vision checkpoint")),
        "{err}"
    );
}

#[test]
fn input_errors() {
    let m = model("gelu");
    let dev = Device::Cpu;
    for bad in [
        Tensor::zeros((1, 3, 33, 32), DType::F32, &dev).unwrap(),
        Tensor::zeros((1, 4, 32, 32), DType::F32, &dev).unwrap(),
        Tensor::zeros((3, 32, 32), DType::F32, &dev).unwrap(),
        Tensor::zeros((0, 3, 32, 32), DType::F32, &dev).unwrap(),
        Tensor::zeros((1, 3, 32, 32), DType::U8, &dev).unwrap(),
    ] {
        assert!(
            matches!(m.forward(&bad), Err(ModelError::Input(_))),
            "{:?}",
            bad.dims()
        );
    }
    let ok = Tensor::zeros((1, 3, 32, 32), DType::F32, &dev).unwrap();
    assert!(matches!(
        m.forward_hidden_states(&ok, 4),
        Err(ModelError::Input(_))
    ));
}

// ------------------------------------------------------------------------------------------
// Preprocessing and image loading
// ------------------------------------------------------------------------------------------

fn processor() -> ClipImageProcessor {
    ClipImageProcessor::from_file(&clip_dir().join("gelu/preprocessor_config.json")).unwrap()
}

fn image_path(name: &str) -> PathBuf {
    clip_dir().join("images").join(format!("{name}.png"))
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

#[test]
fn processor_config_parses() {
    let p = processor();
    assert_eq!(p, ClipImageProcessor::clip(32));
    assert_eq!(p.resize, Some(ResizeTo::ShortestEdge(32)));
    assert_eq!(p.resample, PilFilter::Bicubic);
    // Shortest edge 32, long edge int(32 * long / short), as transformers computes it.
    assert_eq!(p.resize_target(45, 29), Some((49, 32)));
    assert_eq!(p.resize_target(70, 100), Some((32, 45)));
    assert_eq!(p.resize_target(32, 32), Some((32, 32)));
    let bad = std::path::Path::new("preprocessor_config.json");
    for text in [
        r#"{"resample": 0}"#,
        r#"{"size": {"shortest_edge": 10, "longest_edge": 20}}"#,
        r#"{"image_std": [1, 0, 1]}"#,
        r#"{"crop_size": {"shortest_edge": 3}}"#,
    ] {
        assert!(
            matches!(
                ClipImageProcessor::from_json_str(text, bad),
                Err(ModelError::Config { .. })
            ),
            "{text}"
        );
    }
    // Old-style integers and a scalar mean.
    let p = ClipImageProcessor::from_json_str(
        r#"{"size": 224, "crop_size": 224, "image_mean": 0.5, "image_std": 0.5, "resample": 2}"#,
        bad,
    )
    .unwrap();
    assert_eq!(p.center_crop, Some((224, 224)));
    assert_eq!(p.normalize, Some(([0.5; 3], [0.5; 3])));
    assert_eq!(p.resample, PilFilter::Bilinear);
}

#[test]
fn preprocessing_matches_clip_image_processor() {
    let want = load(&clip_dir().join("preprocess.safetensors"));
    let p = processor();
    for name in ["square_32x32", "wide_45x29", "tall_70x100_rgba"] {
        let img = load_image(image_path(name)).unwrap();
        let pix = p.preprocess(&img, &Device::Cpu).unwrap();
        let e = max_abs(&pix, &want[&format!("{name}_pixel_values")]);
        println!("{name}: max |pixel_values - CLIPImageProcessor| = {e:.3e}");
        // The already-sized image is not resized; the PIL resize is ported bit for bit, so the
        // resized ones match exactly as well.
        assert_eq!(e, 0.0, "{name}: max abs {e}");
    }
}

/// The 8-bit resize itself against PIL, for each filter the fixtures hold.
#[test]
fn pil_resize_is_bit_exact() {
    let want = load(&clip_dir().join("preprocess.safetensors"));
    let cases = [
        ("wide_45x29", "bicubic", PilFilter::Bicubic),
        ("tall_70x100_rgba", "bicubic", PilFilter::Bicubic),
        ("wide_45x29", "bilinear", PilFilter::Bilinear),
        ("tall_70x100_rgba", "bilinear", PilFilter::Bilinear),
        ("wide_45x29", "lanczos", PilFilter::Lanczos),
        ("tall_70x100_rgba", "lanczos", PilFilter::Lanczos),
        ("wide_45x29", "hamming", PilFilter::Hamming),
        ("tall_70x100_rgba", "box", PilFilter::Box),
    ];
    for (name, fname, filter) in cases {
        let img = load_image(image_path(name)).unwrap();
        let key = format!("{name}_resized_{fname}_u8");
        let r = &want[&key];
        let (h, w, _) = r.dims3().unwrap();
        let out = hsa_models::clip::resample::resize(&img, w as u32, h as u32, filter);
        let ours = Tensor::from_vec(out.into_raw(), (h, w, 3), &Device::Cpu).unwrap();
        let e = max_abs(&ours, r);
        println!("{key}: {w}x{h} max abs diff {e}");
        assert_eq!(e, 0.0, "{key}");
    }
}

/// The formula image of `make_clip_fixtures.py`'s `synthetic_image`.
fn synthetic_image(width: u32, height: u32) -> image::RgbImage {
    image::RgbImage::from_fn(width, height, |x, y| {
        let v = |c: u32| ((31 * x + 17 * y + 101 * c + 3 * ((x * y) % 97)) % 256) as u8;
        image::Rgb([v(0), v(1), v(2)])
    })
}

#[test]
fn large_downscale_matches_pil_and_the_processor() {
    let want = load(&clip_dir().join("preprocess.safetensors"));
    let img = synthetic_image(640, 427);
    let out = hsa_models::clip::resample::resize(&img, 47, 32, PilFilter::Bicubic);
    let ours = Tensor::from_vec(out.into_raw(), (32, 47, 3), &Device::Cpu).unwrap();
    let e = max_abs(&ours, &want["synthetic_640x427_resized_bicubic_u8"]);
    println!("640x427 -> 47x32 bicubic: max abs diff {e}");
    assert_eq!(e, 0.0);
    let pix = processor().preprocess(&img, &Device::Cpu).unwrap();
    let e = max_abs(&pix, &want["synthetic_640x427_pixel_values"]);
    println!("640x427 pixel_values: max abs diff {e:.3e}");
    assert_eq!(e, 0.0);
}

#[test]
fn center_crop_pads_small_images_like_transformers() {
    // 3x5 image, crop 4x4: rows start at (5-4)//2 = 0, columns at -ceil((4-3)/2) = -1.
    let mut img = image::RgbImage::new(3, 5);
    for (x, y, p) in img.enumerate_pixels_mut() {
        *p = image::Rgb([(10 * y + x + 1) as u8; 3]);
    }
    let out = hsa_models::clip::preprocess::center_crop(&img, 4, 4);
    let row0: Vec<u8> = (0..4).map(|x| out.get_pixel(x, 0).0[0]).collect();
    let row3: Vec<u8> = (0..4).map(|x| out.get_pixel(x, 3).0[0]).collect();
    assert_eq!(row0, vec![0, 1, 2, 3]);
    assert_eq!(row3, vec![0, 31, 32, 33]);
}

#[test]
fn image_loading_errors_are_typed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    let missing = dir.join("nope.png");
    let err = load_image(&missing).unwrap_err();
    println!("{err}");
    assert!(
        matches!(&err, ModelError::Io { path, source }
            if path == &missing && source.kind() == std::io::ErrorKind::NotFound),
        "{err}"
    );

    let text = dir.join("notes.png");
    std::fs::write(&text, "this is a text file, not a PNG\n").unwrap();
    let err = load_image(&text).unwrap_err();
    println!("{err}");
    assert!(
        matches!(&err, ModelError::ImageDecode { path, .. } if path == &text),
        "{err}"
    );

    // A truncated PNG: the header is fine, the pixel data is cut off.
    let good = std::fs::read(image_path("wide_45x29")).unwrap();
    let cut = dir.join("cut.png");
    std::fs::write(&cut, &good[..good.len() / 2]).unwrap();
    let err = load_image(&cut).unwrap_err();
    println!("{err}");
    assert!(matches!(&err, ModelError::ImageDecode { .. }), "{err}");

    let tiny = dir.join("tiny.png");
    image::RgbImage::new(1, 1).save(&tiny).unwrap();
    let err = load_image(&tiny).unwrap_err();
    println!("{err}");
    assert!(
        matches!(
            &err,
            ModelError::ImageSize {
                width: 1,
                height: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("1x1"), "{err}");

    // Too large (checked from the header; a 20000x16 blank PNG is small on disk).
    let wide = dir.join("wide.png");
    image::GrayImage::new(20_000, 16).save(&wide).unwrap();
    let err = load_image(&wide).unwrap_err();
    println!("{err}");
    assert!(
        matches!(
            &err,
            ModelError::ImageSize {
                width: 20_000,
                height: 16,
                ..
            }
        ),
        "{err}"
    );

    // JPEG content under a .png name is fine: the format comes from the bytes.
    let jpeg_named_png = dir.join("photo.png");
    let mut buf = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(20, 18, image::Rgb([10, 200, 30]))
        .write_to(&mut buf, image::ImageFormat::Jpeg)
        .unwrap();
    std::fs::write(&jpeg_named_png, buf.into_inner()).unwrap();
    let img = load_image(&jpeg_named_png).unwrap();
    assert_eq!(img.dimensions(), (20, 18));
}
