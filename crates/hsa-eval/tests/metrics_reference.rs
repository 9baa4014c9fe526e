//! PSNR and SSIM against scikit-image on the clips of tests/fixtures/metrics.safetensors
//! (tools/fixtures/make_metric_fixtures.py).

use candle_core::{DType, Device};
use hsa_eval::metrics::{psnr, ssim, ClipView};
use hsa_pipeline::io::load_tensors;

#[test]
fn psnr_and_ssim_equal_scikit_image() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/metrics.safetensors"
    );
    let t = load_tensors(std::path::Path::new(path), &Device::Cpu).unwrap();
    let reference = &t["reference"];
    let (c, f, h, w) = reference.dims4().unwrap();
    let r: Vec<f32> = reference.flatten_all().unwrap().to_vec1().unwrap();
    let rv = ClipView::new(&r, c, f, h, w).unwrap();
    for case in ["noise", "smooth", "shift", "random"] {
        let x: Vec<f32> = t[&format!("{case}.clip")]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let xv = ClipView::new(&x, c, f, h, w).unwrap();
        let scalar = |k: &str| -> f64 {
            t[&format!("{case}.{k}")]
                .to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()[0]
        };
        let (p, s) = (psnr(&xv, &rv).unwrap(), ssim(&xv, &rv).unwrap());
        assert!(
            (p - scalar("psnr")).abs() < 1e-6,
            "{case}: psnr {p} vs {}",
            scalar("psnr")
        );
        assert!(
            (s - scalar("ssim")).abs() < 1e-7,
            "{case}: ssim {s} vs {}",
            scalar("ssim")
        );
    }
}
