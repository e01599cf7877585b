//! A small typed client over Slurm's own commands (`sbatch`, `squeue`,
//! `scontrol`, `sacct`, `scancel`), for running a stage as a Slurm job.
//!
//! Why shell out instead of speaking a protocol or scheduling ourselves:
//! seqpipe has no scheduler of its own for clusters and should not grow one;
//! a site's Slurm already decides placement, limits and fair share. The
//! command-line tools are the one interface every Slurm installation has, with
//! the site's configuration, authentication (munge, JWT) and version
//! differences already handled — slurmrestd is often not deployed and the
//! C API is not stable across releases. We use only long-standing flags and
//! machine-readable output (`--parsable`, `-h -o`, `scontrol -o`).
//!
//! Which command tells a job's state: `squeue` only lists jobs the controller
//! still holds; `scontrol show job` also shows finished jobs for `MinJobAge`
//! seconds (with their exit code and reason); after that only `sacct` knows,
//! and only where accounting (slurmdbd) is configured. [`state`] asks
//! `scontrol` first and falls back to `sacct`; when neither knows the job the
//! answer is [`JobState::Unknown`].

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// One stage run as one batch job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpec {
    /// `--job-name`.
    pub name: String,
    /// The program and its arguments; shell-quoted into `--wrap`, so no
    /// argument is ever re-split or expanded by the job's shell.
    pub command: Vec<String>,
    /// `--chdir`: where the job runs (must exist on the compute node).
    pub workdir: PathBuf,
    /// `--output` and `--error`: stdout and stderr go to this one file.
    pub log: PathBuf,
    pub resources: Resources,
    /// Extra environment for the job, on top of the submitter's (`--export=ALL`).
    pub env: Vec<(String, String)>,
    /// Submit a job array instead of one job: each task runs `command` with
    /// `SLURM_ARRAY_TASK_ID` set, and `log` must hold [`TASK`] where the
    /// task's index goes (see [`task_log`]).
    pub array: Option<Array>,
}

/// The tasks of a job array (`--array=0-3,7%2`).
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// Task indices, each at most once.
    pub tasks: Vec<u32>,
    /// At most this many tasks run at once (`%N`); `None`: as Slurm allows.
    pub at_once: Option<usize>,
}

/// The placeholder in an array's log path that becomes the task index.
pub const TASK: &str = "{task}";

/// Task `task`'s log, for an array submitted with log path `log`.
pub fn task_log(log: &Path, task: u32) -> PathBuf {
    PathBuf::from(log.to_string_lossy().replace(TASK, &task.to_string()))
}

/// `--array`'s value: runs of consecutive indices as ranges, then `%N`.
pub fn array_flag(array: &Array) -> String {
    let mut tasks = array.tasks.clone();
    tasks.sort_unstable();
    tasks.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < tasks.len() {
        let mut j = i;
        while j + 1 < tasks.len() && tasks[j + 1] == tasks[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            tasks[i].to_string()
        } else {
            format!("{}-{}", tasks[i], tasks[j])
        });
        i = j + 1;
    }
    let mut flag = parts.join(",");
    if let Some(n) = array.at_once {
        flag.push_str(&format!("%{}", n.max(1)));
    }
    flag
}

/// What a job asks of the scheduler; `None` leaves the site's default.
#[derive(Default, Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct Resources {
    /// `--cpus-per-task`.
    pub cpus: Option<u32>,
    /// `--mem`, in Slurm's syntax (`"100M"`, `"8G"`).
    pub mem: Option<String>,
    /// `--gres=gpu:N`; `Some(0)` asks for none.
    pub gpus: Option<u32>,
    /// `--time`, in Slurm's syntax (`"00:05:00"`, `"2-00:00:00"`).
    pub time: Option<String>,
    /// `--partition`.
    pub partition: Option<String>,
}

/// A Slurm job id as `sbatch --parsable` printed it (without any cluster name).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobId(pub String);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job's state, folded from Slurm's two dozen into what a pipeline needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for resources, held, or requeued.
    Pending,
    /// Running, or finishing (`COMPLETING`, `STAGE_OUT`): not done yet.
    Running,
    /// Finished with exit code 0.
    Completed,
    /// Finished any other way; `reason` names Slurm's state and the exit code,
    /// e.g. `FAILED (exit code 3)`, `CANCELLED (signal 15)`, `TIMEOUT`.
    Failed { reason: String },
    /// Slurm no longer knows the job (purged, or accounting is off).
    Unknown,
}

