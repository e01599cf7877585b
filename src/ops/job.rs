//! `seqpipe job TICKET`: what a Slurm job runs on its node — one stage of
//! the submitting run's plan, or a whole sweep trial as a task of a job
//! array, computed here against the shared cache (see [`crate::remote`]).
//! Not meant to be typed by hand.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::CacheOptions;
use crate::graph;
use crate::progress::Progress;
use crate::remote::{task_report_path, TaskReport, Ticket, Work};
use crate::run::{self, Outcome, RunOptions};
use crate::spec::Executor;
use crate::stage::Registry;

/// Runs the ticket's work; `Err` if it failed or is not the work the
/// submitter meant. `ticket_path` is a ticket file, or for a job array the
/// folder holding one `<task>.json` per `SLURM_ARRAY_TASK_ID`.
pub fn job(ticket_path: &Path, cache: &CacheOptions, registry: &Registry) -> anyhow::Result<()> {
    let ticket_path = own_ticket(ticket_path)?;
    let bytes = std::fs::read(&ticket_path)
        .with_context(|| format!("cannot read the job ticket {}", ticket_path.display()))?;
    let ticket: Ticket = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a job ticket", ticket_path.display()))?;
    let mut spec = super::load_spec(&ticket.spec, &ticket.overrides)?;
    spec.seed = ticket.seed;
    spec.device = ticket.device.clone();
    let plan = graph::resolve(spec, registry)?;
    let options = RunOptions {
        only: match &ticket.work {
            Work::Stage { stage, .. } => Some(stage.clone()),
            Work::Trial { .. } => None,
        },
        // Computed here, whatever the spec says: this is the node.
        executor: Some(Executor::Local),
        keep_checkpoints: ticket.keep_checkpoints.clone(),
        inherit_checkpoints: ticket.inherit_checkpoints.clone(),
        ..RunOptions::default()
    };
    let cache = cache.open()?;
    match &ticket.work {
        Work::Stage { stage, key } => {
            let report = run::execute(&plan, &cache, &options, &Progress::hidden())?;
            let ran = report
                .stages
                .iter()
                .find(|s| &s.name == stage)
                .context("the ticket's stage did not run")?;
            if ran.key.as_deref() != Some(key.as_str()) {
                anyhow::bail!(
                    "stage `{stage}` has key {} here but {key} where it was submitted: the spec \
                     file or its inputs differ on this node",
                    ran.key.as_deref().unwrap_or("-"),
                );
            }
            match ran.outcome {
                Outcome::Ran | Outcome::Cached => {
                    crate::errln!("seqpipe job: stage `{stage}` {:?}", ran.outcome);
                    Ok(())
                }
                _ => anyhow::bail!(
                    "stage `{stage}` failed: {}",
                    ran.error.as_deref().unwrap_or("?")
                ),
            }
        }
        Work::Trial { trial, fingerprint } => {
            // Checked before computing anything: a different plan would
            // fill the cache with another trial's stages.
            if &plan.fingerprint() != fingerprint {
                anyhow::bail!(
                    "sweep trial {trial} resolves to another plan here than where it was \
                     submitted: the spec file {} differs on this node",
                    ticket.spec.display()
                );
            }
            let report = run::execute(&plan, &cache, &options, &Progress::new())?;
            if let Some(failed) = report.failed().first() {
                anyhow::bail!(
                    "sweep trial {trial}: stage `{}` failed: {}",
                    failed.name,
                    failed.error.as_deref().unwrap_or("?")
                );
            }
            let names = |o: Outcome| -> Vec<String> {
                report
                    .stages
                    .iter()
                    .filter(|s| s.outcome == o)
                    .map(|s| s.name.clone())
                    .collect()
            };
            let task = TaskReport {
                ran: names(Outcome::Ran),
                cached: names(Outcome::Cached),
                seconds: report.seconds,
            };
            crate::errln!(
                "seqpipe job: sweep trial {trial}: {} stage(s), {} computed here",
                report.stages.len(),
                task.ran.len()
            );
            let path = task_report_path(&ticket_path);
            std::fs::write(&path, serde_json::to_vec_pretty(&task)?)
                .with_context(|| format!("cannot write {}", path.display()))
        }
    }
}

/// The ticket file itself, or an array task's ticket inside the folder.
fn own_ticket(path: &Path) -> anyhow::Result<PathBuf> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let task = std::env::var("SLURM_ARRAY_TASK_ID").with_context(|| {
        format!(
            "{} is a folder of array tickets, but SLURM_ARRAY_TASK_ID is not set (not a task \
             of a Slurm job array)",
            path.display()
        )
    })?;
    Ok(path.join(format!("{task}.json")))
}
