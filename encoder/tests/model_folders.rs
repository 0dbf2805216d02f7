//! Model folders as sentence-transformers writes them: the 6.x layout (fixture saved by pip's
//! sentence-transformers 6.3.0, see tests/data/st-6.3.0-all-MiniLM-L6-v2/SOURCE.md) loads and
//! embeds exactly as the 2.x layout of the same weights does.

mod support;

use std::path::Path;

use candle_core::Device;
use encoder::SentenceEncoder;
use support::{base_model, max_abs_diff, reference};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// The committed 6.x folder with the base model's weights (the same tensors 6.3.0 saved).
fn st6_folder(dir: &Path) -> std::path::PathBuf {
    let folder = dir.join("st6");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/st-6.3.0-all-MiniLM-L6-v2"),
        &folder,
    );
    std::fs::copy(
        base_model().join("model.safetensors"),
        folder.join("model.safetensors"),
    )
    .unwrap();
    folder
}

#[test]
fn a_folder_saved_by_sentence_transformers_6_embeds_like_the_base_model() {
    let dir = tempfile::tempdir().unwrap();
    let folder = st6_folder(dir.path());
    let st6 = SentenceEncoder::load(&folder, &Device::Cpu).unwrap();
    let base = SentenceEncoder::load(&base_model(), &Device::Cpu).unwrap();
    // 6.x keeps the max sequence length in tokenizer_config.json (256), not 512 positions.
    assert_eq!(st6.tokenizer.max_seq_length(), 256);
    assert!(st6.normalizes());
    assert_eq!(st6.dim(), 384);
    let items = reference();
    let texts: Vec<&str> = items.iter().map(|i| i.text.as_str()).collect();
    let got = st6.embed(&texts, 8).unwrap();
    let want = base.embed(&texts, 8).unwrap();
    assert_eq!(max_abs_diff(&got, &want), 0.0);
    for (i, item) in items.iter().enumerate() {
        let diff = max_abs_diff(&got[i * 384..(i + 1) * 384], &item.embedding);
        assert!(diff <= 1e-4, "item {}: max abs diff {diff}", item.id);
    }

    // 6.x also writes several pooling modes as a list.
    std::fs::write(
        folder.join("1_Pooling/config.json"),
        r#"{"embedding_dimension": 384, "pooling_mode": ["cls", "mean"], "include_prompt": true}"#,
    )
    .unwrap();
    let two = SentenceEncoder::load(&folder, &Device::Cpu).unwrap();
    assert_eq!(two.dim(), 768);
}

#[test]
fn unsupported_modules_and_pooling_modes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let folder = st6_folder(dir.path());
    std::fs::write(
        folder.join("1_Pooling/config.json"),
        r#"{"embedding_dimension": 384, "pooling_mode": "lasttoken"}"#,
    )
    .unwrap();
    let e = SentenceEncoder::load(&folder, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("last-token pooling"), "{e}");

    let modules = std::fs::read_to_string(folder.join("modules.json")).unwrap();
    let modules = modules.replace(
        "sentence_transformers.base.modules.normalize.Normalize",
        "sentence_transformers.base.modules.dense.Dense",
    );
    std::fs::write(folder.join("modules.json"), modules).unwrap();
    let e = SentenceEncoder::load(&folder, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("sentence_transformers.base.modules.dense.Dense is not supported"),
        "{e}"
    );
}
