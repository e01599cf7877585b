//! Stages as Slurm jobs, through a real one-node cluster
//! (`scripts/slurm-up.sh`): the same artifacts as a local run, cache hits
//! without new jobs, a failed job resubmitted, Ctrl-C cancelling the jobs.
//!
//! Where the cluster cannot be started (not root, no apt-get) the tests say
//! `skipped: <reason>` and pass, unless SEQPIPE_REQUIRE_SLURM is set
//! (scripts/test.sh sets it once the cluster is up).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{command, manifest, output_hashes, ran, seqpipe, setup};

fn cluster() -> bool {
    static UP: OnceLock<Result<(), String>> = OnceLock::new();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/slurm-up.sh");
    match UP.get_or_init(|| seqpipe::slurm::start_test_cluster(&script)) {
        Ok(()) => true,
        Err(reason) if std::env::var_os("SEQPIPE_REQUIRE_SLURM").is_some() => {
            panic!("SEQPIPE_REQUIRE_SLURM is set but the Slurm cluster is not up: {reason}")
        }
        Err(reason) => {
            eprintln!("skipped: {reason}");
            false
        }
    }
}

/// `seqpipe ARGS --cache d/CACHE` in `d` (a second cache beside `d/cache`).
fn in_cache(d: &Path, cache: &str, args: &[&str]) -> std::process::Output {
    common::command_with_cache(d, cache, args).output().unwrap()
}

const PIPELINE: &str = r#"
[pipeline]
name = "onslurm"
seed = 5
device = "cpu"
slurm = { time = "00:10:00", mem = "1G" }

[stages.synth]
kind = "synth"
params = { users = 120, items = 50, min_len = 5, max_len = 15 }

[stages.sequences]
kind = "sequences"
inputs = { events = "synth.events" }
executor = "slurm"

[stages.train]
kind = "train"
inputs = { data = "sequences.data" }
params = { model = "sasrec", dim = 16, layers = 1, heads = 1, epochs = 3, max_len = 12 }
executor = "slurm"
slurm = { cpus = 1 }

[stages.eval]
kind = "evaluate"
inputs = { model = "train.model", data = "sequences.data" }
"#;

