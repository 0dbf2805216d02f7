//! Every Parquet table the pipeline exchanges: column names, Arrow types, and the key-value
//! metadata every file carries. Stages refer to columns only through this module, so a rename
//! happens in one place and every reader and writer agrees on types.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// File-metadata keys written into every Parquet file (see [`crate::provenance`]).
pub mod meta {
    pub const STAGE: &str = "strata.stage";
    pub const VERSION: &str = "strata.version";
    pub const PARAMETERS: &str = "strata.parameters";
    pub const INPUTS: &str = "strata.inputs";
    pub const TABLE: &str = "strata.table";
}

/// `chunks`: the corpus, one row per chunk of a document, in document then chunk order.
pub mod chunks {
    pub const TABLE: &str = "chunks";
    pub const DOC_ID: &str = "doc_id";
    pub const YEAR: &str = "year";
    pub const CHUNK_IDX: &str = "chunk_idx";
    pub const TEXT: &str = "text";
}

/// `pairs`: training pairs from select-pairs, with the paraphrase provenance that
/// paraphrase-gen fills. A side that still needs a paraphrase is null, never a placeholder word.
pub mod pairs {
    pub const TABLE: &str = "pairs";
    pub const PAIR_ID: &str = "pair_id";
    pub const DOC_ID: &str = "doc_id";
    pub const YEAR: &str = "year";
    pub const ANCHOR: &str = "anchor";
    pub const POSITIVE: &str = "positive";
    /// Optional hard negative (QA-style data); absent from select-pairs output.
    pub const NEGATIVE: &str = "negative";
    pub const CATEGORY: &str = "category";
    /// "anchor" or "positive": the side paraphrase-gen must write; null when none.
    pub const PARAPHRASE_SIDE: &str = "paraphrase_side";
    pub const PARA_MODEL: &str = "para_model";
    pub const PARA_SYSTEM_PROMPT_ID: &str = "para_system_prompt_id";
    pub const PARA_PROMPT_ID: &str = "para_prompt_id";
    pub const PARA_TEMPERATURE: &str = "para_temperature";
    pub const PARA_SEED: &str = "para_seed";
    pub const PARA_FINISH_REASON: &str = "para_finish_reason";
    pub const PARA_PROMPT_TOKENS: &str = "para_prompt_tokens";
    pub const PARA_COMPLETION_TOKENS: &str = "para_completion_tokens";
}

/// `embeddings`: one row per embedded chunk, in input order.
pub mod embeddings {
    pub const TABLE: &str = "embeddings";
    pub const DOC_ID: &str = "doc_id";
    pub const CHUNK_IDX: &str = "chunk_idx";
    pub const YEAR: &str = "year";
    pub const EMBEDDING: &str = "embedding";
    /// Name of the list item field, as pyarrow writes it, so round trips are lossless.
    pub const ITEM: &str = "item";
}

/// `embedding_map`: 2-D coordinates of a sample of chunks (the report's PCA maps), one file per
/// model, in the column names embedding-atlas and similar tools take.
pub mod map {
    pub const TABLE: &str = "embedding_map";
    pub const DOC_ID: &str = "doc_id";
    pub const CHUNK_IDX: &str = "chunk_idx";
    pub const YEAR: &str = "year";
    /// First principal component (float32, PCA units).
    pub const X: &str = "x";
    /// Second principal component.
    pub const Y: &str = "y";
}

/// `scored pairs`: tune-embeddings' CoSENT input (CSV with this header, or Parquet), one row
/// per pair with its similarity score in [0, 1] (sentence-transformers' STS column names).
pub mod scored {
    pub const TABLE: &str = "scored pairs";
    pub const SENTENCE1: &str = "sentence1";
    pub const SENTENCE2: &str = "sentence2";
    /// float32 in [0, 1].
    pub const SCORE: &str = "score";
}

