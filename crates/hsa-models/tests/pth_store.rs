//! The `.pth` side of `TensorStore` (the official Wan VAE and umT5 checkpoints are torch.save
//! state dicts) against the same tensors in safetensors (tools/fixtures/make_pth_fixtures.py):
//! every dtype, column-major and offset views, and clear errors for the legacy format and a
//! truncated archive.

mod common;

use candle_core::{DType, Device};
use common::{fixtures, max_abs};
use hsa_models::store::{Routing, TensorStore};
use hsa_models::ModelError;

fn open(path: std::path::PathBuf) -> hsa_models::Result<(TensorStore, Vec<String>)> {
    TensorStore::open(&[path], |raw| {
        let routing: Routing = raw
            .iter()
            .map(|(i, k)| (k.clone(), (*i, k.clone())))
            .collect();
        Ok((routing, raw.into_iter().map(|(_, k)| k).collect()))
    })
}

#[test]
fn pth_tensors_equal_their_safetensors_copy() {
    let dir = fixtures().join("pth");
    let (pth, mut keys) = open(dir.join("state.pth")).unwrap();
    let (st, mut want) = open(dir.join("state.safetensors")).unwrap();
    keys.sort();
    want.sort();
    assert_eq!(keys, want);
    for k in &keys {
        let (shape, dtype) = pth.info(k).unwrap();
        assert_eq!((shape.clone(), dtype), st.info(k).unwrap(), "{k}");
        let a = pth.get(k, dtype, &Device::Cpu).unwrap();
        let b = st.get(k, dtype, &Device::Cpu).unwrap();
        assert_eq!(max_abs(&a, &b), 0.0, "{k} differs");
    }
    assert_eq!(pth.info("blocks.0.bf16").unwrap().1, DType::BF16);
}

#[test]
fn legacy_and_truncated_archives_are_named() {
    let err = open(fixtures().join("pth/legacy.pth")).unwrap_err();
    assert!(matches!(err, ModelError::Pickle { .. }), "{err}");
    assert!(err.to_string().contains("legacy"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let cut = tmp.path().join("cut.pth");
    let bytes = std::fs::read(fixtures().join("pth/state.pth")).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let err = open(cut).unwrap_err().to_string();
    assert!(err.contains("cut.pth"), "{err}");
}
