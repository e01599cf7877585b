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
use crate::run::{check_outputs, explain_miss, fingerprint, path_input_hashes};
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
}

/// Computes every stage's status, in dependency order.
pub fn status(cmd: &StatusCommand, registry: &Registry) -> anyhow::Result<Vec<StageStatus>> {
    let plan = load_plan(&cmd.spec, &cmd.sets, registry)?;
    let cache = cmd.cache.open()?;
    // Output hashes of stages that are cached; absent = will run.
    let mut known: BTreeMap<usize, BTreeMap<String, Hash>> = BTreeMap::new();
    let mut out = Vec::new();
    for &i in &plan.order {
        let stage = &plan.stages[i];
        let mut inputs = BTreeMap::new();
        let mut cascade = None;
        for (name, (up, output)) in &stage.inputs {
            match known.get(up) {
                Some(outputs) => {
                    inputs.insert(name.clone(), outputs[output].clone());
                }
                None => {
                    cascade.get_or_insert(StaleReason::InputWillChange {
                        input: name.clone(),
                        upstream: plan.stages[*up].name.clone(),
                    });
                }
            }
        }
        inputs.extend(path_input_hashes(&cache, &plan, i)?);
        let (reason, key) = match cascade {
            Some(reason) => (Some(reason), None),
            None => {
                let fp = fingerprint(&plan, i, inputs);
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
        });
    }
    Ok(out)
}

/// Prints the status as a table or JSON.
pub fn print(statuses: &[StageStatus], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(statuses)?);
        return Ok(());
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["stage", "kind", "state", "why"]);
    for s in statuses {
        table.add_row([
            s.name.as_str(),
            s.kind.as_str(),
            s.state,
            s.why.as_deref().unwrap_or(""),
        ]);
    }
    println!("{table}");
    let stale = statuses.iter().filter(|s| s.state != "cached").count();
    if stale == 0 {
        println!("everything is cached: `seqpipe run` would compute nothing");
    } else {
        println!("{stale} stage(s) would run");
    }
    Ok(())
}