/// `ids`: the keys of an exported embedding matrix (`.npy`), row for row.
pub mod ids {
    pub const TABLE: &str = "ids";
    pub const DOC_ID: &str = "doc_id";
    pub const CHUNK_IDX: &str = "chunk_idx";
    pub const YEAR: &str = "year";
}

/// `precocity documents`: one row per (document, fraction compared, filter, time radius,
/// chunks used), with the reference workflow's column names
/// (Historical-AI-Lab/novelty, `calc_precocity_for_embeddings.py`), so its notebooks read it.
pub mod precocity_documents {
    pub const TABLE: &str = "precocity_documents";
    pub const DOCID: &str = "docid";
    /// The document's year (the centre year).
    pub const DATE: &str = "date";
    pub const NUM_CHUNKS: &str = "num_chunks";
    /// f: each (chunk, year) mean is over the ⌈f·N⌉ closest of the N comparison chunks.
    pub const FRACTION_COMPARED: &str = "fraction_compared";
    /// The exclusion filter: `no filter`, `train`, `trainauth`, `trainauthquote`.
    pub const FILTERED: &str = "filtered";
    /// r: novelty over years −r…−1, transience over +1…+r.
    pub const TIME_RADIUS: &str = "time_radius";
    /// a: the mean is over the ⌈a·n⌉ most precocious of the document's n chunks.
    pub const CHUNKS_USED: &str = "chunks_used";
    pub const PRECOCITY: &str = "precocity";
    pub const NOVELTY: &str = "novelty";
    pub const TRANSIENCE: &str = "transience";
}

/// `precocity chunks`: one row per (chunk, fraction compared, filter, time radius), so a reader
/// can find the most precocious passages; measures as in [`precocity_documents`].
pub mod precocity_chunks {
    pub const TABLE: &str = "precocity_chunks";
    pub const DOC_ID: &str = "doc_id";
    pub const CHUNK_IDX: &str = "chunk_idx";
    pub const YEAR: &str = "year";
    pub const FRACTION_COMPARED: &str = super::precocity_documents::FRACTION_COMPARED;
    pub const FILTERED: &str = super::precocity_documents::FILTERED;
    pub const TIME_RADIUS: &str = super::precocity_documents::TIME_RADIUS;
    pub const PRECOCITY: &str = super::precocity_documents::PRECOCITY;
    pub const NOVELTY: &str = super::precocity_documents::NOVELTY;
    pub const TRANSIENCE: &str = super::precocity_documents::TRANSIENCE;
}

/// Pair categories, as written in the `category` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// Two adjacent chunks of one document.
    Successive,
    /// One side is replaced by an LLM paraphrase of itself.
    SyntheticPair,
    /// Only one chunk; the other side is an LLM paraphrase of it.
    SingleSynthetic,
    /// Two distinct random chunks of one document.
    RandomPair,
}

impl Category {
    pub const ALL: [Category; 4] = [
        Category::Successive,
        Category::SyntheticPair,
        Category::SingleSynthetic,
        Category::RandomPair,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Successive => "successive",
            Category::SyntheticPair => "synthetic-pair",
            Category::SingleSynthetic => "single-synthetic",
            Category::RandomPair => "random-pair",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Which side of a pair paraphrase-gen must write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Anchor,
    Positive,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Anchor => "anchor",
            Side::Positive => "positive",
        }
    }

    pub fn parse(s: &str) -> Option<Side> {
        match s {
            "anchor" => Some(Side::Anchor),
            "positive" => Some(Side::Positive),
            _ => None,
        }
    }
}

pub fn chunks_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(chunks::DOC_ID, DataType::Utf8, false),
        Field::new(chunks::YEAR, DataType::Int32, false),
        Field::new(chunks::CHUNK_IDX, DataType::Int32, false),
        Field::new(chunks::TEXT, DataType::Utf8, false),
    ]))
}

