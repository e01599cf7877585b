//! Running work as Slurm jobs: one stage as one job, or sweep trials as
//! one job array.
//!
//! The submitting run writes a [`Ticket`] — the spec file, the `--set` flags,
//! seed, device, and the [`Work`]: a stage and the key it expects, or a
//! whole trial and its plan's fingerprint — and submits `seqpipe job TICKET
//! --cache ROOT` with the resources asked for. On the node, `seqpipe job`
//! rebuilds the same plan and computes locally against the shared cache,
//! refusing work whose key or fingerprint is not the one expected (the spec
//! file differs on the node). The submitter follows the job, prints its log
//! as it grows, resubmits a failed job (or only an array's failed tasks) up
//! to `retries` times, then reads the results from the cache like any other
//! hit.
//!
//! A stage's ticket lives at `<cache>/jobs/<key>/ticket.json`; an array's
//! tickets at `<cache>/jobs/array-<hash>/<task>.json`, where the node picks
//! its own by `SLURM_ARRAY_TASK_ID`.
//!
//! Ctrl-C (SIGINT) or SIGTERM cancels every job this process has in Slurm
//! before the process dies as it would have: once a job is submitted, a
//! watcher thread owns those signals.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::key::Hash;
use crate::progress::Progress;
use crate::slurm::{self, JobId, JobSpec, JobState};
use crate::spec::SlurmOptions;

/// What a job needs to rebuild the submitter's plan and run one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    /// The spec file, absolute (the node must see the same path).
    pub spec: PathBuf,
    /// `--set` flags, as written.
    pub overrides: Vec<String>,
    pub seed: u64,
    pub device: String,
    pub work: Work,
    /// Stages whose checkpoints are kept after they succeed (sweep halving).
    #[serde(default)]
    pub keep_checkpoints: BTreeSet<String>,
    /// Stage → the key whose checkpoints seed it (sweep halving).
    #[serde(default)]
    pub inherit_checkpoints: BTreeMap<String, Hash>,
}

/// What a job computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    /// One stage, whose inputs are cached; `key` is what the submitter computed.
    Stage { stage: String, key: Hash },
    /// Every stage of a sweep trial's plan; `fingerprint` is the submitter's
    /// [`crate::graph::Plan::fingerprint`] of it.
    Trial { trial: usize, fingerprint: String },
}

impl Work {
    /// How messages name it: "stage `train`", "sweep trial 3".
    pub fn describe(&self) -> String {
        match self {
            Work::Stage { stage, .. } => format!("stage `{stage}`"),
            Work::Trial { trial, .. } => format!("sweep trial {trial}"),
        }
    }

    /// How its log lines are tagged: "train", "trial 3".
    pub fn tag(&self) -> String {
        match self {
            Work::Stage { stage, .. } => stage.clone(),
            Work::Trial { trial, .. } => format!("trial {trial}"),
        }
    }
}

/// What an array task reports back beside the cache: which of the trial's
/// stages it computed and how long the trial took on its node (the
/// submitter's own pass over the trial finds them all cached).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    pub ran: Vec<String>,
    pub cached: Vec<String>,
    pub seconds: f64,
}

/// Where the task holding `ticket_path` writes its [`TaskReport`].
pub fn task_report_path(ticket_path: &Path) -> PathBuf {
    let name = ticket_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    ticket_path.with_file_name(format!("report-{name}"))
}

/// A task of a job array that succeeded: its id and its report.
#[derive(Debug, Clone)]
pub struct ArrayTask {
    pub job: JobId,
    /// `None` when the task wrote none (or it cannot be read).
    pub report: Option<TaskReport>,
}

/// The device a job asks for: `cuda:N` names a GPU of the submitting
/// machine; on the node, the job's allocation decides which GPU it gets.
pub fn node_device(device: &str) -> String {
    match device {
        d if d.starts_with("cuda:") => "cuda".to_string(),
        d => d.to_string(),
    }
}

