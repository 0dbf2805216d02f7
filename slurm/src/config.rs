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
    /// `chunks` Parquet file, or a chunk-file layout folder (metadata.tsv + chunks/).
    pub corpus: PathBuf,
    pub base_model: PathBuf,
    /// Folder holding the stage binaries.
    pub bin_dir: PathBuf,
    #[serde(default)]
    pub select_pairs: StageArgs,
    #[serde(default)]
    pub paraphrase_gen: Paraphrase,
    #[serde(default)]
    pub tune_embeddings: Tune,
    #[serde(default)]
    pub apply_model: Apply,
    #[serde(default)]
    pub precocity: Precocity,
    #[serde(default)]
    pub report: Report,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StageArgs {
    #[serde(default)]
    pub args: Vec<String>,
    /// Run this stage under this profile instead of the one given to plan/submit.
    pub profile: Option<String>,
}

/// tune-embeddings: its job always runs with `--resume` and checkpoints every
/// `checkpoint_steps`, so a job killed at its time limit (or a `run-local` killed) continues
/// from its last checkpoint when submitted (run) again; with no checkpoint it starts afresh.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tune {
    #[serde(default)]
    pub args: Vec<String>,
    /// Checkpoint every this many steps (each epoch's end is checkpointed too).
    #[serde(default = "checkpoint_steps")]
    pub checkpoint_steps: u64,
    /// Run this stage under this profile instead of the one given to plan/submit.
    pub profile: Option<String>,
}

fn checkpoint_steps() -> u64 {
    500
}

impl Default for Tune {
    fn default() -> Self {
        Tune {
            args: Vec::new(),
            checkpoint_steps: checkpoint_steps(),
            profile: None,
        }
    }
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
    /// Run this stage under this profile instead of the one given to plan/submit.
    pub profile: Option<String>,
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
    /// Run this stage under this profile instead of the one given to plan/submit.
    pub profile: Option<String>,
}

fn one() -> usize {
    1
}

fn yes() -> bool {
    true
}

impl Default for Apply {
    fn default() -> Self {
        Apply {
            args: Vec::new(),
            array_tasks: 1,
            max_parallel: None,
            profile: None,
        }
    }
}

/// The precocity stage (after apply-model): novelty, transience and precocity per chunk and
/// document from the embeddings. It splits the centre years over a Slurm array itself
/// (SLURM_ARRAY_TASK_ID / COUNT); its last task writes the final tables.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Precocity {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub args: Vec<String>,
    /// Tasks of the precocity job array (centre years are split between them).
    #[serde(default = "one")]
    pub array_tasks: usize,
    /// At most this many array tasks at once (`%k`).
    pub max_parallel: Option<usize>,
    /// Run this stage under this profile (e.g. a CPU cluster) instead of the one given to
    /// plan/submit.
    pub profile: Option<String>,
}

impl Default for Precocity {
    fn default() -> Self {
        Precocity {
            enabled: true,
            args: Vec::new(),
            array_tasks: 1,
            max_parallel: None,
            profile: None,
        }
    }
}

/// The report stage (last): one HTML page over everything the run folder holds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub args: Vec<String>,
    /// Run this stage under this profile instead of the one given to plan/submit.
    pub profile: Option<String>,
}

impl Default for Report {
    fn default() -> Self {
        Report {
            enabled: true,
            args: Vec::new(),
            profile: None,
        }
    }
}

/// Where and how jobs run on one cluster. The resources here are every stage's defaults;
/// `stages.<stage>` overrides them for one stage (a CPU partition for select-pairs, more
/// memory for precocity, …).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// Slurm's generic resource request, e.g. "gpu:1" or "gpu:a40:1". At profile level it goes
    /// to the GPU stages only (tune-embeddings, apply-model); another stage asks for a GPU only
    /// when its own `stages.<stage>.gres` says so.
    pub gres: Option<String>,
    #[serde(default = "one")]
    pub cpus: usize,
    /// e.g. "16G".
    pub mem: Option<String>,
    /// Time limit per stage key (select_pairs, paraphrase_gen, tune_embeddings, apply_model,
    /// precocity, report); `stages.<stage>.time` takes precedence.
    #[serde(default)]
    pub time: BTreeMap<String, String>,
    /// Shell lines run before each stage (`module load …`, `source env.sh`).
    #[serde(default)]
    pub setup: Vec<String>,
    /// Extra arguments for the stages that run on a GPU here (e.g. ["--device", "cuda:0"]).
    #[serde(default)]
    pub gpu_args: Vec<String>,
    /// Overrides `bin_dir` on this cluster.
    pub bin_dir: Option<PathBuf>,
    /// Per-stage resources, by stage key; unset fields fall back to the profile's.
    #[serde(default)]
    pub stages: BTreeMap<String, Resources>,
}

