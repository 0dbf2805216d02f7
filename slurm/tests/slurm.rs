//! The slurm crate against a real single-node Slurm (started by scripts/test.sh through
//! scripts/slurm-up.sh; SLURM_CONF points at it), a real rsync and an sshd on 127.0.0.1.

use common::testing::{base_model, workspace_root as root};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::tables::{ChunksReader, ChunksWriter, EmbeddingsReader};
use slurm::config::Config;
use slurm::stages::Stage;
use slurm::StageState;

fn bin_dir() -> PathBuf {
    // The stage binaries of this build, next to this test's own binary.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    for b in ["select-pairs", "tune-embeddings", "apply-model"] {
        assert!(
            dir.join(b).exists(),
            "{} missing: build the workspace first (cargo test --workspace builds it)",
            dir.join(b).display()
        );
    }
    dir
}

fn require_slurm() {
    assert!(
        std::env::var("SLURM_CONF").is_ok(),
        "these tests need a running Slurm: run scripts/test.sh (it starts one with scripts/slurm-up.sh) or export SLURM_CONF"
    );
}

/// Every 8th document of the sample corpus (whole documents), and a config that runs a tiny
/// pipeline on it.
fn setup(dir: &Path, tune_batch: usize) -> (PathBuf, usize) {
    let all = ChunksReader::read_all(&root().join("data/sample/chunks.parquet")).unwrap();
    let mut docs: Vec<&str> = all.iter().map(|c| c.doc_id.as_str()).collect();
    docs.dedup();
    let keep: std::collections::HashSet<&str> = docs.into_iter().step_by(8).collect();
    let rows: Vec<_> = all
        .iter()
        .filter(|c| keep.contains(c.doc_id.as_str()))
        .cloned()
        .collect();
    let mut w = ChunksWriter::create(
        &dir.join("chunks.parquet"),
        &common::provenance::Provenance::new("test", "0", serde_json::Value::Null),
    )
    .unwrap();
    for r in &rows {
        w.push(r.clone()).unwrap();
    }
    w.finish().unwrap();
    let config = format!(
        r#"run_dir = "run"
corpus = "chunks.parquet"
base_model = "{}"
bin_dir = "{}"
[tune_embeddings]
args = ["--epochs", "1", "--batch-size", "{tune_batch}", "--max-seq-length", "32", "--eval-fraction", "0.2"]
[apply_model]
args = ["--shard-by", "years:50", "--batch-size", "16"]
array_tasks = 3
max_parallel = 2
[profiles.ci]
partition = "debug"
cpus = 1
mem = "3G"
time = {{ tune_embeddings = "00:20:00" }}
"#,
        base_model().display(),
        bin_dir().display()
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, config).unwrap();
    (path, rows.len())
}

fn wait_until(
    config: &Config,
    done: impl Fn(&[(Stage, StageState)]) -> bool,
) -> Vec<(Stage, StageState)> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let s = slurm::status(config).unwrap();
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "pipeline did not settle: {s:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn all_done(s: &[(Stage, StageState)]) -> bool {
    s.iter().all(|(_, st)| *st == StageState::Done)
}

fn embedded_keys(run: &Path) -> Vec<(String, i32)> {
    let mut keys = Vec::new();
    for e in std::fs::read_dir(run.join("embeddings")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "parquet") {
            let mut r = EmbeddingsReader::open(&e.path()).unwrap();
            while let Some((k, _)) = r.next_rows().unwrap() {
                keys.extend(k.into_iter().map(|k| (k.doc_id, k.chunk_idx)));
            }
        }
    }
    keys
}