/// A Slurm job that did not end well; `what` names its work ("stage
/// `train`", "sweep trial 3").
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot submit {what} to Slurm: {source}")]
    Slurm {
        what: String,
        #[source]
        source: slurm::SlurmError,
    },
    #[error("{what}: Slurm job {job} {reason} (after {attempts} attempt(s)); its log {}:\n{tail}", log.display())]
    JobFailed {
        what: String,
        job: JobId,
        reason: String,
        attempts: u32,
        log: PathBuf,
        tail: String,
    },
    #[error("cannot write the job ticket {}: {source}", path.display())]
    Ticket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How often the submitter asks Slurm about its jobs.
const POLL: Duration = Duration::from_millis(500);

/// Runs `ticket`'s work as one Slurm job (resubmitting on failure) and
/// returns the id of the job that succeeded; its result is then in `cache`.
pub fn run_as_job(
    cache: &Cache,
    ticket: &Ticket,
    options: &SlurmOptions,
    progress: &Progress,
) -> Result<JobId, RemoteError> {
    let what = ticket.work.describe();
    let tag = ticket.work.tag();
    let dir = cache.root().join("jobs").join(match &ticket.work {
        Work::Stage { key, .. } => key.clone(),
        Work::Trial { fingerprint, .. } => format!("trial-{fingerprint}"),
    });
    let ticket_path = dir.join("ticket.json");
    write_ticket(&ticket_path, ticket)?;
    let attempts = options.retries + 1;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let log = dir.join(format!("attempt-{attempt}.log"));
        let spec = job_spec(cache, ticket, &ticket_path, &log, options, None);
        let job = submit(&spec, &what)?;
        progress.println(&format!(
            "seqpipe: {what} submitted as Slurm job {job} (log {})",
            log.display()
        ));
        let mut shown = 0u64;
        let state = slurm::wait(&job, POLL, || {
            print_new(&log, &mut shown, &tag, &job, progress)
        });
        print_new(&log, &mut shown, &tag, &job, progress);
        forget(&job);
        let state = state.map_err(|source| RemoteError::Slurm {
            what: what.clone(),
            source,
        })?;
        match state {
            JobState::Completed => return Ok(job),
            state if attempt < attempts => progress.println(&format!(
                "seqpipe: Slurm job {job} of {what} {}; resubmitting ({attempt} of {} retries used)",
                describe(&state),
                options.retries
            )),
            state => {
                return Err(RemoteError::JobFailed {
                    what,
                    job,
                    reason: describe(&state),
                    attempts,
                    tail: last_lines(&log, 12),
                    log,
                })
            }
        }
    }
}

