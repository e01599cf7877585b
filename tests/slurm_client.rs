//! The Slurm client against a real one-node cluster (scripts/slurm-up.sh).
//!
//! Where the cluster cannot be brought up (not root, no apt-get, no Slurm) the
//! tests print `skipped: <reason>` and pass, unless SEQPIPE_REQUIRE_SLURM is
//! set, as in CI, where that is a failure.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use seqpipe::slurm::{self, JobId, JobSpec, JobState, Resources, SlurmError};

const POLL: Duration = Duration::from_millis(200);
const JOB_DEADLINE: Duration = Duration::from_secs(120);

static CLUSTER: OnceLock<Result<(), String>> = OnceLock::new();

/// Brings the cluster up once per test binary; false when the test should skip.
fn cluster() -> bool {
    match CLUSTER.get_or_init(start_cluster) {
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

fn start_cluster() -> Result<(), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-up.sh");
    slurm::start_test_cluster(&script)
}

fn job(name: &str, dir: &Path, script: &str) -> JobSpec {
    JobSpec {
        name: format!("seqpipe-test-{name}"),
        command: vec!["sh".into(), "-c".into(), script.into()],
        workdir: dir.to_path_buf(),
        log: dir.join("job.log"),
        resources: Resources::default(),
        env: Vec::new(),
        array: None,
    }
}

/// Waits for the job to finish; cancels it and fails the test after a deadline.
fn finish(id: &JobId) -> JobState {
    let start = Instant::now();
    slurm::wait(id, POLL, || {
        if start.elapsed() > JOB_DEADLINE {
            let _ = slurm::cancel(id);
            panic!("job {id} did not finish within {JOB_DEADLINE:?}");
        }
    })
    .unwrap_or_else(|e| panic!("waiting for job {id}: {e}"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_job_writing_a_file_completes_with_its_log() {
    if !cluster() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut spec = job(
        "write",
        dir.path(),
        r#"echo "written in $PWD" > out.txt; echo "to stdout: $SEQPIPE_TEST_VALUE"; echo "to stderr" >&2"#,
    );
    // A comma would be cut by `--export=ALL,K=V`; it must arrive whole.
    spec.env.push(("SEQPIPE_TEST_VALUE".into(), "a,b c".into()));
    let id = slurm::submit(&spec).unwrap();
    assert_eq!(finish(&id), JobState::Completed);
    let workdir = dir.path().canonicalize().unwrap();
    assert_eq!(
        read(&dir.path().join("out.txt")),
        format!("written in {}\n", workdir.display())
    );
    let log = read(&dir.path().join("job.log"));
    assert!(log.contains("to stdout: a,b c\n"), "log: {log:?}");
    assert!(log.contains("to stderr\n"), "log: {log:?}");
    // Finished jobs stay answerable (MinJobAge) rather than turning Unknown.
    assert_eq!(slurm::state(&id).unwrap(), JobState::Completed);
}

#[test]
fn a_job_array_runs_its_tasks_at_most_n_at_once_with_a_log_each() {
    if !cluster() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Each task records its start and end; task 2 fails.
    let script = r#"date +%s.%N > start-$SLURM_ARRAY_TASK_ID; echo "task $SLURM_ARRAY_TASK_ID";
        sleep 1; date +%s.%N > end-$SLURM_ARRAY_TASK_ID; [ "$SLURM_ARRAY_TASK_ID" != 2 ] || exit 3"#;
    let mut spec = job("array", dir.path(), script);
    spec.log = dir.path().join(format!("task-{}.log", slurm::TASK));
    spec.array = Some(slurm::Array {
        tasks: vec![0, 1, 2, 5],
        at_once: Some(2),
    });
    let id = slurm::submit(&spec).unwrap();
    let start = Instant::now();
    let states = slurm::wait_array(&id, &[0, 1, 2, 5], POLL, || {
        if start.elapsed() > JOB_DEADLINE {
            let _ = slurm::cancel(&id);
            panic!("array {id} did not finish within {JOB_DEADLINE:?}");
        }
    })
    .unwrap();
    assert_eq!(states[&0], JobState::Completed);
    assert_eq!(states[&1], JobState::Completed);
    assert_eq!(states[&5], JobState::Completed);
    assert!(
        matches!(&states[&2], JobState::Failed { reason } if reason.contains("exit code 3")),
        "{states:?}"
    );
    assert!(
        !dir.path().join("start-3").exists(),
        "task 3 was not asked for"
    );
    for task in [0, 1, 2, 5] {
        let log = read(&slurm::task_log(&spec.log, task));
        assert_eq!(log.trim(), format!("task {task}"));
    }
    // `%2`: at no moment were three tasks between their start and end.
    let time = |name: String| -> f64 { read(&dir.path().join(name)).trim().parse().unwrap() };
    let spans: Vec<(f64, f64)> = [0, 1, 2, 5]
        .iter()
        .map(|t| (time(format!("start-{t}")), time(format!("end-{t}"))))
        .collect();
    for &(s, _) in &spans {
        let running = spans.iter().filter(|(a, b)| *a <= s && s < *b).count();
        assert!(running <= 2, "{running} tasks ran at once: {spans:?}");
    }
}

#[test]
fn a_failing_job_names_its_exit_code() {
    if !cluster() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let id = slurm::submit(&job("exit3", dir.path(), "echo failing; exit 3")).unwrap();
    match finish(&id) {
        JobState::Failed { reason } => {
            assert!(
                reason.contains("FAILED") && reason.contains("exit code 3"),
                "{reason}"
            )
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(read(&dir.path().join("job.log")).contains("failing"));
}

#[test]
fn a_cancelled_job_stops_quickly_and_leaves_the_queue() {
    if !cluster() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // `exec` keeps the pid, so the test can see the sleep itself end.
    let id = slurm::submit(&job("cancel", dir.path(), "echo $$ > pid; exec sleep 300")).unwrap();
    let pid_file = dir.path().join("pid");
    let start = Instant::now();
    while !(pid_file.exists() && slurm::state(&id).unwrap() == JobState::Running) {
        assert!(
            start.elapsed() < JOB_DEADLINE,
            "job {id} never started running"
        );
        std::thread::sleep(POLL);
    }
    let pid = read(&pid_file).trim().to_string();
    let cancelled = Instant::now();
    slurm::cancel(&id).unwrap();
    match finish(&id) {
        JobState::Failed { reason } => assert!(reason.contains("CANCELLED"), "{reason}"),
        other => panic!("expected a cancelled job, got {other:?}"),
    }
    assert!(
        cancelled.elapsed() < Duration::from_secs(20),
        "cancel took {:?}",
        cancelled.elapsed()
    );
    let queue = Command::new("squeue")
        .args(["-h", "-o", "%i"])
        .output()
        .unwrap();
    assert!(queue.status.success());
    let listed = String::from_utf8_lossy(&queue.stdout);
    assert!(
        !listed.lines().any(|l| l.trim() == id.0),
        "job {id} still queued: {listed}"
    );
    let gone = Instant::now();
    while Path::new("/proc").join(&pid).exists() {
        assert!(
            gone.elapsed() < Duration::from_secs(15),
            "sleep (pid {pid}) outlived its cancelled job"
        );
        std::thread::sleep(POLL);
    }
    // Cancelling again is not an error.
    slurm::cancel(&id).unwrap();
}

#[test]
fn resource_flags_are_accepted_and_applied_by_sbatch() {
    if !cluster() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut spec = job("resources", dir.path(), "true");
    spec.resources = Resources {
        cpus: Some(1),
        mem: Some("100M".into()),
        time: Some("00:05:00".into()),
        ..Resources::default()
    };
    let id = slurm::submit(&spec).unwrap();
    assert_eq!(finish(&id), JobState::Completed);
    let shown = Command::new("scontrol")
        .args(["show", "job", "-o", &id.0])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    for field in [
        "TimeLimit=00:05:00",
        "MinMemoryNode=100M",
        "CPUs/Task=1",
        "Partition=debug",
    ] {
        assert!(
            shown.split_whitespace().any(|kv| kv == field),
            "{field} not in {shown}"
        );
    }
}

#[test]
fn a_rejected_submission_carries_sbatch_stderr() {
    if !cluster() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut spec = job("rejected", dir.path(), "true");
    spec.resources.partition = Some("no-such-partition".into());
    match slurm::submit(&spec) {
        Err(SlurmError::Failed {
            command, stderr, ..
        }) => {
            assert_eq!(command, "sbatch");
            assert!(stderr.to_lowercase().contains("partition"), "{stderr}");
        }
        other => panic!("expected sbatch to refuse, got {other:?}"),
    }
}
