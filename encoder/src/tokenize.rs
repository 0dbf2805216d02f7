//! Batch tokenization with sentence-transformers' truncation.
//!
//! A model folder's `tokenizer.json` may carry its own padding and truncation (all-MiniLM-L6-v2's
//! pads and truncates at 128); sentence-transformers ignores those and truncates at
//! `max_seq_length` from `sentence_bert_config.json`, so we do the same, and pad dynamically
//! to the longest text of each batch ourselves.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{Error, Result};

pub struct TextTokenizer {
    inner: Tokenizer,
    max_seq_length: usize,
    lowercase: bool,
    pad_id: u32,
}

impl TextTokenizer {
    pub fn load(path: &Path, max_seq_length: usize, lowercase: bool) -> Result<Self> {
        let mut inner = Tokenizer::from_file(path).map_err(|e| Error::Tokenizer {
            path: path.into(),
            reason: e.to_string(),
        })?;
        let pad_id = inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| inner.token_to_id("[PAD]"))
            .or_else(|| inner.token_to_id("<pad>"))
            .unwrap_or(0);
        inner.with_padding(None);
        let mut tokenizer = TextTokenizer {
            inner,
            max_seq_length,
            lowercase,
            pad_id,
        };
        tokenizer.set_max_seq_length(max_seq_length)?;
        Ok(tokenizer)
    }

    /// Truncates to `max_seq_length` tokens (special tokens included) from now on.
    pub fn set_max_seq_length(&mut self, max_seq_length: usize) -> Result<()> {
        self.inner
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| Error::Tokenizer {
                path: "<loaded tokenizer>".into(),
                reason: e.to_string(),
            })?;
        self.max_seq_length = max_seq_length;
        Ok(())
    }

    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Token ids (special tokens included, truncated) for each text, tokenized in parallel.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encodings = if self.lowercase {
            let lowered: Vec<String> = texts.iter().map(|t| t.to_lowercase()).collect();
            self.inner.encode_batch(lowered, true)
        } else {
            self.inner.encode_batch(texts.to_vec(), true)
        };
        let encodings = encodings.map_err(|e| Error::Tokenizer {
            path: "<loaded tokenizer>".into(),
            reason: e.to_string(),
        })?;
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

/// Token ids padded to the longest sequence, with the matching attention mask.
pub struct PaddedBatch {
    /// `[batch, seq]` u32.
    pub ids: Tensor,
    /// `[batch, seq]`, 1 for tokens and 0 for padding, in the model's dtype.
    pub mask: Tensor,
    pub lengths: Vec<usize>,
}

impl PaddedBatch {
    pub fn new(seqs: &[&[u32]], pad_id: u32, dtype: DType, device: &Device) -> Result<Self> {
        let longest = seqs.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(seqs.len() * longest);
        let mut mask = Vec::with_capacity(seqs.len() * longest);
        for s in seqs {
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(pad_id, longest - s.len()));
            mask.extend(std::iter::repeat_n(1f32, s.len()));
            mask.extend(std::iter::repeat_n(0f32, longest - s.len()));
        }
        let shape = (seqs.len(), longest);
        Ok(PaddedBatch {
            ids: Tensor::from_vec(ids, shape, device)?,
            mask: Tensor::from_vec(mask, shape, device)?.to_dtype(dtype)?,
            lengths: seqs.iter().map(|s| s.len()).collect(),
        })
    }
}
