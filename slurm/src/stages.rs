//! The pipeline's stages as command lines, and the sbatch scripts that run them. Commands run
//! with the run folder as working directory and name everything inside it by relative path,
//! so a run folder can move between clusters.

use std::path::{Path, PathBuf};

use crate::config::{Config, Profile};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Stage {
    SelectPairs,
    ParaphraseGen,
    TuneEmbeddings,
    ApplyModel,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::SelectPairs => "select-pairs",
            Stage::ParaphraseGen => "paraphrase-gen",
            Stage::TuneEmbeddings => "tune-embeddings",
            Stage::ApplyModel => "apply-model",
        }
    }

    /// Key of the stage in `pipeline.toml` (and in profile time limits).
    pub fn key(self) -> &'static str {
        match self {
            Stage::SelectPairs => "select_pairs",
            Stage::ParaphraseGen => "paraphrase_gen",
            Stage::TuneEmbeddings => "tune_embeddings",
            Stage::ApplyModel => "apply_model",
        }
    }

    /// The stage's output folder, relative to the run folder.
    pub fn output_dir(self) -> &'static str {
        match self {
            Stage::SelectPairs => "pairs",
            Stage::ParaphraseGen => "pairs-filled",
            Stage::TuneEmbeddings => "model",
            Stage::ApplyModel => "embeddings",
        }
    }

    fn uses_gpu(self) -> bool {
        matches!(self, Stage::TuneEmbeddings | Stage::ApplyModel)
    }
}

/// The stages this config runs, in order.
pub fn stages(config: &Config) -> Vec<Stage> {
    let mut s = vec![Stage::SelectPairs];
    if config.paraphrase_gen.enabled {
        s.push(Stage::ParaphraseGen);
    }
    s.extend([Stage::TuneEmbeddings, Stage::ApplyModel]);
    s
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
    let pairs = if config.paraphrase_gen.enabled {
        "pairs-filled/pairs.parquet"
    } else {
        "pairs/pairs.parquet"
    };
    let gpu_args = profile.map(|p| p.gpu_args.clone()).unwrap_or_default();
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
    }
    cmd
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

/// The sbatch script of a stage for a cluster profile.
pub fn sbatch_script(config: &Config, profile: &Profile, stage: Stage) -> String {
    let run = config.run_dir.display().to_string();
    let mut lines = vec![
        "#!/bin/bash".to_string(),
        format!("#SBATCH --job-name=strata-{}", stage.name()),
    ];
    lines.push(format!("#SBATCH --chdir={}", shell_quote(&run)));
    let log = if stage == Stage::ApplyModel {
        "%A_%a"
    } else {
        "%j"
    };
    lines.push(format!(
        "#SBATCH --output={}",
        shell_quote(&format!("{run}/slurm/logs/{}-{log}.out", stage.name()))
    ));
    let opt = |name: &str, v: &Option<String>| v.as_ref().map(|v| format!("#SBATCH --{name}={v}"));
    lines.extend(opt("partition", &profile.partition));
    lines.extend(opt("account", &profile.account));
    lines.extend(opt("qos", &profile.qos));
    lines.extend(opt("mem", &profile.mem));
    lines.push(format!("#SBATCH --cpus-per-task={}", profile.cpus));
    if let Some(t) = profile.time.get(stage.key()) {
        lines.push(format!("#SBATCH --time={t}"));
    }
    if stage.uses_gpu() {
        lines.extend(opt("gres", &profile.gres));
    }
    if stage == Stage::ApplyModel {
        let n = config.apply_model.array_tasks;
        let limit = config
            .apply_model
            .max_parallel
            .map(|k| format!("%{k}"))
            .unwrap_or_default();
        lines.push(format!("#SBATCH --array=0-{}{limit}", n - 1));
    }
    lines.push("set -euo pipefail".into());
    lines.extend(profile.setup.iter().cloned());
    if stage == Stage::ParaphraseGen && config.paraphrase_gen.api_key_file.is_none() {
        lines.push("# The API key comes from OPENAI_API_KEY in the job's environment (never from this file).".into());
        lines.push(
            ": \"${OPENAI_API_KEY:?set OPENAI_API_KEY or paraphrase_gen.api_key_file}\"".into(),
        );
    }
    if stage == Stage::ApplyModel {
        // apply-model takes its share of the shards from SLURM_ARRAY_TASK_ID / _COUNT.
        lines.push("export SLURM_ARRAY_TASK_COUNT=${SLURM_ARRAY_TASK_COUNT:-1}".into());
    }
    let cmd: Vec<String> = command(config, Some(profile), stage)
        .iter()
        .map(|w| shell_quote(w))
        .collect();
    lines.push(format!("exec {}", cmd.join(" ")));
    lines.join("\n") + "\n"
}
