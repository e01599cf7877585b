//! `seqpipe sweep`: runs every trial of a spec's `[sweep]` table against
//! one cache, then writes a leaderboard and the best trial as a pipeline.
//!
//! Trials run one after another, each a normal run (with its own manifest),
//! so whatever two trials share is computed once: the data stages run for
//! the first trial and are cache hits after. Trials whose stages would be
//! keyed on exactly the same params and seed (e.g. `lr` swept over a `pop`
//! model that ignores it) are the same trial: the leaderboard lists them
//! once and names the duplicates. An interrupted sweep rerun finds its
//! finished trials cached and the unfinished one resumes from its checkpoint.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Mutex;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use super::run::save_manifest;
use super::CacheOptions;
use crate::artifact::METRICS_FILE;
use crate::cache::Cache;
use crate::graph::{self, Plan};
use crate::progress::Progress;
use crate::run::{self, now_unix, Outcome, RunError, RunOptions, RunReport};
use crate::spec::{self, Executor, Override, SpecError};
use crate::stage::Registry;
use crate::sweep::{Halving, SweepSpec, Trial};

/// Options of `seqpipe sweep`.
#[derive(Debug, Clone)]
pub struct SweepCommand {
    pub spec: PathBuf,
    pub sets: Vec<String>,
    pub run: RunOptions,
    pub cache: CacheOptions,
    /// Trials run at once (1 = one after another).
    pub parallel: usize,
    /// Devices handed to parallel trial slots in turn (empty: the spec's).
    pub devices: Vec<String>,
    /// Where the leaderboard goes (default: `<cache>/sweeps/<pipeline>`).
    pub out: Option<PathBuf>,
    pub quiet: bool,
}

/// What one trial gave.
#[derive(Debug, Clone)]
pub struct TrialResult {
    pub trial: Trial,
    /// The selection metric, `None` when the trial failed.
    pub metric: Option<f64>,
    /// The numbers beside the selection metric in its metrics.json object.
    pub siblings: BTreeMap<String, f64>,
    pub seconds: f64,
    pub ran: usize,
    pub cached: usize,
    /// The trial this one duplicates (same canonical params and seed).
    pub same_as: Option<usize>,
    pub error: Option<String>,
    /// The metric stage's `metrics` artifact folder in the cache.
    pub metrics_dir: Option<PathBuf>,
    /// Stage name → the key it ran or was found under.
    pub keys: BTreeMap<String, String>,
    /// The budget at which successive halving stopped this trial.
    pub stopped_at: Option<i64>,
    /// Under successive halving: (budget, selection metric) per rung it
    /// ran, in order.
    pub rungs: Vec<(i64, Option<f64>)>,
}

/// One configuration on the leaderboard: its trials (one per seed).
#[derive(Debug, Clone)]
pub struct Entry {
    pub config: usize,
    pub values: Vec<(String, String, toml::Value)>,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub trials: Vec<TrialResult>,
}

