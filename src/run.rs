//! Executes a [`Plan`] against the [`Cache`].
//!
//! A dependency queue releases a stage once all its inputs are known. For
//! each released stage a worker thread computes its key from the *content
//! hashes* of its inputs, and either finds the key in the index (a hit,
//! after verifying the recorded artifacts) or runs the stage into a staging
//! folder and publishes its outputs. At most `jobs` stages run at once, and at
//! most one tensor stage, since tensor stages share the device.
//!
//! The record of a stage is written only after its outputs are published, so
//! a run that is killed at any moment loses at most the stages that were
//! running; their checkpoint folders (keyed by stage key) let them resume.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::cache::{Cache, CacheError, StageRecord};
use crate::graph::Plan;
use crate::key::{Fingerprint, Hash, StaleReason};
use crate::progress::Progress;
use crate::spec::Executor;
use crate::stage::{Resource, StageContext};

/// A run failed in a way that is not a bad spec.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{count} stage(s) failed: {stages}")]
    StagesFailed { count: usize, stages: String },
    #[error("`{stage}` cannot run alone: its input stage `{upstream}` is not in the cache ({reason}); run the pipeline (or `--only {upstream}`) first")]
    NotCached {
        stage: String,
        upstream: String,
        reason: String,
    },
    #[error("there is no stage `{0}` in this pipeline")]
    UnknownStage(String),
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stages running at once.
    pub jobs: usize,
    /// Stages to rerun even when cached.
    pub force: BTreeSet<String>,
    /// Run only this stage; its inputs must already be in the cache.
    pub only: Option<String>,
    /// Go on with independent stages after a failure.
    pub keep_going: bool,
    /// Stages whose checkpoint folder is kept after they succeed (a sweep's
    /// successive halving continues them at a larger budget).
    pub keep_checkpoints: BTreeSet<String>,
    /// Stage name → the key whose checkpoint folder seeds this stage's
    /// (empty) one: the stage resumes from another key's state, e.g. a
    /// training promoted from 2 to 6 epochs continues from epoch 2.
    pub inherit_checkpoints: BTreeMap<String, String>,
    /// `--executor`: where every stage runs, whatever the spec says.
    pub executor: Option<Executor>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            jobs: 1,
            force: BTreeSet::new(),
            only: None,
            keep_going: false,
            keep_checkpoints: BTreeSet::new(),
            inherit_checkpoints: BTreeMap::new(),
            executor: None,
        }
    }
}

/// What happened to a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Found in the cache; nothing ran.
    Cached,
    /// Computed in this run.
    Ran,
    Failed,
    /// Not attempted because an upstream stage failed.
    Skipped,
}

/// One stage's line in the run manifest.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub name: String,
    pub kind: String,
    pub outcome: Outcome,
    pub key: Option<Hash>,
    pub inputs: BTreeMap<String, Hash>,
    pub outputs: BTreeMap<String, Hash>,
    pub seconds: f64,
    /// Why it ran (for `Ran`), or why it failed.
    pub reason: Option<String>,
    pub error: Option<String>,
    /// Facts the stage recorded (e.g. the device it used).
    pub notes: BTreeMap<String, String>,
}

impl StageReport {
    /// Stage `i`'s report with `outcome` and nothing else known yet.
    fn new(plan: &Plan, i: usize, outcome: Outcome) -> StageReport {
        StageReport {
            name: plan.stages[i].name.clone(),
            kind: plan.stages[i].kind.info().kind.to_string(),
            outcome,
            key: None,
            inputs: BTreeMap::new(),
            outputs: BTreeMap::new(),
            seconds: 0.0,
            reason: None,
            error: None,
            notes: BTreeMap::new(),
        }
    }
}

/// The result of executing a plan.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub stages: Vec<StageReport>,
    pub seconds: f64,
}

impl RunReport {
    pub fn failed(&self) -> Vec<&StageReport> {
        self.stages
            .iter()
            .filter(|s| s.outcome == Outcome::Failed)
            .collect()
    }
}

