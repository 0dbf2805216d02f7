//! The encoder can be trained: gradients reach every parameter, AdamW lowers the loss, and a
//! saved model reloads to the same embeddings under the base model's tensor names.

use candle_core::{DType, Device};
use common::testing::base_model;
use encoder::{cosine, Dropout, Mode, ModelCard, SentenceEncoder};
use tune_embeddings::loss::mnrl_loss;
use tune_embeddings::optim::{clip_grad_norm, grads_of, AdamW, AdamWConfig};

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

const PAIRS: [(&str, &str); 8] = [
    (
        "The senate ratified the treaty.",
        "Lawmakers approved the international agreement.",
    ),
    (
        "Tariffs on imported iron were raised.",
        "Duties on foreign iron went up.",
    ),
    (
        "The army was reduced after the war.",
        "Troop numbers fell once peace returned.",
    ),
    (
        "Revenue from land sales increased.",
        "The sale of public lands brought in more money.",
    ),
    (
        "A new postal route opened in the west.",
        "Mail service expanded to western territories.",
    ),
    (
        "The national debt was paid down.",
        "The government reduced what it owed.",
    ),
    (
        "Relations with Spain remained tense.",
        "Diplomacy with the Spanish was strained.",
    ),
    (
        "Indian affairs require attention.",
        "Matters concerning the tribes need care.",
    ),
];

fn batch_loss(
    enc: &SentenceEncoder,
    pairs: &[(&str, &str)],
    mode: &mut Mode,
) -> candle_core::Tensor {
    let anchors: Vec<&str> = pairs.iter().map(|p| p.0).collect();
    let positives: Vec<&str> = pairs.iter().map(|p| p.1).collect();
    let embed = |texts: &[&str], mode: &mut Mode| {
        let ids = enc.tokenizer.encode_batch(texts).unwrap();
        let seqs: Vec<&[u32]> = ids.iter().map(|v| v.as_slice()).collect();
        enc.forward(&enc.pad(&seqs).unwrap(), mode).unwrap()
    };
    let a = embed(&anchors, mode);
    let p = embed(&positives, mode);
    mnrl_loss(&a, &p, None, 20.0).unwrap()
}

#[test]
fn every_parameter_receives_a_finite_nonzero_gradient() {
    let mut enc = SentenceEncoder::load(&base_model(), &Device::Cpu).unwrap();
    let vars = enc.make_trainable().unwrap();
    // 6 layers × 16 tensors + 5 embedding tensors; the pooler and position_ids are not used.
    assert_eq!(
        vars.len(),
        6 * 16 + 5,
        "trainable tensors: {:?}",
        vars.iter().map(|v| &v.0).collect::<Vec<_>>()
    );
    let mut mode = enc.train_mode(7);
    let loss = batch_loss(&enc, &PAIRS[..4], &mut mode);
    let grads = loss.backward().unwrap();
    for (name, var) in &vars {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(
            g.iter().all(|x| x.is_finite()),
            "{name}: non-finite gradient"
        );
        let norm: f32 = g.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(norm > 0.0, "{name}: zero gradient");
    }
}

#[test]
fn bf16_autocast_gives_f32_gradients_close_to_f32_training() {
    let grads_with = |autocast: DType| {
        let mut enc = SentenceEncoder::load(&base_model(), &Device::Cpu).unwrap();
        let vars = enc.make_trainable().unwrap();
        enc.set_autocast(autocast).unwrap();
        assert_eq!(enc.compute_dtype(), autocast);
        // No dropout: both runs must compute the same function up to rounding.
        let mut mode = Mode::train(Dropout::new(0, 0.0, 0.0));
        let loss = batch_loss(&enc, &PAIRS[..4], &mut mode);
        assert_eq!(loss.dtype(), DType::F32, "the loss stays f32");
        let grads = loss.backward().unwrap();
        let flat: Vec<Vec<f32>> = vars
            .iter()
            .map(|(name, var)| {
                let g = grads
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("{name}: no gradient under {autocast:?}"));
                assert_eq!(g.dtype(), DType::F32, "{name}: master gradient dtype");
                g.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            })
            .collect();
        (loss.to_scalar::<f32>().unwrap(), flat)
    };
    let (loss32, g32) = grads_with(DType::F32);
    let (loss16, g16) = grads_with(DType::BF16);
    assert!(
        (loss32 - loss16).abs() < 0.05 * loss32.abs().max(0.1),
        "loss f32 {loss32} vs bf16 {loss16}"
    );
    for (i, b) in g16.iter().enumerate() {
        assert!(b.iter().all(|x| x.is_finite()), "tensor {i}: non-finite");
        assert!(b.iter().any(|&x| x != 0.0), "tensor {i}: zero gradient");
    }
    let all32: Vec<f32> = g32.concat();
    let all16: Vec<f32> = g16.concat();
    let cos = cosine(&all32, &all16);
    eprintln!("loss f32 {loss32} bf16 {loss16}; gradient cosine {cos}");
    assert!(cos > 0.99, "bf16 gradient direction vs f32: cosine {cos}");
}