/// Runs the sweep; returns the leaderboard, best first.
pub fn sweep(cmd: &SweepCommand, registry: &Registry) -> anyhow::Result<Vec<Entry>> {
    let base: Vec<Override> = cmd
        .sets
        .iter()
        .map(|s| Override::parse(s))
        .collect::<Result<_, _>>()?;
    let spec = spec::load(&cmd.spec, &base)?;
    let Some(sweep) = spec.sweep.clone() else {
        return Err(SpecError {
            location: spec.source.location(&(0..0)),
            key: "sweep".into(),
            message: "the pipeline has no [sweep] table".into(),
            help: Some(
                "add [sweep] with metric = \"<stage>.<split>.<metric>\" and a [sweep.grid] or \
                 [sweep.random] table; see `seqpipe sweep --help`"
                    .into(),
            ),
        }
        .into());
    };
    // `[sweep] executor` places the trials, unless `--executor` did.
    let placed;
    let cmd = match sweep.executor {
        Some(executor) if cmd.run.executor.is_none() => {
            let mut with = cmd.clone();
            with.run.executor = Some(executor);
            placed = with;
            &placed
        }
        _ => cmd,
    };
    let base_seed = spec.seed;
    let plan = graph::resolve(spec, registry)?;
    check_against_plan(&sweep, &plan)?;

    let cache = cmd.cache.for_spec(&plan.spec).open()?;
    let progress = if cmd.quiet {
        Progress::hidden()
    } else {
        Progress::new()
    };
    let mut jobs: Vec<Job> = Vec::new();
    let mut same_as: Vec<Option<usize>> = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for trial in sweep.trials() {
        let overrides = trial_overrides(&base, &trial);
        let mut spec = spec::load(&cmd.spec, &overrides)?;
        spec.seed = base_seed + trial.repeat as u64;
        let plan = graph::resolve(spec, registry)?;
        let signature = plan.fingerprint();
        match seen.get(&signature) {
            Some(&first) => same_as.push(Some(first)),
            None => {
                seen.insert(signature, jobs.len());
                same_as.push(None);
            }
        }
        jobs.push(Job {
            trial,
            overrides,
            plan: Mutex::new(plan),
            options: cmd.run.clone(),
            rung_budget: None,
        });
    }
    let unique: Vec<usize> = (0..jobs.len()).filter(|j| same_as[*j].is_none()).collect();
    let ctx = TrialContext {
        cmd,
        registry,
        cache: &cache,
        progress: &progress,
        sweep: &sweep,
    };
    let mut outcomes = match &sweep.halving {
        None => run_batch(&ctx, &jobs, &unique, true),
        Some(h) => {
            let full = full_budget(h, &plan)?;
            if h.asynchronous {
                super::asha::asynchronous_halving(&ctx, &jobs, &unique, h, full, base_seed)?
            } else {
                successive_halving(&ctx, &jobs, &unique, h, full, base_seed)?
            }
        }
    };
    let mut results: Vec<TrialResult> = Vec::with_capacity(jobs.len());
    for (j, job) in jobs.iter().enumerate() {
        let result = match same_as[j] {
            Some(first) => {
                let mut copy = results[first].clone();
                copy.trial = job.trial.clone();
                copy.same_as = Some(jobs[first].trial.id);
                copy
            }
            None => outcomes.remove(&j).expect("every unique trial ran")?,
        };
        results.push(result);
    }

    let board = leaderboard(&sweep, results);
    let out = match &cmd.out {
        Some(dir) => dir.clone(),
        None => cache.root().join("sweeps").join(&plan.spec.name),
    };
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("leaderboard.csv"), to_csv(&sweep, &board))?;
    std::fs::write(out.join("leaderboard.md"), to_markdown(&sweep, &board))?;
    std::fs::write(out.join(TRIALS_FILE), trials_json(&board)?)?;
    let best = board
        .first()
        .filter(|e| e.mean.is_some())
        .map(|e| write_best(&cmd.spec, e, base_seed, &sweep))
        .transpose()?;
    if !cmd.quiet {
        crate::outln!("{}", terminal_table(&sweep, &board));
        crate::outln!("\nleaderboard: {}", out.join("leaderboard.md").display());
        if let Some(best) = &best {
            crate::outln!("best trial as a pipeline: {}", best.display());
        }
    }
    let failed: Vec<String> = board
        .iter()
        .flat_map(|e| &e.trials)
        .filter(|t| t.error.is_some() && t.same_as.is_none())
        .map(|t| format!("trial {}", t.trial.id))
        .collect();
    if !failed.is_empty() {
        return Err(RunError::StagesFailed {
            count: failed.len(),
            stages: failed.join(", "),
        }
        .into());
    }
    Ok(board)
}

/// The file in the sweep's output folder that lists every distinct trial's
/// metrics artifact, best first: what a `report` stage reads when given the
/// folder as its `sweep` input.
pub const TRIALS_FILE: &str = "trials.json";

