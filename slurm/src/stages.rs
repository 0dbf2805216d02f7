//! The pipeline's stages as command lines, and the sbatch scripts that run them. Commands run
//! with the run folder as working directory and name everything inside it by relative path,
//! so a run folder can move between clusters.

use std::path::{Path, PathBuf};

use crate::config::{Config, Profile, StageResources};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Stage {
    SelectPairs,
    ParaphraseGen,
    TuneEmbeddings,
    ApplyModel,
    Precocity,
    Report,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 6] = [
        Stage::SelectPairs,
        Stage::ParaphraseGen,
        Stage::TuneEmbeddings,
        Stage::ApplyModel,
        Stage::Precocity,
        Stage::Report,
    ];

    /// The stage's binary (and its name in logs, scripts and the state file).
    pub fn name(self) -> &'static str {
        match self {
            Stage::SelectPairs => "select-pairs",
            Stage::ParaphraseGen => "paraphrase-gen",
            Stage::TuneEmbeddings => "tune-embeddings",
            Stage::ApplyModel => "apply-model",
            Stage::Precocity => "precocity",
            Stage::Report => "report",
        }
    }

    /// Key of the stage in `pipeline.toml` (and in profile time limits).
    pub fn key(self) -> &'static str {
        match self {
            Stage::SelectPairs => "select_pairs",
            Stage::ParaphraseGen => "paraphrase_gen",
            Stage::TuneEmbeddings => "tune_embeddings",
            Stage::ApplyModel => "apply_model",
            Stage::Precocity => "precocity",
            Stage::Report => "report",
        }
    }

    /// The stage's output folder, relative to the run folder.
    pub fn output_dir(self) -> &'static str {
        match self {
            Stage::SelectPairs => "pairs",
            Stage::ParaphraseGen => "pairs-filled",
            Stage::TuneEmbeddings => "model",
            Stage::ApplyModel => "embeddings",
            Stage::Precocity => "precocity",
            Stage::Report => "report",
        }
    }

    /// Whether the stage can compute on a GPU (`--device cuda:N` in a CUDA build); only these
    /// inherit a profile's `gres` and `gpu_args`.
    pub fn gpu_capable(self) -> bool {
        matches!(self, Stage::TuneEmbeddings | Stage::ApplyModel)
    }

    /// Tasks of the stage's job array, if it runs as one: (tasks, at most this many at once).
    fn array(self, config: &Config) -> Option<(usize, Option<usize>)> {
        match self {
            Stage::ApplyModel => Some((
                config.apply_model.array_tasks,
                config.apply_model.max_parallel,
            )),
            Stage::Precocity if config.precocity.array_tasks > 1 => {
                Some((config.precocity.array_tasks, config.precocity.max_parallel))
            }
            _ => None,
        }
    }
}

/// The stages this config runs, in order.
pub fn stages(config: &Config) -> Vec<Stage> {
    Stage::ALL
        .into_iter()
        .filter(|s| match s {
            Stage::ParaphraseGen => config.paraphrase_gen.enabled,
            Stage::Precocity => config.precocity.enabled,
            Stage::Report => config.report.enabled,
            _ => true,
        })
        .collect()
}

/// The profile a stage's job runs under: its own (`<stage>.profile`) or `default`.
pub fn stage_profile<'a>(
    config: &'a Config,
    default: &'a Profile,
    stage: Stage,
) -> Result<&'a Profile, String> {
    match config.stage_profile(stage) {
        Some(name) => config.profile(name),
        None => Ok(default),
    }
}

/// What the stage's job asks Slurm for under `profile`.
pub fn resources(profile: &Profile, stage: Stage) -> StageResources {
    profile.resources(stage.key(), stage.gpu_capable())
}

/// Whether the stage computes on a GPU under `profile`: a GPU stage whose job asks for one.
pub fn runs_on_gpu(profile: &Profile, stage: Stage) -> bool {
    stage.gpu_capable() && resources(profile, stage).gres.is_some()
}

/// The training pairs, relative to the run folder.
fn pairs_file(config: &Config) -> &'static str {
    if config.paraphrase_gen.enabled {
        "pairs-filled/pairs.parquet"
    } else {
        "pairs/pairs.parquet"
    }
}