impl JobState {
    /// Whether the job will not change state any more.
    pub fn is_finished(&self) -> bool {
        !matches!(self, JobState::Pending | JobState::Running)
    }
}

/// A Slurm command that could not run, failed, or printed something unexpected.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error("could not run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{command}` printed unexpected output: {output:?}")]
    Parse { command: String, output: String },
    #[error("invalid job spec: {0}")]
    Spec(String),
}

/// The `sbatch` invocation for a spec: its arguments, and the environment it
/// passes on. Env goes through sbatch's own environment with `--export=ALL`
/// rather than `--export=ALL,K=V`, because sbatch splits that list on commas
/// and a value with a comma would be cut.
#[derive(Clone, Debug, PartialEq)]
pub struct Sbatch {
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
}

/// Builds the `sbatch` arguments for `spec` (see [`submit`]).
pub fn sbatch_command(spec: &JobSpec) -> Result<Sbatch, SlurmError> {
    check_spec(spec)?;
    let mut args: Vec<OsString> = vec![
        "--parsable".into(),
        format!("--job-name={}", spec.name).into(),
    ];
    let log = absolute(&spec.log)?;
    let mut log_pattern = escape_filename_pattern(&log);
    if let Some(array) = &spec.array {
        args.push(format!("--array={}", array_flag(array)).into());
        // `%a` is Slurm's filename pattern for the task index.
        log_pattern = log_pattern.to_string_lossy().replace(TASK, "%a").into();
    }
    for flag in ["--output", "--error"] {
        args.push(flag.into());
        args.push(log_pattern.clone());
    }
    args.push("--chdir".into());
    args.push(absolute(&spec.workdir)?.into_os_string());
    args.push("--export=ALL".into());
    args.extend(
        resource_flags(&spec.resources)
            .into_iter()
            .map(OsString::from),
    );
    args.push(format!("--wrap={}", shell_join(&spec.command)).into());
    Ok(Sbatch {
        args,
        env: spec.env.clone(),
    })
}

fn check_spec(spec: &JobSpec) -> Result<(), SlurmError> {
    if spec.command.is_empty() {
        return Err(SlurmError::Spec(format!(
            "job `{}` has an empty command",
            spec.name
        )));
    }
    if spec.name.is_empty() || spec.name.contains(['\n', '\r']) {
        return Err(SlurmError::Spec(format!(
            "job name {:?} is empty or spans lines",
            spec.name
        )));
    }
    if let Some(array) = &spec.array {
        if array.tasks.is_empty() {
            return Err(SlurmError::Spec(format!(
                "job array `{}` has no tasks",
                spec.name
            )));
        }
        if !spec.log.to_string_lossy().contains(TASK) {
            return Err(SlurmError::Spec(format!(
                "job array `{}`: its log path {} has no {TASK} for the task index",
                spec.name,
                spec.log.display()
            )));
        }
    }
    for (key, _) in &spec.env {
        let valid = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(SlurmError::Spec(format!(
                "`{key}` is not an environment variable name"
            )));
        }
    }
    Ok(())
}

/// Slurm resolves relative paths against `--chdir` on the compute node; make
/// them mean what they mean to the caller.
fn absolute(path: &Path) -> Result<PathBuf, SlurmError> {
    std::path::absolute(path).map_err(|e| SlurmError::Spec(format!("{}: {e}", path.display())))
}

/// `%` starts a filename pattern (`%j` = job id) in `--output`; `%%` is a
/// literal `%`, so a path containing `%` keeps its name.
fn escape_filename_pattern(path: &Path) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut bytes = Vec::new();
    for &b in path.as_os_str().as_bytes() {
        bytes.push(b);
        if b == b'%' {
            bytes.push(b'%');
        }
    }
    OsString::from_vec(bytes)
}