/// `trials.json`: `[{ "trial", "label", "metric", "metrics" (folder) }]`
/// for every trial that ran and produced its metric (duplicates left out).
fn trials_json(board: &[Entry]) -> anyhow::Result<Vec<u8>> {
    let trials: Vec<serde_json::Value> = board
        .iter()
        .flat_map(|e| &e.trials)
        .filter(|t| t.same_as.is_none())
        .filter_map(|t| {
            Some(serde_json::json!({
                "trial": t.trial.id,
                "label": match t.stopped_at {
                    None => format!("trial {}: {}", t.trial.id, describe(&t.trial)),
                    Some(b) => format!("trial {}: {} (stopped at budget {b})", t.trial.id, describe(&t.trial)),
                },
                "metric": t.metric?,
                "metrics": t.metrics_dir.as_ref()?.display().to_string(),
                "rungs": t.rungs,
            }))
        })
        .collect();
    Ok(serde_json::to_vec_pretty(&trials)?)
}

/// Runs `which` of `jobs` — the first alone when `first_alone` (it fills
/// the stages all trials share), the rest `--parallel` at a time: as threads
/// here, or as tasks of a Slurm job array when the sweep is placed there.
fn run_batch(
    ctx: &TrialContext<'_>,
    jobs: &[Job],
    which: &[usize],
    first_alone: bool,
) -> BTreeMap<usize, anyhow::Result<TrialResult>> {
    if ctx.cmd.run.executor == Some(Executor::Slurm) {
        return super::sweep_array::run_batch_as_arrays(ctx, jobs, which, first_alone);
    }
    let mut outcomes = BTreeMap::new();
    let rest = match which.split_first() {
        Some((&first, rest)) if first_alone => {
            outcomes.insert(first, ctx.run(&jobs[first], None));
            rest
        }
        _ => which,
    };
    let cmd = ctx.cmd;
    let next = AtomicUsize::new(0);
    let slots = cmd.parallel.max(1).min(rest.len().max(1));
    let done = Mutex::new(&mut outcomes);
    std::thread::scope(|scope| {
        for slot in 0..slots {
            let (next, done) = (&next, &done);
            let device =
                (!cmd.devices.is_empty()).then(|| cmd.devices[slot % cmd.devices.len()].clone());
            scope.spawn(move || {
                while let Some(&j) = rest.get(next.fetch_add(1, AtomicOrdering::SeqCst)) {
                    let result = ctx.run(&jobs[j], device.as_deref());
                    done.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(j, result);
                }
            });
        }
    });
    outcomes
}

/// The halving param's value in the spec: the full budget.
fn full_budget(h: &Halving, plan: &Plan) -> Result<i64, SpecError> {
    let i = plan.index_of(&h.stage).expect("checked by sweep::check");
    let stage = &plan.stages[i];
    let value = stage
        .params
        .get(&h.param)
        .cloned()
        .or_else(|| stage.kind.defaults().get(&h.param).cloned())
        .and_then(|v| v.as_i64());
    match value {
        Some(full) if full > h.min => Ok(full),
        Some(full) => Err(SpecError {
            location: h.at.clone(),
            key: "sweep.halving.min".into(),
            message: format!(
                "the first rung's budget {} is not below `{}.{}` = {full}, the full budget",
                h.min, h.stage, h.param
            ),
            help: Some(format!(
                "set {}.{} above {} in the spec",
                h.stage, h.param, h.min
            )),
        }),
        None => Err(SpecError {
            location: h.at.clone(),
            key: "sweep.halving.param".into(),
            message: format!(
                "stage `{}` has no integer param `{}` to use as the budget",
                h.stage, h.param
            ),
            help: Some("name a budget such as \"train.epochs\"".into()),
        }),
    }
}

