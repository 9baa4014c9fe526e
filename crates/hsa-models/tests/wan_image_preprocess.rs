//! The official Wan image-to-video preprocessing (PyTorch bicubic resize of the `[-1, 1]`
//! image; CLIP input squashed to a square) against PyTorch
//! (tools/fixtures/make_interpolate_fixtures.py).

mod common;

use common::{fixtures, load, max_abs, rel_l2};
use hsa_models::clip::{load_image, signed_pixels, wan_official_pixels};
use hsa_models::interpolate::bicubic_resize;

#[test]
fn bicubic_resize_matches_torch_interpolate() {
    let io = load(&fixtures().join("interpolate.safetensors"));
    let mut cases = 0;
    for i in 0.. {
        let Some(input) = io.get(&format!("case{i}/input")) else {
            break;
        };
        let want = &io[&format!("case{i}/output")];
        let (_, h, w) = want.dims3().unwrap();
        let got = bicubic_resize(input, h, w).unwrap();
        // f32 rounding only (PyTorch's kernel may fuse multiply-adds).
        let (err, rel) = (max_abs(&got, want), rel_l2(&got, want));
        assert!(
            err < 1e-5 && rel < 1e-6,
            "case {i} {:?} -> {h}x{w}: max abs {err}, rel {rel}",
            input.dims()
        );
        cases += 1;
    }
    assert_eq!(cases, 5);
}

#[test]
fn official_clip_input_and_first_frame_match_the_wan_code() {
    let io = load(&fixtures().join("interpolate.safetensors"));
    for name in ["square_32x32", "tall_70x100_rgba", "wide_45x29"] {
        let path = fixtures().join("clip/images").join(format!("{name}.png"));
        let img = load_image(&path).unwrap();
        let dev = candle_core::Device::Cpu;
        let clip = wan_official_pixels(&img, 24, &dev).unwrap();
        let err = rel_l2(&clip, &io[&format!("{name}/clip")]);
        assert!(err < 1e-6, "{name} clip: rel {err}");
        let frame = bicubic_resize(&signed_pixels(&img, &dev).unwrap(), 20, 28).unwrap();
        let err = rel_l2(&frame, &io[&format!("{name}/frame")]);
        assert!(err < 1e-6, "{name} frame: rel {err}");
    }
}