/// Runs every ticket as one task of a Slurm job array, at most `at_once`
/// tasks at a time, resubmitting the failed tasks (as a smaller array) up to
/// `options.retries` times. Returns, per ticket in order, the id of the task
/// that succeeded (`ARRAY_TASK`) with its report, or why none did; `Err`
/// when the array could not be written, submitted or followed at all.
pub fn run_array(
    cache: &Cache,
    tickets: &[Ticket],
    at_once: usize,
    options: &SlurmOptions,
    progress: &Progress,
) -> Result<Vec<Result<ArrayTask, RemoteError>>, RemoteError> {
    const WHAT: &str = "a sweep's job array";
    let what = |t: u32| tickets[t as usize].work.describe();
    let Some(first) = tickets.first() else {
        return Ok(Vec::new());
    };
    let dir = cache.root().join("jobs").join(array_name(tickets));
    for (t, ticket) in tickets.iter().enumerate() {
        write_ticket(&dir.join(format!("{t}.json")), ticket)?;
    }
    let mut results: BTreeMap<u32, Result<ArrayTask, RemoteError>> = BTreeMap::new();
    let attempts = options.retries + 1;
    let mut pending: Vec<u32> = (0..tickets.len() as u32).collect();
    for attempt in 1..=attempts {
        let log = dir.join(format!("attempt-{attempt}-{}.log", slurm::TASK));
        let array = slurm::Array {
            tasks: pending.clone(),
            at_once: Some(at_once.max(1)),
        };
        let job = submit(
            &job_spec(cache, first, &dir, &log, options, Some(array)),
            WHAT,
        )?;
        progress.println(&format!(
            "seqpipe: {} trial(s) submitted as Slurm job array {job} ({} at once; logs {})",
            pending.len(),
            at_once.max(1),
            log.display()
        ));
        let mut shown: BTreeMap<u32, u64> = BTreeMap::new();
        let print_all = |shown: &mut BTreeMap<u32, u64>| {
            for &t in &pending {
                let task = JobId(format!("{job}_{t}"));
                let offset = shown.entry(t).or_insert(0);
                let tag = tickets[t as usize].work.tag();
                print_new(&slurm::task_log(&log, t), offset, &tag, &task, progress);
            }
        };
        let states = slurm::wait_array(&job, &pending, POLL, || print_all(&mut shown));
        print_all(&mut shown);
        forget(&job);
        let states = states.map_err(|source| RemoteError::Slurm {
            what: WHAT.into(),
            source,
        })?;
        pending.clear();
        for (t, state) in states {
            let task = JobId(format!("{job}_{t}"));
            if state == JobState::Completed {
                let report = std::fs::read(task_report_path(&dir.join(format!("{t}.json"))))
                    .ok()
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok());
                results.insert(t, Ok(ArrayTask { job: task, report }));
            } else if attempt < attempts {
                progress.println(&format!(
                    "seqpipe: Slurm task {task} of {} {}; resubmitting ({attempt} of {} retries used)",
                    what(t),
                    describe(&state),
                    options.retries
                ));
                pending.push(t);
            } else {
                let log = slurm::task_log(&log, t);
                results.insert(
                    t,
                    Err(RemoteError::JobFailed {
                        what: what(t),
                        job: task,
                        reason: describe(&state),
                        attempts,
                        tail: last_lines(&log, 12),
                        log,
                    }),
                );
            }
        }
        if pending.is_empty() {
            break;
        }
    }
    Ok(results.into_values().collect())
}

/// `array-<hash>`: the same tickets (a rerun of the same sweep) share a
/// folder, and their logs are found in the same place.
fn array_name(tickets: &[Ticket]) -> String {
    let text = serde_json::to_string(tickets).expect("tickets serialise");
    let hash = blake3::hash(text.as_bytes()).to_hex();
    format!("array-{}", &hash[..16])
}

fn describe(state: &JobState) -> String {
    match state {
        JobState::Failed { reason } => format!("ended {reason}"),
        JobState::Unknown => "vanished from Slurm (neither scontrol nor sacct knows it)".into(),
        other => format!("ended {other:?}"),
    }
}

fn write_ticket(path: &Path, ticket: &Ticket) -> Result<(), RemoteError> {
    let err = |source| RemoteError::Ticket {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(path.parent().expect("jobs/<name>")).map_err(err)?;
    let text = serde_json::to_string_pretty(ticket).expect("a ticket serialises");
    std::fs::write(path, text).map_err(err)
}

/// The job that runs `seqpipe job TICKET` (a file, or for an array the
/// folder of per-task tickets) against this cache, from the spec's folder.
fn job_spec(
    cache: &Cache,
    ticket: &Ticket,
    ticket_path: &Path,
    log: &Path,
    options: &SlurmOptions,
    array: Option<slurm::Array>,
) -> JobSpec {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("seqpipe"));
    let root = std::path::absolute(cache.root()).unwrap_or_else(|_| cache.root().to_path_buf());
    let root_arg = root.to_string_lossy().into_owned();
    let mut command = vec![
        exe.to_string_lossy().into_owned(),
        "job".into(),
        ticket_path.to_string_lossy().into_owned(),
    ];
    match cache.remote_url() {
        Some(url) => command.extend([
            "--cache".into(),
            url.into(),
            "--local-cache".into(),
            root_arg,
        ]),
        None => command.extend(["--cache".into(), root_arg]),
    }
    let name = match &ticket.work {
        Work::Stage { stage, .. } => format!("seqpipe-{stage}"),
        Work::Trial { .. } => "seqpipe-sweep".to_string(),
    };
    JobSpec {
        name,
        command,
        workdir: ticket
            .spec
            .parent()
            .map_or_else(|| root.clone(), Path::to_path_buf),
        log: log.to_path_buf(),
        resources: options.resources.clone(),
        env: Vec::new(),
        array,
    }
}