/// Successive halving over the trials `which`: every trial runs at the
/// first rung's budget, the best 1/eta by the selection metric go on to the
/// next, and so on to the full budget. Each rung keeps the budget stage's
/// checkpoints and the next rung inherits them, so a promoted trial
/// continues where it stopped (and, for `train`, ends with the weights of
/// a training run at the full budget from the start). Trials dropped at a
/// rung keep that rung's result, marked `stopped_at`.
fn successive_halving(
    ctx: &TrialContext<'_>,
    jobs: &[Job],
    which: &[usize],
    h: &Halving,
    full: i64,
    base_seed: u64,
) -> anyhow::Result<BTreeMap<usize, anyhow::Result<TrialResult>>> {
    let rungs = h.rungs(full);
    let mut alive: Vec<usize> = which.to_vec();
    let mut inherited: BTreeMap<usize, String> = BTreeMap::new();
    let mut kept_keys: Vec<String> = vec![];
    let mut history: BTreeMap<usize, Vec<(i64, Option<f64>)>> = BTreeMap::new();
    let mut finished = BTreeMap::new();
    for (r, &budget) in rungs.iter().enumerate() {
        let last = r + 1 == rungs.len();
        let mut rung_jobs = Vec::with_capacity(alive.len());
        for &j in &alive {
            let rung = Rung { budget, last };
            rung_jobs.push(rung_job(
                ctx,
                &jobs[j],
                h,
                rung,
                inherited.get(&j),
                base_seed,
            )?);
        }
        if !ctx.cmd.quiet {
            ctx.progress.println(&format!(
                "seqpipe: halving rung {} of {}: {} trial(s) at {}.{} = {budget}",
                r + 1,
                rungs.len(),
                alive.len(),
                h.stage,
                h.param
            ));
        }
        let indices: Vec<usize> = (0..rung_jobs.len()).collect();
        let mut results: Vec<(usize, anyhow::Result<TrialResult>)> =
            run_batch(ctx, &rung_jobs, &indices, r == 0)
                .into_iter()
                .map(|(k, res)| (alive[k], res))
                .collect();
        for (j, res) in &mut results {
            let metric = res.as_ref().ok().and_then(|t| t.metric);
            let rungs = history.entry(*j).or_default();
            rungs.push((budget, metric));
            if let Ok(t) = res {
                t.rungs = rungs.clone();
                if let Some(key) = t.keys.get(&h.stage) {
                    inherited.insert(*j, key.clone());
                    if !last {
                        kept_keys.push(key.clone());
                    }
                }
            }
        }
        if last {
            finished.extend(results);
            break;
        }
        // best first: a failed or metric-less trial ranks last
        let score = |res: &anyhow::Result<TrialResult>| res.as_ref().ok().and_then(|t| t.metric);
        results.sort_by(|a, b| {
            match (score(&a.1), score(&b.1)) {
                (Some(x), Some(y)) if ctx.sweep.maximize => y.total_cmp(&x),
                (Some(x), Some(y)) => x.total_cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            }
            .then(a.0.cmp(&b.0))
        });
        let keep = results.len().div_ceil(h.eta).max(1);
        alive = results[..keep].iter().map(|(j, _)| *j).collect();
        alive.sort_unstable();
        for (j, res) in results.into_iter().skip(keep) {
            finished.insert(
                j,
                res.map(|mut t| {
                    t.stopped_at = Some(budget);
                    t
                }),
            );
        }
    }
    for key in kept_keys {
        let _ = ctx.cache.drop_checkpoints(&key);
    }
    Ok(finished)
}

/// A rung of successive halving: its budget, and whether it is the last
/// (full-budget) one.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rung {
    pub budget: i64,
    pub last: bool,
}

