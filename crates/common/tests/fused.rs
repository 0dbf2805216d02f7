//! The fused CPU kernels give the same values and gradients as the candle compositions they
//! replace (which the other tests check against the reference model).

use candle_core::{Device, Tensor, Var, D};
use common::model::fused;
use common::model::layers::{layer_norm_differentiable, softmax_differentiable};

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

/// Gradient of `Σ out ⊙ weights` with respect to `input`.
fn grad_of(out: &Tensor, weights: &Tensor, input: &Var) -> Tensor {
    let loss = (out * weights).unwrap().sum_all().unwrap();
    loss.backward().unwrap().get(input).unwrap().clone()
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

#[test]
fn attention_softmax_matches_masked_composition_with_gradient() {
    let (b, h, t) = (3, 4, 21);
    let scores = Var::from_tensor(&random(&[b, h, t, t], 3)).unwrap();
    let w = random(&[b, h, t, t], 4);
    // Sequence lengths 21, 13 and 1: padding after the tokens.
    let lens = [21usize, 13, 1];
    let mask: Vec<f32> = lens
        .iter()
        .flat_map(|&n| (0..t).map(move |j| if j < n { 1.0 } else { 0.0 }))
        .collect();
    let mask = Tensor::from_vec(mask, (b, t), &Device::Cpu).unwrap();
    let scale = 0.177;

    let fused_out = fused::attention_softmax(scores.as_tensor(), &mask, scale).unwrap();
    let bias = ((mask.ones_like().unwrap() - &mask).unwrap() * -1e4)
        .unwrap()
        .reshape((b, 1, 1, t))
        .unwrap();
    let plain_out = softmax_differentiable(
        &(scores.as_tensor() * scale as f64)
            .unwrap()
            .broadcast_add(&bias)
            .unwrap(),
    )
    .unwrap();
    assert!(max_abs_diff(&fused_out, &plain_out) < 1e-6);
    // Padding keys get exactly nothing; rows sum to one.
    let padded = fused_out.narrow(0, 1, 1).unwrap().narrow(3, 13, 8).unwrap();
    assert_eq!(
        padded
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
    let sums = fused_out.sum(D::Minus1).unwrap().flatten_all().unwrap();
    assert!(max_abs_diff(&sums, &sums.ones_like().unwrap()) < 1e-6);

    let d = max_abs_diff(
        &grad_of(&fused_out, &w, &scores),
        &grad_of(&plain_out, &w, &scores),
    );
    assert!(d < 1e-5, "gradient differs by {d}");
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

    let fused_grads = (&fused_out * &w)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let plain_grads = (&plain_out * &w)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (name, var, tol) in [
        ("x", &x, 1e-4),
        ("weight", &gamma, 1e-3),
        ("bias", &beta, 1e-3),
    ] {
        let a = fused_grads.get(var).unwrap();
        let b = plain_grads.get(var).unwrap();
        let d = max_abs_diff(a, b);
        let scale = b
            .abs()
            .unwrap()
            .max_keepdim(0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            d <= tol * scale.max(1.0),
            "{name} gradient differs by {d} (scale {scale})"
        );
        assert!(scale > 0.0, "{name} gradient is zero");
    }
}
