//! Running a stage in another process.
//!
//! Some stage kinds pull in heavy runtimes (LibTorch takes most of a second
//! just to load), and the engine's own decisions — what is cached, what to
//! rerun — should not pay for that. Such a kind's `run` calls [`delegate`],
//! which starts a worker program, hands it a [`WorkerRequest`] on stdin and
//! turns the [`WorkerEvent`] lines it prints on stdout back into progress
//! bars, log lines and manifest notes. The worker program's `main` is one
//! call to [`serve`] with a registry of the real implementations.
//!
//! The worker sees exactly what an in-process stage sees (a
//! [`StageContext`] with the same folders), so it knows nothing about the
//! cache either. On Linux it is killed when the process that started it dies,
//! so a killed `seqpipe run` leaves no orphan writing into a checkpoint.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::OnceLock;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::progress::{Bar, Progress};
use crate::stage::{Registry, StageContext};

/// Everything a worker needs to run one stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerRequest {
    pub kind: String,
    pub stage: String,
    pub params: serde_json::Value,
    pub seed: u64,
    pub device: String,
    pub inputs: BTreeMap<String, PathBuf>,
    pub outputs: BTreeMap<String, PathBuf>,
    pub checkpoint_dir: PathBuf,
}

/// One line a worker prints on stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WorkerEvent {
    /// A new progress bar.
    Bar { id: u64, what: String, len: u64 },
    /// A bar moved.
    Position { id: u64, pos: u64, message: String },
    /// A bar is done.
    Finish { id: u64 },
    /// A line to print above the bars.
    Line { line: String },
    /// A fact for the run manifest.
    Note { key: String, value: String },
    /// The stage failed; the worker exits non-zero after this.
    Failed { error: String },
}

impl WorkerEvent {
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("events serialise")
    }

    /// `None` for a line that is not an event (a library printing on stdout).
    pub fn parse(line: &str) -> Option<WorkerEvent> {
        if !line.starts_with("{\"event\"") {
            return None;
        }
        serde_json::from_str(line).ok()
    }
}

static LOG_FILTER: OnceLock<String> = OnceLock::new();

/// Remembers the log filter of this process so workers log at the same level.
pub fn set_log_filter(filter: &str) {
    let _ = LOG_FILTER.set(filter.to_string());
}

/// Runs `ctx`'s stage as kind `kind` in `program` and waits for it.
pub fn delegate(program: &Path, kind: &str, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
    let request = WorkerRequest {
        kind: kind.to_string(),
        stage: ctx.stage.to_string(),
        params: ctx.params.clone(),
        seed: ctx.seed,
        device: ctx.device.to_string(),
        inputs: ctx.inputs.clone(),
        outputs: ctx.outputs.clone(),
        checkpoint_dir: ctx.checkpoint_dir.clone(),
    };
    let mut command = Command::new(program);
    command
        .arg("serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if std::env::var_os("RUST_LOG").is_none() {
        if let Some(level) = LOG_FILTER.get() {
            command.env("RUST_LOG", directives(level));
        }
    }
    die_with_parent(&mut command);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start the worker {}", program.display()))?;
    {
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(serde_json::to_string(&request)?.as_bytes())?;
    } // Closing stdin tells the worker the request is complete.
    let stdout = child.stdout.take().expect("piped stdout");
    let failure = relay_events(stdout, ctx);
    let status = child.wait()?;
    match (status.success(), failure) {
        (true, _) => Ok(()),
        (false, Some(error)) => Err(anyhow::anyhow!(error)),
        (false, None) => Err(anyhow::anyhow!(
            "the worker {} ended without a result ({status})",
            program.display()
        )),
    }
}

/// Applies the worker's events to `ctx` until its stdout closes; returns the
/// error it reported, if any.
fn relay_events(stdout: impl Read, ctx: &mut StageContext<'_>) -> Option<String> {
    let mut bars: BTreeMap<u64, Bar> = BTreeMap::new();
    let mut failure = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        match WorkerEvent::parse(&line) {
            Some(WorkerEvent::Bar { id, what, len }) => {
                bars.insert(id, ctx.progress.bar(ctx.stage, &what, len));
            }
            Some(WorkerEvent::Position { id, pos, message }) => {
                if let Some(bar) = bars.get(&id) {
                    bar.set_position(pos);
                    bar.set_message(message);
                }
            }
            Some(WorkerEvent::Finish { id }) => {
                if let Some(bar) = bars.remove(&id) {
                    bar.finish_and_clear();
                }
            }
            Some(WorkerEvent::Line { line }) => ctx.progress.println(&line),
            Some(WorkerEvent::Note { key, value }) => {
                ctx.notes.insert(key, value);
            }
            Some(WorkerEvent::Failed { error }) => failure = Some(error),
            None => ctx.progress.println(&line),
        }
    }
    for bar in bars.values() {
        bar.finish_and_clear();
    }
    failure
}