/// Trial `job` at rung `rung`: the budget param set, the budget stage's
/// checkpoints kept (below the last rung) for the next rung to inherit, and
/// those of `inherit` (the key it ran under at the rung before) taken over.
pub(super) fn rung_job(
    ctx: &TrialContext<'_>,
    job: &Job,
    h: &Halving,
    rung: Rung,
    inherit: Option<&String>,
    base_seed: u64,
) -> anyhow::Result<Job> {
    let mut overrides = job.overrides.clone();
    overrides.push(Override::parse(&format!(
        "{}.{}={}",
        h.stage, h.param, rung.budget
    ))?);
    let mut spec = spec::load(&ctx.cmd.spec, &overrides)?;
    spec.seed = base_seed + job.trial.repeat as u64;
    let mut options = ctx.cmd.run.clone();
    if !rung.last {
        options.keep_checkpoints.insert(h.stage.clone());
    }
    if let Some(key) = inherit {
        options
            .inherit_checkpoints
            .insert(h.stage.clone(), key.clone());
    }
    Ok(Job {
        trial: job.trial.clone(),
        overrides,
        plan: Mutex::new(graph::resolve(spec, ctx.registry)?),
        options,
        rung_budget: Some(rung.budget),
    })
}

/// One trial to run: its overrides and resolved plan (behind a lock so the
/// thread that runs it can set its device).
pub(super) struct Job {
    pub(super) trial: Trial,
    pub(super) overrides: Vec<Override>,
    pub(super) plan: Mutex<Plan>,
    /// The run options (a halving rung keeps and inherits checkpoints).
    pub(super) options: RunOptions,
    /// The budget of the halving rung this job runs, if any: part of its
    /// run id, since a promoted trial can start its next rung within the
    /// second its last one started (and would overwrite that run record).
    pub(super) rung_budget: Option<i64>,
}

/// What every trial run shares.
pub(super) struct TrialContext<'a> {
    pub(super) cmd: &'a SweepCommand,
    pub(super) registry: &'a Registry,
    pub(super) cache: &'a Cache,
    pub(super) progress: &'a Progress,
    pub(super) sweep: &'a SweepSpec,
}

impl TrialContext<'_> {
    /// Runs one trial (on `device` when given) and saves its manifest.
    pub(super) fn run(&self, job: &Job, device: Option<&str>) -> anyhow::Result<TrialResult> {
        let mut plan = job.plan.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(device) = device {
            plan.spec.device = device.to_string();
        }
        if !self.cmd.quiet {
            self.progress.println(&format!(
                "seqpipe: sweep trial {} ({})",
                job.trial.id,
                describe(&job.trial)
            ));
        }
        let started_at = now_unix();
        let report = run::execute(&plan, self.cache, &job.options, self.progress)?;
        let mut run_id = format!("{started_at}-{}-trial{}", std::process::id(), job.trial.id);
        if let Some(budget) = job.rung_budget {
            run_id.push_str(&format!("-rung{budget}"));
        }
        let sets: Vec<String> = job.overrides.iter().map(|o| o.flag.clone()).collect();
        save_manifest(
            self.cache,
            &plan,
            &self.cmd.spec,
            &sets,
            &report,
            self.registry,
            &run_id,
            started_at,
        )?;
        Ok(trial_result(
            job.trial.clone(),
            &plan,
            &report,
            self.cache,
            self.sweep,
        ))
    }
}

/// Every swept param must be one the stage's kind takes, and the metric
/// stage must write a `metrics` artifact; errors point at the sweep key.
fn check_against_plan(sweep: &SweepSpec, plan: &Plan) -> Result<(), SpecError> {
    let axes = sweep
        .grid
        .iter()
        .map(|a| (&a.stage, &a.param, &a.at))
        .chain(sweep.random.iter().map(|a| (&a.stage, &a.param, &a.at)));
    for (stage, param, at) in axes {
        let i = plan.index_of(stage).expect("checked by sweep::check");
        let defaults = plan.stages[i].kind.defaults();
        let known: Vec<&str> = defaults
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        if !known.contains(&param.as_str()) {
            return Err(SpecError {
                location: at.clone(),
                key: format!("sweep.\"{stage}.{param}\""),
                message: format!(
                    "stage `{stage}` (kind `{}`) has no param `{param}`",
                    plan.stages[i].kind.info().kind
                ),
                help: spec::did_you_mean(param, known.iter().copied())
                    .or_else(|| Some(format!("its params: {}", known.join(", ")))),
            });
        }
    }
    let i = plan
        .index_of(&sweep.metric.stage)
        .expect("checked by sweep::check");
    if !plan.stages[i]
        .kind
        .info()
        .outputs
        .iter()
        .any(|p| p.ty == "metrics")
    {
        return Err(SpecError {
            location: sweep.metric.at.clone(),
            key: "sweep.metric".into(),
            message: format!(
                "stage `{}` writes no `metrics` artifact to read `{}` from",
                sweep.metric.stage, sweep.metric
            ),
            help: Some("name an evaluation stage, e.g. metric = \"eval.valid.ndcg@10\"".into()),
        });
    }
    Ok(())
}

