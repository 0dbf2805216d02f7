use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use slurm::config::Config;
use slurm::stages::Stage;

/// Run the strata pipeline from one config: on this machine, or as chained sbatch jobs.
///
/// The config (see `slurm init`) names the corpus, the run folder, each stage's arguments
/// (passed to the stage binaries unchanged) and cluster profiles. Every stage writes a
/// MANIFEST.json into its output folder; a stage whose outputs verify is finished and is
/// skipped by `run-local` and `submit`.
#[derive(Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a commented example config.
    Init {
        #[arg(default_value = "pipeline.toml")]
        path: PathBuf,
    },
    /// Write the sbatch scripts into RUN/slurm/ and print them (submits nothing), then list on
    /// stderr what `submit` would refuse: a missing corpus or base model, a GPU stage whose
    /// binary is not a CUDA build, an API key file others can read.
    Plan {
        #[arg(long, short, default_value = "pipeline.toml")]
        config: PathBuf,
        #[arg(long, short)]
        profile: String,
    },
    /// Submit the unfinished stages, chained with --dependency=afterok; apply-model as an array.
    /// A stage that runs on a GPU under the profile must have a CUDA build of its binary
    /// (checked with `--version` before anything is queued).
    Submit {
        #[arg(long, short, default_value = "pipeline.toml")]
        config: PathBuf,
        #[arg(long, short)]
        profile: String,
    },
    /// Each stage: done, pending, running, blocked, failed or not submitted.
    Status {
        #[arg(long, short, default_value = "pipeline.toml")]
        config: PathBuf,
    },
    /// Run the unfinished stages here, one after the other (the laptop path).
    RunLocal {
        #[arg(long, short, default_value = "pipeline.toml")]
        config: PathBuf,
    },
    /// List what the manifests under DIR record.
    Manifest { dir: PathBuf },
    /// Check every file listed in the manifests under DIR; exit 1 if any is missing or changed.
    Verify { dir: PathBuf },
    /// Copy SRC to DEST (a path or host:path) with rsync, resuming partial transfers, then
    /// verify DEST against the manifests.
    Sync {
        src: PathBuf,
        dest: String,
        /// Remote shell for rsync and the remote check.
        #[arg(long, default_value = "ssh")]
        ssh: String,
    },
}

fn main() -> ExitCode {
    common::progress::init_logging();
    match run(Args::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cmd: Cmd) -> Result<ExitCode, String> {
    let load = |p: &PathBuf| Config::load(p);
    match cmd {
        Cmd::Init { path } => {
            if path.exists() {
                return Err(format!("{} exists; not overwriting it", path.display()));
            }
            std::fs::write(&path, slurm::config::EXAMPLE)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            eprintln!("wrote {}: edit it, then `slurm run-local -c {0}` or `slurm submit -c {0} -p PROFILE`", path.display());
        }
        Cmd::Plan { config, profile } => {
            let config = load(&config)?;
            for (path, script) in slurm::plan(&config, &profile)? {
                println!("# {}\n{script}", path.display());
            }
            let found = slurm::problems(&config, &profile)?;
            for problem in &found {
                eprintln!("warning: {problem}");
            }
            if !found.is_empty() {
                eprintln!(
                    "submit would refuse these {} problems; the scripts above are a preview",
                    found.len()
                );
            }
        }
        Cmd::Submit { config, profile } => {
            for (stage, job) in slurm::submit(&load(&config)?, &profile)? {
                eprintln!(
                    "{:>16}: {}",
                    stage.name(),
                    if job == "done" {
                        "done, skipped".into()
                    } else {
                        format!("job {job}")
                    }
                );
            }
        }
        Cmd::Status { config } => {
            let mut failed = false;
            for (stage, state) in slurm::status(&load(&config)?)? {
                failed |= matches!(state, slurm::StageState::Failed { .. });
                println!("{:>16}: {state}", stage.name());
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::RunLocal { config } => {
            let config = load(&config)?;
            slurm::run_local(&config, |stage, done| {
                if done {
                    eprintln!("==> {}: already done, skipped", stage.name());
                } else {
                    eprintln!("==> {}", stage.name());
                }
            })?;
            eprintln!(
                "pipeline finished; outputs in {}:",
                config.run_dir.display()
            );
            for stage in slurm::stages::stages(&config) {
                eprintln!(
                    "  {:>16} → {}/",
                    stage.name(),
                    config.run_dir.join(stage.output_dir()).display()
                );
            }
            for (metric, base, tuned) in slurm::tuning_summary(&config) {
                eprintln!("  held-out {metric}: base model {base:.4} → tuned {tuned:.4}");
            }
            // The report's page last, alone on stdout, for scripts.
            let page = config
                .run_dir
                .join(Stage::Report.output_dir())
                .join(slurm::REPORT_PAGE);
            if config.report.enabled && page.exists() {
                // A label beside the path on a terminal; a script capturing stdout gets the path.
                if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                    eprintln!("report:");
                }
                println!("{}", page.display());
            }
        }
        Cmd::Manifest { dir } => print!("{}", slurm::sync::describe(&dir)?),
        Cmd::Verify { dir } => {
            let mut bad = 0;
            for (d, findings) in slurm::verify_tree(&dir)? {
                for f in &findings {
                    println!("{}: {f}", d.display());
                }
                bad += findings.len();
            }
            if bad > 0 {
                eprintln!("{bad} problems");
                return Ok(ExitCode::FAILURE);
            }
            eprintln!("all files verify");
        }
        Cmd::Sync { src, dest, ssh } => {
            let n = slurm::sync::sync(&src, &dest, &ssh)?;
            eprintln!("synced {} → {dest}; {n} files verify", src.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
