//! The fused CPU kernels give the same values and gradients as the candle compositions they
//! replace (which the other tests check against the reference model).

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use encoder::attention::{attention, attention_packed, AttentionDropout};
use encoder::fused;
use encoder::layers::{layer_norm_differentiable, softmax_differentiable, Mode, Packing};
use encoder::tokenize::PaddedBatch;

fn random(shape: &[usize], seed: u64) -> Tensor {
    // Deterministic values in [-3, 3] without a tensor RNG (whose stream candle may change).
    let n: usize = shape.iter().product();
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let data: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 6.0 - 3.0
        })
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Gradients of `Σ out ⊙ weights`.
fn weighted_grads(out: &Tensor, weights: &Tensor) -> GradStore {
    (out * weights)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap()
}

/// Gradient of `Σ out ⊙ weights` with respect to `input`.
fn grad_of(out: &Tensor, weights: &Tensor, input: &Var) -> Tensor {
    weighted_grads(out, weights).get(input).unwrap().clone()
}

/// Each named gradient is non-zero and within `tol` of the plain one, relative to the plain
/// one's largest magnitude when that exceeds 1.
fn assert_grads_close(fused: &GradStore, plain: &GradStore, vars: &[(&str, &Var, f32)]) {
    for &(name, var, tol) in vars {
        let a = fused.get(var).unwrap();
        let b = plain.get(var).unwrap();
        let d = max_abs_diff(a, b);
        let scale = b
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(scale > 0.0, "{name} gradient is zero");
        assert!(
            d <= tol * scale.max(1.0),
            "{name} gradient differs by {d} (scale {scale})"
        );
    }
}

#[test]
fn gelu_matches_candle_with_gradient() {
    let x = Var::from_tensor(&random(&[4, 33, 96], 1)).unwrap();
    let w = random(&[4, 33, 96], 2);
    let fused_out = fused::gelu(x.as_tensor()).unwrap();
    let plain_out = x.as_tensor().gelu_erf().unwrap();
    assert!(max_abs_diff(&fused_out, &plain_out) < 1e-6);
    let d = max_abs_diff(&grad_of(&fused_out, &w, &x), &grad_of(&plain_out, &w, &x));
    assert!(d < 1e-5, "gradient differs by {d}");
}