/// The fingerprint of stage `i` given the content hashes of its inputs.
pub fn fingerprint(plan: &Plan, i: usize, inputs: BTreeMap<String, Hash>) -> Fingerprint {
    let stage = &plan.stages[i];
    let info = stage.kind.info();
    Fingerprint {
        kind: info.kind.to_string(),
        kind_version: info.version,
        params: stage.params.clone(),
        inputs,
        seed: plan.spec.seed,
        format: crate::FORMAT_VERSION,
    }
}

/// Why a stage with fingerprint `fp` is not a hit, judged against the last
/// successful run of the same stage name.
pub fn explain_miss(
    cache: &Cache,
    pipeline: &str,
    stage: &str,
    fp: &Fingerprint,
) -> Result<StaleReason, CacheError> {
    let Some(old_key) = cache.latest_key(pipeline, stage)? else {
        return Ok(StaleReason::NeverRun);
    };
    let Some(old) = cache.lookup(&old_key)? else {
        return Ok(StaleReason::NotInCache);
    };
    Ok(fp.diff(&old.fingerprint).unwrap_or(StaleReason::NotInCache))
}

/// Checks a hit's recorded outputs; the first damaged one is returned.
pub fn check_outputs(cache: &Cache, record: &StageRecord) -> Option<StaleReason> {
    record.outputs.iter().find_map(|(name, id)| {
        cache
            .store()
            .verify(id)
            .err()
            .map(|e| StaleReason::ArtifactDamaged {
                output: name.clone(),
                detail: e.to_string(),
            })
    })
}

/// Everything the workers share.
struct Shared<'a> {
    plan: &'a Plan,
    cache: &'a Cache,
    options: &'a RunOptions,
    progress: &'a Progress,
    /// Stages that may only be looked up, never run (upstream of `--only`).
    lookup_only: BTreeSet<usize>,
}

