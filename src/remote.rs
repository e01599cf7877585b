//! Running one stage as a Slurm job.
//!
//! The submitting run writes a [`Ticket`] — the spec file, the `--set` flags,
//! seed, device, the stage and the key it expects — into
//! `<cache>/jobs/<key>/`, and submits `seqpipe job TICKET --cache ROOT` with
//! the stage's resources. On the node, `seqpipe job` rebuilds the same plan
//! and runs that one stage locally against the shared cache (its inputs are
//! there already), refusing to record anything if the key it computes is not
//! the one expected (the spec file differs on the node). The submitter
//! follows the job, prints its log as it grows, resubmits a failed job up to
//! `retries` times, then reads the stage's record from the cache like any
//! other hit.
//!
//! Ctrl-C (SIGINT) or SIGTERM cancels every job this process has in Slurm
//! before the process dies as it would have: once a job is submitted, a
//! watcher thread owns those signals.

use std::collections::BTreeSet;
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
    pub stage: String,
    /// The stage key the submitter computed.
    pub key: Hash,
    /// Keep the stage's checkpoints after it succeeds (sweep halving).
    pub keep_checkpoints: bool,
    /// Seed the stage's checkpoints from this key's (sweep halving).
    pub inherit_checkpoints: Option<Hash>,
}

/// A stage's Slurm job that did not end well.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot submit stage `{stage}` to Slurm: {source}")]
    Slurm {
        stage: String,
        #[source]
        source: slurm::SlurmError,
    },
    #[error("stage `{stage}`: Slurm job {job} {reason} (after {attempts} attempt(s)); its log {}:\n{tail}", log.display())]
    JobFailed {
        stage: String,
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

/// Runs `ticket`'s stage as a Slurm job (resubmitting on failure) and
/// returns the id of the job that succeeded; its result is then in `cache`.
pub fn run_as_job(
    cache: &Cache,
    ticket: &Ticket,
    options: &SlurmOptions,
    progress: &Progress,
) -> Result<JobId, RemoteError> {
    let dir = cache.root().join("jobs").join(&ticket.key);
    let ticket_path = dir.join("ticket.json");
    write_ticket(&ticket_path, ticket)?;
    let attempts = options.retries + 1;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let log = dir.join(format!("attempt-{attempt}.log"));
        let job = submit(cache, ticket, &ticket_path, &log, options)?;
        progress.println(&format!(
            "seqpipe: `{}` submitted as Slurm job {job} (log {})",
            ticket.stage,
            log.display()
        ));
        let state =
            follow(&job, &log, &ticket.stage, progress).map_err(|source| RemoteError::Slurm {
                stage: ticket.stage.clone(),
                source,
            })?;
        match state {
            JobState::Completed => return Ok(job),
            state if attempt < attempts => progress.println(&format!(
                "seqpipe: Slurm job {job} of `{}` {}; resubmitting ({attempt} of {} retries used)",
                ticket.stage,
                describe(&state),
                options.retries
            )),
            state => {
                return Err(RemoteError::JobFailed {
                    stage: ticket.stage.clone(),
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
    std::fs::create_dir_all(path.parent().expect("jobs/<key>")).map_err(err)?;
    let text = serde_json::to_string_pretty(ticket).expect("a ticket serialises");
    std::fs::write(path, text).map_err(err)
}

fn submit(
    cache: &Cache,
    ticket: &Ticket,
    ticket_path: &Path,
    log: &Path,
    options: &SlurmOptions,
) -> Result<JobId, RemoteError> {
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
    let spec = JobSpec {
        name: format!("seqpipe-{}", ticket.stage),
        command,
        workdir: ticket
            .spec
            .parent()
            .map_or_else(|| root.clone(), Path::to_path_buf),
        log: log.to_path_buf(),
        resources: options.resources.clone(),
        env: Vec::new(),
    };
    watch_signals();
    let job = slurm::submit(&spec).map_err(|source| RemoteError::Slurm {
        stage: ticket.stage.clone(),
        source,
    })?;
    active()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(job.0.clone());
    Ok(job)
}

/// Waits for `job`, printing new lines of its log as they appear.
fn follow(
    job: &JobId,
    log: &Path,
    stage: &str,
    progress: &Progress,
) -> Result<JobState, slurm::SlurmError> {
    let mut shown = 0u64;
    let print_new = |shown: &mut u64| {
        let (text, end) = read_from(log, *shown);
        *shown = end;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            progress.println(&format!("  [{stage} · job {job}] {line}"));
        }
    };
    let state = slurm::wait(job, POLL, || print_new(&mut shown));
    print_new(&mut shown);
    active()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&job.0);
    state
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
                eprintln!("seqpipe: interrupted; cancelling Slurm job {job}");
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
