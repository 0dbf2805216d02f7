//! The encoder against sentence-transformers' own numbers, on the real all-MiniLM-L6-v2.

mod support;

use candle_core::{DType, Device};
use encoder::{cosine, Mode, SentenceEncoder};
use support::{base_model, max_abs_diff, reference};

fn encoder() -> SentenceEncoder {
    SentenceEncoder::load(&base_model(), &Device::Cpu).expect("load base model")
}

#[test]
fn matches_known_values() {
    let enc = encoder();
    let e = enc.embed(&["hello world"], 1).unwrap();
    let expected = [-0.034477, 0.031023, 0.006735, 0.026109, -0.039362];
    for (got, want) in e.iter().zip(expected) {
        assert!(
            (got - want).abs() < 1e-4,
            "hello world: {:?} vs {expected:?}",
            &e[..5]
        );
    }
    let e = enc
        .embed(
            &["A man is eating food.", "A man is eating a piece of bread."],
            2,
        )
        .unwrap();
    let cos = cosine(&e[..384], &e[384..]);
    assert!((cos - 0.7553).abs() < 1e-3, "cosine {cos}");
}

#[test]
fn matches_reference_file_token_ids_and_embeddings() {
    let enc = encoder();
    let items = reference();
    assert_eq!(items.len(), 18);
    let texts: Vec<&str> = items.iter().map(|i| i.text.as_str()).collect();
    let ids = enc.tokenizer.encode_batch(&texts).unwrap();
    for (item, ids) in items.iter().zip(&ids) {
        assert_eq!(ids, &item.token_ids, "token ids of item {}", item.id);
    }
    // Truncation follows sentence_bert_config.json (256), not tokenizer.json (128).
    let long = items
        .iter()
        .position(|i| i.n_tokens_untruncated > 256)
        .unwrap();
    assert_eq!(ids[long].len(), 256);
    let emb = enc.embed(&texts, 8).unwrap();
    for (i, item) in items.iter().enumerate() {
        let got = &emb[i * 384..(i + 1) * 384];
        let cos = cosine(got, &item.embedding);
        let diff = max_abs_diff(got, &item.embedding);
        assert!(
            cos >= 0.9999 && diff <= 1e-4,
            "item {}: cosine {cos}, max abs diff {diff}",
            item.id
        );
    }
}

#[test]
fn batch_composition_does_not_change_embeddings() {
    let enc = encoder();
    let items = reference();
    let texts: Vec<&str> = items.iter().map(|i| i.text.as_str()).collect();
    let together = enc.embed(&texts, 18).unwrap();
    let mut alone = Vec::new();
    for t in &texts {
        alone.extend(enc.embed(&[t], 1).unwrap());
    }
    let diff = max_abs_diff(&together, &alone);
    assert!(
        diff < 1e-5,
        "padding leaked into embeddings: max abs diff {diff}"
    );
}

#[test]
fn half_precision_inference_tracks_f32() {
    // candle's unfused ops serve bf16/f16 (the GPU path); on CPU they run too, slowly.
    let texts = [
        "hello world",
        "The senate ratified the treaty after a long debate about tariffs.",
    ];
    let f32s = encoder().embed(&texts, 2).unwrap();
    for dtype in [DType::BF16, DType::F16] {
        let enc = SentenceEncoder::load_with_dtype(&base_model(), &Device::Cpu, dtype).unwrap();
        let half = enc.embed(&texts, 2).unwrap();
        for (i, text) in texts.iter().enumerate() {
            let row = i * 384..(i + 1) * 384;
            let cos = cosine(&half[row.clone()], &f32s[row]);
            eprintln!("{dtype:?} {text:?}: cosine {cos} to f32");
            assert!(cos > 0.999, "{dtype:?} {text:?}: cosine {cos} to f32");
        }
    }
}

#[test]
fn training_ops_agree_with_inference_kernels() {
    let enc = encoder();
    let texts = [
        "A man is eating food.",
        "Short",
        "A considerably longer sentence, to force padding.",
    ];
    let ids = enc.tokenizer.encode_batch(&texts).unwrap();
    let seqs: Vec<&[u32]> = ids.iter().map(|v| v.as_slice()).collect();
    let batch = enc.pad(&seqs).unwrap();
    let infer = enc.forward(&batch, &mut Mode::Infer).unwrap();
    // Dropout 0: the differentiable path must compute the same function.
    let mut train = Mode::train(encoder::Dropout::new(0, 0.0, 0.0));
    let trained = enc.forward(&batch, &mut train).unwrap();
    let diff = (infer - trained)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-5, "train vs infer path differ by {diff}");
}

#[test]
fn dropout_is_real_and_seeded() {
    let enc = encoder();
    let ids = enc
        .tokenizer
        .encode_batch(&["A man is eating food."])
        .unwrap();
    let batch = enc.pad(&[ids[0].as_slice()]).unwrap();
    let run = |seed| {
        let mut mode = enc.train_mode(seed);
        enc.forward(&batch, &mut mode)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let (a, b, c) = (run(1), run(1), run(2));
    assert_eq!(a, b, "same seed, same dropout masks");
    assert!(
        max_abs_diff(&a, &c) > 1e-3,
        "different seeds must drop different units"
    );
    let infer = enc.embed(&["A man is eating food."], 1).unwrap();
    assert!(
        max_abs_diff(&a, &infer) > 1e-3,
        "training forward must apply dropout"
    );
}

#[test]
fn fused_and_composed_paths_drop_the_same_units() {
    // f64 takes candle's composed ops (the path GPUs take); f32 on CPU the fused kernels.
    // The same seed must give the same training forward on both.
    let texts = ["A man is eating food.", "Short"];
    let forward = |dtype: DType| {
        let enc = SentenceEncoder::load_with_dtype(&base_model(), &Device::Cpu, dtype).unwrap();
        let ids = enc.tokenizer.encode_batch(&texts).unwrap();
        let seqs: Vec<&[u32]> = ids.iter().map(|v| v.as_slice()).collect();
        let mut mode = Mode::train(encoder::Dropout::new(5, 0.1, 0.1));
        enc.forward(&enc.pad(&seqs).unwrap(), &mut mode)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let diff = max_abs_diff(&forward(DType::F32), &forward(DType::F64));
    assert!(
        diff < 1e-4,
        "fused vs composed training forward differ by {diff}"
    );
}