/// Runs the plan. Stage failures are reported in the [`RunReport`], not as
/// an `Err`; `Err` means the run itself could not proceed.
pub fn execute(
    plan: &Plan,
    cache: &Cache,
    options: &RunOptions,
    progress: &Progress,
) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let (selected, lookup_only) = match &options.only {
        None => ((0..plan.stages.len()).collect(), BTreeSet::new()),
        Some(name) => {
            let target = plan
                .index_of(name)
                .ok_or_else(|| RunError::UnknownStage(name.clone()))?;
            let up = plan.upstream_of(target);
            let lookup: BTreeSet<usize> = up.iter().copied().filter(|i| *i != target).collect();
            (up, lookup)
        }
    };
    let shared = Shared {
        plan,
        cache,
        options,
        progress,
        lookup_only,
    };
    let reports = schedule(&shared, &selected)?;
    let stages = plan
        .order
        .iter()
        .filter_map(|i| reports.get(i).cloned())
        .collect();
    Ok(RunReport {
        stages,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The dependency queue.
fn schedule(
    shared: &Shared<'_>,
    selected: &BTreeSet<usize>,
) -> Result<BTreeMap<usize, StageReport>, RunError> {
    let plan = shared.plan;
    let position: BTreeMap<usize, usize> = plan
        .order
        .iter()
        .enumerate()
        .map(|(p, i)| (*i, p))
        .collect();
    let mut waiting: BTreeMap<usize, usize> = selected
        .iter()
        .map(|i| (*i, plan.stages[*i].inputs.len()))
        .collect();
    // Ready stages by their position in dependency order.
    let mut ready: BTreeSet<(usize, usize)> = waiting
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(i, _)| (position[i], *i))
        .collect();
    let mut reports: BTreeMap<usize, StageReport> = BTreeMap::new();
    let mut running = 0usize;
    let mut tensor_busy = false;
    let mut stop = false;
    let jobs = shared.options.jobs.max(1);
    let (tx, rx) = mpsc::channel::<(usize, Result<StageReport, RunError>)>();

    std::thread::scope(|scope| -> Result<(), RunError> {
        loop {
            while !stop && running < jobs {
                let next = ready
                    .iter()
                    .find(|(_, i)| !(tensor_busy && local_tensor(shared, *i)))
                    .copied();
                let Some(entry) = next else { break };
                ready.remove(&entry);
                let i = entry.1;
                if local_tensor(shared, i) {
                    tensor_busy = true;
                }
                let inputs = input_hashes(plan, i, &reports);
                let tx = tx.clone();
                running += 1;
                scope.spawn(move || {
                    let result = run_one(shared, i, inputs);
                    let _ = tx.send((i, result));
                });
            }
            if running == 0 {
                break;
            }
            let (i, result) = rx.recv().expect("a worker reports back");
            running -= 1;
            if local_tensor(shared, i) {
                tensor_busy = false;
            }
            let report = match result {
                Ok(report) => report,
                Err(e) => {
                    stop = true;
                    // Let running stages finish before reporting.
                    while running > 0 {
                        let (j, r) = rx.recv().expect("a worker reports back");
                        running -= 1;
                        if let Ok(r) = r {
                            reports.insert(j, r);
                        }
                    }
                    return Err(e);
                }
            };
            let failed = report.outcome == Outcome::Failed;
            reports.insert(i, report);
            if failed && !shared.options.keep_going {
                stop = true;
            }
            for (j, stage) in plan.stages.iter().enumerate() {
                if !selected.contains(&j) {
                    continue;
                }
                for (up, _) in stage.inputs.values() {
                    if *up == i {
                        let n = waiting.get_mut(&j).expect("selected");
                        *n -= 1;
                        if *n == 0 && !failed && !upstream_failed(plan, j, &reports) {
                            ready.insert((position[&j], j));
                        }
                    }
                }
            }
        }
        Ok(())
    })?;

    // Stages never started: skipped because of a failure upstream (or a stop).
    for i in selected {
        reports.entry(*i).or_insert_with(|| StageReport {
            reason: Some("an upstream stage failed".into()),
            ..StageReport::new(plan, *i, Outcome::Skipped)
        });
    }
    Ok(reports)
}

fn upstream_failed(plan: &Plan, j: usize, reports: &BTreeMap<usize, StageReport>) -> bool {
    plan.stages[j].inputs.values().any(|(up, _)| {
        reports
            .get(up)
            .is_some_and(|r| matches!(r.outcome, Outcome::Failed | Outcome::Skipped))
    })
}

fn input_hashes(
    plan: &Plan,
    i: usize,
    reports: &BTreeMap<usize, StageReport>,
) -> BTreeMap<String, Hash> {
    plan.stages[i]
        .inputs
        .iter()
        .map(|(name, (up, output))| {
            let hash = reports[up].outputs[output].clone();
            (name.clone(), hash)
        })
        .collect()
}

/// Seconds since the Unix epoch (run ids, record times).
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Input hashes known so far, and the inputs still waiting on an upstream
/// stage as (input, upstream index).
pub type KnownInputs = (BTreeMap<String, Hash>, Vec<(String, usize)>);

/// Stage `i`'s input hashes as far as they are known without running
/// anything: outputs of upstream stages found in `known` (stage index →
/// output hashes) and its path inputs. The inputs whose upstream stage is
/// not in `known` are returned too, as (input, upstream index), in input
/// order. `status` and `verify` walk a plan with this.
pub fn known_inputs(
    cache: &Cache,
    plan: &Plan,
    i: usize,
    known: &BTreeMap<usize, BTreeMap<String, Hash>>,
) -> Result<KnownInputs, CacheError> {
    let mut inputs = BTreeMap::new();
    let mut pending = Vec::new();
    for (name, (up, output)) in &plan.stages[i].inputs {
        match known.get(up) {
            Some(outputs) => {
                inputs.insert(name.clone(), outputs[output].clone());
            }
            None => pending.push((name.clone(), *up)),
        }
    }
    inputs.extend(path_input_hashes(cache, plan, i)?);
    Ok((inputs, pending))
}

/// Whether every stage of `plan` is cached with its outputs intact, so that
/// running it would compute nothing (a sweep on Slurm submits no task for
/// such a trial).
pub fn all_cached(cache: &Cache, plan: &Plan) -> Result<bool, CacheError> {
    let mut known = BTreeMap::new();
    for &i in &plan.order {
        let (inputs, pending) = known_inputs(cache, plan, i, &known)?;
        if !pending.is_empty() {
            return Ok(false);
        }
        match cache.lookup(&fingerprint(plan, i, inputs).key())? {
            Some(record) if check_outputs(cache, &record).is_none() => {
                known.insert(i, record.outputs);
            }
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// The content hashes of stage `i`'s inputs that are files or folders on
/// disk (memoised by the cache, so unchanged data is not read again).
pub fn path_input_hashes(
    cache: &Cache,
    plan: &Plan,
    i: usize,
) -> Result<BTreeMap<String, Hash>, crate::cache::CacheError> {
    plan.stages[i]
        .paths
        .iter()
        .map(|(name, path)| Ok((name.clone(), cache.hash_path(path)?)))
        .collect()
}

/// Decides hit or miss for one stage and runs it on a miss.
fn run_one(
    shared: &Shared<'_>,
    i: usize,
    inputs: BTreeMap<String, Hash>,
) -> Result<StageReport, RunError> {
    let plan = shared.plan;
    let stage = &plan.stages[i];
    let mut inputs = inputs;
    match path_input_hashes(shared.cache, plan, i) {
        Ok(hashes) => inputs.extend(hashes),
        Err(e) => {
            return Ok(StageReport {
                inputs,
                error: Some(e.to_string()),
                ..StageReport::new(plan, i, Outcome::Failed)
            })
        }
    }
    let fp = fingerprint(plan, i, inputs.clone());
    let key = fp.key();
    let mut report = StageReport {
        key: Some(key.clone()),
        inputs,
        ..StageReport::new(plan, i, Outcome::Cached)
    };
    let fail = |mut report: StageReport, e: String| {
        report.outcome = Outcome::Failed;
        report.error = Some(e);
        Ok(report)
    };

    // Held until the stage is recorded (or fails): a parallel sweep trial
    // needing the same stage waits here, then finds it cached.
    let claimed = shared.cache.claim(&key, || {
        shared.progress.println(&format!(
            "seqpipe: waiting for `{}`: another run is computing it",
            stage.name
        ))
    });
    let _claim = match claimed {
        Ok(claim) => claim,
        Err(e) => return fail(report, e.to_string()),
    };
    let forced = shared.options.force.contains(&stage.name);
    let mut reason = if forced {
        Some(StaleReason::Forced)
    } else {
        None
    };
    if !forced {
        match shared.cache.lookup(&key) {
            Ok(Some(record)) => match check_outputs(shared.cache, &record) {
                None => {
                    report.outputs = record.outputs;
                    report.seconds = record.seconds;
                    return Ok(report);
                }
                Some(damage) => {
                    tracing::warn!("stage `{}`: {damage}; recomputing", stage.name);
                    shared.progress.println(&format!(
                        "seqpipe: stage `{}`: {damage}; recomputing",
                        stage.name
                    ));
                    let _ = shared.cache.forget(&key);
                    reason = Some(damage);
                }
            },
            Ok(None) => {}
            Err(e) => return fail(report, format!("{e}")),
        }
    }
    let reason = match reason {
        Some(r) => r,
        None => explain_miss(shared.cache, &plan.spec.name, &stage.name, &fp)
            .unwrap_or(StaleReason::NeverRun),
    };
    if shared.lookup_only.contains(&i) {
        return Err(RunError::NotCached {
            stage: shared.options.only.clone().unwrap_or_default(),
            upstream: stage.name.clone(),
            reason: reason.to_string(),
        });
    }
    report.reason = Some(reason.to_string());
    if executor_of(shared, i) == Executor::Slurm {
        // The job claims the key on its node; holding it here would keep
        // the job waiting for us.
        drop(_claim);
        shared.progress.println(&format!(
            "seqpipe: running `{}` ({}) on Slurm: {reason}",
            stage.name, report.kind
        ));
        return Ok(run_as_job(shared, i, &key, report));
    }
    shared.progress.println(&format!(
        "seqpipe: running `{}` ({}): {reason}",
        stage.name, report.kind
    ));
    let started = Instant::now();
    match compute(shared, i, &key, &report.inputs) {
        Ok((outputs, notes)) => {
            report.seconds = started.elapsed().as_secs_f64();
            report.outputs = outputs.clone();
            report.notes = notes;
            report.outcome = Outcome::Ran;
            let record = StageRecord {
                fingerprint: fp,
                outputs,
                seconds: report.seconds,
                finished_at: now_unix(),
            };
            if let Err(e) = shared
                .cache
                .record(&plan.spec.name, &stage.name, &key, &record)
            {
                return fail(report, e.to_string());
            }
            if !shared.options.keep_checkpoints.contains(&stage.name) {
                let _ = shared.cache.drop_checkpoints(&key);
            }
            shared.progress.println(&format!(
                "seqpipe: finished `{}` in {:.1}s",
                stage.name, report.seconds
            ));
            Ok(report)
        }
        Err(e) => {
            report.seconds = started.elapsed().as_secs_f64();
            fail(report, format!("{e:#}"))
        }
    }
}

/// Where stage `i` runs: `--executor`, else the stage's `executor`, else
/// the pipeline's.
fn executor_of(shared: &Shared<'_>, i: usize) -> Executor {
    let own = stage_spec(shared.plan, i).and_then(|s| s.executor);
    shared
        .options
        .executor
        .or(own)
        .unwrap_or(shared.plan.spec.executor)
}

/// What the spec file says of stage `i` (its placement keys).
fn stage_spec(plan: &Plan, i: usize) -> Option<&crate::spec::StageSpec> {
    let name = &plan.stages[i].name;
    plan.spec.stages.iter().find(|s| &s.name == name)
}

/// A tensor stage running here: one at a time (a Slurm job has its node).
fn local_tensor(shared: &Shared<'_>, i: usize) -> bool {
    shared.plan.stages[i].resource == Resource::Tensor && executor_of(shared, i) == Executor::Local
}

/// Runs stage `i` as a Slurm job and reads its result from the cache.
fn run_as_job(shared: &Shared<'_>, i: usize, key: &str, mut report: StageReport) -> StageReport {
    let plan = shared.plan;
    let name = &plan.stages[i].name;
    let slurm = stage_spec(plan, i)
        .map(|s| s.slurm.clone())
        .unwrap_or_default();
    let ticket = crate::remote::Ticket {
        spec: std::path::absolute(&plan.spec.source.path)
            .unwrap_or_else(|_| plan.spec.source.path.clone()),
        overrides: plan.spec.overrides.clone(),
        seed: plan.spec.seed,
        device: crate::remote::node_device(&plan.spec.device),
        work: crate::remote::Work::Stage {
            stage: name.clone(),
            key: key.to_string(),
        },
        keep_checkpoints: shared
            .options
            .keep_checkpoints
            .iter()
            .filter(|s| *s == name)
            .cloned()
            .collect(),
        inherit_checkpoints: shared
            .options
            .inherit_checkpoints
            .iter()
            .filter(|(s, _)| *s == name)
            .map(|(s, k)| (s.clone(), k.clone()))
            .collect(),
    };
    let started = Instant::now();
    let outcome = crate::remote::run_as_job(shared.cache, &ticket, &slurm, shared.progress)
        .map_err(|e| e.to_string())
        .and_then(|job| match shared.cache.lookup(key) {
            Ok(Some(record)) => Ok((job, record)),
            Ok(None) => Err(format!(
                "Slurm job {job} finished but the cache holds no result for key {key} \
                 (does the node see the same spec file and cache?)"
            )),
            Err(e) => Err(e.to_string()),
        });
    report.seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok((job, record)) => {
            report.outputs = record.outputs;
            report.outcome = Outcome::Ran;
            report.notes.insert("slurm_job".into(), job.0);
            shared.progress.println(&format!(
                "seqpipe: finished `{name}` in {:.1}s (Slurm)",
                report.seconds
            ));
        }
        Err(e) => {
            report.outcome = Outcome::Failed;
            report.error = Some(e);
        }
    }
    report
}

/// Runs stage `i` into a staging folder and publishes its outputs.
fn compute(
    shared: &Shared<'_>,
    i: usize,
    key: &str,
    inputs: &BTreeMap<String, Hash>,
) -> anyhow::Result<(BTreeMap<String, Hash>, BTreeMap<String, String>)> {
    let store = shared.cache.store();
    if let Some(from) = shared
        .options
        .inherit_checkpoints
        .get(&shared.plan.stages[i].name)
    {
        shared.cache.inherit_checkpoints(key, from)?;
    }
    let checkpoint_dir = shared.cache.checkpoint_dir(key)?;
    let staged = stage_into_staging(
        shared.plan,
        shared.cache,
        shared.progress,
        i,
        inputs,
        checkpoint_dir,
    )?;
    let mut published = BTreeMap::new();
    for (name, dir) in &staged.outputs {
        match store.publish(dir) {
            Ok(id) => {
                published.insert(name.clone(), id);
            }
            Err(e) => {
                let _ = crate::cache::remove_tree(&staged.staging);
                return Err(e.into());
            }
        }
    }
    let _ = crate::cache::remove_tree(&staged.staging);
    Ok((published, staged.notes))
}

/// What a stage wrote into its staging folder.
struct Staged {
    staging: PathBuf,
    /// Output name → its folder under `staging`.
    outputs: BTreeMap<String, PathBuf>,
    notes: BTreeMap<String, String>,
}

/// Runs stage `i` on `inputs` into a fresh staging folder; every output
/// must be non-empty. On error the staging folder is already removed.
fn stage_into_staging(
    plan: &Plan,
    cache: &Cache,
    progress: &Progress,
    i: usize,
    inputs: &BTreeMap<String, Hash>,
    checkpoint_dir: PathBuf,
) -> anyhow::Result<Staged> {
    let stage = &plan.stages[i];
    let store = cache.store();
    let mut input_dirs = BTreeMap::new();
    for (name, id) in inputs {
        if let Some(path) = stage.paths.get(name) {
            input_dirs.insert(name.clone(), path.clone());
            continue;
        }
        store
            .verify(id)
            .map_err(|e| anyhow::anyhow!("input `{name}`: {e}"))?;
        input_dirs.insert(name.clone(), store.path(id));
    }
    let staging = cache.staging_dir(&stage.name)?;
    let mut output_dirs = BTreeMap::new();
    for port in &stage.kind.info().outputs {
        let dir = staging.join(port.name);
        std::fs::create_dir_all(&dir)?;
        output_dirs.insert(port.name.to_string(), dir);
    }
    let mut ctx = StageContext {
        stage: &stage.name,
        params: stage.params.clone(),
        seed: plan.spec.seed,
        device: &plan.spec.device,
        inputs: input_dirs,
        outputs: output_dirs.clone(),
        checkpoint_dir,
        progress,
        notes: BTreeMap::new(),
    };
    let result = stage.kind.run(&mut ctx);
    let notes = std::mem::take(&mut ctx.notes);
    if let Err(e) = result {
        let _ = crate::cache::remove_tree(&staging);
        return Err(e);
    }
    for (name, dir) in &output_dirs {
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if empty {
            let _ = crate::cache::remove_tree(&staging);
            anyhow::bail!("the stage wrote nothing to its output `{name}`");
        }
    }
    Ok(Staged {
        staging,
        outputs: output_dirs,
        notes,
    })
}

/// Computes stage `i` again from `inputs` in a scratch folder, with a fresh
/// checkpoint folder (nothing resumed), and returns its outputs' content
/// hashes without publishing anything: what `seqpipe verify` compares with
/// the cache.
pub fn recompute(
    plan: &Plan,
    cache: &Cache,
    progress: &Progress,
    i: usize,
    inputs: &BTreeMap<String, Hash>,
) -> anyhow::Result<BTreeMap<String, Hash>> {
    let scratch = cache.staging_dir(&format!("verify-{}", plan.stages[i].name))?;
    let staged = stage_into_staging(plan, cache, progress, i, inputs, scratch.clone());
    let _ = crate::cache::remove_tree(&scratch);
    let staged = staged?;
    let hashes = staged
        .outputs
        .iter()
        .map(|(name, dir)| Ok((name.clone(), cache.hash_fresh(dir)?)))
        .collect::<Result<BTreeMap<_, _>, CacheError>>();
    let _ = crate::cache::remove_tree(&staged.staging);
    Ok(hashes?)
}