/// Masks for sequences of `lens` tokens padded to `t`.
fn mask_of(lens: &[usize], t: usize) -> Tensor {
    let mask: Vec<f32> = lens
        .iter()
        .flat_map(|&n| (0..t).map(move |j| if j < n { 1.0 } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (lens.len(), t), &Device::Cpu).unwrap()
}

/// A padded batch of sequences of `lens` tokens (ids do not matter here).
fn padded(lens: &[usize]) -> PaddedBatch {
    let ids: Vec<Vec<u32>> = lens.iter().map(|&n| vec![7; n]).collect();
    let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    PaddedBatch::new(&seqs, 0, DType::F32, &Device::Cpu).unwrap()
}

/// Attention from candle primitives: what the unfused path computes.
fn composed_attention(qkv: &Tensor, mask: &Tensor, heads: usize) -> Tensor {
    let (b, t, three_h) = qkv.dims3().unwrap();
    let hidden = three_h / 3;
    let d = hidden / heads;
    let split = |i: usize| {
        qkv.narrow(2, i * hidden, hidden)
            .unwrap()
            .reshape((b, t, heads, d))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
    };
    let (q, k, v) = (split(0), split(1), split(2));
    let bias = ((mask.ones_like().unwrap() - mask).unwrap() * -1e4)
        .unwrap()
        .reshape((b, 1, 1, t))
        .unwrap();
    let scores = (q.matmul(&k.t().unwrap()).unwrap() / (d as f64).sqrt())
        .unwrap()
        .broadcast_add(&bias)
        .unwrap();
    softmax_differentiable(&scores)
        .unwrap()
        .matmul(&v)
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((b, t, hidden))
        .unwrap()
}

#[test]
fn fused_attention_matches_composition_with_gradient() {
    let (b, t, heads, hidden) = (3, 21, 4, 64);
    let qkv = Var::from_tensor(&random(&[b, t, 3 * hidden], 3)).unwrap();
    let w = random(&[b, t, hidden], 4);
    // Sequence lengths 21, 13 and 1: padding after the tokens.
    let mask = mask_of(&[21, 13, 1], t);

    let fused_out = attention(qkv.as_tensor(), &mask, heads, None).unwrap();
    let plain_out = composed_attention(qkv.as_tensor(), &mask, heads);
    let d = max_abs_diff(&fused_out, &plain_out);
    assert!(d < 1e-5, "context differs by {d}");
    let d = max_abs_diff(
        &grad_of(&fused_out, &w, &qkv),
        &grad_of(&plain_out, &w, &qkv),
    );
    assert!(d < 1e-4, "gradient differs by {d}");
}

#[test]
fn packed_attention_matches_the_padded_batch_on_every_token() {
    let (b, t, heads, hidden) = (3, 21, 4, 64);
    let qkv = random(&[b, t, 3 * hidden], 5);
    let mask = mask_of(&[21, 13, 1], t);
    let packing = Packing::for_inference(&padded(&[21, 13, 1]), &Mode::Infer)
        .unwrap()
        .expect("a batch with padding packs");
    assert_eq!(packing.lengths, [21, 13, 1]);
    let packed_qkv = packing.pack(&qkv).unwrap();
    assert_eq!(packed_qkv.dims(), [35, 3 * hidden]);

    let packed = attention_packed(&packed_qkv, &packing.lengths, heads).unwrap();
    let padded = attention(&qkv, &mask, heads, None).unwrap();
    // Padding rows come back as zeros; the padded kernel computed something there.
    let real = mask.unsqueeze(2).unwrap();
    let d = max_abs_diff(
        &packing.unpack(&packed).unwrap(),
        &padded.broadcast_mul(&real).unwrap(),
    );
    // Summed over 13 keys instead of 21 with zeros: the same up to rounding.
    assert!(d < 1e-5, "packed context differs by {d}");
    assert_eq!(
        packing.unpack(&packing.pack(&qkv).unwrap()).unwrap().dims(),
        qkv.dims()
    );
}

#[test]
fn packing_is_for_padded_inference_only() {
    let train = Mode::train(encoder::layers::Dropout::new(1, 0.1, 0.1));
    assert!(Packing::for_inference(&padded(&[3, 2]), &train)
        .unwrap()
        .is_none());
    assert!(Packing::for_inference(&padded(&[3, 3]), &Mode::Infer)
        .unwrap()
        .is_none());
}

#[test]
fn attention_dropout_is_seeded_and_its_gradient_is_exact() {
    let (b, t, heads, hidden) = (2, 6, 2, 8);
    let x = random(&[b, t, 3 * hidden], 9);
    let w = random(&[b, t, hidden], 10);
    let mask = mask_of(&[6, 4], t);
    let drop = Some(AttentionDropout { p: 0.3, seed: 7 });
    let f = |x: &Tensor| {
        (attention(x, &mask, heads, drop).unwrap() * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    // Same seed, same masks; another seed, other masks; no dropout differs from both.
    assert_eq!(f(&x), f(&x));
    let other = attention(&x, &mask, heads, Some(AttentionDropout { p: 0.3, seed: 8 })).unwrap();
    let plain = attention(&x, &mask, heads, None).unwrap();
    let this = attention(&x, &mask, heads, drop).unwrap();
    assert!(max_abs_diff(&this, &other) > 1e-3);
    assert!(max_abs_diff(&this, &plain) > 1e-3);

    // The analytic gradient (through the same masks) against central differences.
    let var = Var::from_tensor(&x).unwrap();
    let out = attention(var.as_tensor(), &mask, heads, drop).unwrap();
    let grad = grad_of(&out, &w, &var)
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let base = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let eps = 1e-2f32;
    let mut nonzero = 0;
    for i in (0..base.len()).step_by(5) {
        let bump = |delta: f32| {
            let mut v = base.clone();
            v[i] += delta;
            f(&Tensor::from_vec(v, x.shape(), &Device::Cpu).unwrap())
        };
        let numeric = (bump(eps) - bump(-eps)) / (2.0 * eps);
        assert!(
            (numeric - grad[i]).abs() < 2e-3 * (1.0 + numeric.abs()),
            "element {i}: numeric {numeric}, analytic {}",
            grad[i]
        );
        nonzero += usize::from(grad[i].abs() > 1e-6);
    }
    assert!(nonzero > 10, "gradient is mostly zero");
}

#[test]
fn layer_norm_matches_composition_with_all_three_gradients() {
    let x = Var::from_tensor(&random(&[5, 7, 384], 5)).unwrap();
    let gamma = Var::from_tensor(&random(&[384], 6)).unwrap();
    let beta = Var::from_tensor(&random(&[384], 7)).unwrap();
    let w = random(&[5, 7, 384], 8);
    let eps = 1e-12;

    let fused_out = fused::layer_norm(
        x.as_tensor(),
        gamma.as_tensor(),
        beta.as_tensor(),
        eps as f32,
    )
    .unwrap();
    let plain_out =
        layer_norm_differentiable(x.as_tensor(), gamma.as_tensor(), beta.as_tensor(), eps).unwrap();
    assert!(max_abs_diff(&fused_out, &plain_out) < 1e-5);

    assert_grads_close(
        &weighted_grads(&fused_out, &w),
        &weighted_grads(&plain_out, &w),
        &[
            ("x", &x, 1e-4),
            ("weight", &gamma, 1e-3),
            ("bias", &beta, 1e-3),
        ],
    );
}

#[test]
fn linear_matches_matmul_plus_bias_with_all_three_gradients() {
    let x = Var::from_tensor(&random(&[37, 96], 11)).unwrap();
    let weight = Var::from_tensor(&random(&[160, 96], 12)).unwrap();
    let bias = Var::from_tensor(&random(&[160], 13)).unwrap();
    let w = random(&[37, 160], 14);

    let fused_out = fused::linear(x.as_tensor(), weight.as_tensor(), bias.as_tensor()).unwrap();
    let plain_out = x
        .as_tensor()
        .matmul(&weight.as_tensor().t().unwrap())
        .unwrap()
        .broadcast_add(bias.as_tensor())
        .unwrap();
    assert!(max_abs_diff(&fused_out, &plain_out) < 1e-4);

    let fused_grads = weighted_grads(&fused_out, &w);
    let plain_grads = weighted_grads(&plain_out, &w);
    for (name, var) in [("x", &x), ("weight", &weight), ("bias", &bias)] {
        let fused_grad = fused_grads.get(var).unwrap();
        let d = max_abs_diff(fused_grad, plain_grads.get(var).unwrap());
        assert!(d < 1e-3, "{name} gradient differs by {d}");
        // A gradient that tracked ops would keep the forward graph alive (a leak per step
        // once an optimizer folds it into its moments).
        assert!(!fused_grad.track_op(), "{name} gradient holds a graph");
    }
}

#[test]
fn pretransposed_linear_matches_matmul_plus_bias_with_all_three_gradients() {
    // A narrowing layer (in > out), the case apply-model stores transposed.
    let x = Var::from_tensor(&random(&[37, 160], 21)).unwrap();
    let weight_t = Var::from_tensor(&random(&[160, 96], 22)).unwrap();
    let bias = Var::from_tensor(&random(&[96], 23)).unwrap();
    let w = random(&[37, 96], 24);

    let fused_out =
        fused::linear_pretransposed(x.as_tensor(), weight_t.as_tensor(), bias.as_tensor()).unwrap();
    let plain_out = x
        .as_tensor()
        .matmul(weight_t.as_tensor())
        .unwrap()
        .broadcast_add(bias.as_tensor())
        .unwrap();
    assert!(max_abs_diff(&fused_out, &plain_out) < 1e-4);
    let untransposed = weight_t.as_tensor().t().unwrap().contiguous().unwrap();
    let d = max_abs_diff(
        &fused_out,
        &fused::linear(x.as_tensor(), &untransposed, bias.as_tensor()).unwrap(),
    );
    assert!(d < 1e-5, "the two layouts differ by {d}");

    let fused_grads = weighted_grads(&fused_out, &w);
    let plain_grads = weighted_grads(&plain_out, &w);
    for (name, var) in [("x", &x), ("weight_t", &weight_t), ("bias", &bias)] {
        let d = max_abs_diff(fused_grads.get(var).unwrap(), plain_grads.get(var).unwrap());
        assert!(d < 1e-3, "{name} gradient differs by {d}");
    }
}

#[test]
fn residual_layer_norm_matches_add_then_norm_with_all_gradients() {
    let x = Var::from_tensor(&random(&[3, 11, 384], 15)).unwrap();
    let r = Var::from_tensor(&random(&[3, 11, 384], 16)).unwrap();
    let gamma = Var::from_tensor(&random(&[384], 17)).unwrap();
    let beta = Var::from_tensor(&random(&[384], 18)).unwrap();
    let w = random(&[3, 11, 384], 19);
    let eps = 1e-12;

    let fused_out = fused::add_layer_norm(
        x.as_tensor(),
        r.as_tensor(),
        gamma.as_tensor(),
        beta.as_tensor(),
        eps as f32,
    )
    .unwrap();
    let sum = (x.as_tensor() + r.as_tensor()).unwrap();
    let plain_out =
        layer_norm_differentiable(&sum, gamma.as_tensor(), beta.as_tensor(), eps).unwrap();
    assert!(max_abs_diff(&fused_out, &plain_out) < 1e-5);

    assert_grads_close(
        &weighted_grads(&fused_out, &w),
        &weighted_grads(&plain_out, &w),
        &[
            ("x", &x, 1e-3),
            ("residual", &r, 1e-3),
            ("weight", &gamma, 1e-3),
            ("bias", &beta, 1e-3),
        ],
    );
}
