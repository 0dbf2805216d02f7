//! `pipeline.toml`: the corpus, the run folder, each stage's arguments (passed to the stage
//! binaries as they are: the stages own their flags, nothing here parses them again) and the
//! cluster profiles. Unknown keys are errors that name the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const EXAMPLE: &str = include_str!("../pipeline.example.toml");

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where every output goes; relative paths are relative to the config file.
    pub run_dir: PathBuf,
    /// `chunks` Parquet file, or a seed layout folder (metadata.tsv + chunks/).
    pub corpus: PathBuf,
    pub base_model: PathBuf,
    /// Folder holding the stage binaries.
    pub bin_dir: PathBuf,
    #[serde(default)]
    pub select_pairs: StageArgs,
    #[serde(default)]
    pub paraphrase_gen: Paraphrase,
    #[serde(default)]
    pub tune_embeddings: StageArgs,
    #[serde(default)]
    pub apply_model: Apply,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StageArgs {
    #[serde(default)]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Paraphrase {
    /// Off: select-pairs runs with --no-paraphrase and this stage is skipped.
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub args: Vec<String>,
    /// A file with the API key, mode 0600; without it the job reads OPENAI_API_KEY from its
    /// environment. The key itself never appears in a config or a script.
    pub api_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Apply {
    #[serde(default)]
    pub args: Vec<String>,
    /// Tasks of the apply-model job array; each embeds every n-th shard.
    #[serde(default = "one")]
    pub array_tasks: usize,
    /// At most this many array tasks at once (`%k`).
    pub max_parallel: Option<usize>,
}

fn one() -> usize {
    1
}

impl Default for Apply {
    fn default() -> Self {
        Apply {
            args: Vec::new(),
            array_tasks: 1,
            max_parallel: None,
        }
    }
}

/// Where and how jobs run on one cluster.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// e.g. "gpu:1" or "gpu:a40:1"; asked for by the GPU stages (tune-embeddings, apply-model).
    pub gres: Option<String>,
    #[serde(default = "one")]
    pub cpus: usize,
    /// e.g. "16G".
    pub mem: Option<String>,
    /// Time limit per stage (select_pairs, paraphrase_gen, tune_embeddings, apply_model).
    #[serde(default)]
    pub time: BTreeMap<String, String>,
    /// Shell lines run before each stage (`module load …`, `source env.sh`).
    #[serde(default)]
    pub setup: Vec<String>,
    /// Extra arguments for the GPU stages on this cluster (e.g. ["--device", "cuda:0"]).
    #[serde(default)]
    pub gpu_args: Vec<String>,
    /// Overrides `bin_dir` on this cluster.
    pub bin_dir: Option<PathBuf>,
}

impl Config {
    /// Reads the config and makes its paths absolute (relative to the config's folder).
    pub fn load(path: &Path) -> Result<Config, String> {
        // Notepad and PowerShell save UTF-8 with a byte-order mark.
        let text = common::text::read_to_string(path).map_err(|e| e.to_string())?;
        let mut config: Config =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base = std::fs::canonicalize(base).map_err(|e| format!("{}: {e}", base.display()))?;
        let abs = |p: &PathBuf| {
            if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            }
        };
        config.run_dir = abs(&config.run_dir);
        config.corpus = abs(&config.corpus);
        config.base_model = abs(&config.base_model);
        config.bin_dir = abs(&config.bin_dir);
        config.paraphrase_gen.api_key_file = config.paraphrase_gen.api_key_file.as_ref().map(abs);
        for p in config.profiles.values_mut() {
            p.bin_dir = p.bin_dir.as_ref().map(abs);
        }
        if config.apply_model.array_tasks == 0 {
            return Err(format!(
                "{}: apply_model.array_tasks must be at least 1",
                path.display()
            ));
        }
        Ok(config)
    }

    pub fn profile(&self, name: &str) -> Result<&Profile, String> {
        self.profiles.get(name).ok_or_else(|| {
            format!(
                "no profile {name:?} in the config (profiles: {})",
                self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }
}

/// Refuses a key file that others can read.
pub fn check_key_file(path: &Path) -> Result<(), String> {
    common::provenance::check_private_file(path).map_err(|e| format!("API key file {e}"))
}