/// The documents select-pairs holds out and tune-embeddings evaluates on (the document split).
pub const HELD_OUT_DOCS: &str = "pairs/held-out-docs.txt";

fn corpus_args(config: &Config) -> Vec<String> {
    let flag = if config.corpus.is_dir() {
        "--chunk-files"
    } else {
        "--chunks"
    };
    vec![flag.into(), config.corpus.display().to_string()]
}

fn bin(config: &Config, profile: Option<&Profile>, name: &str) -> String {
    let dir: &Path = profile
        .and_then(|p| p.bin_dir.as_deref())
        .unwrap_or(&config.bin_dir);
    dir.join(name).display().to_string()
}

/// The command line of a stage (program first).
pub fn command(config: &Config, profile: Option<&Profile>, stage: Stage) -> Vec<String> {
    let s = |v: &str| v.to_string();
    let pairs = pairs_file(config);
    let gpu_args = profile
        .filter(|p| runs_on_gpu(p, stage))
        .map(|p| p.gpu_args.clone())
        .unwrap_or_default();
    let mut cmd = vec![bin(config, profile, stage.name())];
    match stage {
        Stage::SelectPairs => {
            cmd.extend(corpus_args(config));
            cmd.extend([
                s("--out"),
                s("pairs/pairs.parquet"),
                s("--report"),
                s("pairs/report.json"),
                s("--held-out-docs"),
                s(HELD_OUT_DOCS),
            ]);
            if !config.paraphrase_gen.enabled {
                cmd.push(s("--no-paraphrase"));
            }
            cmd.extend(config.select_pairs.args.iter().cloned());
        }
        Stage::ParaphraseGen => {
            cmd.extend([
                s("--pairs"),
                s("pairs/pairs.parquet"),
                s("--out"),
                s("pairs-filled/pairs.parquet"),
            ]);
            if let Some(key_file) = &config.paraphrase_gen.api_key_file {
                cmd.extend([s("--api-key-file"), key_file.display().to_string()]);
            }
            cmd.extend(config.paraphrase_gen.args.iter().cloned());
        }
        Stage::TuneEmbeddings => {
            cmd.extend([
                s("--base-model"),
                config.base_model.display().to_string(),
                s("--pairs"),
                s(pairs),
                s("--out"),
                s("model"),
                s("--held-out-docs"),
                s(HELD_OUT_DOCS),
            ]);
            cmd.extend(corpus_args(config));
            // A job killed at its time limit continues from its checkpoint when resubmitted;
            // --resume starts afresh when there is none.
            cmd.extend([
                s("--resume"),
                s("--checkpoint-steps"),
                config.tune_embeddings.checkpoint_steps.to_string(),
            ]);
            cmd.extend(gpu_args);
            cmd.extend(config.tune_embeddings.args.iter().cloned());
        }
        Stage::ApplyModel => {
            cmd.extend([s("--model"), s("model")]);
            cmd.extend(corpus_args(config));
            cmd.extend([s("--out"), s("embeddings")]);
            cmd.extend(gpu_args);
            cmd.extend(config.apply_model.args.iter().cloned());
        }
        Stage::Precocity => {
            cmd.extend([
                s("--embeddings"),
                s("embeddings"),
                s("--pairs"),
                s(pairs),
                s("--out"),
                s("precocity"),
            ]);
            cmd.extend(config.precocity.args.iter().cloned());
        }
        Stage::Report => {
            cmd.extend([
                s("."),
                s("--out"),
                s("report"),
                s("--base-model"),
                config.base_model.display().to_string(),
                s("--corpus"),
                config.corpus.display().to_string(),
            ]);
            cmd.extend(config.report.args.iter().cloned());
        }
    }
    cmd
}

