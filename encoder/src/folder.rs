//! The sentence-transformers folder layout: reading its configuration and writing it back.
//!
//! ```text
//! modules.json                  Transformer → Pooling (→ Normalize)
//! config.json                   BERT / RoBERTa configuration
//! sentence_bert_config.json     max_seq_length, do_lower_case
//! tokenizer.json (+ vocab…)     the tokenizer
//! model.safetensors             weights under HF names
//! 1_Pooling/config.json         pooling modes
//! 2_Normalize/                  present iff embeddings are L2-normalized
//! ```
//!
//! Reading accepts both layouts sentence-transformers has written (and still loads):
//!
//! | | 2.x – 5.x | 6.x |
//! |---|---|---|
//! | module types in modules.json | `sentence_transformers.models.Transformer` | `sentence_transformers.base.modules.transformer.Transformer`, `….sentence_transformer.modules.pooling.Pooling`, `….base.modules.normalize.Normalize` |
//! | pooling config | `word_embedding_dimension`, one `pooling_mode_*_tokens` flag per mode | `embedding_dimension`, `pooling_mode`: a mode name or a list of them |
//! | max sequence length | `max_seq_length` in sentence_bert_config.json | `model_max_length` in tokenizer_config.json (capped at `max_position_embeddings`) |
//!
//! (from sentence-transformers' `base/modules/transformer.py` and
//! `sentence_transformer/modules/pooling.py`, v6.1). Writing keeps the 2.x–5.x layout, which
//! every release since 2.0 loads — 6.x maps its module paths and pooling keys on load.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::bert::BertConfig;
use super::pooling::PoolingConfig;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleEntry {
    pub idx: usize,
    pub name: String,
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SbertConfig {
    pub max_seq_length: usize,
    #[serde(default)]
    pub do_lower_case: bool,
}

/// `sentence_bert_config.json` as any release wrote it: 6.x leaves out `max_seq_length`.
#[derive(Debug, Clone, Default, Deserialize)]
struct SbertConfigFile {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

/// The module kinds a folder may hold, from a modules.json `type`: the class name after the
/// last dot of a `sentence_transformers.` path (2.x `models.Pooling`, 6.x
/// `sentence_transformer.modules.pooling.Pooling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModuleKind {
    Transformer,
    Pooling,
    Normalize,
}

impl ModuleKind {
    fn of(type_path: &str) -> Option<Self> {
        if !type_path.starts_with("sentence_transformers.") {
            return None;
        }
        match type_path.rsplit('.').next()? {
            "Transformer" => Some(ModuleKind::Transformer),
            "Pooling" => Some(ModuleKind::Pooling),
            "Normalize" => Some(ModuleKind::Normalize),
            _ => None,
        }
    }
}

/// A pooling config in either layout, as the 2.x–5.x flags (see the module docs).
fn pooling_config(path: &Path, dir: &Path) -> Result<PoolingConfig> {
    let mut value: serde_json::Value = read_json(path, "pooling config")?;
    if let Some(obj) = value.as_object_mut() {
        if let Some(dim) = obj.remove("embedding_dimension") {
            obj.entry("word_embedding_dimension").or_insert(dim);
        }
        if let Some(modes) = obj.remove("pooling_mode") {
            let names: Vec<String> = match modes {
                serde_json::Value::String(m) => vec![m],
                serde_json::Value::Array(ms) => ms
                    .into_iter()
                    .filter_map(|m| m.as_str().map(str::to_string))
                    .collect(),
                other => {
                    return Err(Error::model(
                        dir,
                        format!("pooling_mode {other} is not a mode name or a list of them"),
                    ))
                }
            };
            for name in names {
                let flag = match name.as_str() {
                    "cls" => "pooling_mode_cls_token",
                    "max" => "pooling_mode_max_tokens",
                    "mean" => "pooling_mode_mean_tokens",
                    "mean_sqrt_len_tokens" => "pooling_mode_mean_sqrt_len_tokens",
                    "weightedmean" => "pooling_mode_weightedmean_tokens",
                    "lasttoken" => "pooling_mode_lasttoken",
                    other => {
                        return Err(Error::model(
                            dir,
                            format!("pooling mode {other:?} is not supported (cls, max, mean, mean_sqrt_len_tokens)"),
                        ))
                    }
                };
                obj.insert(flag.into(), serde_json::Value::Bool(true));
            }
        }
    }
    serde_json::from_value(value).map_err(|source| Error::Json {
        path: path.into(),
        source,
    })
}

/// The max sequence length a 6.x folder keeps in its tokenizer config (sentence-transformers
/// caps it at the model's positions); None when absent or not a number.
fn tokenizer_max_length(transformer_dir: &Path) -> Result<Option<usize>> {
    let path = transformer_dir.join("tokenizer_config.json");
    if !path.exists() {
        return Ok(None);
    }
    let value: serde_json::Value = read_json(&path, "tokenizer_config.json")?;
    // transformers writes a huge integer (1e30) for "no limit"; that is not a length.
    Ok(value
        .get("model_max_length")
        .and_then(serde_json::Value::as_u64)
        .filter(|&n| n > 0 && n < 1 << 32)
        .map(|n| n as usize))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Architecture {
    Bert,
    Roberta,
}

impl Architecture {
    fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "bert" => Some(Architecture::Bert),
            "roberta" | "xlm-roberta" | "camembert" => Some(Architecture::Roberta),
            _ => None,
        }
    }
}

