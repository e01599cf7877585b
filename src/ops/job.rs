//! `seqpipe job TICKET`: what a Slurm job runs on its node — one stage of
//! the submitting run's plan, computed here against the shared cache (see
//! [`crate::remote`]). Not meant to be typed by hand.

use std::path::Path;

use anyhow::Context;

use super::CacheOptions;
use crate::graph;
use crate::progress::Progress;
use crate::remote::Ticket;
use crate::run::{self, Outcome, RunOptions};
use crate::spec::Executor;
use crate::stage::Registry;

/// Runs the ticket's stage; `Err` if it failed or its key is not the one the
/// submitter expects.
pub fn job(ticket_path: &Path, cache: &CacheOptions, registry: &Registry) -> anyhow::Result<()> {
    let bytes = std::fs::read(ticket_path)
        .with_context(|| format!("cannot read the job ticket {}", ticket_path.display()))?;
    let ticket: Ticket = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a job ticket", ticket_path.display()))?;
    let mut spec = super::load_spec(&ticket.spec, &ticket.overrides)?;
    spec.seed = ticket.seed;
    spec.device = ticket.device.clone();
    let plan = graph::resolve(spec, registry)?;
    let mut options = RunOptions {
        only: Some(ticket.stage.clone()),
        // Computed here, whatever the spec says: this is the node.
        executor: Some(Executor::Local),
        ..RunOptions::default()
    };
    if ticket.keep_checkpoints {
        options.keep_checkpoints.insert(ticket.stage.clone());
    }
    if let Some(from) = &ticket.inherit_checkpoints {
        options
            .inherit_checkpoints
            .insert(ticket.stage.clone(), from.clone());
    }
    let cache = cache.open()?;
    let report = run::execute(&plan, &cache, &options, &Progress::hidden())?;
    let stage = report
        .stages
        .iter()
        .find(|s| s.name == ticket.stage)
        .context("the ticket's stage did not run")?;
    if stage.key.as_deref() != Some(ticket.key.as_str()) {
        anyhow::bail!(
            "stage `{}` has key {} here but {} where it was submitted: the spec file or its \
             inputs differ on this node",
            ticket.stage,
            stage.key.as_deref().unwrap_or("-"),
            ticket.key
        );
    }
    match stage.outcome {
        Outcome::Ran | Outcome::Cached => {
            eprintln!("seqpipe job: stage `{}` {:?}", ticket.stage, stage.outcome);
            Ok(())
        }
        _ => anyhow::bail!(
            "stage `{}` failed: {}",
            ticket.stage,
            stage.error.as_deref().unwrap_or("?")
        ),
    }
}
