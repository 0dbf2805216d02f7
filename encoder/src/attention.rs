//! Fused multi-head self-attention core on CPU f32, with its backward: from the `[q | k | v]`
//! projections side by side straight to the per-token context, one (sequence, head) per task,
//! over a padded batch or (inference) over sequences packed back to back.
//!
//! Composed from candle ops, the core splits q, k and v into heads (three copies), runs
//! hundreds of tiny batched matmuls, materialises scores, probabilities and a dropout mask of
//! `batch × heads × seq²` each, and copies the heads back; at 47-token sentences that was a
//! sixth of inference time. Here each task reads its head in place through strides, keeps its
//! `seq × seq` block in a scratch buffer, and writes its slice of the output. The backward
//! recomputes the probabilities instead of storing them (as flash attention does), and
//! dropout draws its mask from a seed per call, so both passes see the same mask.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::kernels;

/// Attention dropout: probability and the seed its masks are drawn from.
#[derive(Clone, Copy, Debug)]
pub struct AttentionDropout {
    pub p: f32,
    pub seed: u64,
}

/// `qkv`: `[batch, seq, 3·hidden]`, the query, key and value projections side by side (each
/// head's columns contiguous within them); `mask`: `[batch, seq]`, 1 for tokens, 0 for
/// padding. Returns the context `[batch, seq, hidden]` (heads side by side).
pub fn attention(
    qkv: &Tensor,
    mask: &Tensor,
    heads: usize,
    dropout: Option<AttentionDropout>,
) -> Result<Tensor> {
    let (b, t, three_h) = qkv.dims3()?;
    if !three_h.is_multiple_of(3 * heads) || mask.dims() != [b, t] {
        candle_core::bail!(
            "attention: qkv {:?} and mask {:?} do not fit {heads} heads",
            qkv.dims(),
            mask.dims()
        );
    }
    let dropout = dropout.filter(|d| d.p > 0.0);
    qkv.contiguous()?
        .apply_op2(&mask.contiguous()?, Attention { heads, dropout })
}

/// Inference over sequences packed back to back without padding: `qkv` `[tokens, 3·hidden]`
/// holds sequences of `lengths` tokens one after the other. Returns the context
/// `[tokens, hidden]`. No dropout and no backward: training batches stay padded.
pub fn attention_packed(qkv: &Tensor, lengths: &[usize], heads: usize) -> Result<Tensor> {
    let (tokens, three_h) = qkv.dims2()?;
    if !three_h.is_multiple_of(3 * heads) || lengths.iter().sum::<usize>() != tokens {
        candle_core::bail!(
            "attention: qkv {:?} does not fit {heads} heads and sequences of {lengths:?} tokens",
            qkv.dims()
        );
    }
    qkv.contiguous()?.apply_op1_no_bwd(&PackedAttention {
        heads,
        lengths: lengths.to_vec(),
    })
}

struct Attention {
    heads: usize,
    dropout: Option<AttentionDropout>,
}

struct PackedAttention {
    heads: usize,
    lengths: Vec<usize>,
}

/// One sequence of a call: its first row, its rows, and which of them are tokens (1) or
/// padding (0).
struct Span<'a> {
    start: usize,
    len: usize,
    mask: &'a [f32],
}

/// Shapes of one call.
#[derive(Clone, Copy)]
struct Dims {
    hidden: usize,
    heads: usize,
    head_dim: usize,
}

impl Dims {
    /// From the width of a `[.., 3·hidden]` row.
    fn of(qkv_row: usize, heads: usize) -> Self {
        let hidden = qkv_row / 3;
        Dims {
            hidden,
            heads,
            head_dim: hidden / heads,
        }
    }

    /// Where head `head`'s q, k and v columns start within a `[.., 3·hidden]` row.
    fn qkv_columns(&self, head: usize) -> [usize; 3] {
        let col = head * self.head_dim;
        [col, self.hidden + col, 2 * self.hidden + col]
    }

    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
}

/// A raw pointer that tasks writing disjoint parts of one buffer can share.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: every task writes a disjoint set of elements (its own head's columns).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// A method, so closures capture the whole (Sync) wrapper rather than the raw field.
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// `dst (m×n) = lhs (m×k) · rhs (k×n)`, or `+=` with `accumulate`; every operand given by a
/// pointer and (row, column) strides in elements.
///
/// # Safety
/// The pointers must cover the strided extents, and `dst` must not alias the inputs.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    lhs: *const f32,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: *const f32,
    (rhs_rs, rhs_cs): (usize, usize),
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        dst_cs as isize,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

