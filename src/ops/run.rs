//! `seqpipe run`: execute a pipeline, print a summary, save the run manifest.

use std::path::PathBuf;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use super::{load_plan, summaries, CacheOptions};
use crate::progress::Progress;
use crate::run::{self, now_unix, Outcome, RunError, RunOptions, RunReport};
use crate::stage::Registry;

/// Options of `seqpipe run`.
#[derive(Debug, Clone)]
pub struct RunCommand {
    pub spec: PathBuf,
    pub sets: Vec<String>,
    pub run: RunOptions,
    pub cache: CacheOptions,
    pub quiet: bool,
}

/// Runs the pipeline; `Err` if the spec is bad or any stage failed.
pub fn run(cmd: &RunCommand, registry: &Registry) -> anyhow::Result<RunReport> {
    let plan = load_plan(&cmd.spec, &cmd.sets, registry)?;
    let cache = cmd.cache.for_spec(&plan.spec).open()?;
    let progress = if cmd.quiet {
        Progress::hidden()
    } else {
        Progress::new()
    };
    let started_at = now_unix();
    let report = run::execute(&plan, &cache, &cmd.run, &progress)?;
    let run_id = format!("{started_at}-{}", std::process::id());
    let saved = save_manifest(
        &cache, &plan, &cmd.spec, &cmd.sets, &report, registry, &run_id, started_at,
    );
    // When a stage failed, its error is the news: a manifest that cannot be
    // written as well (the same full disk) must not hide it.
    let manifest_path = match saved {
        Ok(path) => Some(path),
        Err(e) if !report.failed().is_empty() => {
            crate::errln!("warning: the run manifest could not be written: {e:#}");
            None
        }
        Err(e) => return Err(e),
    };

    // A complete run of the spec as written is locked; `--set` and `--only`
    // runs are experiments on top of it.
    let lock_written = if cmd.sets.is_empty() && cmd.run.only.is_none() {
        match crate::lock::from_run(&plan, &report) {
            Some(lock) => crate::lock::write(&cmd.spec, &lock)?,
            None => false,
        }
    } else {
        false
    };
    if !cmd.quiet {
        crate::outln!("{}", summary_table(&report));
        for stage in &report.stages {
            for text in summaries(&cache, &stage.outputs) {
                crate::outln!("\n{}", text.trim_end());
            }
        }
        if let Some(path) = &manifest_path {
            crate::outln!("\nrun manifest: {}", path.display());
        }
        if lock_written {
            crate::outln!("lock file: {}", crate::lock::path_for(&cmd.spec).display());
        }
    }
    let failed = report.failed();
    if !failed.is_empty() {
        for s in &failed {
            crate::errln!(
                "error: stage `{}` ({}) failed: {}",
                s.name,
                s.kind,
                s.error.as_deref().unwrap_or("?")
            );
        }
        return Err(RunError::StagesFailed {
            count: failed.len(),
            stages: failed
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
        .into());
    }
    Ok(report)
}

/// Writes the run manifest of `report` (a run of `plan`) to the cache.
#[allow(clippy::too_many_arguments)]
pub fn save_manifest(
    cache: &crate::cache::Cache,
    plan: &crate::graph::Plan,
    spec: &std::path::Path,
    overrides: &[String],
    report: &RunReport,
    registry: &Registry,
    run_id: &str,
    started_at: u64,
) -> anyhow::Result<PathBuf> {
    let ran_any = report.stages.iter().any(|s| s.outcome == Outcome::Ran);
    let manifest = serde_json::json!({
        "pipeline": plan.spec.name,
        "spec": spec.display().to_string(),
        "run_id": run_id,
        "started_at": started_at,
        "seconds": report.seconds,
        "seed": plan.spec.seed,
        "device": plan.spec.device,
        "seqpipe": { "version": crate::VERSION, "git_revision": crate::GIT_REVISION },
        "environment": if ran_any { registry.environment(&plan.spec.device) } else { Default::default() },
        "overrides": overrides,
        "stages": report.stages,
    });
    Ok(cache.save_run(&plan.spec.name, run_id, &manifest)?)
}

/// The end-of-run table: stage, kind, cached or ran, time.
pub fn summary_table(report: &RunReport) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["stage", "kind", "result", "time", "key"]);
    for s in &report.stages {
        let result = match s.outcome {
            Outcome::Cached => "cached".to_string(),
            Outcome::Ran => "ran".to_string(),
            Outcome::Failed => "FAILED".to_string(),
            Outcome::Skipped => "skipped".to_string(),
        };
        let time = match s.outcome {
            Outcome::Ran | Outcome::Failed => format!("{:.2}s", s.seconds),
            _ => "-".to_string(),
        };
        let key = s.key.as_deref().map(|k| &k[..12]).unwrap_or("-");
        table.add_row([s.name.as_str(), s.kind.as_str(), &result, &time, key]);
    }
    table
}
