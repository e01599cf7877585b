//! Any bytes as a pipeline spec: parsing and planning must return a plan or
//! a `SpecError`, never panic.
//!
//! The registry holds the engine's own `command` kind plus three stand-in
//! kinds shaped like the stage library's (a source, a step with typed,
//! validated params, a report taking any extra inputs), so references,
//! ports, artifact types, param types, validation, sweeps and the DAG are
//! all exercised without compiling the stage library.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seqpipe::spec::{self, Source};
use seqpipe::stage::{KindInfo, ParamDoc, Port, Registry, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

fn port(name: &'static str, ty: &'static str) -> Port {
    Port {
        optional: false,
        name,
        ty,
        doc: "",
    }
}

fn info(kind: &'static str, inputs: Vec<Port>, outputs: Vec<Port>) -> KindInfo {
    KindInfo {
        kind,
        version: 1,
        summary: "fuzz stand-in",
        inputs,
        extra_inputs: None,
        outputs,
        params: vec![ParamDoc { name: "n", doc: "" }],
        resource: Resource::Cpu,
    }
}

#[derive(Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct SourceParams {
    n: i64,
    name: String,
}

struct SourceKind;

impl TypedStage for SourceKind {
    type Params = SourceParams;
    fn info(&self) -> KindInfo {
        info("source", vec![], vec![port("table", "dir")])
    }
    fn run(&self, _: SourceParams, _: &mut StageContext<'_>) -> anyhow::Result<()> {
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct StepParams {
    k: Vec<u32>,
    rate: f64,
    mode: String,
    on: bool,
}

impl Default for StepParams {
    fn default() -> Self {
        StepParams {
            k: vec![5, 10],
            rate: 0.5,
            mode: "a".into(),
            on: false,
        }
    }
}

struct StepKind;

impl TypedStage for StepKind {
    type Params = StepParams;
    fn info(&self) -> KindInfo {
        let mut optional = port("extra", "metrics");
        optional.optional = true;
        info(
            "step",
            vec![port("table", "dir"), optional],
            vec![port("table", "dir"), port("metrics", "metrics")],
        )
    }
    fn validate(&self, p: &StepParams) -> Result<(), String> {
        if !(0.0..=1.0).contains(&p.rate) {
            return Err(format!("rate: {} is not in [0, 1]", p.rate));
        }
        if p.mode != "a" && p.mode != "b" {
            return Err(format!("mode: unknown mode {:?}", p.mode));
        }
        Ok(())
    }
    fn run(&self, _: StepParams, _: &mut StageContext<'_>) -> anyhow::Result<()> {
        Ok(())
    }
}

#[derive(Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct ReportParams {
    split: String,
}

struct ReportKind;

impl TypedStage for ReportKind {
    type Params = ReportParams;
    fn info(&self) -> KindInfo {
        KindInfo {
            extra_inputs: Some("metrics"),
            ..info("report", vec![], vec![port("report", "dir")])
        }
    }
    fn run(&self, _: ReportParams, _: &mut StageContext<'_>) -> anyhow::Result<()> {
        Ok(())
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(SourceKind)
        .register(StepKind)
        .register(ReportKind);
    r
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Leading `--set KEY=VALUE` lines are command-line overrides, so the
    // override parser and its merge into the spec are fuzzed too.
    let mut overrides = Vec::new();
    let mut body = text;
    while let Some(rest) = body.strip_prefix("--set ") {
        let (flag, tail) = rest.split_once('\n').unwrap_or((rest, ""));
        match spec::Override::parse(flag) {
            Ok(o) => overrides.push(o),
            Err(_) => return,
        }
        body = tail;
    }
    let source = Source {
        path: "fuzz.toml".into(),
        text: body.to_string(),
    };
    if let Ok(spec) = spec::parse(source, &overrides) {
        let _ = seqpipe::graph::resolve(spec, &registry());
    }
});
