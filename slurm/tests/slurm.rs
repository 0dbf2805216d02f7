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
[precocity]
enabled = false
[report]
enabled = false
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
    keys_in(&run.join("embeddings"))
}

/// The (doc_id, chunk_idx) of every row of every embeddings file in `dir`.
fn keys_in(dir: &Path) -> Vec<(String, i32)> {
    let mut keys = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
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
    // select-pairs and precocity leave the GPU partition; the GPU stages keep it.
    let a40 = config.profile("delta-a40").unwrap();
    let select = slurm::stages::resources(a40, Stage::SelectPairs);
    assert_eq!(
        (select.partition.as_deref(), select.gres),
        (Some("cpu"), None)
    );
    let tune = slurm::stages::resources(a40, Stage::TuneEmbeddings);
    assert_eq!(tune.gres.as_deref(), Some("gpu:1"));
    let own = slurm::stages::stage_profile(&config, a40, Stage::Precocity).unwrap();
    let precocity = slurm::stages::resources(own, Stage::Precocity);
    assert_eq!(
        (
            precocity.partition.as_deref(),
            precocity.gres,
            precocity.mem.as_deref()
        ),
        (Some("cpu"), None, Some("64G"))
    );
    // A misspelt stage in a profile is an error, not the default resources.
    std::fs::write(
        &path,
        "run_dir = \"r\"\ncorpus = \"c\"\nbase_model = \"m\"\nbin_dir = \"b\"\n[profiles.x.stages.tune_embedings]\ncpus = 2\n",
    )
    .unwrap();
    let e = Config::load(&path).unwrap_err();
    assert!(e.contains("unknown stage `tune_embedings`"), "{e}");
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
    let problems = slurm::problems(&Config::load(&path).unwrap(), "ci").unwrap();
    assert!(
        problems.len() == 1 && problems[0].contains("readable by others"),
        "{problems:?}"
    );
    let e = slurm::submit(&Config::load(&path).unwrap(), "ci").unwrap_err();
    assert!(e.contains("readable by others"), "{e}");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        slurm::problems(&Config::load(&path).unwrap(), "ci").unwrap(),
        Vec::<String>::new()
    );
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

/// Runs `sbatch` with these arguments; returns its stdout (the job id with --parsable).
fn sbatch(args: &[&str]) -> std::process::Output {
    Command::new("sbatch").args(args).output().unwrap()
}

fn scontrol_job(id: &str) -> String {
    let out = Command::new("scontrol")
        .args(["show", "job", "-o", id])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Cancels these jobs when dropped (the tests hold jobs so that nothing runs).
struct Cancel(Vec<String>);

impl Drop for Cancel {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = Command::new("scancel").args(&self.0).status();
        }
    }
}

/// The pipeline config of `setup` with precocity and report on (their binaries are not needed
/// to plan or submit) and a profile `gpu` whose GPU stages ask for a GPU.
fn gpu_config(dir: &Path) -> Config {
    let (path, _) = setup(dir, 8);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(
            "[precocity]\nenabled = false",
            "[precocity]\nargs = [\"--from-year\", \"1900\"]",
        )
        .replace("[report]\nenabled = false", "[report]")
        + r#"[profiles.gpu]
partition = "gpu"
gres = "gpu:1"
cpus = 1
mem = "1G"
gpu_args = ["--device", "cuda:0"]
time = { tune_embeddings = "00:20:00" }
[profiles.gpu.stages.select_pairs]
partition = "debug"
time = "00:05:00"
[profiles.gpu.stages.precocity]
partition = "debug"
mem = "2G"
"#;
    std::fs::write(&path, text).unwrap();
    Config::load(&path).unwrap()
}

