//! `seqpipe status`: what is cached, what would run, and why — without
//! running anything. Root causes (a changed param, a new kind version) are
//! named on the stage that has them; their dependants say which input will
//! be rebuilt by which stage.

use std::collections::BTreeMap;
use std::path::PathBuf;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde::Serialize;

use super::{load_plan, CacheOptions};
use crate::key::{Hash, StaleReason};
use crate::run::{check_outputs, explain_miss, fingerprint, known_inputs};
use crate::stage::Registry;

/// Options of `seqpipe status`.
#[derive(Debug, Clone)]
pub struct StatusCommand {
    pub spec: PathBuf,
    pub sets: Vec<String>,
    pub cache: CacheOptions,
    pub json: bool,
}

/// The state of one stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageStatus {
    pub name: String,
    pub kind: String,
    /// `cached`, `stale` or `never-run`.
    pub state: &'static str,
    pub reason: Option<StaleReason>,
    /// The reason as a sentence.
    pub why: Option<String>,
    pub key: Option<Hash>,
    /// How it compares with the lock file, when there is one: `matches`,
    /// or why it differs.
    pub lock: Option<String>,
}

/// Computes every stage's status, in dependency order.
pub fn status(cmd: &StatusCommand, registry: &Registry) -> anyhow::Result<Vec<StageStatus>> {
    let plan = load_plan(&cmd.spec, &cmd.sets, registry)?;
    let cache = cmd.cache.for_spec(&plan.spec).open()?;
    let lock = crate::lock::read(&cmd.spec)?;
    // Output hashes of stages that are cached; absent = will run.
    let mut known: BTreeMap<usize, BTreeMap<String, Hash>> = BTreeMap::new();
    let mut out = Vec::new();
    for &i in &plan.order {
        let stage = &plan.stages[i];
        let (inputs, pending) = known_inputs(&cache, &plan, i, &known)?;
        let cascade = pending
            .first()
            .map(|(input, up)| StaleReason::InputWillChange {
                input: input.clone(),
                upstream: plan.stages[*up].name.clone(),
            });
        let (reason, key) = match cascade {
            Some(reason) => (Some(reason), None),
            None => {
                let fp = fingerprint(&plan, i, inputs.clone());
                let key = fp.key();
                let reason = match cache.lookup(&key)? {
                    Some(record) => match check_outputs(&cache, &record) {
                        None => {
                            known.insert(i, record.outputs);
                            None
                        }
                        Some(damage) => Some(damage),
                    },
                    None => Some(explain_miss(&cache, &plan.spec.name, &stage.name, &fp)?),
                };
                (reason, Some(key))
            }
        };
        let lock_state = lock
            .as_ref()
            .map(|lock| compare_with_lock(lock, &plan, i, &inputs, &pending, known.get(&i)));
        let state = match &reason {
            None => "cached",
            Some(StaleReason::NeverRun) => "never-run",
            Some(_) => "stale",
        };
        out.push(StageStatus {
            name: stage.name.clone(),
            kind: stage.kind.info().kind.to_string(),
            state,
            why: reason.as_ref().map(|r| r.to_string()),
            reason,
            key,
            lock: lock_state,
        });
    }
    Ok(out)
}

/// Stage `i` against the lock file. `pending` inputs (an upstream stage
/// will rerun) are taken from the lock, so the sentence names this stage's
/// own difference; `outputs` are its cached outputs, when it is cached.
fn compare_with_lock(
    lock: &crate::lock::LockFile,
    plan: &crate::graph::Plan,
    i: usize,
    inputs: &BTreeMap<String, Hash>,
    pending: &[(String, usize)],
    outputs: Option<&BTreeMap<String, Hash>>,
) -> String {
    let Some(locked) = lock.stages.get(&plan.stages[i].name) else {
        return "not in the lock file".into();
    };
    let mut filled = inputs.clone();
    for (name, _) in pending {
        if let Some(h) = locked.fingerprint.inputs.get(name) {
            filled.insert(name.clone(), h.clone());
        }
    }
    let now = fingerprint(plan, i, filled);
    if let Some(difference) = crate::lock::compare(locked, &now, outputs) {
        return difference;
    }
    if pending.is_empty() {
        return "matches".into();
    }
    let waits: Vec<String> = pending
        .iter()
        .map(|(name, up)| format!("`{name}` from `{}`", plan.stages[*up].name))
        .collect();
    format!("its own params match; waits on input {}", waits.join(", "))
}

/// Prints the status as a table or JSON.
pub fn print(statuses: &[StageStatus], json: bool) -> anyhow::Result<()> {
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(statuses)?);
        return Ok(());
    }
    let with_lock = statuses.iter().any(|s| s.lock.is_some());
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    let mut header = vec!["stage", "kind", "state", "why"];
    if with_lock {
        header.push("lock file");
    }
    table.set_header(header);
    for s in statuses {
        let mut row = vec![
            s.name.as_str(),
            s.kind.as_str(),
            s.state,
            s.why.as_deref().unwrap_or(""),
        ];
        if with_lock {
            row.push(s.lock.as_deref().unwrap_or(""));
        }
        table.add_row(row);
    }
    crate::outln!("{table}");
    let stale = statuses.iter().filter(|s| s.state != "cached").count();
    if stale == 0 {
        crate::outln!("everything is cached: `seqpipe run` would compute nothing");
    } else {
        crate::outln!("{stale} stage(s) would run");
    }
    Ok(())
}
