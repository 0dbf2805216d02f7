//! The training losses over sentence embeddings, one per file as in sentence-transformers'
//! `losses/`: MNRL and its symmetric variant (`mnrl.rs`), their GradCache form
//! (`cached_mnrl.rs`, same loss and gradients with the memory of one mini-batch), and CoSENT
//! for scored pairs (`cosent.rs`).

pub mod cached_mnrl;
pub mod cosent;
pub mod mnrl;

use candle_core::{Result, Tensor};

pub use cached_mnrl::cached_grads;
pub use cosent::cosent;
pub use mnrl::{cosine_matrix, cross_entropy_diagonal, mnrl_loss, mnrl_symmetric_loss};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// MultipleNegativesRankingLoss: cosine × scale, in-batch negatives (+ hard negatives).
    Mnrl { scale: f64 },
    /// The symmetric variant: the mean of anchor→positive and positive→anchor losses.
    MnrlSymmetric { scale: f64 },
    /// CoSENT on scored pairs: every pair scored higher should have a higher cosine.
    #[serde(rename = "cosent")]
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
            Loss::Mnrl { scale } => mnrl_loss(&columns[0], &columns[1], columns.get(2), scale),
            Loss::MnrlSymmetric { scale } => {
                mnrl_symmetric_loss(&columns[0], &columns[1], columns.get(2), scale)
            }
            Loss::CoSent { scale } => {
                let scores = scores.expect("CoSENT needs scores");
                cosent(&columns[0], &columns[1], scores, scale)
            }
        }
    }
}