#[test]
fn slurm_stages_give_the_local_artifacts_and_hit_the_cache_without_jobs() {
    if !cluster() {
        return;
    }
    let (dir, _) = setup(PIPELINE);
    let d = dir.path();
    let out = seqpipe(d, &["run", "p.toml", "--quiet"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Two stages went to Slurm, each as one job; their logs were streamed.
    assert_eq!(err.matches("submitted as Slurm job").count(), 2, "{err}");
    assert!(
        err.contains("[train · job "),
        "the job's log is shown: {err}"
    );
    let stages = manifest(d)["stages"].as_array().unwrap().clone();
    let job_of = |name: &str| {
        stages.iter().find(|s| s["name"] == name).unwrap()["notes"]["slurm_job"].clone()
    };
    assert!(job_of("train").is_string() && job_of("sequences").is_string());
    assert!(job_of("synth").is_null() && job_of("eval").is_null());
    let on_slurm = output_hashes(d);

    // The same pipeline computed here, in another cache: the same bytes.
    let out = in_cache(
        d,
        "local-cache",
        &["run", "p.toml", "--quiet", "--executor", "local"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let local = in_cache(d, "local-cache", &["show", "p.toml", "--json"]);
    let local: serde_json::Value = serde_json::from_slice(&local.stdout).unwrap();
    for stage in local["stages"].as_array().unwrap() {
        let name = stage["name"].as_str().unwrap();
        assert_eq!(stage["outputs"], on_slurm[name], "stage {name}");
    }

    // A rerun is all hits: no job is submitted.
    let out = seqpipe(d, &["run", "p.toml", "--quiet"]);
    assert!(out.status.success());
    assert!(ran(d).is_empty());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("submitted"));
}

/// A command stage that fails on its first attempt and succeeds after
/// (a node that died, say), with `retries` resubmissions allowed.
fn flaky(retries: u32) -> String {
    format!(
        r#"
[pipeline]
name = "flaky"

[stages.once]
kind = "command"
shell = true
cmd = "if [ -e tried ]; then echo ok > {{outputs.out}}/ok.txt; else touch tried; echo first attempt fails >&2; exit 3; fi"
outputs = {{ out = "dir" }}
executor = "slurm"
slurm = {{ retries = {retries}, time = "00:05:00" }}
"#
    )
}

#[test]
fn a_failed_job_is_resubmitted_up_to_its_retries() {
    if !cluster() {
        return;
    }
    let (dir, _) = setup(&flaky(0));
    let d = dir.path();
    let out = seqpipe(d, &["run", "p.toml", "--quiet"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("FAILED (exit code 1)") && err.contains("after 1 attempt(s)"),
        "{err}"
    );
    assert!(
        err.contains("first attempt fails"),
        "the log's tail is shown: {err}"
    );

    std::fs::remove_file(d.join("tried")).unwrap();
    std::fs::write(d.join("p.toml"), flaky(1)).unwrap();
    let out = seqpipe(d, &["run", "p.toml", "--quiet"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("resubmitting (1 of 1 retries used)"), "{err}");
    assert_eq!(ran(d), ["once"]);
}

#[test]
fn ctrl_c_cancels_the_runs_jobs() {
    if !cluster() {
        return;
    }
    let (dir, _) = setup(
        r#"
[pipeline]
name = "long"

[stages.wait]
kind = "command"
shell = true
cmd = "sleep 300; touch {outputs.out}/done"
outputs = { out = "dir" }
executor = "slurm"
"#,
    );
    let d = dir.path();
    let mut run = command(d, &["run", "p.toml", "--quiet"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(run.stderr.take().unwrap()).lines();
    let job = loop {
        let line = lines.next().expect("the run says it submitted").unwrap();
        if let Some(rest) = line.split("submitted as Slurm job ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // SAFETY: sends SIGINT to our own child, as Ctrl-C in its terminal would.
    unsafe { libc::kill(run.id() as i32, libc::SIGINT) };
    let started = Instant::now();
    let status = run.wait().unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(!status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter()
            .any(|l| l.contains(&format!("cancelling Slurm job {job}"))),
        "{rest:?}"
    );
    // Slurm has let go of the job.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let queue = Command::new("squeue")
            .args(["-h", "-j", &job, "-o", "%T"])
            .output()
            .unwrap();
        let state = String::from_utf8_lossy(&queue.stdout).trim().to_string();
        if state.is_empty() || state == "CANCELLED" {
            break;
        }
        assert!(Instant::now() < deadline, "job {job} still {state}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!d.join("cache/objects").read_dir().unwrap().any(|_| true));
}

/// A CSV without one (unquoted) column: wall-clock times differ by machine.
fn without_column(csv: &str, name: &str) -> Vec<Vec<String>> {
    let rows: Vec<Vec<String>> = csv
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    let drop = rows[0].iter().position(|h| h == name).expect("the column");
    rows.into_iter()
        .map(|mut r| {
            r.remove(drop);
            r
        })
        .collect()
}

#[test]
fn a_sweep_over_slurm_ranks_as_the_local_sweep() {
    if !cluster() {
        return;
    }
    let spec = r#"
[pipeline]
name = "sweepy"
seed = 2
device = "cpu"

[stages.synth]
kind = "synth"
params = { users = 100, items = 40, min_len = 5, max_len = 12 }

[stages.sequences]
kind = "sequences"
inputs = { events = "synth.events" }

[stages.train]
kind = "train"
inputs = { data = "sequences.data" }
params = { model = "markov" }

[stages.eval]
kind = "evaluate"
inputs = { model = "train.model", data = "sequences.data" }

[sweep]
metric = "eval.test.ndcg@10"
executor = "slurm"

[sweep.grid]
"train.model" = ["pop", "markov", "itemknn"]
"#;
    let (dir, _) = setup(spec);
    let d = dir.path();
    let board = |cache: &str, flags: &[&str]| {
        let mut args = vec![
            "sweep",
            "p.toml",
            "--quiet",
            "--parallel",
            "2",
            "--out",
            cache,
        ];
        args.extend_from_slice(flags);
        let out = in_cache(d, cache, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let csv = std::fs::read_to_string(d.join(cache).join("leaderboard.csv")).unwrap();
        without_column(&csv, "seconds")
    };
    // `[sweep] executor = "slurm"` sends the trials to Slurm; `--executor
    // local` keeps them here.
    let on_slurm = board("slurm-cache", &[]);
    let local = board("local-cache", &["--executor", "local"]);
    assert_eq!(on_slurm, local);
    assert_eq!(on_slurm.len(), 4, "a header and 3 trials: {on_slurm:?}");
    // Trials went as job arrays, one task each: the first alone (it computes
    // the shared synth and sequences), then the other two together.
    let mut arrays: Vec<(usize, Vec<String>)> = std::fs::read_dir(d.join("slurm-cache/jobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|dir| {
            assert!(
                dir.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("array-"),
                "only arrays were submitted: {}",
                dir.display()
            );
            let files: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            let tickets = files
                .iter()
                .filter(|f| f.ends_with(".json") && !f.starts_with("report-"))
                .count();
            let reports = files.iter().filter(|f| f.starts_with("report-")).count();
            assert_eq!(reports, tickets, "every task reported back: {files:?}");
            let logs: Vec<String> = files
                .iter()
                .filter(|f| f.ends_with(".log"))
                .map(|f| std::fs::read_to_string(dir.join(f)).unwrap())
                .collect();
            (tickets, logs)
        })
        .collect();
    arrays.sort_by_key(|(tickets, _)| *tickets);
    assert_eq!(
        arrays
            .iter()
            .map(|(t, l)| (*t, l.len()))
            .collect::<Vec<_>>(),
        [(1, 1), (2, 2)]
    );
    // Each task ran its whole trial on the node: the first computed all four
    // stages, the later ones only train and eval.
    assert!(
        arrays[0].1[0].contains("4 stage(s), 4 computed here"),
        "{:?}",
        arrays[0].1
    );
    for log in &arrays[1].1 {
        assert!(log.contains("4 stage(s), 2 computed here"), "{log}");
    }
    // A second sweep finds every trial cached and submits nothing.
    let again = in_cache(
        d,
        "slurm-cache",
        &["sweep", "p.toml", "--parallel", "2", "--out", "slurm-cache"],
    );
    let text = String::from_utf8_lossy(&again.stdout).to_string()
        + &String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{text}");
    assert!(!text.contains("submitted"), "{text}");
}

#[test]
fn a_sweep_array_resubmits_only_its_failed_tasks() {
    if !cluster() {
        return;
    }
    // `once` fails the first time any trial runs it (a node that died, say);
    // `[sweep] slurm = { retries = 1 }` allows one resubmission.
    let spec = r#"
[pipeline]
name = "flakysweep"
seed = 3
device = "cpu"

[stages.once]
kind = "command"
shell = true
cmd = "if [ -e tried ]; then echo ok > {outputs.out}/ok.txt; else touch tried; echo first attempt fails >&2; exit 3; fi"
outputs = { out = "dir" }

[stages.synth]
kind = "synth"
params = { users = 60, items = 30, min_len = 5, max_len = 10 }

[stages.sequences]
kind = "sequences"
inputs = { events = "synth.events" }

[stages.train]
kind = "train"
inputs = { data = "sequences.data" }
params = { model = "markov" }

[stages.eval]
kind = "evaluate"
inputs = { model = "train.model", data = "sequences.data" }

[sweep]
metric = "eval.test.hr@10"
executor = "slurm"
slurm = { retries = 1, time = "00:05:00" }

[sweep.grid]
"train.model" = ["pop", "markov"]
"#;
    let (dir, _) = setup(spec);
    let d = dir.path();
    let out = seqpipe(d, &["sweep", "p.toml", "--parallel", "2"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    // The first trial's task failed once and went again alone; the second
    // array found `once` cached and needed no retry.
    assert_eq!(
        text.matches("resubmitting (1 of 1 retries used)").count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("Slurm task") && text.contains("of sweep trial "),
        "{text}"
    );
    assert_eq!(
        text.matches("submitted as Slurm job array").count(),
        3,
        "{text}"
    );
    assert!(
        text.contains("first attempt fails"),
        "the task's log is streamed: {text}"
    );
}