/// The flags for `resources`, in a fixed order.
pub fn resource_flags(resources: &Resources) -> Vec<String> {
    let mut flags = Vec::new();
    if let Some(cpus) = resources.cpus {
        flags.push(format!("--cpus-per-task={cpus}"));
    }
    if let Some(mem) = &resources.mem {
        flags.push(format!("--mem={mem}"));
    }
    // A site without GPU gres rejects even `gpu:0`, so zero asks for nothing.
    if let Some(gpus) = resources.gpus.filter(|&n| n > 0) {
        flags.push(format!("--gres=gpu:{gpus}"));
    }
    if let Some(time) = &resources.time {
        flags.push(format!("--time={time}"));
    }
    if let Some(partition) = &resources.partition {
        flags.push(format!("--partition={partition}"));
    }
    flags
}

/// Quotes `argv` for the `/bin/sh` script that `--wrap` writes, so each
/// argument reaches the program byte for byte. `exec` makes the program the
/// job's process: its exit code is the job's and a cancel signals it directly.
pub fn shell_join(argv: &[String]) -> String {
    let quoted: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
    format!("exec {}", quoted.join(" "))
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Submits `spec` with `sbatch --parsable`; the error carries sbatch's stderr
/// (e.g. a rejected `--mem` or an unknown partition).
pub fn submit(spec: &JobSpec) -> Result<JobId, SlurmError> {
    let sbatch = sbatch_command(spec)?;
    let mut cmd = Command::new("sbatch");
    cmd.args(&sbatch.args)
        .envs(sbatch.env.iter().map(|(k, v)| (k, v)));
    let stdout = run_ok(cmd, "sbatch")?;
    let id = parse_parsable(&stdout).ok_or_else(|| SlurmError::Parse {
        command: "sbatch --parsable".into(),
        output: stdout.clone(),
    })?;
    tracing::debug!(job = %id, name = %spec.name, "submitted Slurm job");
    Ok(id)
}

/// `sbatch --parsable` prints `ID` or `ID;CLUSTER`.
fn parse_parsable(stdout: &str) -> Option<JobId> {
    let id = stdout.trim().split(';').next()?.trim();
    let valid = !id.is_empty() && id.chars().all(|c| c.is_ascii_digit() || c == '_');
    valid.then(|| JobId(id.to_string()))
}

/// The job's current state: `scontrol show job` while the controller holds it
/// (queued, running, or finished less than `MinJobAge` ago), else `sacct`.
pub fn state(id: &JobId) -> Result<JobState, SlurmError> {
    let mut cmd = Command::new("scontrol");
    cmd.args(["show", "job", "-o", &id.0]);
    match run(cmd, "scontrol show job")? {
        Ok(stdout) => parse_scontrol(&stdout).ok_or_else(|| SlurmError::Parse {
            command: format!("scontrol show job -o {id}"),
            output: stdout,
        }),
        Err(e) if is_invalid_job(&e) => state_from_sacct(id),
        Err(e) => Err(e),
    }
}

fn is_invalid_job(err: &SlurmError) -> bool {
    matches!(err, SlurmError::Failed { stderr, .. } if stderr.contains("Invalid job id"))
}

/// Jobs the controller has purged; without accounting, sacct errors and the
/// job is [`JobState::Unknown`].
fn state_from_sacct(id: &JobId) -> Result<JobState, SlurmError> {
    let mut cmd = Command::new("sacct");
    cmd.args(["-n", "-X", "-P", "-o", "State,ExitCode", "-j", &id.0]);
    let Ok(Ok(stdout)) = run(cmd, "sacct") else {
        return Ok(JobState::Unknown);
    };
    let Some(line) = stdout.lines().find(|l| !l.trim().is_empty()) else {
        return Ok(JobState::Unknown);
    };
    let (state, exit) = line.split_once('|').unwrap_or((line, ""));
    Ok(parse_state(state, exit))
}

/// Reads `JobState=` and `ExitCode=` from one `scontrol show job -o` line.
fn parse_scontrol(stdout: &str) -> Option<JobState> {
    let line = stdout.lines().find(|l| l.contains("JobState="))?;
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    };
    Some(parse_state(
        field("JobState")?,
        field("ExitCode").unwrap_or(""),
    ))
}

