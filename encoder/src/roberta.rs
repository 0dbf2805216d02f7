//! RoBERTa (and XLM-RoBERTa): BERT's body with position ids that start after the padding
//! index and, in practice, a single token type. The seed workflow's own base model,
//! all-distilroberta-v1, is one of these.

use candle_core::Result;

use super::bert::{BertConfig, BertEncoder, Positions};
use super::weights::Weights;

pub fn load(w: &Weights, cfg: &BertConfig) -> Result<BertEncoder> {
    let padding_idx = cfg.pad_token_id.unwrap_or(1);
    BertEncoder::load(w, cfg, Positions::AfterPadding { padding_idx })
}
