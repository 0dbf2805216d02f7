//! Atomic writes: every output appears whole or not at all. A file is written to a hidden temp
//! name beside its destination (same filesystem, so the rename is atomic), fsynced, and renamed
//! into place; a folder is written beside its destination and swapped in. A process killed
//! midway leaves at most a `.<name>.tmp-<pid>` entry behind, never a half-written output.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The folder `path` lives in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A hidden temp name beside `dest`, unique per process, so a rename stays on one filesystem.
pub fn temp_path(dest: &Path) -> PathBuf {
    sibling(dest, "tmp")
}

fn sibling(dest: &Path, tag: &str) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = name.unwrap_or_else(|| "out".into());
    parent_dir(dest).join(format!(".{name}.{tag}-{}", std::process::id()))
}

/// Renames `tmp` over `dest` and fsyncs the directory so the rename itself is durable.
pub fn commit_rename(tmp: &Path, dest: &Path) -> Result<()> {
    std::fs::rename(tmp, dest).map_err(|e| Error::io(dest, e))?;
    if let Ok(dir) = File::open(parent_dir(dest)) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Writes `bytes` to `dest` atomically (temp file + fsync + rename).
///
/// Errors: [`Error::Io`] naming the temp file or `dest`; nothing is left at `dest` then.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = parent_dir(dest);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = temp_path(dest);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    commit_rename(&tmp, dest)
}

/// Replaces the folder `dest` with one that `write` fills: `write` gets a fresh, empty temp
/// folder beside `dest`; only when it succeeds is the old `dest` (if any) moved aside, the new
/// one renamed into place and the old one removed. If `write` fails, `dest` is untouched and
/// the temp folder is removed.
///
/// Errors: whatever `write` returns, or [`Error::Io`] (converted into `E`) for the folder
/// operations.
pub fn replace_dir<E: From<Error>>(
    dest: &Path,
    write: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let tmp = temp_path(dest);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dest.exists() {
        let old = sibling(dest, "old");
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(dest, &old).map_err(|e| Error::io(dest, e))?;
        commit_rename(&tmp, dest)?;
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    } else {
        commit_rename(&tmp, dest)?;
    }
    Ok(())
}

/// Takes an exclusive lock on the hidden file `path` (created empty if needed), waiting for
/// other processes (array tasks finishing into one folder) to release theirs; the lock is
/// released when the returned file is dropped.
///
/// The file stays behind: removing it on release would let a process that opened it before
/// the removal lock the orphaned file while a third locks a new one, and on NFS the waiting
/// process would get a stale handle.
pub fn lock_file(path: &Path) -> Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    file.lock().map_err(|e| Error::io(path, e))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_dir_swaps_whole_folders_and_keeps_the_old_one_when_writing_fails() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("model");
        replace_dir::<Error>(&dest, |d| write_atomic(&d.join("a"), b"1")).unwrap();
        replace_dir::<Error>(&dest, |d| write_atomic(&d.join("b"), b"2")).unwrap();
        assert!(!dest.join("a").exists());
        assert_eq!(std::fs::read(dest.join("b")).unwrap(), b"2");
        let failed = replace_dir::<Error>(&dest, |d| {
            write_atomic(&d.join("c"), b"3")?;
            Err(Error::Invalid("stop".into()))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(dest.join("b")).unwrap(), b"2");
        let names: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temp folders left behind: {names:?}");
    }
}
