//! The Slurm commands we use: sbatch to submit, squeue for live jobs, sacct for ended ones,
//! scancel for jobs whose dependency can never be met.

use std::process::Command;

fn run(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| format!("{shown}: {e} (is Slurm installed and SLURM_CONF set?)"))?;
    if !out.status.success() {
        return Err(format!(
            "{shown} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Submits a script; returns the job id.
pub fn sbatch(script: &std::path::Path, after_ok: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new("sbatch");
    cmd.arg("--parsable");
    if let Some(dep) = after_ok {
        cmd.arg(format!("--dependency=afterok:{dep}"));
    }
    cmd.arg(script);
    let out = run(&mut cmd)?;
    // --parsable prints "id" or "id;cluster".
    Ok(out.split(';').next().unwrap_or("").to_string())
}

/// A job as squeue sees it (only while it is pending or running).
#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    pub state: String,
    pub reason: String,
}

/// The job's live state, `None` once it has left the queue. For an array, the first task's.
pub fn squeue(job: &str) -> Result<Option<Live>, String> {
    let out = Command::new("squeue")
        .args(["-h", "-j", job, "-o", "%T|%r"])
        .output()
        .map_err(|e| format!("squeue: {e}"))?;
    // squeue fails for job ids it no longer knows: that means "not in the queue".
    if !out.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .next()
        .and_then(|l| l.split_once('|'))
        .map(|(s, r)| Live {
            state: s.to_string(),
            reason: r.to_string(),
        }))
}

/// The final states of a job's allocations (one per array task) from accounting.
pub fn sacct(job: &str) -> Result<Vec<String>, String> {
    let out = run(Command::new("sacct").args(["-n", "-P", "-X", "-j", job, "-o", "State"]))?;
    Ok(out
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

pub fn scancel(job: &str) -> Result<(), String> {
    run(Command::new("scancel").arg(job)).map(|_| ())
}