/// The dropout factors of one (sequence, head) block: the same in forward and backward
/// because they depend on the seed and the block index alone.
fn dropout_block(d: &AttentionDropout, block: usize, out: &mut [f32]) {
    kernels::dropout_mask(d.seed, block as u64, d.p, out);
}

/// Probabilities of one (sequence, head): `probs = softmax(scale · q kᵀ)` over real keys.
///
/// # Safety
/// `qkv` points at the sequence's `[span.len, 3·hidden]` block.
unsafe fn head_probs(dims: &Dims, qkv: *const f32, head: usize, span: &Span, probs: &mut [f32]) {
    let Dims {
        hidden, head_dim, ..
    } = *dims;
    let seq = span.len;
    let [q, k, _] = dims.qkv_columns(head).map(|c| qkv.add(c));
    matmul(
        (seq, seq, head_dim),
        probs.as_mut_ptr(),
        (seq, 1),
        false,
        q,
        (3 * hidden, 1),
        k,
        (1, 3 * hidden),
    );
    kernels::softmax_in_place(probs, span.mask, dims.scale());
}

/// The context `[rows, hidden]` of the sequences in `spans`, one task per (sequence, head).
fn context(
    qkv: &[f32],
    dims: Dims,
    spans: &[Span],
    dropout: Option<&AttentionDropout>,
) -> Vec<f32> {
    let Dims {
        hidden,
        heads,
        head_dim,
    } = dims;
    let mut out = vec![0f32; qkv.len() / 3];
    let dst = SharedMut(out.as_mut_ptr());
    (0..spans.len() * heads).into_par_iter().for_each_init(
        || (Vec::new(), Vec::new()),
        |(probs, keep): &mut (Vec<f32>, Vec<f32>), block| {
            let (span, h) = (&spans[block / heads], block % heads);
            let seq = span.len;
            probs.resize(seq * seq, 0.0);
            let probs = &mut probs[..seq * seq];
            // SAFETY: offsets stay inside the span; this task alone writes head h's columns
            // of the span's output.
            unsafe {
                let qkv = qkv.as_ptr().add(span.start * 3 * hidden);
                head_probs(&dims, qkv, h, span, probs);
                if let Some(d) = dropout {
                    keep.resize(seq * seq, 0.0);
                    dropout_block(d, block, &mut keep[..seq * seq]);
                    probs.iter_mut().zip(keep.iter()).for_each(|(p, k)| *p *= k);
                }
                matmul(
                    (seq, head_dim, seq),
                    dst.ptr().add(span.start * hidden + h * head_dim),
                    (hidden, 1),
                    false,
                    probs.as_ptr(),
                    (seq, 1),
                    qkv.add(dims.qkv_columns(h)[2]),
                    (3 * hidden, 1),
                );
            }
        },
    );
    out
}

/// A padded batch's sequences: sequence b at row b·seq, `seq` rows, masked.
fn padded_spans(mask: &[f32], batch: usize, seq: usize) -> Vec<Span<'_>> {
    (0..batch)
        .map(|b| Span {
            start: b * seq,
            len: seq,
            mask: &mask[b * seq..(b + 1) * seq],
        })
        .collect()
}

impl CustomOp1 for PackedAttention {
    fn name(&self) -> &'static str {
        "fused-attention-packed"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = super::fused::slice(s, l, self.name())?;
        let (tokens, three_h) = l.shape().dims2()?;
        let dims = Dims::of(three_h, self.heads);
        let ones = vec![1f32; self.lengths.iter().copied().max().unwrap_or(0)];
        let spans: Vec<Span> = self
            .lengths
            .iter()
            .scan(0, |start, &len| {
                let span = Span {
                    start: *start,
                    len,
                    mask: &ones[..len],
                };
                *start += len;
                Some(span)
            })
            .collect();
        let out = context(qkv, dims, &spans, None);
        Ok((CpuStorage::F32(out), Shape::from((tokens, dims.hidden))))
    }
}

