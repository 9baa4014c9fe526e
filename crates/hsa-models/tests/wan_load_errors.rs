//! Bad checkpoints fail with an error that names the problem, never a panic.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use common::{load, wan_case};
use hsa_models::wan::WanModel;
use hsa_models::ModelError;

/// A copy of the t2v fixture in a temp dir, with its tensors edited by `edit`.
fn edited_copy(edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        wan_case("t2v").join("config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    let mut tensors = load(&wan_case("t2v").join("diffusion_pytorch_model.safetensors"));
    edit(&mut tensors);
    candle_core::safetensors::save(
        &tensors,
        tmp.path().join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    tmp
}

fn load_err(dir: &Path) -> ModelError {
    WanModel::load_dir(dir, None, &Device::Cpu).expect_err("loading should fail")
}

#[test]
fn truncated_safetensors_is_a_clear_error() {
    let tmp = edited_copy(|_| {});
    let file = tmp.path().join("diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(tmp.path());
    assert!(matches!(err, ModelError::Safetensors { .. }), "{err:?}");
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn wrong_shape_names_the_tensor_and_both_shapes() {
    let tmp = edited_copy(|t| {
        t.insert(
            "blocks.1.attn1.to_k.weight".into(),
            Tensor::zeros((24, 12), candle_core::DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let msg = load_err(tmp.path()).to_string();
    assert!(
        msg.contains("blocks.1.attn1.to_k.weight")
            && msg.contains("[24, 12]")
            && msg.contains("[24, 24]"),
        "{msg}"
    );
}

#[test]
fn missing_key_is_named() {
    let tmp = edited_copy(|t| {
        t.remove("blocks.0.ffn.net.2.bias");
    });
    let err = load_err(tmp.path());
    assert!(
        matches!(&err, ModelError::MissingTensor { name, .. } if name == "blocks.0.ffn.net.2.bias"),
        "{err:?}"
    );
}

#[test]
fn unexpected_key_is_named() {
    let tmp = edited_copy(|t| {
        t.insert(
            "blocks.7.attn1.to_q.weight".into(),
            Tensor::zeros((24, 24), candle_core::DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let msg = load_err(tmp.path()).to_string();
    assert!(
        msg.contains("unexpected tensor 'blocks.7.attn1.to_q.weight'"),
        "{msg}"
    );
}

#[test]
fn unknown_key_format_is_reported() {
    let tmp = edited_copy(|t| {
        let renamed: HashMap<String, Tensor> = t
            .drain()
            .map(|(k, v)| {
                (
                    format!("transformer_weights/{}", k.replace("attn", "mix")),
                    v,
                )
            })
            .collect();
        *t = renamed
            .into_iter()
            .filter(|(k, _)| !k.contains("condition_embedder"))
            .collect();
    });
    let err = load_err(tmp.path());
    assert!(
        matches!(err, ModelError::UnknownKeyFormat { .. }),
        "{err:?}"
    );
}

#[test]
fn malformed_config_json_is_reported_with_its_path() {
    let tmp = edited_copy(|_| {});
    std::fs::write(
        tmp.path().join("config.json"),
        "{\"num_attention_heads\": 2, ",
    )
    .unwrap();
    let err = load_err(tmp.path());
    let msg = err.to_string();
    assert!(
        matches!(err, ModelError::Config { .. })
            && msg.contains("config.json")
            && msg.contains("malformed JSON"),
        "{msg}"
    );
}

#[test]
fn missing_weights_and_missing_config_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        wan_case("t2v").join("config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    assert!(matches!(load_err(tmp.path()), ModelError::NoWeights { .. }));
    let empty = tempfile::tempdir().unwrap();
    assert!(load_err(empty.path()).to_string().contains("config.json"));
}
