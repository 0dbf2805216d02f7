//! Copying a run folder (or any folder with manifests) between clusters: rsync with partial
//! transfers kept for resuming, then a check of every file at the destination against the
//! manifests. A remote destination (`host:path`) is checked over ssh with `sha256sum -c`, so
//! nothing of ours has to be installed there.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::manifest::{self, Manifest};

/// `host:path` → Some((host, path)); a local path → None.
fn remote(dest: &str) -> Option<(&str, &str)> {
    let (host, path) = dest.split_once(':')?;
    (!host.is_empty() && !host.contains('/')).then_some((host, path))
}

/// The `sha256sum -c` lines for every file listed in the manifests under `src`, relative to it.
fn checklist(src: &Path) -> Result<(String, usize), String> {
    let mut lines = String::new();
    let mut n = 0;
    for (dir, _) in crate::verify_tree(src)? {
        let listed = Manifest::load(&dir).map_err(|e| e.to_string())?;
        let rel: PathBuf = dir.strip_prefix(src).unwrap_or(Path::new("")).to_path_buf();
        for (file, entry) in &listed.files {
            lines += &format!("{}  {}\n", entry.sha256, rel.join(file).display());
            n += 1;
        }
    }
    Ok((lines, n))
}

/// Copies `src` into `dest` and verifies it there. `ssh` is the remote shell for rsync and
/// for the check (e.g. `ssh -p 2222 -i key`).
pub fn sync(src: &Path, dest: &str, ssh: &str) -> Result<usize, String> {
    // Refuse to copy what is already broken at the source.
    for (dir, findings) in crate::verify_tree(src)? {
        if let Some(f) = findings.first() {
            return Err(format!("source {} does not verify: {f}", dir.display()));
        }
    }
    let mut from = src.display().to_string();
    if !from.ends_with('/') {
        from.push('/');
    }
    let status = Command::new("rsync")
        .args(["-a", "--partial", "-e", ssh])
        .arg(&from)
        .arg(dest)
        .status()
        .map_err(|e| format!("rsync: {e} (install rsync)"))?;
    if !status.success() {
        return Err(format!(
            "rsync {from} {dest} failed ({status}); rerun to resume"
        ));
    }
    match remote(dest) {
        None => {
            let mut bad = Vec::new();
            for (dir, findings) in crate::verify_tree(Path::new(dest))? {
                bad.extend(
                    findings
                        .into_iter()
                        .map(|f| format!("{}: {f}", dir.display())),
                );
            }
            if !bad.is_empty() {
                return Err(format!(
                    "{dest} does not verify after the copy:\n  {}",
                    bad.join("\n  ")
                ));
            }
            let (_, n) = checklist(src)?;
            Ok(n)
        }
        Some((host, path)) => {
            let (list, n) = checklist(src)?;
            let mut parts = ssh.split_whitespace();
            let program = parts.next().unwrap_or("ssh");
            let quoted = format!("'{}'", path.replace('\'', r"'\''"));
            let mut child = Command::new(program)
                .args(parts)
                .arg(host)
                .arg(format!("cd {quoted} && sha256sum --quiet -c -"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("{program}: {e}"))?;
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(list.as_bytes())
                .map_err(|e| e.to_string())?;
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            if !out.status.success() {
                let report = String::from_utf8_lossy(&out.stdout).to_string()
                    + &String::from_utf8_lossy(&out.stderr);
                return Err(format!(
                    "{dest} does not verify after the copy:\n{}",
                    report.trim()
                ));
            }
            Ok(n)
        }
    }
}

/// Files a manifest lists, for `manifest` output.
pub fn describe(dir: &Path) -> Result<String, String> {
    let mut out = String::new();
    for (d, _) in crate::verify_tree(dir)? {
        let listed = Manifest::load(&d).map_err(|e| e.to_string())?;
        out += &format!("{}/{}\n", d.display(), manifest::MANIFEST);
        for (file, e) in &listed.files {
            let rows = e.rows.map(|r| format!(", {r} rows")).unwrap_or_default();
            out += &format!(
                "  {file}: {} bytes{rows}, {} {}, sha256 {}\n",
                e.size,
                e.stage,
                e.version,
                &e.sha256[..16]
            );
        }
    }
    Ok(out)
}
