//! umT5 encoder, tokenizer and prompt cleaning against transformers / tokenizers / ftfy
//! (fixtures: tools/fixtures/make_umt5_fixtures.py).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::{fixtures, load, rel_l2};
use hsa_models::text::{self, clean_prompt, encode_text, keep_valid_rows, Tokenizer};
use hsa_models::umt5::{
    relative_position_bucket, T5KeyFormat, UMT5Config, UMT5Encoder, UMT5Weights,
};
use hsa_models::ModelError;

fn umt5_dir() -> PathBuf {
    fixtures().join("umt5")
}

fn io() -> HashMap<String, Tensor> {
    load(&umt5_dir().join("io.safetensors"))
}

fn json(name: &str) -> serde_json::Value {
    let p = umt5_dir().join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn encoder(sub: &str) -> UMT5Encoder {
    UMT5Encoder::load(&umt5_dir().join(sub), DType::F32, &Device::Cpu).unwrap()
}

fn tokenizer() -> Tokenizer {
    Tokenizer::from_file(umt5_dir().join("tokenizer.json")).unwrap()
}

const TOL: f64 = 1e-5;

#[test]
fn encoder_hf_keys_match_transformers() {
    let io = io();
    let enc = encoder("hf");
    let weights = UMT5Weights::open_dir(&umt5_dir().join("hf")).unwrap();
    assert_eq!(weights.format(), T5KeyFormat::HuggingFace);
    assert_eq!(enc.config().d_model, 32);

    let out = enc
        .forward(&io["input_ids"], Some(&io["attention_mask"]))
        .unwrap();
    let e = rel_l2(&out, &io["last_hidden_state"]);
    println!("hf batch [2,20] rel L2 = {e:.3e}");
    assert!(e <= TOL, "rel L2 {e}");

    let out = enc.forward(&io["input_ids"], None).unwrap();
    let e = rel_l2(&out, &io["nomask_last_hidden_state"]);
    println!("hf no-mask rel L2 = {e:.3e}");
    assert!(e <= TOL, "rel L2 {e}");

    let out = enc
        .forward(&io["long_input_ids"], Some(&io["long_attention_mask"]))
        .unwrap();
    let e = rel_l2(&out, &io["long_last_hidden_state"]);
    println!("hf long [1,160] rel L2 = {e:.3e}");
    assert!(e <= TOL, "rel L2 {e}");
}

#[test]
fn encoder_original_keys_match_transformers() {
    let io = io();
    let weights = UMT5Weights::open_dir(&umt5_dir().join("original")).unwrap();
    assert_eq!(weights.format(), T5KeyFormat::Original);
    let out = encoder("original")
        .forward(&io["input_ids"], Some(&io["attention_mask"]))
        .unwrap();
    let e = rel_l2(&out, &io["last_hidden_state"]);
    println!("original keys rel L2 = {e:.3e}");
    assert!(e <= TOL, "rel L2 {e}");

    // Without config.json (as Wan ships it): the architecture is inferred from the shapes.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        umt5_dir().join("original/model.safetensors"),
        tmp.path().join("model.safetensors"),
    )
    .unwrap();
    let inferred = UMT5Weights::open_dir(tmp.path())
        .unwrap()
        .infer_config()
        .unwrap();
    assert_eq!(
        &inferred,
        &UMT5Config::from_file(&umt5_dir().join("hf/config.json")).unwrap()
    );
    let out = UMT5Encoder::load(tmp.path(), DType::F32, &Device::Cpu)
        .unwrap()
        .forward(&io["input_ids"], Some(&io["attention_mask"]))
        .unwrap();
    assert!(rel_l2(&out, &io["last_hidden_state"]) <= TOL);
}

#[test]
fn encoder_alt_config_matches_transformers() {
    // inner dim 18 != d_model 24, non-gated relu FFN, 16 buckets, max_distance 20 < length 40.
    let io = io();
    let enc = encoder("alt");
    assert!(!enc.config().gated);
    let out = enc
        .forward(&io["alt_input_ids"], Some(&io["alt_attention_mask"]))
        .unwrap();
    let e = rel_l2(&out, &io["alt_last_hidden_state"]);
    println!("alt rel L2 = {e:.3e}");
    assert!(e <= TOL, "rel L2 {e}");
}

#[test]
fn relative_position_buckets_match_transformers() {
    let io = io();
    for (name, nb, md, span) in [
        ("buckets_32_128", 32, 128, 600i64),
        ("buckets_16_20", 16, 20, 100),
    ] {
        let want: Vec<i64> = io[name].to_vec1().unwrap();
        for (i, w) in want.iter().enumerate() {
            let rel = i as i64 - span;
            assert_eq!(
                relative_position_bucket(rel, nb, md) as i64,
                *w,
                "{name}: relative position {rel}"
            );
        }
    }
}