/// Submits `spec` and remembers the job, to cancel it on Ctrl-C.
fn submit(spec: &JobSpec, what: &str) -> Result<JobId, RemoteError> {
    watch_signals();
    let job = slurm::submit(spec).map_err(|source| RemoteError::Slurm {
        what: what.to_string(),
        source,
    })?;
    active()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(job.0.clone());
    Ok(job)
}

/// The job has ended: nothing left to cancel.
fn forget(job: &JobId) {
    active()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&job.0);
}

/// Prints the lines `log` gained since byte `shown`, tagged with the work
/// and the job.
fn print_new(log: &Path, shown: &mut u64, tag: &str, job: &JobId, progress: &Progress) {
    let (text, end) = read_from(log, *shown);
    *shown = end;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        progress.println(&format!("  [{tag} · job {job}] {line}"));
    }
}

/// The complete lines of `path` after byte `from`, and where they end.
fn read_from(path: &Path, from: u64) -> (String, u64) {
    let Ok(mut file) = std::fs::File::open(path) else {
        return (String::new(), from);
    };
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return (String::new(), from);
    }
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    bytes.truncate(complete);
    (
        String::from_utf8_lossy(&bytes).into_owned(),
        from + complete as u64,
    )
}

fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Ids of this process's jobs still in Slurm.
fn active() -> &'static Mutex<BTreeSet<String>> {
    static ACTIVE: OnceLock<Mutex<BTreeSet<String>>> = OnceLock::new();
    ACTIVE.get_or_init(Default::default)
}

/// From the first submission on, SIGINT and SIGTERM set a flag instead of
/// killing the process; a watcher thread then cancels every active job and
/// ends the process the way the signal would have.
fn watch_signals() {
    static WATCHING: OnceLock<()> = OnceLock::new();
    WATCHING.get_or_init(|| {
        let signals = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM];
        let flags: Vec<(i32, Arc<AtomicBool>)> = signals
            .iter()
            .filter_map(|sig| {
                let flag = Arc::new(AtomicBool::new(false));
                signal_hook::flag::register(*sig, flag.clone())
                    .ok()
                    .map(|_| (*sig, flag))
            })
            .collect();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(50));
            let Some((sig, _)) = flags.iter().find(|(_, f)| f.load(Ordering::SeqCst)) else {
                continue;
            };
            let jobs: Vec<String> = active()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned()
                .collect();
            for job in jobs {
                crate::errln!("seqpipe: interrupted; cancelling Slurm job {job}");
                let _ = slurm::cancel(&JobId(job));
            }
            let _ = signal_hook::low_level::emulate_default_handler(*sig);
            std::process::exit(128 + sig);
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_growing_log_is_read_line_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        assert_eq!(read_from(&log, 0), (String::new(), 0));
        std::fs::write(&log, "one\ntw").unwrap();
        let (text, end) = read_from(&log, 0);
        assert_eq!((text.as_str(), end), ("one\n", 4));
        std::fs::write(&log, "one\ntwo\nthree\n").unwrap();
        let (text, end) = read_from(&log, end);
        assert_eq!((text.as_str(), end), ("two\nthree\n", 14));
        assert_eq!(last_lines(&log, 2), "two\nthree");
    }
}