/// Folds a Slurm state name (as squeue, scontrol or sacct print it, e.g.
/// `CANCELLED by 0`) and an `exit:signal` code into a [`JobState`].
pub fn parse_state(state: &str, exit_code: &str) -> JobState {
    let name = state
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_end_matches('+');
    match name {
        "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_FED" | "REQUEUE_HOLD"
        | "RESV_DEL_HOLD" | "SUSPENDED" => JobState::Pending,
        "RUNNING" | "COMPLETING" | "STAGE_OUT" | "SIGNALING" | "RESIZING" => JobState::Running,
        "COMPLETED" if exit_status(exit_code) == (0, 0) => JobState::Completed,
        "" => JobState::Unknown,
        _ => JobState::Failed {
            reason: failure_reason(name, exit_code),
        },
    }
}

/// `3:0` → (3, 0); a missing or odd code reads as (0, 0).
fn exit_status(exit_code: &str) -> (i32, i32) {
    let mut parts = exit_code
        .trim()
        .splitn(2, ':')
        .map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn failure_reason(state: &str, exit_code: &str) -> String {
    match exit_status(exit_code) {
        (0, 0) => state.to_string(),
        (code, 0) => format!("{state} (exit code {code})"),
        (0, signal) => format!("{state} (signal {signal})"),
        (code, signal) => format!("{state} (exit code {code}, signal {signal})"),
    }
}

/// The state of every task of job array `id` that Slurm still knows:
/// `scontrol show job` prints a line per started task and one for the
/// pending rest (`ArrayTaskId=2-5%2`); once the controller has purged the
/// array, `sacct` lines (`ID_TASK|STATE|EXIT`) answer instead.
pub fn array_states(id: &JobId) -> Result<BTreeMap<u32, JobState>, SlurmError> {
    let mut cmd = Command::new("scontrol");
    cmd.args(["show", "job", "-o", &id.0]);
    match run(cmd, "scontrol show job")? {
        Ok(stdout) => Ok(parse_scontrol_array(&stdout)),
        Err(e) if is_invalid_job(&e) => Ok(array_states_from_sacct(id)),
        Err(e) => Err(e),
    }
}

fn parse_scontrol_array(stdout: &str) -> BTreeMap<u32, JobState> {
    let mut states = BTreeMap::new();
    for line in stdout.lines() {
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        };
        let (Some(tasks), Some(state)) = (field("ArrayTaskId"), field("JobState")) else {
            continue;
        };
        let state = parse_state(state, field("ExitCode").unwrap_or(""));
        for task in expand_tasks(tasks) {
            states.insert(task, state.clone());
        }
    }
    states
}

fn array_states_from_sacct(id: &JobId) -> BTreeMap<u32, JobState> {
    let mut cmd = Command::new("sacct");
    cmd.args(["-n", "-X", "-P", "-o", "JobID,State,ExitCode", "-j", &id.0]);
    let Ok(Ok(stdout)) = run(cmd, "sacct") else {
        return BTreeMap::new();
    };
    parse_sacct_array(&stdout)
}

fn parse_sacct_array(stdout: &str) -> BTreeMap<u32, JobState> {
    let mut states = BTreeMap::new();
    for line in stdout.lines() {
        let mut fields = line.split('|');
        let (Some(job), Some(state)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some((_, tasks)) = job.split_once('_') else {
            continue;
        };
        let state = parse_state(state, fields.next().unwrap_or(""));
        let tasks = tasks.trim_start_matches('[').trim_end_matches(']');
        for task in expand_tasks(tasks) {
            states.insert(task, state.clone());
        }
    }
    states
}

/// `3` → [3]; `2-4,7%2` → [2, 3, 4, 7].
fn expand_tasks(text: &str) -> Vec<u32> {
    let list = text.split('%').next().unwrap_or("");
    let mut tasks = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
                    tasks.extend(a..=b);
                }
            }
            None => tasks.extend(part.trim().parse::<u32>().ok()),
        }
    }
    tasks
}