#[test]
fn chatty_sbatch_output_still_chains_the_jobs() {
    require_slurm();
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = setup(dir.path(), 8);
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v sbatch"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    // A site's submit plugin: lines before and after the id, and the id as `ID;cluster`. The
    // jobs are held so that nothing runs; the test cancels them.
    let wrappers = dir.path().join("bin");
    std::fs::create_dir_all(&wrappers).unwrap();
    let wrapper = wrappers.join("sbatch");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho 'sbatch: site plugin: account ok, 87% of 1000 SUs used'\n\
             echo 'Job 7 of your 12 allowed'\nid=$({} --hold \"$@\") || exit $?\necho \"$id;ci\"\n\
             echo 'sbatch: have a nice day'\n",
            real.trim()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path_env = format!(
        "{}:{}",
        wrappers.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let bin = env!("CARGO_BIN_EXE_slurm");
    let out = Command::new(bin)
        .args(["submit", "-p", "ci", "-c"])
        .arg(&path)
        .env("PATH", &path_env)
        .output()
        .unwrap();
    let config = Config::load(&path).unwrap();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(config.run_dir.join("slurm/state.json")).unwrap())
            .unwrap();
    let job = |stage: &str| state["jobs"][stage].as_str().unwrap().to_string();
    let ids: Vec<String> = ["select-pairs", "tune-embeddings", "apply-model"]
        .iter()
        .map(|s| job(s))
        .collect();
    let _cancel = Cancel(ids.clone());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ids.iter().all(|id| id.parse::<u64>().is_ok()), "{ids:?}");
    // Each job waits on the one before: the ids were read right.
    for pair in ids.windows(2) {
        let shown = scontrol_job(&pair[1]);
        assert!(
            shown.contains(&format!("Dependency=afterok:{}", pair[0])),
            "{shown}"
        );
    }

    // A plugin that prints no id (and queues nothing): the error shows what it printed.
    std::fs::write(
        &wrapper,
        "#!/bin/sh\necho 'sbatch: submissions are paused for maintenance'\n",
    )
    .unwrap();
    std::fs::remove_file(config.run_dir.join("slurm/state.json")).unwrap();
    let out = Command::new(bin)
        .args(["submit", "-p", "ci", "-c"])
        .arg(&path)
        .env("PATH", &path_env)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no job id") && stderr.contains("paused for maintenance"),
        "{stderr}"
    );
}

/// Every 32nd document of the sample corpus, in `dir/chunks.parquet`; returns the keys.
fn small_corpus(dir: &Path) -> (PathBuf, Vec<(String, i32)>) {
    let all = ChunksReader::read_all(&root().join("data/sample/chunks.parquet")).unwrap();
    let mut docs: Vec<&str> = all.iter().map(|c| c.doc_id.as_str()).collect();
    docs.dedup();
    let keep: std::collections::HashSet<&str> = docs.into_iter().step_by(32).collect();
    let path = dir.join("chunks.parquet");
    let mut w = ChunksWriter::create(
        &path,
        &common::provenance::Provenance::new("test", "0", serde_json::Value::Null),
    )
    .unwrap();
    let mut keys = Vec::new();
    for r in all.iter().filter(|c| keep.contains(c.doc_id.as_str())) {
        keys.push((r.doc_id.clone(), r.chunk_idx));
        w.push(r.clone()).unwrap();
    }
    w.finish().unwrap();
    (path, keys)
}