#[test]
fn encoder_bf16_is_close() {
    let io = io();
    let enc = UMT5Encoder::load(&umt5_dir().join("hf"), DType::BF16, &Device::Cpu).unwrap();
    let out = enc
        .forward(&io["input_ids"], Some(&io["attention_mask"]))
        .unwrap();
    assert_eq!(out.dtype(), DType::F32);
    let e = rel_l2(&out, &io["last_hidden_state"]);
    println!("bf16 compute rel L2 vs f32 transformers = {e:.3e}");
    assert!(e < 3e-2, "rel L2 {e}");
}

#[test]
fn cleaned_prompts_match_python() {
    let j = json("prompts.json");
    for p in j["prompts"].as_array().unwrap() {
        let raw = p["raw"].as_str().unwrap();
        let want = p["cleaned"].as_str().unwrap();
        assert_eq!(clean_prompt(raw), want, "raw prompt {raw:?}");
    }
}

#[test]
fn ftfy_corpus_matches_python() {
    let j = json("ftfy_cases.json");
    let cases = j.as_array().unwrap();
    let mut failures = Vec::new();
    for c in cases {
        let input = c["input"].as_str().unwrap();
        let fixed = text::ftfy::fix_text(input);
        let want = c["fix_text"].as_str().unwrap();
        if fixed != want {
            failures.push(format!("fix_text({input:?}) = {fixed:?}, python {want:?}"));
        }
        let b = text::ftfy::badness(input);
        let want_b = c["badness"].as_u64().unwrap() as usize;
        if b != want_b {
            failures.push(format!("badness({input:?}) = {b}, python {want_b}"));
        }
        let cleaned = clean_prompt(input);
        let want_c = c["wan_clean"].as_str().unwrap();
        if cleaned != want_c {
            failures.push(format!("clean({input:?}) = {cleaned:?}, python {want_c:?}"));
        }
    }
    println!(
        "ftfy corpus: {} cases, {} mismatches",
        cases.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} mismatches, first:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn token_ids_match_python() {
    let j = json("prompts.json");
    let raw: Vec<&str> = j["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["raw"].as_str().unwrap())
        .collect();
    let tok = tokenizer();
    assert_eq!(tok.text_len(), 512);
    let enc = tok.encode_prompts(&raw).unwrap();
    let t = load(&umt5_dir().join("tokens.safetensors"));
    let want_ids: Vec<Vec<i64>> = t["input_ids"].to_vec2().unwrap();
    let want_mask: Vec<Vec<i64>> = t["attention_mask"].to_vec2().unwrap();
    assert_eq!(enc.batch(), raw.len());
    let mut saw_truncated = false;
    for (i, p) in raw.iter().enumerate() {
        let got: Vec<i64> = enc.row(i).iter().map(|&v| v as i64).collect();
        assert_eq!(got, want_ids[i], "ids of prompt {i} {p:?}");
        let got_mask: Vec<i64> = enc.mask[i * 512..(i + 1) * 512]
            .iter()
            .map(|&v| v as i64)
            .collect();
        assert_eq!(got_mask, want_mask[i], "mask of prompt {i}");
        let n = enc.lens[i];
        assert_eq!(enc.row(i)[n - 1], 1, "prompt {i} must end with </s>");
        saw_truncated |= n == 512;
    }
    assert!(
        saw_truncated,
        "the prompt set must include one longer than 512 tokens"
    );
    let ids = enc.ids_tensor(&Device::Cpu).unwrap();
    assert_eq!(ids.dims(), [raw.len(), 512]);
    assert_eq!(ids.dtype(), DType::U32);
}

#[test]
fn encode_text_matches_wan_pipeline() {
    let prompts: Vec<String> = serde_json::from_value(json("context_prompts.json")).unwrap();
    let want = load(&umt5_dir().join("context.safetensors"));
    let ctx = encode_text(&encoder("hf"), &tokenizer(), &prompts).unwrap();
    assert_eq!(ctx.dims(), [prompts.len(), 512, 32]);
    let e = rel_l2(&ctx, &want["context"]);
    println!("encode_text rel L2 = {e:.3e}");
    assert!(e <= TOL, "rel L2 {e}");
    let lens: Vec<i64> = want["seq_lens"].to_vec1().unwrap();
    let rows: Vec<Vec<Vec<f32>>> = ctx.to_vec3().unwrap();
    for (i, n) in lens.iter().enumerate() {
        let n = *n as usize;
        assert!(rows[i][..n].iter().any(|r| r.iter().any(|v| *v != 0.0)));
        assert!(
            rows[i][n..].iter().all(|r| r.iter().all(|v| *v == 0.0)),
            "rows past {n} of prompt {i} must be zero"
        );
    }
}

#[test]
fn keep_valid_rows_zero_pads() {
    let h = Tensor::arange(1f32, 1.0 + 2.0 * 4.0 * 3.0, &Device::Cpu)
        .unwrap()
        .reshape((2, 4, 3))
        .unwrap();
    let out = keep_valid_rows(&h, &[1, 4]).unwrap();
    let v: Vec<Vec<Vec<f32>>> = out.to_vec3().unwrap();
    assert_eq!(v[0][0], vec![1.0, 2.0, 3.0]);
    assert!(v[0][1..].iter().all(|r| r.iter().all(|x| *x == 0.0)));
    assert_eq!(v[1], h.get(1).unwrap().to_vec2::<f32>().unwrap());
    assert!(keep_valid_rows(&h, &[5, 1]).is_err());
    assert!(keep_valid_rows(&h, &[1]).is_err());
}

#[test]
fn text_len_and_truncation() {
    let tok = tokenizer().with_text_len(8).unwrap();
    let enc = tok
        .tokenize(&["word word word word word word word word word word"])
        .unwrap();
    assert_eq!(enc.lens, vec![8]);
    assert_eq!(enc.row(0)[7], 1, "truncation keeps room for </s>");
    let enc = tok.tokenize(&[""]).unwrap();
    assert_eq!(enc.lens, vec![1]);
    assert_eq!(enc.row(0), &[1, 0, 0, 0, 0, 0, 0, 0]);
    assert!(matches!(
        tokenizer().with_text_len(1),
        Err(ModelError::Input(_))
    ));
}

// ------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------

#[test]
fn missing_tokenizer_file() {
    let err = Tokenizer::from_file("/nonexistent/tokenizer.json").unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err}");
    assert!(
        err.to_string().contains("/nonexistent/tokenizer.json"),
        "{err}"
    );
}

#[test]
fn malformed_tokenizer_json() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("tokenizer.json");
    std::fs::write(&p, "{\"model\": {\"type\": \"Unigram\", \"vocab\": 3}}").unwrap();
    let err = Tokenizer::from_file(&p).unwrap_err();
    assert!(matches!(err, ModelError::Config { .. }), "{err}");
    assert!(
        err.to_string().contains("malformed tokenizer.json"),
        "{err}"
    );
    std::fs::write(&p, "not json").unwrap();
    assert!(matches!(
        Tokenizer::from_file(&p).unwrap_err(),
        ModelError::Config { .. }
    ));
}