/// Tokenizer files copied along when a model is saved (those that exist).
const TOKENIZER_FILES: [&str; 8] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "sentencepiece.bpe.model",
];

/// A sentence-transformers model folder's configuration (weights are in [`super::Weights`]).
#[derive(Debug, Clone)]
pub struct ModelFolder {
    pub dir: PathBuf,
    /// Directory of the Transformer module (usually `dir` itself).
    pub transformer_dir: PathBuf,
    pub sbert: SbertConfig,
    /// `config.json` as read, written back unchanged.
    pub config_json: serde_json::Value,
    pub config: BertConfig,
    pub architecture: Architecture,
    pub pooling: PoolingConfig,
    pub normalize: bool,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let bytes = common::text::read_bytes(path).map_err(|e| {
        Error::model(
            path.parent().unwrap_or(path),
            format!("cannot read {what}: {e}"),
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Json {
        path: path.into(),
        source,
    })
}

impl ModelFolder {
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::model(dir, "not a directory"));
        }
        let modules_path = dir.join("modules.json");
        if !modules_path.exists() {
            return Err(Error::model(
                dir,
                "no modules.json: not a sentence-transformers model folder",
            ));
        }
        let modules: Vec<ModuleEntry> = read_json(&modules_path, "modules.json")?;
        for m in &modules {
            if ModuleKind::of(&m.kind).is_none() {
                return Err(Error::model(
                    dir,
                    format!(
                        "module {:?} of type {} is not supported (Transformer, Pooling and Normalize are)",
                        m.name, m.kind
                    ),
                ));
            }
        }
        let find = |kind: ModuleKind| {
            modules
                .iter()
                .find(|m| ModuleKind::of(&m.kind) == Some(kind))
        };
        let transformer = find(ModuleKind::Transformer)
            .ok_or_else(|| Error::model(dir, "modules.json has no Transformer module"))?;
        let pooling_entry = find(ModuleKind::Pooling)
            .ok_or_else(|| Error::model(dir, "modules.json has no Pooling module"))?;
        let transformer_dir = dir.join(&transformer.path);

        let config_path = transformer_dir.join("config.json");
        let config_json: serde_json::Value = read_json(&config_path, "config.json")?;
        let config: BertConfig =
            serde_json::from_value(config_json.clone()).map_err(|source| Error::Json {
                path: config_path.clone(),
                source,
            })?;
        let model_type = config.model_type.clone().unwrap_or_default();
        let architecture = Architecture::from_model_type(&model_type).ok_or_else(|| {
            Error::model(
                dir,
                format!("model_type {model_type:?} is not supported (bert, roberta, xlm-roberta)"),
            )
        })?;

        let sbert_path = transformer_dir.join("sentence_bert_config.json");
        let sbert_file: SbertConfigFile = if sbert_path.exists() {
            read_json(&sbert_path, "sentence_bert_config.json")?
        } else {
            SbertConfigFile::default()
        };
        let max_seq_length = match sbert_file.max_seq_length {
            Some(n) => n,
            None => tokenizer_max_length(&transformer_dir)?
                .unwrap_or(512)
                .min(config.max_position_embeddings),
        };
        let sbert = SbertConfig {
            max_seq_length,
            do_lower_case: sbert_file.do_lower_case,
        };
        let pooling = pooling_config(&dir.join(&pooling_entry.path).join("config.json"), dir)?;
        if let Some(why) = pooling.unsupported() {
            return Err(Error::model(dir, why));
        }
        if pooling.word_embedding_dimension != config.hidden_size {
            return Err(Error::model(
                dir,
                format!(
                    "pooling dimension {} differs from hidden_size {}",
                    pooling.word_embedding_dimension, config.hidden_size
                ),
            ));
        }
        for file in ["tokenizer.json", "model.safetensors"] {
            if !transformer_dir.join(file).exists() {
                return Err(Error::model(dir, format!("missing {file}")));
            }
        }
        Ok(ModelFolder {
            dir: dir.into(),
            transformer_dir,
            sbert,
            config_json,
            config,
            architecture,
            pooling,
            normalize: find(ModuleKind::Normalize).is_some(),
        })
    }

    pub fn weights_path(&self) -> PathBuf {
        self.transformer_dir.join("model.safetensors")
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        self.transformer_dir.join("tokenizer.json")
    }

    /// Writes everything but the weights into `dest` (a fresh directory), in the layout above.
    pub fn write_layout(&self, dest: &Path, card: &ModelCard) -> Result<()> {
        let io = |p: &Path, e| Error::io(p, e);
        std::fs::create_dir_all(dest.join("1_Pooling")).map_err(|e| io(dest, e))?;
        let mut modules = vec![
            ModuleEntry {
                idx: 0,
                name: "0".into(),
                path: String::new(),
                kind: "sentence_transformers.models.Transformer".into(),
            },
            ModuleEntry {
                idx: 1,
                name: "1".into(),
                path: "1_Pooling".into(),
                kind: "sentence_transformers.models.Pooling".into(),
            },
        ];
        if self.normalize {
            std::fs::create_dir_all(dest.join("2_Normalize")).map_err(|e| io(dest, e))?;
            modules.push(ModuleEntry {
                idx: 2,
                name: "2".into(),
                path: "2_Normalize".into(),
                kind: "sentence_transformers.models.Normalize".into(),
            });
        }
        write_json(dest.join("modules.json"), &modules)?;
        write_json(dest.join("sentence_bert_config.json"), &self.sbert)?;
        write_json(dest.join("config.json"), &self.config_json)?;
        write_json(dest.join("1_Pooling/config.json"), &self.pooling)?;
        let st_config = self.dir.join("config_sentence_transformers.json");
        let st_config: serde_json::Value = if st_config.exists() {
            read_json(&st_config, "config_sentence_transformers.json")?
        } else {
            serde_json::json!({ "__version__": { "sentence_transformers": "2.2.2" } })
        };
        write_json(dest.join("config_sentence_transformers.json"), &st_config)?;
        for name in TOKENIZER_FILES {
            let src = self.transformer_dir.join(name);
            if src.exists() {
                std::fs::copy(&src, dest.join(name)).map_err(|e| io(&src, e))?;
            }
        }
        write_json(dest.join(CARD_FILE), card)?;
        let readme = dest.join("README.md");
        std::fs::write(&readme, card.render()).map_err(|e| io(&readme, e))
    }
}