#[test]
fn config_rejects_unknown_keys_and_init_example_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, "run_dir = \"r\"\ncorpus = \"c\"\nbase_model = \"m\"\nbin_dir = \"b\"\n[tune_embeddings]\nargs = []\nepochs = 3\n").unwrap();
    let e = Config::load(&path).unwrap_err();
    assert!(e.contains("unknown field `epochs`"), "{e}");
    let bin = env!("CARGO_BIN_EXE_slurm");
    let example = dir.path().join("pipeline.toml");
    assert!(Command::new(bin)
        .arg("init")
        .arg(&example)
        .status()
        .unwrap()
        .success());
    let config = Config::load(&example).unwrap();
    assert!(config.profiles.contains_key("delta-a40") && config.profiles.contains_key("generic"));
    assert_eq!(
        Command::new(bin)
            .arg("init")
            .arg(&example)
            .status()
            .unwrap()
            .code(),
        Some(2),
        "never overwrites"
    );
}

#[test]
fn scripts_never_hold_the_api_key() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = setup(dir.path(), 8);
    let secret = "sk-never-in-a-script-777";
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, secret).unwrap();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text = text.replace("[tune_embeddings]", &format!("[paraphrase_gen]\nenabled = true\nargs = [\"--model\", \"m\"]\napi_key_file = \"{}\"\n[tune_embeddings]", key_file.display()));
    std::fs::write(&path, &text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = slurm::plan(&Config::load(&path).unwrap(), "ci").unwrap_err();
    assert!(e.contains("readable by others"), "{e}");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let scripts = slurm::plan(&Config::load(&path).unwrap(), "ci").unwrap();
    assert_eq!(scripts.len(), 4);
    assert!(scripts.iter().all(|(_, s)| !s.contains(secret)));
    assert!(scripts[1].1.contains("--api-key-file"));
    // Without a key file, the job reads the environment.
    std::fs::write(
        &path,
        text.replace(&format!("api_key_file = \"{}\"\n", key_file.display()), ""),
    )
    .unwrap();
    let scripts = slurm::plan(&Config::load(&path).unwrap(), "ci").unwrap();
    assert!(scripts[1].1.contains("${OPENAI_API_KEY:?"));
    assert!(scripts[3].1.contains("#SBATCH --array=0-2%2"));
}

