//! GradCache (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
//! Limited Setup"), as sentence-transformers' `CachedMultipleNegativesRankingLoss` and
//! `CachedMultipleNegativesSymmetricRankingLoss` do it: embed the batch in mini-batches
//! without keeping their graphs, differentiate the loss with respect to the embeddings, then
//! re-run each mini-batch (same dropout masks) and back-propagate its share. The loss and the
//! gradients equal those of one pass over the whole batch; memory is that of one mini-batch.

use std::ops::Range;

use candle_core::{DType, Result, Tensor, Var};

use super::Loss;
use crate::optim::{accumulate, grads_of, scaled_backward, unscale, Grads};

/// The loss of a batch of `rows` examples and the gradients of `vars`, by GradCache.
///
/// `embed(column, k, rows)` runs the forward pass (with its graph) of mini-batch `k` of a
/// column, the examples `rows` of the batch; it must draw the same dropout masks each time it
/// is called with the same `(column, k)`. `scores`: CoSENT's, `[rows]`. `loss_scale`
/// multiplies the loss before back-propagation (f16); the gradients returned are unscaled.
#[allow(clippy::too_many_arguments)]
pub fn cached_grads(
    loss: &Loss,
    vars: &[(String, Var)],
    columns: usize,
    rows: usize,
    mini: usize,
    scores: Option<&Tensor>,
    loss_scale: f64,
    embed: impl Fn(usize, usize, Range<usize>) -> Result<Tensor>,
) -> Result<(f64, Grads)> {
    let chunks = || (0..rows.div_ceil(mini)).map(|k| (k, k * mini..((k + 1) * mini).min(rows)));
    let mut leaves: Vec<Var> = Vec::with_capacity(columns);
    for c in 0..columns {
        let mut parts = Vec::new();
        for (k, range) in chunks() {
            parts.push(embed(c, k, range)?.detach());
        }
        leaves.push(Var::from_tensor(&Tensor::cat(&parts, 0)?.detach())?);
    }
    let embedded: Vec<Tensor> = leaves.iter().map(|v| v.as_tensor().clone()).collect();
    let value = loss.compute(&embedded, scores)?;
    let rep_grads = scaled_backward(&value, loss_scale)?;
    let mut total: Grads = vec![None; vars.len()];
    for (c, leaf) in leaves.iter().enumerate() {
        let g = rep_grads
            .get(leaf.as_tensor())
            .ok_or_else(|| candle_core::Error::Msg("loss does not depend on a column".into()))?;
        for (k, range) in chunks() {
            let g_part = g.narrow(0, range.start, range.len())?;
            let surrogate = (embed(c, k, range)? * g_part)?.sum_all()?;
            accumulate(&mut total, grads_of(vars, &surrogate.backward()?))?;
        }
    }
    unscale(&mut total, loss_scale)?;
    Ok((value.to_dtype(DType::F64)?.to_scalar::<f64>()?, total))
}