#[test]
fn adamw_steps_drive_the_loss_down() {
    let mut enc = SentenceEncoder::load(&base_model(), &Device::Cpu).unwrap();
    let vars = enc.make_trainable().unwrap();
    let mut opt = AdamW::new(&vars, AdamWConfig::default()).unwrap();
    // The natural pairs are too easy (loss ≈ 0.02 before training); pairing each anchor with
    // an unrelated sentence gives the model arbitrary associations to learn.
    let shifted: Vec<(&str, &str)> = (0..8).map(|i| (PAIRS[i].0, PAIRS[(i + 3) % 8].1)).collect();
    let mut mode = enc.train_mode(11);
    let mut losses = Vec::new();
    for _ in 0..20 {
        let loss = batch_loss(&enc, &shifted, &mut mode);
        losses.push(loss.to_scalar::<f32>().unwrap());
        let mut grads = grads_of(&vars, &loss.backward().unwrap());
        clip_grad_norm(&mut grads, 1.0).unwrap();
        opt.step(&grads, 2e-5).unwrap();
    }
    eprintln!("losses: {losses:?}");
    assert!(losses[0] > 1.0, "the task should start hard: {losses:?}");
    // Monotonically-ish: each window of 5 steps averages below the one before.
    let means: Vec<f32> = losses
        .chunks(5)
        .map(|w| w.iter().sum::<f32>() / 5.0)
        .collect();
    assert!(
        means.windows(2).all(|w| w[1] < w[0]),
        "window means {means:?}"
    );
    assert!(
        means[3] < 0.2 * losses[0],
        "loss should drop a lot: {losses:?}"
    );
    assert_eq!(opt.steps_taken(), 20);
}

#[test]
fn save_then_load_reproduces_embeddings_and_tensor_names() {
    let mut enc = SentenceEncoder::load(&base_model(), &Device::Cpu).unwrap();
    // Change the weights a little so the test would notice the base model being saved.
    let vars = enc.make_trainable().unwrap();
    let mut opt = AdamW::new(&vars, AdamWConfig::default()).unwrap();
    let loss = batch_loss(&enc, &PAIRS[..4], &mut enc.train_mode(3));
    opt.step(&grads_of(&vars, &loss.backward().unwrap()), 1e-3)
        .unwrap();

    let texts = ["hello world", "The senate ratified the treaty."];
    let before = enc.embed(&texts, 2).unwrap();
    let base = enc.embed(&texts, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tuned");
    let card = ModelCard {
        title: "test".into(),
        base_model: "sentence-transformers/all-MiniLM-L6-v2".into(),
        ..Default::default()
    };
    enc.save(&out, &card).unwrap();
    let reloaded = SentenceEncoder::load(&out, &Device::Cpu).unwrap();
    assert_eq!(
        reloaded.embed(&texts, 2).unwrap(),
        before,
        "reload must be exact"
    );
    let original = SentenceEncoder::load(&base_model(), &Device::Cpu).unwrap();
    assert!(
        max_abs_diff(&original.embed(&texts, 2).unwrap(), &base) > 1e-6,
        "the step changed nothing"
    );
    assert_eq!(
        reloaded.weights().file_names(),
        original.weights().file_names()
    );
    for f in [
        "modules.json",
        "sentence_bert_config.json",
        "config.json",
        "config_sentence_transformers.json",
        "1_Pooling/config.json",
        "tokenizer.json",
        "model.safetensors",
        "README.md",
    ] {
        assert!(out.join(f).exists(), "saved folder lacks {f}");
    }
    assert!(out.join("2_Normalize").is_dir());
    // Saving over an existing folder replaces it.
    enc.save(&out, &card).unwrap();
    assert_eq!(
        SentenceEncoder::load(&out, &Device::Cpu)
            .unwrap()
            .embed(&texts, 2)
            .unwrap(),
        before
    );
}
