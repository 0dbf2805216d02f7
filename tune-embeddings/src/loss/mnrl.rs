//! MultipleNegativesRankingLoss and its symmetric variant, as sentence-transformers'
//! `MultipleNegativesRankingLoss` / `MultipleNegativesSymmetricRankingLoss` compute them
//! (van den Oord et al. 2018, "Representation Learning with Contrastive Predictive Coding";
//! Henderson et al. 2017 for in-batch negatives). The cached (GradCache) variant of both is
//! in `cached_mnrl.rs`.

use candle_core::{DType, Result, Tensor, D};

/// MultipleNegativesRankingLoss as sentence-transformers computes it: cosine similarities of
/// every anchor with every positive, times `scale`, cross-entropy against the diagonal (each
/// anchor's own positive; the other positives of the batch are its negatives).
/// `negatives`, when given, are appended as extra candidate columns.
pub fn mnrl_loss(
    anchors: &Tensor,
    positives: &Tensor,
    negatives: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let candidates = match negatives {
        Some(n) => Tensor::cat(&[positives, n], 0)?,
        None => positives.clone(),
    };
    let scores = (cosine_matrix(anchors, &candidates)? * scale)?;
    cross_entropy_diagonal(&scores)
}

/// `[n, d] × [m, d]` → `[n, m]` cosine similarities. Differentiable.
pub fn cosine_matrix(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let a = encoder::pooling::normalize(a)?;
    let b = encoder::pooling::normalize(b)?;
    a.matmul(&b.t()?)
}

/// Mean cross-entropy of `[n, m]` logits (m ≥ n) where row i's target is column i.
pub fn cross_entropy_diagonal(logits: &Tensor) -> Result<Tensor> {
    let logits = logits.to_dtype(DType::F32)?;
    let (n, _) = logits.dims2()?;
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_sum = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let log_probs = shifted.broadcast_sub(&log_sum)?;
    let target = log_probs.narrow(1, 0, n)?;
    let eye = Tensor::eye(n, DType::F32, logits.device())?;
    let picked = (target * eye)?.sum_all()?;
    picked.neg()? / n as f64
}

/// The symmetric MNRL: the mean of the anchor→positive loss ([`mnrl_loss`], hard negatives
/// included) and the positive→anchor loss (in-batch anchors only), as sentence-transformers'
/// `MultipleNegativesSymmetricRankingLoss`.
pub fn mnrl_symmetric_loss(
    anchors: &Tensor,
    positives: &Tensor,
    negatives: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let forward = mnrl_loss(anchors, positives, negatives, scale)?;
    let backward = (cosine_matrix(positives, anchors)? * scale)?;
    (forward + cross_entropy_diagonal(&backward)?)? / 2.0
}
