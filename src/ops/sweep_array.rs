//! A sweep placed on Slurm (`[sweep] executor = "slurm"`, or `seqpipe sweep
//! --executor slurm`): each trial is one task of a Slurm job array that runs
//! the trial's whole pipeline on its node (`seqpipe job`), at most
//! `--parallel` tasks at once. The first trial goes alone, as an array of
//! one, so the stages every trial shares are computed once; the rest follow
//! as one array. Afterwards each trial is run here once more, where every
//! stage is a cache hit, to collect its metrics and write its run manifest
//! exactly as a local sweep does. A trial whose stages are all cached
//! already is not submitted at all.
//!
//! Asynchronous halving (`mode = "async"`) promotes trials one by one and
//! keeps placing each stage as its own job instead.

use std::collections::BTreeMap;

use super::sweep::{Job, TrialContext, TrialResult};
use crate::remote::{self, Ticket, Work};
use crate::run;

/// [`super::sweep`]'s `run_batch`, with trials as Slurm array tasks.
pub(super) fn run_batch_as_arrays(
    ctx: &TrialContext<'_>,
    jobs: &[Job],
    which: &[usize],
    first_alone: bool,
) -> BTreeMap<usize, anyhow::Result<TrialResult>> {
    let groups: Vec<&[usize]> = match which.split_first() {
        Some((_, rest)) if first_alone && !rest.is_empty() => vec![&which[..1], rest],
        _ => vec![which],
    };
    let mut outcomes = BTreeMap::new();
    for group in groups {
        outcomes.extend(run_array(ctx, jobs, group));
    }
    outcomes
}

/// Runs `group`'s trials as one job array, then collects each from the cache.
fn run_array(
    ctx: &TrialContext<'_>,
    jobs: &[Job],
    group: &[usize],
) -> Vec<(usize, anyhow::Result<TrialResult>)> {
    let (cached, group): (Vec<usize>, Vec<usize>) = group.iter().partition(|&&j| {
        let plan = jobs[j].plan.lock().unwrap_or_else(|e| e.into_inner());
        jobs[j].options.force.is_empty() && run::all_cached(ctx.cache, &plan).unwrap_or(false)
    });
    let mut results: Vec<(usize, anyhow::Result<TrialResult>)> = cached
        .iter()
        .map(|&j| (j, ctx.run(&jobs[j], None)))
        .collect();
    if group.is_empty() {
        return results;
    }
    results.extend(submit_array(ctx, jobs, &group));
    results
}

/// Submits `group`'s trials as one job array and collects each from the cache.
fn submit_array(
    ctx: &TrialContext<'_>,
    jobs: &[Job],
    group: &[usize],
) -> Vec<(usize, anyhow::Result<TrialResult>)> {
    let tickets: Vec<Ticket> = group.iter().map(|&j| ticket(&jobs[j])).collect();
    let at_once = ctx.cmd.parallel.max(1);
    match remote::run_array(ctx.cache, &tickets, at_once, &ctx.sweep.slurm, ctx.progress) {
        Err(e) => {
            let reason = e.to_string();
            group
                .iter()
                .map(|&j| (j, Err(anyhow::anyhow!("{reason}"))))
                .collect()
        }
        Ok(tasks) => group
            .iter()
            .zip(tasks)
            .map(|(&j, task)| {
                let result = match task {
                    Ok(task) => ctx.run(&jobs[j], None).map(|mut result| {
                        // What the node computed, not this pass's hits.
                        if let Some(report) = task.report {
                            result.ran = report.ran.len();
                            result.cached = report.cached.len();
                            result.seconds = report.seconds;
                        }
                        result
                    }),
                    Err(e) => Err(e.into()),
                };
                (j, result)
            })
            .collect(),
    }
}

/// The ticket that rebuilds `job`'s plan on a node and runs all of it.
fn ticket(job: &Job) -> Ticket {
    let plan = job.plan.lock().unwrap_or_else(|e| e.into_inner());
    Ticket {
        spec: std::path::absolute(&plan.spec.source.path)
            .unwrap_or_else(|_| plan.spec.source.path.clone()),
        overrides: job.overrides.iter().map(|o| o.flag.clone()).collect(),
        seed: plan.spec.seed,
        device: remote::node_device(&plan.spec.device),
        work: Work::Trial {
            trial: job.trial.id,
            fingerprint: plan.fingerprint(),
        },
        keep_checkpoints: job.options.keep_checkpoints.clone(),
        inherit_checkpoints: job.options.inherit_checkpoints.clone(),
    }
}