/// The shard files (stems) apply-model wrote into `dir`.
fn shard_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    name.strip_suffix(".parquet").map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn hand_written_and_resubmitted_arrays_embed_exactly_their_shards() {
    require_slurm();
    let dir = tempfile::tempdir().unwrap();
    let (chunks, keys) = small_corpus(dir.path());
    let apply = bin_dir().join("apply-model");
    let model = base_model();
    // A user's own script: `--array=1-4` (SLURM_ARRAY_TASK_MIN=1) over 4 shards.
    let script = |out: &str, array: &str| {
        let path = dir.path().join(format!("{out}.sbatch"));
        std::fs::write(
            &path,
            format!(
                "#!/bin/bash\n#SBATCH --array={array}\n#SBATCH --cpus-per-task=1\n#SBATCH --mem=1G\n\
                 #SBATCH --output={0}/{out}-%a.log\n#SBATCH --chdir={0}\n\
                 exec {1} --model {2} --chunks {3} --out {out} --shard-by equal:4 --batch-size 16\n",
                dir.path().display(),
                apply.display(),
                model.display(),
                chunks.display()
            ),
        )
        .unwrap();
        path
    };
    let one_based = script("from-one", "1-4");
    let out = sbatch(&["--wait", one_based.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        shard_files(&dir.path().join("from-one")),
        (0..4)
            .map(|i| format!("part-{i:05}-of-00004"))
            .collect::<Vec<_>>()
    );
    let mut got = keys_in(&dir.path().join("from-one"));
    got.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(got, want, "every chunk embedded once");

    // An array with a gap, counted by Slurm as 2 tasks: refused on both tasks, nothing written.
    let gap = script("gap", "0,2");
    let out = sbatch(&["--wait", gap.to_str().unwrap()]);
    assert!(!out.status.success());
    for task in [0, 2] {
        let log = std::fs::read_to_string(dir.path().join(format!("gap-{task}.log"))).unwrap();
        assert!(
            log.contains("do not fit 2 task slot(s)") && log.contains("--array=0-1"),
            "{log}"
        );
    }
    assert!(shard_files(&dir.path().join("gap")).is_empty());

    // Resubmitting tasks 2 and 3 of the pipeline's own 4-task array embeds shards 2 and 3 only.
    let pipeline = dir.path().join("pipeline");
    std::fs::create_dir_all(&pipeline).unwrap();
    let (path, _) = setup(&pipeline, 8);
    std::fs::copy(&chunks, pipeline.join("chunks.parquet")).unwrap();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("years:50", "equal:4")
        .replace("array_tasks = 3", "array_tasks = 4");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    std::fs::create_dir_all(&config.run_dir).unwrap();
    std::os::unix::fs::symlink(&model, config.run_dir.join("model")).unwrap();
    let scripts = slurm::plan(&config, "ci").unwrap();
    let (apply_script, text) = &scripts[2];
    assert!(text.contains("#SBATCH --array=0-3%2") && text.contains("--num-shards 4"));
    let out = sbatch(&["--wait", "--array=2,3", apply_script.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        shard_files(&config.run_dir.join("embeddings")),
        ["part-00002-of-00004", "part-00003-of-00004"]
    );
}

#[test]
fn cpu_stages_ask_for_no_gpu_and_gpu_stages_need_a_cuda_build() {
    require_slurm();
    let dir = tempfile::tempdir().unwrap();
    let config = gpu_config(dir.path());
    let profile = config.profile("gpu").unwrap();
    let stages = slurm::stages::stages(&config);
    assert_eq!(
        stages.iter().map(|s| s.name()).collect::<Vec<_>>(),
        [
            "select-pairs",
            "tune-embeddings",
            "apply-model",
            "precocity",
            "report"
        ]
    );
    // The scripts as plan writes them, queued held on the local Slurm: only the GPU stages ask
    // for the GPU (and get --device cuda:0); select-pairs runs on its own partition.
    let scripts_dir = dir.path().join("scripts");
    std::fs::create_dir_all(&scripts_dir).unwrap();
    std::fs::create_dir_all(config.run_dir.join("slurm/logs")).unwrap();
    let mut held = Cancel(Vec::new());
    for &stage in &stages {
        let text = slurm::stages::sbatch_script(&config, profile, stage);
        let file = scripts_dir.join(format!("{}.sbatch", stage.name()));
        std::fs::write(&file, &text).unwrap();
        let out = sbatch(&["--parsable", "--hold", file.to_str().unwrap()]);
        assert!(out.status.success(), "{}: {out:?}", stage.name());
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        held.0.push(id.clone());
        let shown = scontrol_job(&id);
        let gpu = stage.gpu_capable();
        assert_eq!(
            shown.contains("gres/gpu") || shown.contains("gres:gpu"),
            gpu,
            "{}: {shown}\n{text}",
            stage.name()
        );
        assert_eq!(text.contains("#SBATCH --gres="), gpu, "{text}");
        assert_eq!(text.contains("--device cuda:0"), gpu, "{text}");
        let partition = if matches!(stage, Stage::SelectPairs | Stage::Precocity) {
            "debug"
        } else {
            "gpu"
        };
        assert!(
            shown.contains(&format!("Partition={partition} ")),
            "{}: {shown}",
            stage.name()
        );
    }
    drop(held);
    let precocity = slurm::stages::sbatch_script(&config, profile, Stage::Precocity);
    assert!(precocity.contains("#SBATCH --mem=2G"), "{precocity}");
    assert!(
        precocity.contains("exec ")
            && precocity.contains(
                "precocity --embeddings embeddings --pairs pairs/pairs.parquet --out precocity --from-year 1900"
            ),
        "{precocity}"
    );
    let report = slurm::stages::sbatch_script(&config, profile, Stage::Report);
    assert!(
        report.contains(&format!(
            "report . --out report --base-model {} --corpus {}",
            config.base_model.display(),
            config.corpus.display()
        )),
        "{report}"
    );

    // The stage binaries of this build are CPU-only: submit refuses before anything is
    // written or queued, naming the binary and how to build it; plan lists the same problem.
    let e = slurm::submit(&config, "gpu").unwrap_err();
    assert!(
        e.starts_with("tune-embeddings: ")
            && e.contains("built without CUDA")
            && e.contains("features: cpu only")
            && e.contains("scripts/build-cuda.sh"),
        "{e}"
    );
    assert!(!config.run_dir.join("slurm/state.json").exists());
    assert!(!config
        .run_dir
        .join("slurm/2-tune-embeddings.sbatch")
        .exists());
    let queued = Command::new("squeue")
        .args(["-h", "-o", "%Z"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&queued.stdout).contains(config.run_dir.to_str().unwrap()),
        "nothing of this run is queued"
    );
    let problems = slurm::problems(&config, "gpu").unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with("tune-embeddings: ") && problems[1].starts_with("apply-model: ")
    );
    assert_eq!(slurm::plan(&config, "gpu").unwrap().len(), 5);
    assert!(slurm::problems(&config, "ci").unwrap().is_empty());
    // A CPU profile plans them all.
    assert_eq!(slurm::plan(&config, "ci").unwrap().len(), 5);
}

#[test]
fn plan_previews_what_submit_refuses_and_tune_jobs_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = setup(dir.path(), 8);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "corpus = \"chunks.parquet\"",
            "corpus = \"missing.parquet\"",
        ),
    )
    .unwrap();
    let config = Config::load(&path).unwrap();
    let problems = slurm::problems(&config, "ci").unwrap();
    assert!(
        problems.len() == 1
            && problems[0].starts_with("corpus ")
            && problems[0].ends_with("missing.parquet does not exist"),
        "{problems:?}"
    );
    // submit refuses before writing anything; plan writes the scripts and lists the problem.
    let e = slurm::submit(&config, "ci").unwrap_err();
    assert!(e.contains("missing.parquet does not exist"), "{e}");
    assert!(!config.run_dir.join("slurm").exists());
    let out = Command::new(env!("CARGO_BIN_EXE_slurm"))
        .args(["plan", "-p", "ci", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: corpus ") && stderr.contains("submit would refuse"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("#SBATCH"));
    // run-local names the missing corpus before running anything.
    let e = slurm::run_local(&config, |_, _| panic!("no stage runs")).unwrap_err();
    assert!(e.contains("missing.parquet does not exist"), "{e}");
    // A job killed at its time limit continues from its checkpoint when resubmitted.
    let tune = slurm::stages::command(&config, None, Stage::TuneEmbeddings).join(" ");
    assert!(tune.contains(" --resume --checkpoint-steps 500 "), "{tune}");
}

#[test]
fn precocity_and_report_are_done_when_their_manifests_list_their_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let config = gpu_config(dir.path());
    let provenance = common::provenance::Provenance::new("precocity", "0", serde_json::Value::Null);
    let write = |folder: &str, file: &str| {
        let d = config.run_dir.join(folder);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(file), format!("{folder}/{file}")).unwrap();
        common::manifest::record(&d, &d.join(file), None, &provenance).unwrap();
    };
    assert!(!slurm::is_done(&config, Stage::Precocity).unwrap());
    write("precocity", "documents.tsv");
    write("precocity", "documents.parquet");
    assert!(
        !slurm::is_done(&config, Stage::Precocity).unwrap(),
        "chunks.parquet is missing"
    );
    write("precocity", "chunks.parquet");
    assert!(slurm::is_done(&config, Stage::Precocity).unwrap());
    write("report", "index.html");
    assert!(slurm::is_done(&config, Stage::Report).unwrap());
    // A changed page is not done (and `verify` says why).
    std::fs::write(config.run_dir.join("report/index.html"), "edited").unwrap();
    assert!(!slurm::is_done(&config, Stage::Report).unwrap());
    let status = slurm::status(&config).unwrap();
    assert_eq!(status[3], (Stage::Precocity, StageState::Done));
    assert_eq!(status[4], (Stage::Report, StageState::NotSubmitted));
}