fn trial_overrides(base: &[Override], trial: &Trial) -> Vec<Override> {
    let mut all = base.to_vec();
    for (stage, param, value) in &trial.values {
        all.push(Override {
            stage: stage.clone(),
            param: param.clone(),
            value: value.clone(),
            flag: format!("{stage}.{param}={value}"),
        });
    }
    all
}

fn describe(trial: &Trial) -> String {
    let mut parts: Vec<String> = trial
        .values
        .iter()
        .map(|(s, p, v)| format!("{s}.{p}={v}"))
        .collect();
    if trial.repeat > 0 {
        parts.push(format!("repeat {}", trial.repeat + 1));
    }
    parts.join(", ")
}

fn trial_result(
    trial: Trial,
    plan: &Plan,
    report: &RunReport,
    cache: &Cache,
    sweep: &SweepSpec,
) -> TrialResult {
    let count = |o: Outcome| report.stages.iter().filter(|s| s.outcome == o).count();
    let mut result = TrialResult {
        trial,
        metric: None,
        siblings: BTreeMap::new(),
        seconds: report.seconds,
        ran: count(Outcome::Ran),
        cached: count(Outcome::Cached),
        same_as: None,
        error: None,
        metrics_dir: None,
        keys: report
            .stages
            .iter()
            .filter_map(|s| Some((s.name.clone(), s.key.clone()?)))
            .collect(),
        stopped_at: None,
        rungs: vec![],
    };
    match read_metric(plan, report, cache, sweep) {
        Ok((value, siblings, dir)) => {
            result.metric = Some(value);
            result.siblings = siblings;
            result.metrics_dir = Some(dir);
        }
        Err(e) => result.error = Some(e),
    }
    result
}

/// The selection metric and the numbers beside it, from the metric stage's
/// `metrics.json`, and the folder holding it.
fn read_metric(
    plan: &Plan,
    report: &RunReport,
    cache: &Cache,
    sweep: &SweepSpec,
) -> Result<(f64, BTreeMap<String, f64>, PathBuf), String> {
    let metric = &sweep.metric;
    let stage = report
        .stages
        .iter()
        .find(|s| s.name == metric.stage)
        .ok_or("the metric stage did not run")?;
    if let Some(error) = &stage.error {
        return Err(format!("stage `{}` failed: {error}", stage.name));
    }
    let i = plan.index_of(&metric.stage).ok_or("no metric stage")?;
    let output = plan.stages[i]
        .kind
        .info()
        .outputs
        .iter()
        .find(|p| p.ty == "metrics")
        .ok_or("no metrics output")?;
    let id = stage
        .outputs
        .get(output.name)
        .ok_or_else(|| format!("stage `{}` has no output `{}`", stage.name, output.name))?;
    let dir = cache.store().path(id);
    let path = dir.join(METRICS_FILE);
    let json: serde_json::Value = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| format!("cannot read {}", path.display()))?;
    let (last, parents) = metric.path.split_last().expect("a metric path");
    let parent = parents.iter().try_fold(&json, |v, k| v.get(k));
    let value = parent
        .and_then(|p| p.get(last))
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(|| {
            format!(
                "{} has no number at `{}`",
                path.display(),
                metric.path.join(".")
            )
        })?;
    let siblings = parent
        .and_then(serde_json::Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
                .collect()
        })
        .unwrap_or_default();
    Ok((value, siblings, dir))
}