/// One stage's resources on a cluster (Slurm's names: `--partition`, `--gres`, …).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// "" asks for no generic resource even where the profile's `gres` would apply.
    pub gres: Option<String>,
    pub cpus: Option<usize>,
    pub mem: Option<String>,
    pub time: Option<String>,
    /// Replaces the profile's setup lines for this stage.
    pub setup: Option<Vec<String>>,
}

/// The resources one stage's job asks for, after overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct StageResources {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// `None`: no GPU (or other generic resource) requested.
    pub gres: Option<String>,
    pub cpus: usize,
    pub mem: Option<String>,
    pub time: Option<String>,
    pub setup: Vec<String>,
}

impl Profile {
    /// The resources of the stage with config key `key`; `gpu_stage`: whether the stage can
    /// use a GPU (only those inherit the profile's `gres`).
    pub fn resources(&self, key: &str, gpu_stage: bool) -> StageResources {
        let own = self.stages.get(key).cloned().unwrap_or_default();
        let gres = match own.gres {
            Some(g) => Some(g),
            None if gpu_stage => self.gres.clone(),
            None => None,
        }
        .filter(|g| !g.is_empty());
        StageResources {
            partition: own.partition.or_else(|| self.partition.clone()),
            account: own.account.or_else(|| self.account.clone()),
            qos: own.qos.or_else(|| self.qos.clone()),
            gres,
            cpus: own.cpus.unwrap_or(self.cpus),
            mem: own.mem.or_else(|| self.mem.clone()),
            time: own.time.or_else(|| self.time.get(key).cloned()),
            setup: own.setup.unwrap_or_else(|| self.setup.clone()),
        }
    }
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
        if config.apply_model.array_tasks == 0 || config.precocity.array_tasks == 0 {
            return Err(format!(
                "{}: array_tasks must be at least 1",
                path.display()
            ));
        }
        if config.tune_embeddings.checkpoint_steps == 0 {
            return Err(format!(
                "{}: tune_embeddings.checkpoint_steps must be at least 1",
                path.display()
            ));
        }
        config
            .check_names()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(config)
    }

    /// Stage keys in profiles and stage profile names must exist: a typo would otherwise
    /// silently give a stage the default resources.
    fn check_names(&self) -> Result<(), String> {
        let keys: Vec<&str> = crate::stages::Stage::ALL.iter().map(|s| s.key()).collect();
        for (name, p) in &self.profiles {
            for key in p.stages.keys().chain(p.time.keys()) {
                if !keys.contains(&key.as_str()) {
                    return Err(format!(
                        "profiles.{name}: unknown stage `{key}` (stages: {})",
                        keys.join(", ")
                    ));
                }
            }
        }
        for stage in crate::stages::Stage::ALL {
            if let Some(p) = self.stage_profile(stage) {
                self.profile(p)
                    .map_err(|e| format!("{}.profile: {e}", stage.key()))?;
            }
        }
        Ok(())
    }

    /// The profile a stage names for itself, if any.
    pub fn stage_profile(&self, stage: crate::stages::Stage) -> Option<&str> {
        use crate::stages::Stage;
        match stage {
            Stage::SelectPairs => self.select_pairs.profile.as_deref(),
            Stage::ParaphraseGen => self.paraphrase_gen.profile.as_deref(),
            Stage::TuneEmbeddings => self.tune_embeddings.profile.as_deref(),
            Stage::ApplyModel => self.apply_model.profile.as_deref(),
            Stage::Precocity => self.precocity.profile.as_deref(),
            Stage::Report => self.report.profile.as_deref(),
        }
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