pub fn pairs_schema() -> SchemaRef {
    use pairs::*;
    Arc::new(Schema::new(vec![
        Field::new(PAIR_ID, DataType::Utf8, false),
        Field::new(DOC_ID, DataType::Utf8, false),
        Field::new(YEAR, DataType::Int32, false),
        Field::new(ANCHOR, DataType::Utf8, true),
        Field::new(POSITIVE, DataType::Utf8, true),
        Field::new(NEGATIVE, DataType::Utf8, true),
        Field::new(CATEGORY, DataType::Utf8, false),
        Field::new(PARAPHRASE_SIDE, DataType::Utf8, true),
        Field::new(PARA_MODEL, DataType::Utf8, true),
        Field::new(PARA_SYSTEM_PROMPT_ID, DataType::Utf8, true),
        Field::new(PARA_PROMPT_ID, DataType::Utf8, true),
        Field::new(PARA_TEMPERATURE, DataType::Float32, true),
        Field::new(PARA_SEED, DataType::Int64, true),
        Field::new(PARA_FINISH_REASON, DataType::Utf8, true),
        Field::new(PARA_PROMPT_TOKENS, DataType::Int32, true),
        Field::new(PARA_COMPLETION_TOKENS, DataType::Int32, true),
    ]))
}

pub fn embedding_type(dim: usize) -> DataType {
    DataType::FixedSizeList(
        Arc::new(Field::new(embeddings::ITEM, DataType::Float32, false)),
        dim as i32,
    )
}

pub fn embeddings_schema(dim: usize) -> SchemaRef {
    use embeddings::*;
    Arc::new(Schema::new(vec![
        Field::new(DOC_ID, DataType::Utf8, false),
        Field::new(CHUNK_IDX, DataType::Int32, false),
        Field::new(YEAR, DataType::Int32, false),
        Field::new(EMBEDDING, embedding_type(dim), false),
    ]))
}

pub fn map_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(map::DOC_ID, DataType::Utf8, false),
        Field::new(map::CHUNK_IDX, DataType::Int32, false),
        Field::new(map::YEAR, DataType::Int32, false),
        Field::new(map::X, DataType::Float32, false),
        Field::new(map::Y, DataType::Float32, false),
    ]))
}

pub fn ids_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(ids::DOC_ID, DataType::Utf8, false),
        Field::new(ids::CHUNK_IDX, DataType::Int32, false),
        Field::new(ids::YEAR, DataType::Int32, false),
    ]))
}

/// Measures are null where undefined (no comparison chunk on one side of the centre year).
pub fn precocity_documents_schema() -> SchemaRef {
    use precocity_documents::*;
    Arc::new(Schema::new(vec![
        Field::new(DOCID, DataType::Utf8, false),
        Field::new(DATE, DataType::Int32, false),
        Field::new(NUM_CHUNKS, DataType::Int32, false),
        Field::new(FRACTION_COMPARED, DataType::Float64, false),
        Field::new(FILTERED, DataType::Utf8, false),
        Field::new(TIME_RADIUS, DataType::Int32, false),
        Field::new(CHUNKS_USED, DataType::Float64, false),
        Field::new(PRECOCITY, DataType::Float64, true),
        Field::new(NOVELTY, DataType::Float64, true),
        Field::new(TRANSIENCE, DataType::Float64, true),
    ]))
}

/// Measures are null where undefined, as in [`precocity_documents_schema`].
pub fn precocity_chunks_schema() -> SchemaRef {
    use precocity_chunks::*;
    Arc::new(Schema::new(vec![
        Field::new(DOC_ID, DataType::Utf8, false),
        Field::new(CHUNK_IDX, DataType::Int32, false),
        Field::new(YEAR, DataType::Int32, false),
        Field::new(FRACTION_COMPARED, DataType::Float64, false),
        Field::new(FILTERED, DataType::Utf8, false),
        Field::new(TIME_RADIUS, DataType::Int32, false),
        Field::new(PRECOCITY, DataType::Float64, true),
        Field::new(NOVELTY, DataType::Float64, true),
        Field::new(TRANSIENCE, DataType::Float64, true),
    ]))
}