/// Checks that a binary a GPU stage runs was built with CUDA: its `--version` line lists the
/// build's features (`apply-model 0.1.0 (features: cuda)`). Run before anything is queued, so
/// a CPU-only build is found before the GPU queue wait, not after it.
pub fn check_cuda_build(program: &str) -> Result<(), String> {
    let how = "build it with CUDA (scripts/build-cuda.sh here, or on a GPU node: \
               `CUDA_COMPUTE_CAP=<the GPU's: 90 H100/H200, 80 A100, 86 A40/A10> cargo build --release --features cuda -p apply-model -p tune-embeddings`), \
               or set the profile's bin_dir to where the CUDA build is";
    let out = std::process::Command::new(program)
        .arg("--version")
        .output()
        .map_err(|e| format!("{program}: {e}; {how}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let features = text
        .split_once("(features:")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(list, _)| list);
    match features {
        Some(list) if list.split([',', ' ']).any(|f| f == "cuda") => Ok(()),
        _ => Err(format!(
            "{program} was built without CUDA (`--version`: {:?}) but runs on a GPU under this \
             profile; {how}",
            text.trim()
        )),
    }
}

/// Quotes a word for bash.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

pub fn script_path(run_dir: &Path, index: usize, stage: Stage) -> PathBuf {
    run_dir
        .join("slurm")
        .join(format!("{}-{}.sbatch", index + 1, stage.name()))
}

/// The sbatch script of a stage under a cluster profile (the stage's own, see
/// [`stage_profile`]).
pub fn sbatch_script(config: &Config, profile: &Profile, stage: Stage) -> String {
    let run = config.run_dir.display().to_string();
    let res = resources(profile, stage);
    let array = stage.array(config);
    let mut lines = vec![
        "#!/bin/bash".to_string(),
        format!("#SBATCH --job-name=strata-{}", stage.name()),
    ];
    lines.push(format!("#SBATCH --chdir={}", shell_quote(&run)));
    let log = if array.is_some() { "%A_%a" } else { "%j" };
    lines.push(format!(
        "#SBATCH --output={}",
        shell_quote(&format!("{run}/slurm/logs/{}-{log}.out", stage.name()))
    ));
    let opt = |name: &str, v: &Option<String>| v.as_ref().map(|v| format!("#SBATCH --{name}={v}"));
    lines.extend(opt("partition", &res.partition));
    lines.extend(opt("account", &res.account));
    lines.extend(opt("qos", &res.qos));
    lines.extend(opt("mem", &res.mem));
    lines.push(format!("#SBATCH --cpus-per-task={}", res.cpus));
    lines.extend(opt("time", &res.time));
    lines.extend(opt("gres", &res.gres));
    if let Some((n, max_parallel)) = array {
        let limit = max_parallel.map(|k| format!("%{k}")).unwrap_or_default();
        lines.push(format!("#SBATCH --array=0-{}{limit}", n - 1));
    }
    lines.push("set -euo pipefail".into());
    lines.extend(res.setup.iter().cloned());
    if stage == Stage::ParaphraseGen && config.paraphrase_gen.api_key_file.is_none() {
        lines.push("# The API key comes from OPENAI_API_KEY in the job's environment (never from this file).".into());
        lines.push(
            ": \"${OPENAI_API_KEY:?set OPENAI_API_KEY or paraphrase_gen.api_key_file}\"".into(),
        );
    }
    if stage == Stage::Precocity && array.is_some() {
        // precocity splits the centre years by SLURM_ARRAY_TASK_ID / _COUNT itself.
        lines.push("export SLURM_ARRAY_TASK_COUNT=${SLURM_ARRAY_TASK_COUNT:-1}".into());
    }
    let mut cmd: Vec<String> = command(config, Some(profile), stage)
        .iter()
        .map(|w| shell_quote(w))
        .collect();
    if let (Stage::ApplyModel, Some((n, _))) = (stage, array) {
        // apply-model takes its task id from SLURM_ARRAY_TASK_ID; the number of task slots is
        // written here rather than read from SLURM_ARRAY_TASK_COUNT, so that resubmitting some
        // tasks (`sbatch --array=2,3 THIS`) embeds exactly their shards.
        cmd.extend(["--num-shards".to_string(), n.to_string()]);
    }
    lines.push(format!("exec {}", cmd.join(" ")));
    lines.join("\n") + "\n"
}