/// Groups trials by configuration (mean ± std over seeds), best first;
/// failed configurations last.
fn leaderboard(sweep: &SweepSpec, results: Vec<TrialResult>) -> Vec<Entry> {
    let mut by_config: BTreeMap<usize, Vec<TrialResult>> = BTreeMap::new();
    for r in results {
        by_config.entry(r.trial.config).or_default().push(r);
    }
    let mut board: Vec<Entry> = by_config
        .into_iter()
        .map(|(config, trials)| {
            let values: Vec<f64> = trials.iter().filter_map(|t| t.metric).collect();
            let complete = values.len() == trials.len();
            let mean = complete.then(|| values.iter().sum::<f64>() / values.len() as f64);
            let std = mean.filter(|_| values.len() > 1).map(|m| {
                (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (values.len() - 1) as f64)
                    .sqrt()
            });
            Entry {
                config,
                values: trials[0].trial.values.clone(),
                mean,
                std,
                trials,
            }
        })
        .collect();
    // Trials stopped by successive halving rank after those that reached
    // the full budget, the ones stopped at a later rung first.
    let reached = |e: &Entry| {
        e.trials
            .iter()
            .filter_map(|t| t.stopped_at)
            .min()
            .unwrap_or(i64::MAX)
    };
    board.sort_by(|a, b| {
        reached(b)
            .cmp(&reached(a))
            .then_with(|| match (a.mean, b.mean) {
                (Some(x), Some(y)) if sweep.maximize => {
                    y.total_cmp(&x).then(a.config.cmp(&b.config))
                }
                (Some(x), Some(y)) => x.total_cmp(&y).then(a.config.cmp(&b.config)),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => a.config.cmp(&b.config),
            })
    });
    board
}

/// The swept names, in the order of the first configuration's values.
fn axis_names(board: &[Entry]) -> Vec<String> {
    board
        .first()
        .map(|e| {
            e.values
                .iter()
                .map(|(s, p, _)| format!("{s}.{p}"))
                .collect()
        })
        .unwrap_or_default()
}

fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn metric_text(e: &Entry) -> String {
    match (e.mean, e.std) {
        (Some(m), Some(s)) => format!("{m:.4} ± {s:.4}"),
        (Some(m), None) => format!("{m:.4}"),
        (None, _) => "failed".into(),
    }
}

/// "ran 3, cached 4" over the entry's trials; duplicates say whose.
fn status_text(e: &Entry) -> String {
    if let Some(first) = e.trials[0].same_as {
        return format!("same as trial {first}");
    }
    if let Some(budget) = e.trials.iter().filter_map(|t| t.stopped_at).min() {
        return format!("stopped at budget {budget}");
    }
    let ran: usize = e.trials.iter().map(|t| t.ran).sum();
    let cached: usize = e.trials.iter().map(|t| t.cached).sum();
    format!("ran {ran}, cached {cached}")
}