impl CustomOp2 for Attention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let qkv = super::fused::slice(s1, l1, self.name())?;
        let mask = super::fused::slice(s2, l2, self.name())?;
        let (batch, seq, three_h) = l1.shape().dims3()?;
        let dims = Dims::of(three_h, self.heads);
        let spans = padded_spans(mask, batch, seq);
        let out = context(qkv, dims, &spans, self.dropout.as_ref());
        Ok((CpuStorage::F32(out), Shape::from((batch, seq, dims.hidden))))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        mask: &Tensor,
        _ctx: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_qkv = qkv.apply_op3_no_bwd(
            mask,
            &grad.contiguous()?,
            &AttentionGrad {
                heads: self.heads,
                dropout: self.dropout,
            },
        )?;
        Ok((Some(grad_qkv), None))
    }
}

struct AttentionGrad {
    heads: usize,
    dropout: Option<AttentionDropout>,
}

impl candle_core::CustomOp3 for AttentionGrad {
    fn name(&self) -> &'static str {
        "fused-attention-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let qkv = super::fused::slice(s1, l1, self.name())?;
        let mask = super::fused::slice(s2, l2, self.name())?;
        let grad = super::fused::slice(s3, l3, self.name())?;
        let (batch, seq, three_h) = l1.shape().dims3()?;
        let dims = Dims::of(three_h, self.heads);
        let Dims {
            hidden,
            heads,
            head_dim,
        } = dims;
        let spans = padded_spans(mask, batch, seq);
        let mut out = vec![0f32; qkv.len()];
        let dst = SharedMut(out.as_mut_ptr());
        let scratch = || [(); 4].map(|()| vec![0f32; seq * seq]);
        (0..batch * heads).into_par_iter().for_each_init(
            scratch,
            |[probs, keep, dropped, dprobs], block| {
                let (b, h) = (block / heads, block % heads);
                let row = 3 * hidden;
                // SAFETY: as in the forward; this task alone writes head h's q, k and v
                // columns of sequence b's gradient.
                unsafe {
                    let qkv = qkv.as_ptr().add(b * seq * row);
                    let go = grad.as_ptr().add(b * seq * hidden + h * head_dim);
                    let out = dst.ptr().add(b * seq * row);
                    let (q, k, v) = (
                        qkv.add(h * head_dim),
                        qkv.add(hidden + h * head_dim),
                        qkv.add(dims.qkv_columns(h)[2]),
                    );
                    let (dq, dk, dv) = (
                        out.add(h * head_dim),
                        out.add(hidden + h * head_dim),
                        out.add(2 * hidden + h * head_dim),
                    );
                    head_probs(&dims, qkv, h, &spans[b], probs);
                    // `dropped` = the probabilities the forward multiplied v by.
                    match &self.dropout {
                        Some(d) => {
                            dropout_block(d, block, keep);
                            for ((x, p), k) in dropped.iter_mut().zip(probs.iter()).zip(keep.iter())
                            {
                                *x = p * k;
                            }
                        }
                        None => dropped.copy_from_slice(probs),
                    }
                    // dv = droppedᵀ · dctx
                    matmul(
                        (seq, head_dim, seq),
                        dv,
                        (row, 1),
                        false,
                        dropped.as_ptr(),
                        (1, seq),
                        go,
                        (hidden, 1),
                    );
                    // d(dropped) = dctx · vᵀ, then back through the dropout factors.
                    matmul(
                        (seq, seq, head_dim),
                        dprobs.as_mut_ptr(),
                        (seq, 1),
                        false,
                        go,
                        (hidden, 1),
                        v,
                        (1, row),
                    );
                    if let Some(d) = &self.dropout {
                        dropout_block(d, block, dropped);
                        dprobs
                            .iter_mut()
                            .zip(dropped.iter())
                            .for_each(|(g, k)| *g *= k);
                    }
                    // dscores (scaled) into dprobs, in place.
                    kernels::softmax_grad_in_place(probs, dprobs, seq, dims.scale());
                    // dq = dscores · k ; dk = dscoresᵀ · q
                    matmul(
                        (seq, head_dim, seq),
                        dq,
                        (row, 1),
                        false,
                        dprobs.as_ptr(),
                        (seq, 1),
                        k,
                        (row, 1),
                    );
                    matmul(
                        (seq, head_dim, seq),
                        dk,
                        (row, 1),
                        false,
                        dprobs.as_ptr(),
                        (1, seq),
                        q,
                        (row, 1),
                    );
                }
            },
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}