fn write_json<T: Serialize>(path: PathBuf, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("config serializes");
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
}

/// File beside README.md holding the card as JSON, so that a model tuned from this one can
/// carry its lineage on (the README is for people; this is for the next stage).
pub const CARD_FILE: &str = "strata_card.json";

/// One fine-tuning run in a model's lineage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TuningStage {
    /// The model folder this stage started from, as given.
    pub started_from: String,
    pub data: String,
    pub loss: String,
    pub hyperparameters: serde_json::Value,
    /// Held-out figures: before training, of the saved model, and which metric selected it.
    pub metrics: serde_json::Value,
}

/// What the saved model's README states: the original base model (also in the hub metadata's
/// `base_model`) and every tuning stage since, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ModelCard {
    pub title: String,
    pub base_model: String,
    #[serde(default)]
    pub stages: Vec<TuningStage>,
}

impl ModelCard {
    /// The card of a model tuned from `base_dir` by `stage`: the lineage of `base_dir` (from
    /// its [`CARD_FILE`]) plus `stage`; a folder without one is itself the original base model,
    /// named `base_name`.
    pub fn tuned_from(base_dir: &Path, base_name: &str, stage: TuningStage) -> Result<Self> {
        let path = base_dir.join(CARD_FILE);
        let mut card = if path.exists() {
            read_json(&path, CARD_FILE)?
        } else {
            ModelCard {
                title: String::new(),
                base_model: base_name.to_string(),
                stages: Vec::new(),
            }
        };
        card.stages.push(stage);
        card.title = format!("{} tuned with strata", card.base_model);
        Ok(card)
    }

    pub fn render(&self) -> String {
        let pretty = |v: &serde_json::Value| {
            if v.is_null() {
                "(none)".to_string()
            } else {
                format!(
                    "```json\n{}\n```",
                    serde_json::to_string_pretty(v).expect("json")
                )
            }
        };
        let mut stages = String::new();
        for (k, s) in self.stages.iter().enumerate() {
            stages += &format!(
                "### Stage {n}: {loss}\n\n\
                 - **Started from:** {from}\n- **Training data:** {data}\n- **Loss:** {loss}\n\n\
                 Hyper-parameters:\n\n{hp}\n\nHeld-out evaluation:\n\n{metrics}\n\n",
                n = k + 1,
                from = s.started_from,
                data = s.data,
                loss = s.loss,
                hp = pretty(&s.hyperparameters),
                metrics = pretty(&s.metrics),
            );
        }
        if stages.is_empty() {
            stages = "(none)\n\n".into();
        }
        format!(
            "---\nlibrary_name: sentence-transformers\npipeline_tag: sentence-similarity\n\
             tags:\n- sentence-transformers\n- sentence-similarity\nbase_model: {base}\n---\n\n\
             # {title}\n\n\
             A sentence-transformers model written by the strata toolkit: {base}, fine-tuned in \
             {n} stage{s}.\n\n\
             - **Base model:** {base}\n\n\
             ## Training stages\n\n{stages}\
             ## Usage\n\n```python\nfrom sentence_transformers import SentenceTransformer\n\
             model = SentenceTransformer(\"path/to/this/folder\")\n\
             embeddings = model.encode([\"A sentence\", \"Another one\"])\n```\n",
            title = self.title,
            base = self.base_model,
            n = self.stages.len(),
            s = if self.stages.len() == 1 { "" } else { "s" },
        )
    }
}