fn trial_ids(e: &Entry) -> String {
    e.trials
        .iter()
        .map(|t| t.trial.id.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn rows(sweep: &SweepSpec, board: &[Entry]) -> (Vec<String>, Vec<Vec<String>>) {
    let mut header = vec!["rank".to_string(), "trials".into()];
    header.extend(axis_names(board));
    header.push(sweep.metric.to_string());
    header.extend(["seconds".to_string(), "stages".into()]);
    let rows = board
        .iter()
        .enumerate()
        .map(|(rank, e)| {
            let mut row = vec![(rank + 1).to_string(), trial_ids(e)];
            row.extend(e.values.iter().map(|(_, _, v)| value_text(v)));
            row.push(metric_text(e));
            let seconds: f64 = e.trials.iter().map(|t| t.seconds).sum();
            row.push(format!("{seconds:.1}"));
            row.push(status_text(e));
            row
        })
        .collect();
    (header, rows)
}

fn terminal_table(sweep: &SweepSpec, board: &[Entry]) -> Table {
    let (header, rows) = rows(sweep, board);
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(header);
    for row in rows {
        table.add_row(row);
    }
    table
}

fn to_markdown(sweep: &SweepSpec, board: &[Entry]) -> String {
    let (header, rows) = rows(sweep, board);
    let goal = if sweep.maximize { "higher" } else { "lower" };
    let mut md = format!(
        "# Sweep leaderboard\n\nSorted by `{}` ({goal} is better).\n\n",
        sweep.metric
    );
    let _ = writeln!(md, "| {} |", header.join(" | "));
    let _ = writeln!(md, "|{}", "---|".repeat(header.len()));
    for row in rows {
        let _ = writeln!(md, "| {} |", row.join(" | "));
    }
    md
}

/// One line per trial, with every number beside the selection metric.
fn to_csv(sweep: &SweepSpec, board: &[Entry]) -> String {
    let axes = axis_names(board);
    let siblings: Vec<String> = board
        .iter()
        .flat_map(|e| &e.trials)
        .flat_map(|t| t.siblings.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut header = vec![
        "rank".to_string(),
        "trial".into(),
        "config".into(),
        "seed_offset".into(),
    ];
    header.extend(axes);
    header.push(sweep.metric.to_string());
    header.extend(siblings.iter().cloned());
    header.extend([
        "seconds".to_string(),
        "ran".into(),
        "cached".into(),
        "same_as".into(),
        "stopped_at".into(),
        "error".into(),
    ]);
    let mut csv = header
        .iter()
        .map(|h| csv_field(h))
        .collect::<Vec<_>>()
        .join(",")
        + "\n";
    for (rank, e) in board.iter().enumerate() {
        for t in &e.trials {
            let mut row = vec![
                (rank + 1).to_string(),
                t.trial.id.to_string(),
                e.config.to_string(),
                t.trial.repeat.to_string(),
            ];
            row.extend(t.trial.values.iter().map(|(_, _, v)| value_text(v)));
            row.push(t.metric.map(|m| m.to_string()).unwrap_or_default());
            row.extend(
                siblings
                    .iter()
                    .map(|k| t.siblings.get(k).map(|v| v.to_string()).unwrap_or_default()),
            );
            row.push(format!("{:.3}", t.seconds));
            row.push(t.ran.to_string());
            row.push(t.cached.to_string());
            row.push(t.same_as.map(|s| s.to_string()).unwrap_or_default());
            row.push(t.stopped_at.map(|s| s.to_string()).unwrap_or_default());
            row.push(t.error.clone().unwrap_or_default());
            csv.push_str(
                &row.iter()
                    .map(|f| csv_field(f))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            csv.push('\n');
        }
    }
    csv
}

fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// Writes `<spec>.best.toml` beside the spec: the spec with the best
/// configuration's values written in and no `[sweep]`, so `seqpipe run` on
/// it reproduces the trial (and finds it cached). Comments are not kept.
fn write_best(spec: &Path, best: &Entry, seed: u64, sweep: &SweepSpec) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(spec)?;
    let mut doc: toml::Table = toml::from_str(&text)?;
    doc.remove("sweep");
    for (stage, param, value) in &best.values {
        let params = doc
            .get_mut("stages")
            .and_then(|s| s.get_mut(stage))
            .and_then(toml::Value::as_table_mut)
            .ok_or_else(|| anyhow::anyhow!("stage `{stage}` vanished from {}", spec.display()))?
            .entry("params")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let Some(params) = params.as_table_mut() {
            params.insert(param.clone(), value.clone());
        }
    }
    let stem = spec.file_stem().unwrap_or_default().to_string_lossy();
    let path = spec.with_file_name(format!("{stem}.best.toml"));
    let header = format!(
        "# The best configuration of the sweep in {} by {} = {} (seed {seed}),\n\
         # written by `seqpipe sweep`; `seqpipe run` on this file reproduces it.\n\n",
        spec.file_name().unwrap_or_default().to_string_lossy(),
        sweep.metric,
        metric_text(best),
    );
    std::fs::write(&path, header + &toml::to_string_pretty(&doc)?)?;
    Ok(path)
}