fn write_without(src: &Path, dst_dir: &Path, drop: &str) {
    let mut t = load(src);
    assert!(t.remove(drop).is_some(), "{drop} not in {}", src.display());
    candle_core::safetensors::save(&t, dst_dir.join("model.safetensors")).unwrap();
    std::fs::copy(
        src.parent().unwrap().join("config.json"),
        dst_dir.join("config.json"),
    )
    .unwrap();
}

#[test]
fn missing_tensor_is_named() {
    for (sub, drop) in [
        ("hf", "encoder.block.1.layer.1.DenseReluDense.wi_1.weight"),
        ("original", "blocks.1.ffn.fc1.weight"),
        ("original", "blocks.0.pos_embedding.embedding.weight"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        write_without(
            &umt5_dir().join(sub).join("model.safetensors"),
            tmp.path(),
            drop,
        );
        let err = UMT5Encoder::load(tmp.path(), DType::F32, &Device::Cpu).unwrap_err();
        match &err {
            ModelError::MissingTensor { name, .. } => assert_eq!(name, drop),
            other => panic!("expected MissingTensor for {drop}, got {other}"),
        }
    }
}

#[test]
fn wrong_config_and_bad_inputs() {
    // config.json says 1 layer, the weights have 2: block 1 is unexpected.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        umt5_dir().join("hf/model.safetensors"),
        tmp.path().join("model.safetensors"),
    )
    .unwrap();
    let cfg = std::fs::read_to_string(umt5_dir().join("hf/config.json"))
        .unwrap()
        .replace("\"num_layers\": 2", "\"num_layers\": 1");
    std::fs::write(tmp.path().join("config.json"), cfg).unwrap();
    let err = UMT5Encoder::load(tmp.path(), DType::F32, &Device::Cpu).unwrap_err();
    assert!(matches!(err, ModelError::UnexpectedTensor { .. }), "{err}");

    // Not a T5 checkpoint.
    let tmp = tempfile::tempdir().unwrap();
    let t: HashMap<String, Tensor> = [(
        "foo.weight".to_string(),
        Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
    )]
    .into();
    candle_core::safetensors::save(&t, tmp.path().join("model.safetensors")).unwrap();
    let err = UMT5Encoder::load(tmp.path(), DType::F32, &Device::Cpu).unwrap_err();
    assert!(
        err.to_string().contains("not a umT5 encoder checkpoint"),
        "{err}"
    );

    // No weights at all.
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(
        UMT5Encoder::load(tmp.path(), DType::F32, &Device::Cpu).unwrap_err(),
        ModelError::NoWeights { .. }
    ));

    let enc = encoder("hf");
    let ids = Tensor::new(&[[1u32, 5000]], &Device::Cpu).unwrap();
    assert!(matches!(enc.forward(&ids, None), Err(ModelError::Input(_))));
    let ids = Tensor::new(&[[1u32, 2]], &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 0]], &Device::Cpu).unwrap();
    assert!(matches!(
        enc.forward(&ids, Some(&mask)),
        Err(ModelError::Input(_))
    ));
    assert!(matches!(
        UMT5Encoder::load(&umt5_dir().join("hf"), DType::U8, &Device::Cpu),
        Err(ModelError::Input(_))
    ));
}
