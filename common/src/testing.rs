//! For the stages' integration tests: the workspace root and the real base model, fetched
//! once per test binary through the same script users run.

use std::path::{Path, PathBuf};
use std::sync::Once;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("workspace root")
}

/// `models/all-MiniLM-L6-v2`, fetched by scripts/fetch-model.sh on first use.
pub fn base_model() -> PathBuf {
    static FETCH: Once = Once::new();
    let root = workspace_root();
    FETCH.call_once(|| {
        let ok = std::process::Command::new("bash")
            .arg(root.join("scripts/fetch-model.sh"))
            .status()
            .expect("run scripts/fetch-model.sh")
            .success();
        assert!(ok, "scripts/fetch-model.sh failed");
    });
    root.join("models/all-MiniLM-L6-v2")
}
