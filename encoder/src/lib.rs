//! The sentence encoder: one implementation for training and inference that matches
//! sentence-transformers (tests against `tests/data/all-MiniLM-L6-v2.embeddings.json`).
//!
//! `layers` holds the building blocks (each differentiable when training) over the fused CPU
//! ops (`fused`, `attention`, `kernels`); one file per architecture (`bert`, `roberta`) builds
//! the transformer; `pooling` and `tokenize` do what sentence-transformers' Pooling/Normalize
//! modules and tokenizer call do; `folder` reads and writes the sentence-transformers layout
//! and `weights` keeps tensors under their HF names; `sentence_encoder` puts them together,
//! `embed` schedules batches over cores, `device` parses `--device`/`--precision`; `alloc` the
//! binaries' allocator. Training (losses, optimizer) lives in tune-embeddings, its only user.

pub mod alloc;
pub mod attention;
pub mod bert;
pub mod device;
pub mod embed;
pub mod error;
pub mod folder;
pub mod fused;
pub mod kernels;
pub mod layers;
pub mod pooling;
pub mod roberta;
pub mod sentence_encoder;
pub mod tokenize;
pub mod weights;

pub use device::{parse_device, Precision};
pub use embed::run_candle_ops_inline;
pub use error::{Error, Result};
pub use folder::{Architecture, ModelCard, ModelFolder, TuningStage};
pub use layers::{Dropout, Mode};
pub use pooling::cosine;
pub use sentence_encoder::SentenceEncoder;
pub use tokenize::{PaddedBatch, TextTokenizer};
pub use weights::Weights;