/// Polls [`array_states`] every `poll` until every task in `tasks` is
/// finished, calling `on_tick` after each poll. A task Slurm no longer
/// knows reads as [`JobState::Unknown`].
pub fn wait_array(
    id: &JobId,
    tasks: &[u32],
    poll: Duration,
    mut on_tick: impl FnMut(),
) -> Result<BTreeMap<u32, JobState>, SlurmError> {
    loop {
        let known = array_states(id)?;
        let states: BTreeMap<u32, JobState> = tasks
            .iter()
            .map(|t| (*t, known.get(t).cloned().unwrap_or(JobState::Unknown)))
            .collect();
        if states.values().all(JobState::is_finished) {
            return Ok(states);
        }
        on_tick();
        std::thread::sleep(poll);
    }
}

/// Cancels the job (`scancel`); cancelling a finished job is not an error.
pub fn cancel(id: &JobId) -> Result<(), SlurmError> {
    let mut cmd = Command::new("scancel");
    cmd.arg(&id.0);
    match run(cmd, "scancel")? {
        Ok(_) => Ok(()),
        Err(e) if is_invalid_job(&e) || already_done(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

fn already_done(err: &SlurmError) -> bool {
    matches!(err, SlurmError::Failed { stderr, .. } if stderr.contains("already completing or completed"))
}

/// Polls [`state`] every `poll` until the job is finished, calling `on_tick`
/// after each poll (for progress display or a cancellation check).
pub fn wait(id: &JobId, poll: Duration, mut on_tick: impl FnMut()) -> Result<JobState, SlurmError> {
    loop {
        let state = state(id)?;
        if state.is_finished() {
            return Ok(state);
        }
        on_tick();
        std::thread::sleep(poll);
    }
}

/// `Ok` when `sbatch` is on `PATH` and the controller answers `sinfo`;
/// otherwise the reason, for a message like "Slurm is not available: …".
pub fn available() -> Result<(), String> {
    let mut probe = Command::new("sbatch");
    probe.arg("--version");
    match run(probe, "sbatch --version") {
        Err(e) => return Err(e.to_string()),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(_)) => {}
    }
    let mut sinfo = Command::new("sinfo");
    sinfo.args(["-h", "-o", "%P"]);
    run_ok(sinfo, "sinfo").map(drop).map_err(|e| e.to_string())
}

/// Starts (or finds running) the one-node test cluster of
/// `scripts/slurm-up.sh` — state under `$SEQPIPE_SLURM_STATE`, default
/// `/tmp/seqpipe-slurm` — and points this process's Slurm commands at it
/// (`SLURM_CONF`). For tests and trying the executor out; `Err` says why the
/// cluster is not there (not root, no apt-get, daemons failed).
///
/// Sets an environment variable: call it before starting other threads that
/// read the environment (tests call it once, under a `OnceLock`).
pub fn start_test_cluster(script: &Path) -> Result<(), String> {
    let state =
        std::env::var("SEQPIPE_SLURM_STATE").unwrap_or_else(|_| "/tmp/seqpipe-slurm".into());
    let out = Command::new("bash")
        .arg(script)
        .arg(&state)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("could not run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let conf = stdout
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("export SLURM_CONF="))
        .ok_or_else(|| format!("slurm-up.sh printed no `export SLURM_CONF=` line: {stdout:?}"))?;
    std::env::set_var("SLURM_CONF", conf);
    available()
}

/// Runs `cmd`: `Err` when it cannot start; `Ok(Err)` when it exits non-zero.
fn run(mut cmd: Command, name: &str) -> Result<Result<String, SlurmError>, SlurmError> {
    let output: Output = cmd.output().map_err(|source| SlurmError::Spawn {
        command: name.to_string(),
        source,
    })?;
    if output.status.success() {
        return Ok(Ok(String::from_utf8_lossy(&output.stdout).into_owned()));
    }
    Ok(Err(SlurmError::Failed {
        command: name.to_string(),
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    }))
}

fn run_ok(cmd: Command, name: &str) -> Result<String, SlurmError> {
    run(cmd, name)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            name: "train_sasrec".into(),
            command: vec![
                "seqpipe".into(),
                "run".into(),
                "a b.toml".into(),
                "--only".into(),
                "x".into(),
            ],
            workdir: "/work/p".into(),
            log: "/work/p/logs/train.log".into(),
            resources: Resources::default(),
            env: vec![("SEQPIPE_DEVICE".into(), "cuda:0,1".into())],
            array: None,
        }
    }

    fn args(sbatch: &Sbatch) -> Vec<String> {
        sbatch
            .args
            .iter()
            .map(|a| a.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn resources_become_flags() {
        let resources = Resources {
            cpus: Some(4),
            mem: Some("8G".into()),
            gpus: Some(2),
            time: Some("01:00:00".into()),
            partition: Some("gpu".into()),
        };
        assert_eq!(
            resource_flags(&resources),
            [
                "--cpus-per-task=4",
                "--mem=8G",
                "--gres=gpu:2",
                "--time=01:00:00",
                "--partition=gpu"
            ]
        );
        assert!(resource_flags(&Resources::default()).is_empty());
        let zero_gpus = Resources {
            gpus: Some(0),
            ..Resources::default()
        };
        assert!(resource_flags(&zero_gpus).is_empty());
    }

    #[test]
    fn sbatch_arguments_name_log_dir_env_and_command() {
        let mut spec = spec();
        spec.resources.cpus = Some(2);
        let sbatch = sbatch_command(&spec).unwrap();
        assert_eq!(
            args(&sbatch),
            [
                "--parsable",
                "--job-name=train_sasrec",
                "--output",
                "/work/p/logs/train.log",
                "--error",
                "/work/p/logs/train.log",
                "--chdir",
                "/work/p",
                "--export=ALL",
                "--cpus-per-task=2",
                "--wrap=exec seqpipe run 'a b.toml' --only x",
            ]
        );
        // The comma survives because env does not travel inside --export.
        assert_eq!(
            sbatch.env,
            [("SEQPIPE_DEVICE".to_string(), "cuda:0,1".to_string())]
        );
    }

    #[test]
    fn relative_paths_are_made_absolute_and_percent_escaped() {
        let mut spec = spec();
        spec.workdir = "rel/dir".into();
        spec.log = "logs/100%.log".into();
        let a = args(&sbatch_command(&spec).unwrap());
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(a[3], format!("{}/logs/100%%.log", cwd.display()));
        assert_eq!(a[7], format!("{}/rel/dir", cwd.display()));
    }

    #[test]
    fn bad_specs_are_rejected_before_sbatch() {
        let mut empty = spec();
        empty.command.clear();
        assert!(matches!(sbatch_command(&empty), Err(SlurmError::Spec(_))));
        let mut bad_env = spec();
        bad_env.env.push(("A-B".into(), "1".into()));
        let err = sbatch_command(&bad_env).unwrap_err().to_string();
        assert!(
            err.contains("`A-B` is not an environment variable name"),
            "{err}"
        );
    }

    #[test]
    fn shell_quoting_keeps_every_argument_intact() {
        let argv: Vec<String> = ["echo", "it's", "", "$HOME", "a;b", "x=y"]
            .map(String::from)
            .into();
        assert_eq!(
            shell_join(&argv),
            r#"exec echo 'it'\''s' '' '$HOME' 'a;b' x=y"#
        );
        // Round trip through a real /bin/sh, as the --wrap script does.
        let argv: Vec<String> = ["printf", "<%s>", "it's", "", "$HOME", "a;b"]
            .map(String::from)
            .into();
        let out = Command::new("sh")
            .arg("-c")
            .arg(shell_join(&argv))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "<it's><><$HOME><a;b>"
        );
    }

    #[test]
    fn parsable_output_gives_the_job_id() {
        assert_eq!(parse_parsable("42\n"), Some(JobId("42".into())));
        assert_eq!(parse_parsable("42;cluster\n"), Some(JobId("42".into())));
        assert_eq!(parse_parsable("Submitted batch job 42\n"), None);
        assert_eq!(parse_parsable(""), None);
    }

    #[test]
    fn state_names_fold_into_job_states() {
        assert_eq!(parse_state("PENDING", ""), JobState::Pending);
        assert_eq!(parse_state("RUNNING", "0:0"), JobState::Running);
        assert_eq!(parse_state("COMPLETING", "0:0"), JobState::Running);
        assert_eq!(parse_state("COMPLETED", "0:0"), JobState::Completed);
        let failed = |reason: &str| JobState::Failed {
            reason: reason.into(),
        };
        assert_eq!(parse_state("FAILED", "3:0"), failed("FAILED (exit code 3)"));
        assert_eq!(
            parse_state("CANCELLED by 0", "0:15"),
            failed("CANCELLED (signal 15)")
        );
        assert_eq!(parse_state("CANCELLED+", ""), failed("CANCELLED"));
        assert_eq!(parse_state("TIMEOUT", "0:0"), failed("TIMEOUT"));
        assert_eq!(
            parse_state("OUT_OF_MEMORY", "0:125"),
            failed("OUT_OF_MEMORY (signal 125)")
        );
        assert_eq!(
            parse_state("NODE_FAIL", "1:9"),
            failed("NODE_FAIL (exit code 1, signal 9)")
        );
        assert_eq!(parse_state("", ""), JobState::Unknown);
        assert!(!JobState::Running.is_finished());
        assert!(failed("x").is_finished());
    }

    #[test]
    fn scontrol_line_gives_state_and_exit_code() {
        let line = "JobId=7 JobName=x UserId=root(0) JobState=FAILED Reason=NonZeroExitCode \
                    Dependency=(null) Requeue=1 ExitCode=3:0 RunTime=00:00:01\n";
        let failed = JobState::Failed {
            reason: "FAILED (exit code 3)".into(),
        };
        assert_eq!(parse_scontrol(line), Some(failed));
        let done = "JobId=8 JobState=COMPLETED Reason=None ExitCode=0:0 DerivedExitCode=0:0";
        assert_eq!(parse_scontrol(done), Some(JobState::Completed));
        assert_eq!(parse_scontrol("No jobs in the system"), None);
    }

    #[test]
    fn arrays_compress_their_tasks_and_log_per_task() {
        let array = |tasks: &[u32], at_once| Array {
            tasks: tasks.to_vec(),
            at_once,
        };
        assert_eq!(array_flag(&array(&[0, 1, 2, 3], Some(2))), "0-3%2");
        assert_eq!(array_flag(&array(&[5, 1, 2, 9, 3], None)), "1-3,5,9");
        assert_eq!(array_flag(&array(&[4], Some(0))), "4%1");
        let mut spec = spec();
        spec.log = "/l/attempt-1-{task}.log".into();
        spec.array = Some(array(&[1, 2], Some(2)));
        let a = args(&sbatch_command(&spec).unwrap());
        assert_eq!(a[2], "--array=1-2%2");
        assert_eq!(a[4], "/l/attempt-1-%a.log");
        assert_eq!(task_log(&spec.log, 7), PathBuf::from("/l/attempt-1-7.log"));
        spec.log = "/l/one.log".into();
        let err = sbatch_command(&spec).unwrap_err().to_string();
        assert!(err.contains("has no {task}"), "{err}");
        spec.log = "/l/{task}.log".into();
        spec.array = Some(array(&[], None));
        assert!(matches!(sbatch_command(&spec), Err(SlurmError::Spec(_))));
    }

    #[test]
    fn array_task_states_come_from_scontrol_and_sacct_lines() {
        // As slurmctld 22–24 prints them: started tasks one line each, the
        // pending rest folded into one.
        let scontrol = "JobId=135 ArrayJobId=135 ArrayTaskId=2-3%2 JobState=PENDING ExitCode=0:0\n\
                        JobId=138 ArrayJobId=135 ArrayTaskId=1 JobState=FAILED ExitCode=3:0\n\
                        JobId=136 ArrayJobId=135 ArrayTaskId=0 JobState=COMPLETED ExitCode=0:0\n";
        let states = parse_scontrol_array(scontrol);
        assert_eq!(states.len(), 4);
        assert_eq!(states[&0], JobState::Completed);
        assert_eq!(
            states[&1],
            JobState::Failed {
                reason: "FAILED (exit code 3)".into()
            }
        );
        assert_eq!(
            (states[&2].clone(), states[&3].clone()),
            (JobState::Pending, JobState::Pending)
        );
        let sacct = "135_0|COMPLETED|0:0\n135_[4-5,7%2]|PENDING|0:0\n";
        let states = parse_sacct_array(sacct);
        assert_eq!(states.keys().copied().collect::<Vec<_>>(), [0, 4, 5, 7]);
        assert_eq!(states[&7], JobState::Pending);
        assert_eq!(expand_tasks("x"), Vec::<u32>::new());
    }
}
