//! `seqpipe verify`: computes cached stages again in a scratch folder and
//! compares the output hashes with the cache — the check that a result
//! reproduces bit for bit. Nothing is published or resumed: each stage
//! starts from its cached inputs with an empty checkpoint folder.

use std::collections::BTreeMap;
use std::path::PathBuf;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde::Serialize;

use super::{load_plan, CacheOptions};
use crate::key::Hash;
use crate::progress::Progress;
use crate::run::{check_outputs, fingerprint, known_inputs, recompute, RunError};
use crate::stage::Registry;

/// Options of `seqpipe verify`.
#[derive(Debug, Clone)]
pub struct VerifyCommand {
    pub spec: PathBuf,
    pub sets: Vec<String>,
    /// Only this stage (default: every stage).
    pub stage: Option<String>,
    pub cache: CacheOptions,
    pub quiet: bool,
}

/// What verifying one stage found.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub stage: String,
    pub kind: String,
    /// `identical`, `differs`, `not-cached` or `failed`.
    pub verdict: &'static str,
    /// Which outputs differ (cached → recomputed), or why it could not run.
    pub detail: String,
    pub seconds: f64,
}

/// Verifies the selected stages, in dependency order.
pub fn verify(cmd: &VerifyCommand, registry: &Registry) -> anyhow::Result<Vec<Verdict>> {
    let plan = load_plan(&cmd.spec, &cmd.sets, registry)?;
    if let Some(stage) = &cmd.stage {
        if plan.index_of(stage).is_none() {
            return Err(RunError::UnknownStage(stage.clone()).into());
        }
    }
    let cache = cmd.cache.for_spec(&plan.spec).open()?;
    let progress = if cmd.quiet {
        Progress::hidden()
    } else {
        Progress::new()
    };
    // Outputs of cached stages, the inputs of the stages after them.
    let mut known: BTreeMap<usize, BTreeMap<String, Hash>> = BTreeMap::new();
    let mut verdicts = Vec::new();
    for &i in &plan.order {
        let stage = &plan.stages[i];
        let selected = cmd.stage.as_ref().is_none_or(|s| *s == stage.name);
        let verdict = |state, detail: String, seconds| Verdict {
            stage: stage.name.clone(),
            kind: stage.kind.info().kind.to_string(),
            verdict: state,
            detail,
            seconds,
        };
        let (inputs, pending) = known_inputs(&cache, &plan, i, &known)?;
        let missing = pending.first().map(|(_, up)| plan.stages[*up].name.clone());
        let record = match missing {
            Some(_) => None,
            None => cache
                .lookup(&fingerprint(&plan, i, inputs.clone()).key())?
                .filter(|r| check_outputs(&cache, r).is_none()),
        };
        let Some(record) = record else {
            if selected {
                let why = match missing {
                    Some(up) => format!("its input stage `{up}` is not cached"),
                    None => "not in the cache".into(),
                };
                verdicts.push(verdict("not-cached", format!("{why}; run it first"), 0.0));
            }
            continue;
        };
        known.insert(i, record.outputs.clone());
        if !selected {
            continue;
        }
        if !cmd.quiet {
            crate::errln!(
                "seqpipe: verifying `{}` ({})",
                stage.name,
                stage.kind.info().kind
            );
        }
        let started = std::time::Instant::now();
        let result = recompute(&plan, &cache, &progress, i, &inputs);
        let seconds = started.elapsed().as_secs_f64();
        verdicts.push(match result {
            Err(e) => verdict("failed", format!("{e:#}"), seconds),
            Ok(now) => {
                let differs: Vec<String> = record
                    .outputs
                    .iter()
                    .filter(|(name, id)| now.get(*name) != Some(*id))
                    .map(|(name, id)| {
                        let new = now.get(name).map_or("missing", |h| &h[..12]);
                        format!("{name}: {} → {new}", &id[..12])
                    })
                    .collect();
                if differs.is_empty() {
                    verdict("identical", String::new(), seconds)
                } else {
                    verdict("differs", differs.join("; "), seconds)
                }
            }
        });
    }
    Ok(verdicts)
}

/// Prints the verdicts; `Err` when any stage is not identical.
pub fn print(verdicts: &[Verdict], json: bool) -> anyhow::Result<()> {
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(verdicts)?);
    } else {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED);
        table.set_header(["stage", "kind", "verdict", "time", "detail"]);
        for v in verdicts {
            table.add_row([
                v.stage.as_str(),
                v.kind.as_str(),
                v.verdict,
                &format!("{:.2}s", v.seconds),
                v.detail.as_str(),
            ]);
        }
        crate::outln!("{table}");
    }
    let bad: Vec<&str> = verdicts
        .iter()
        .filter(|v| v.verdict != "identical")
        .map(|v| v.stage.as_str())
        .collect();
    if bad.is_empty() {
        if !json {
            crate::outln!("every verified stage reproduced its cached outputs bit for bit");
        }
        return Ok(());
    }
    Err(RunError::StagesFailed {
        count: bad.len(),
        stages: format!("not reproduced: {}", bad.join(", ")),
    }
    .into())
}
