//! Shared by the integration tests: the real base model, fetched through the same script users
//! run, and the reference embeddings copied from the project's shared material.
#![allow(dead_code)]

use std::path::Path;

pub use common::testing::base_model;

pub struct RefItem {
    pub id: String,
    pub text: String,
    pub token_ids: Vec<u32>,
    pub n_tokens_untruncated: usize,
    pub embedding: Vec<f32>,
}

pub fn reference() -> Vec<RefItem> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/all-MiniLM-L6-v2.embeddings.json");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    // Numbers and lists are stored as strings in the reference file.
    let parse = |v: &serde_json::Value| -> serde_json::Value {
        match v {
            serde_json::Value::String(s) => serde_json::from_str(s).unwrap(),
            other => other.clone(),
        }
    };
    doc["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|it| RefItem {
            id: it["id"].to_string(),
            text: it["text"].as_str().unwrap().to_string(),
            token_ids: serde_json::from_value(parse(&it["token_ids"])).unwrap(),
            n_tokens_untruncated: serde_json::from_value(parse(&it["n_tokens_untruncated"]))
                .unwrap(),
            embedding: serde_json::from_value(parse(&it["embedding"])).unwrap(),
        })
        .collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