/// Linux: the worker gets SIGKILL when the thread that started it dies.
#[cfg(target_os = "linux")]
pub(crate) fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec only async-signal-safe calls are made
    // (prctl, getppid), touching no memory of the parent.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn die_with_parent(_command: &mut Command) {}

/// A worker program's `main`: reads one [`WorkerRequest`] from stdin, runs
/// it with `registry`'s implementation of its kind, reports on stdout.
pub fn serve(registry: &Registry) -> ExitCode {
    init_worker_logging();
    let progress = Progress::events(Box::new(std::io::stdout()));
    match serve_request(registry, &progress) {
        Ok(notes) => {
            for (key, value) in notes {
                progress.emit(&WorkerEvent::Note { key, value });
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            progress.emit(&WorkerEvent::Failed {
                error: format!("{error:#}"),
            });
            ExitCode::FAILURE
        }
    }
}

fn serve_request(
    registry: &Registry,
    progress: &Progress,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let request: WorkerRequest =
        serde_json::from_str(&text).context("the worker's request is not valid JSON")?;
    let stage = registry.get(&request.kind).ok_or_else(|| {
        anyhow::anyhow!(
            "this worker does not implement stage kind `{}`",
            request.kind
        )
    })?;
    let mut ctx = StageContext {
        stage: &request.stage,
        params: request.params.clone(),
        seed: request.seed,
        device: &request.device,
        inputs: request.inputs.clone(),
        outputs: request.outputs.clone(),
        checkpoint_dir: request.checkpoint_dir.clone(),
        progress,
        notes: BTreeMap::new(),
    };
    stage.run(&mut ctx)?;
    Ok(ctx.notes)
}

/// Log targets whose warnings are noise to a pipeline's user, kept to errors
/// unless `RUST_LOG` says otherwise. DataFusion 52 warns for each spilled
/// batch whose size exceeds its estimate (apache/datafusion#17340): hundreds
/// of lines for one bounded sort whose result is right.
const QUIET_TARGETS: &[&str] = &["datafusion_physical_plan::spill=error"];

/// The log filter for `level` (`warn`, `info`, …): `RUST_LOG` when set,
/// else `level` with [`QUIET_TARGETS`] kept quiet.
pub fn log_filter(level: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter(level))
}

fn default_filter(level: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::new(directives(level))
}

/// `level` and the quiet targets, in `RUST_LOG` syntax.
fn directives(level: &str) -> String {
    let mut directives = level.to_string();
    for target in QUIET_TARGETS {
        directives.push(',');
        directives.push_str(target);
    }
    directives
}

fn init_worker_logging() {
    let filter = log_filter("warn");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn datafusion_spill_warnings_are_filtered_but_not_errors_or_ours() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(super::default_filter("warn"))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "datafusion_physical_plan::spill", "batch exceeds the expected limit");
            tracing::error!(target: "datafusion_physical_plan::spill", "spill file lost");
            tracing::warn!(target: "datafusion_physical_plan::sorts", "other warning");
            tracing::warn!(target: "seqpipe::run", "our warning");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("expected limit"), "{text}");
        for kept in ["spill file lost", "other warning", "our warning"] {
            assert!(text.contains(kept), "{kept} missing: {text}");
        }
    }

    use super::*;

    #[test]
    fn events_round_trip_and_foreign_lines_are_not_events() {
        let e = WorkerEvent::Position {
            id: 3,
            pos: 7,
            message: "loss 1.2".into(),
        };
        assert_eq!(WorkerEvent::parse(&e.to_line()), Some(e));
        assert_eq!(WorkerEvent::parse("[W init] some library warning"), None);
        assert_eq!(WorkerEvent::parse("{\"event\":\"nonsense\"}"), None);
    }
}