#[test]
fn the_chain_runs_on_slurm_and_a_failure_stops_its_dependants_until_fixed() {
    require_slurm();
    let dir = tempfile::tempdir().unwrap();
    // tune-embeddings fails: the batch is larger than the data.
    let (path, rows) = setup(dir.path(), 100_000);
    let config = Config::load(&path).unwrap();
    slurm::submit(&config, "ci").unwrap();
    let s = wait_until(&config, |s| {
        matches!(s[1].1, StageState::Failed { .. }) && matches!(s[2].1, StageState::Blocked { .. })
    });
    assert_eq!(s[0].1, StageState::Done);
    let bin = env!("CARGO_BIN_EXE_slurm");
    let out = Command::new(bin)
        .args(["status", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success()
            && text.contains("tune-embeddings: FAILED")
            && text.contains("apply-model: blocked"),
        "{text}"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(config.run_dir.join("slurm/state.json")).unwrap())
            .unwrap();
    let first_select_job = state["jobs"]["select-pairs"].clone();

    // Fixed: only the rest runs.
    std::fs::write(
        &path,
        std::fs::read_to_string(&path)
            .unwrap()
            .replace("100000", "8"),
    )
    .unwrap();
    let config = Config::load(&path).unwrap();
    let submitted = slurm::submit(&config, "ci").unwrap();
    assert_eq!(
        submitted[0].1, "done",
        "select-pairs is finished and not resubmitted"
    );
    wait_until(&config, all_done);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(config.run_dir.join("slurm/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["jobs"]["select-pairs"], first_select_job);

    // Every chunk embedded exactly once by the 3 array tasks, and every output verifies.
    let keys = embedded_keys(&config.run_dir);
    let unique: std::collections::HashSet<_> = keys.iter().cloned().collect();
    assert_eq!((keys.len(), unique.len()), (rows, rows));
    // The outputs verify as soon as the tasks wrote them; accounting reaches slurmdbd a
    // little later, so give it a minute.
    let array = state["jobs"]["apply-model"].as_str().unwrap();
    let completed = |tasks: &[String]| tasks.iter().filter(|t| *t == "COMPLETED").count();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tasks = slurm::cluster::sacct(array).unwrap();
    while completed(&tasks) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        tasks = slurm::cluster::sacct(array).unwrap();
    }
    assert_eq!(completed(&tasks), 3, "{tasks:?}");
    for (d, findings) in slurm::verify_tree(&config.run_dir).unwrap() {
        assert!(findings.is_empty(), "{}: {findings:?}", d.display());
    }
    // A second submit finds everything done.
    assert!(slurm::submit(&config, "ci")
        .unwrap()
        .iter()
        .all(|(_, j)| j == "done"));
}

#[test]
fn run_local_gives_verified_outputs_and_sync_catches_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (path, rows) = setup(dir.path(), 8);
    let bin = env!("CARGO_BIN_EXE_slurm");
    let out = Command::new(bin)
        .args(["run-local", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("held-out successive_mrr@10: base model")
            && stderr.contains("held-out knn_year_error: base model"),
        "{stderr}"
    );
    let run = dir.path().join("run");
    assert_eq!(embedded_keys(&run).len(), rows);
    let again = Command::new(bin)
        .args(["run-local", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&again.stderr)
            .matches("already done, skipped")
            .count(),
        3
    );

    // Into another folder.
    let copy = dir.path().join("copy");
    slurm::sync::sync(&run, copy.to_str().unwrap(), "ssh").unwrap();
    assert!(Command::new(bin)
        .arg("verify")
        .arg(&copy)
        .status()
        .unwrap()
        .success());
    // Silent corruption (same size and time, so rsync's quick check skips it) is caught.
    let victim = copy.join("model/model.safetensors");
    corrupt(&victim);
    let e = slurm::sync::sync(&run, copy.to_str().unwrap(), "ssh").unwrap_err();
    assert!(
        e.contains("model.safetensors") && e.contains("content changed"),
        "{e}"
    );
    assert_eq!(
        Command::new(bin)
            .arg("verify")
            .arg(&copy)
            .status()
            .unwrap()
            .code(),
        Some(1)
    );

    // Over ssh to 127.0.0.1.
    let sshd = Sshd::start(dir.path());
    let remote_dir = dir.path().join("remote");
    let dest = format!("127.0.0.1:{}", remote_dir.display());
    slurm::sync::sync(&run, &dest, &sshd.ssh).unwrap();
    corrupt(&remote_dir.join("pairs/pairs.parquet"));
    let e = slurm::sync::sync(&run, &dest, &sshd.ssh).unwrap_err();
    assert!(
        e.contains("pairs/pairs.parquet") && e.contains("FAILED"),
        "{e}"
    );
}

/// Flips one byte in the middle of `path`, keeping its size and modification time.
fn corrupt(path: &Path) {
    let meta = std::fs::metadata(path).unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(meta.modified().unwrap()).unwrap();
}

/// An sshd on a free loopback port, accepting one key, for this test only.
struct Sshd {
    child: std::process::Child,
    ssh: String,
}

impl Sshd {
    fn start(dir: &Path) -> Sshd {
        let d = dir.join("sshd");
        std::fs::create_dir_all(&d).unwrap();
        for key in ["host_key", "client_key"] {
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(key))
                .status()
                .unwrap()
                .success();
            assert!(ok, "ssh-keygen (install openssh-client)");
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {0}/host_key\nAuthorizedKeysFile {0}/authorized_keys\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             StrictModes no\nUsePAM no\nPidFile {0}/sshd.pid\n",
            d.display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sshd (install openssh-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let ssh = format!(
            "ssh -p {port} -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR",
            d.join("client_key").display()
        );
        Sshd { child, ssh }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
