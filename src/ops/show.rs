//! `seqpipe show`: the last run of a pipeline — each stage's result, its
//! artifacts and where they are on disk, and the stages' summaries.

use std::path::PathBuf;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use super::{load_plan, summaries, CacheOptions};
use crate::stage::Registry;

/// Options of `seqpipe show`.
#[derive(Debug, Clone)]
pub struct ShowCommand {
    pub spec: PathBuf,
    pub stage: Option<String>,
    pub cache: CacheOptions,
    pub json: bool,
}

/// Prints the last run's results.
pub fn show(cmd: &ShowCommand, registry: &Registry) -> anyhow::Result<()> {
    let plan = load_plan(&cmd.spec, &[], registry)?;
    let cache = cmd.cache.for_spec(&plan.spec).open()?;
    let Some(mut manifest) = cache.latest_run(&plan.spec.name)? else {
        anyhow::bail!(
            "pipeline `{}` has no recorded run in {}; run `seqpipe run {}` first",
            plan.spec.name,
            cache.root().display(),
            cmd.spec.display()
        );
    };
    if let Some(stage) = &cmd.stage {
        if plan.index_of(stage).is_none() {
            return Err(crate::run::RunError::UnknownStage(stage.clone()).into());
        }
    }
    // Add where each artifact lives, so scripts need not know the layout.
    let mut rows = Vec::new();
    for stage in manifest["stages"].as_array_mut().into_iter().flatten() {
        let name = stage["name"].as_str().unwrap_or("").to_string();
        if cmd.stage.as_ref().is_some_and(|s| *s != name) {
            continue;
        }
        let ports = plan
            .index_of(&name)
            .map(|i| plan.stages[i].kind.info().outputs.clone())
            .unwrap_or_default();
        let mut artifacts = serde_json::Map::new();
        for (output, id) in stage["outputs"].as_object().cloned().unwrap_or_default() {
            let id = id.as_str().unwrap_or("").to_string();
            let path = cache.store().path(&id);
            let ty = ports.iter().find(|p| p.name == output).map(|p| p.ty);
            artifacts.insert(
                output.clone(),
                serde_json::json!({ "hash": id, "path": path.display().to_string(), "type": ty }),
            );
            rows.push((name.clone(), output, path));
        }
        stage["artifacts"] = serde_json::Value::Object(artifacts);
    }
    if cmd.json {
        crate::outln!("{}", serde_json::to_string_pretty(&manifest)?);
        return Ok(());
    }
    crate::outln!(
        "pipeline `{}`, run {} ({} stages)",
        plan.spec.name,
        manifest["run_id"].as_str().unwrap_or("?"),
        manifest["stages"].as_array().map_or(0, Vec::len)
    );
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["stage", "output", "path"]);
    for (stage, output, path) in &rows {
        table.add_row([stage.as_str(), output.as_str(), &path.display().to_string()]);
    }
    crate::outln!("{table}");
    for stage in manifest["stages"].as_array().into_iter().flatten() {
        let name = stage["name"].as_str().unwrap_or("");
        if cmd.stage.as_ref().is_some_and(|s| s != name) {
            continue;
        }
        let outputs = stage["outputs"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
            .collect();
        for text in summaries(&cache, &outputs) {
            crate::outln!("\n{}", text.trim_end());
        }
        let ports = plan
            .index_of(name)
            .map(|i| plan.stages[i].kind.info().outputs.clone())
            .unwrap_or_default();
        for (output, id) in &outputs {
            if ports.iter().any(|p| p.name == output && p.ty == "metrics") {
                let path = cache.store().path(id).join(crate::artifact::METRICS_FILE);
                if let Some(lines) = metrics_lines(&path) {
                    crate::outln!("\n{name}.{output}:\n{lines}");
                }
            }
        }
    }
    Ok(())
}

/// A `metrics.json` as lines of numbers: top-level numbers on one line, then
/// one line per object of numbers (`test: hr@10 0.5, ndcg@10 0.3`); lists
/// (confidence intervals) and deeper objects (breakdowns) are left out.
fn metrics_lines(path: &std::path::Path) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let numbers = |o: &serde_json::Map<String, serde_json::Value>| -> Vec<String> {
        o.iter()
            .filter_map(|(k, v)| v.as_f64().map(|x| format!("{k} {}", short(x))))
            .collect()
    };
    let object = json.as_object()?;
    let mut lines = Vec::new();
    let top = numbers(object);
    if !top.is_empty() {
        lines.push(format!("  {}", top.join(", ")));
    }
    for (key, value) in object {
        if let Some(inner) = value.as_object() {
            let row = numbers(inner);
            if !row.is_empty() {
                lines.push(format!("  {key}: {}", row.join(", ")));
            }
        }
    }
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// Four significant decimals for fractions, integers as integers.
fn short(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{x:.4}")
    }
}
