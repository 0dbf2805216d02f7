//! CoSENT (Su 2022, "CoSENT: A more efficient sentence vector scheme than Sentence-BERT"), as
//! sentence-transformers' `CoSENTLoss`: for scored pairs, every pair scored higher should have
//! a higher cosine.

use candle_core::{DType, Result, Tensor, D};

/// log(1 + Σ_{i,j: s_i > s_j} exp(scale · (cos_j − cos_i))).
pub fn cosent(a: &Tensor, b: &Tensor, scores: &Tensor, scale: f64) -> Result<Tensor> {
    let a = encoder::pooling::normalize(a)?;
    let b = encoder::pooling::normalize(b)?;
    let cos = (a * b)?.sum(D::Minus1)?.to_dtype(DType::F32)?; // [n]
    let n = cos.dim(0)?;
    // diff[i][j] = scale · (cos_j − cos_i), kept where s_i > s_j.
    let diff = (cos.unsqueeze(0)?.broadcast_sub(&cos.unsqueeze(1)?)? * scale)?;
    let s = scores.to_dtype(DType::F32)?;
    let wanted = s
        .unsqueeze(1)?
        .broadcast_gt(&s.unsqueeze(0)?)?
        .to_dtype(DType::F32)?;
    let masked = (diff + ((wanted - 1.0)? * 1e12)?)?.reshape(n * n)?;
    let with_zero = Tensor::cat(
        &[&Tensor::zeros(1, DType::F32, masked.device())?, &masked],
        0,
    )?;
    let max = with_zero.max_keepdim(0)?.detach();
    let lse = (with_zero
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(0)?
        .log()?
        + max)?;
    lse.squeeze(0)
}
