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
    let shown = format!("{cmd:?}");
    parse_job_id(&run(&mut cmd)?).map_err(|e| format!("{shown}: {e}"))
}

/// The job id in what `sbatch --parsable` printed: the last line that is `ID` or `ID;cluster`.
/// Some sites' submit plugins print their own lines (quota notices, banners) on stdout before
/// or after it, so every other line is ignored; output without such a line is an error that
/// quotes it.
pub fn parse_job_id(stdout: &str) -> Result<String, String> {
    let is_id = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    stdout
        .lines()
        .rev()
        .map(str::trim)
        .find_map(|line| {
            let (id, cluster) = match line.split_once(';') {
                Some((id, cluster)) => (id, Some(cluster)),
                None => (line, None),
            };
            let cluster_ok =
                cluster.is_none_or(|c| !c.is_empty() && !c.contains(char::is_whitespace));
            (is_id(id) && cluster_ok).then(|| id.to_string())
        })
        .ok_or_else(|| {
            format!(
                "no job id in what sbatch printed (expected a line `ID` or `ID;cluster`):\n{}",
                if stdout.trim().is_empty() {
                    "(nothing)".to_string()
                } else {
                    stdout.trim_end().to_string()
                }
            )
        })
}

#[cfg(test)]
mod tests {
    use super::parse_job_id;

    #[test]
    fn the_job_id_is_the_last_id_line_whatever_plugins_print() {
        assert_eq!(parse_job_id("4242\n").unwrap(), "4242");
        assert_eq!(parse_job_id("4242;delta\n").unwrap(), "4242");
        let chatty = "sbatch: site plugin: 3 jobs in the queue\nAccount ok; 87% of 1000 used\n17\nsbatch: 9 SUs charged\n";
        assert_eq!(parse_job_id(chatty).unwrap(), "17");
        assert_eq!(parse_job_id("12\n13;c2\nbye\n").unwrap(), "13");
        for bad in [
            "",
            "Submitted batch job 12\n",
            "12;\n",
            "12 ;x y\n",
            "abc;def",
        ] {
            let e = parse_job_id(bad).unwrap_err();
            assert!(
                e.contains("no job id") && e.contains(bad.trim()),
                "{bad:?}: {e}"
            );
        }
    }
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
