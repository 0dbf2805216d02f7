//! Losses over sentence embeddings, and gradient caching (GradCache) so a large MNRL batch
//! fits in memory with the same loss and gradients.

use candle_core::{DType, Result, Tensor, Var, D};
use encoder::train::{cosine_matrix, cross_entropy_diagonal};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Loss {
    /// MultipleNegativesRankingLoss: cosine × scale, in-batch negatives (+ hard negatives).
    Mnrl { scale: f64 },
    /// The symmetric variant: the mean of anchor→positive and positive→anchor losses.
    MnrlSymmetric { scale: f64 },
    /// CoSENT on scored pairs: every pair scored higher should have a higher cosine.
    CoSent { scale: f64 },
}

impl Loss {
    pub fn describe(&self) -> String {
        match self {
            Loss::Mnrl { scale } => {
                format!("MultipleNegativesRankingLoss (cosine × {scale}, in-batch negatives)")
            }
            Loss::MnrlSymmetric { scale } => {
                format!("MultipleNegativesSymmetricRankingLoss (cosine × {scale})")
            }
            Loss::CoSent { scale } => format!("CoSENTLoss (scale {scale})"),
        }
    }

    /// The loss of one batch from its embedded columns: (anchor, positive[, negative]) for
    /// MNRL, (sentence1, sentence2) with `scores` for CoSENT.
    pub fn compute(&self, columns: &[Tensor], scores: Option<&Tensor>) -> Result<Tensor> {
        match *self {
            Loss::Mnrl { scale } => {
                encoder::train::mnrl_loss(&columns[0], &columns[1], columns.get(2), scale)
            }
            Loss::MnrlSymmetric { scale } => {
                let forward =
                    encoder::train::mnrl_loss(&columns[0], &columns[1], columns.get(2), scale)?;
                let backward = (cosine_matrix(&columns[1], &columns[0])? * scale)?;
                (forward + cross_entropy_diagonal(&backward)?)? / 2.0
            }
            Loss::CoSent { scale } => {
                let scores = scores.expect("CoSENT needs scores");
                cosent(&columns[0], &columns[1], scores, scale)
            }
        }
    }
}

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

/// Embeddings computed without keeping their graph, as [`Var`]s so the loss can be
/// differentiated with respect to them (the first pass of GradCache).
pub fn as_leaf(t: &Tensor) -> Result<Var> {
    Var::from_tensor(&t.detach())
}
