//! Resolves a [`Spec`] against the stage [`Registry`] into a checked DAG, the
//! [`Plan`]. Everything that can be wrong with a pipeline before any data is
//! touched is caught here, each error naming the file, line and key:
//! unknown stage kinds, unknown or mistyped params, inputs that the kind does
//! not take or that are missing, references to stages or outputs that do not
//! exist, an output whose artifact type is not what the input expects, and
//! cycles.
//!
//! The DAG is a `petgraph` graph (edges point from producer to consumer). We
//! do not execute it with `dagrs`: its nodes pass type-erased values over
//! async channels and every node is spawned up front, while seqpipe passes
//! content-addressed artifacts, must decide hit/miss per node before running,
//! and needs resource classes (one tensor stage per device at a time). A small
//! dependency queue in [`crate::run`] does that in a few dozen lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};

use crate::spec::{did_you_mean, Location, Spec, SpecError, StageSpec};
use crate::stage::{KindInfo, Registry, Resource, Stage};

/// The artifact type of an input port that takes a file or folder from disk
/// (raw data), or any stage's output folder. Its content hash enters the
/// key like any input's, so editing the data reruns the stage.
pub const PATH_TYPE: &str = "path";

/// The artifact type of an input port that takes any stage's output (a
/// `command` stage's inputs: the script decides what it reads).
pub const ANY_TYPE: &str = "*";

/// A checked pipeline: stages with their kind resolved and params canonical.
pub struct Plan {
    pub spec: Spec,
    pub stages: Vec<PlannedStage>,
    /// Stage indices in dependency order (ties in file order).
    pub order: Vec<usize>,
}

/// One stage, ready to key and run.
pub struct PlannedStage {
    pub name: String,
    pub kind: Arc<dyn Stage>,
    /// Canonical params (defaults filled in); part of the key.
    pub params: serde_json::Value,
    /// Input name → (producing stage index, output name).
    pub inputs: BTreeMap<String, (usize, String)>,
    /// Input name → a file or folder on disk (ports of type [`PATH_TYPE`]).
    pub paths: BTreeMap<String, PathBuf>,
    pub resource: Resource,
}

impl Plan {
    /// Index of the stage called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == name)
    }

    /// Stage indices that `root` depends on, transitively, plus `root`.
    pub fn upstream_of(&self, root: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![root];
        while let Some(i) = todo.pop() {
            if seen.insert(i) {
                todo.extend(self.stages[i].inputs.values().map(|(up, _)| *up));
            }
        }
        seen
    }

    /// A hash of what the plan computes short of input data: the seed and
    /// every stage's name, kind, kind version, params and wiring. Two plans
    /// with the same fingerprint compute the same keys from the same data
    /// (a sweep finds duplicate trials with it, and a Slurm job checks that
    /// its node rebuilt the plan it was sent).
    pub fn fingerprint(&self) -> String {
        let stages: Vec<serde_json::Value> = self
            .stages
            .iter()
            .map(|s| {
                let info = s.kind.info();
                serde_json::json!([s.name, info.kind, info.version, s.params, s.inputs, s.paths])
            })
            .collect();
        let text = serde_json::json!({ "seed": self.spec.seed, "stages": stages }).to_string();
        blake3::hash(text.as_bytes()).to_hex().to_string()
    }
}

fn error(location: &Location, key: String, message: String, help: Option<String>) -> SpecError {
    SpecError {
        location: location.clone(),
        key,
        message,
        help,
    }
}

/// Checks `spec` against `registry` and orders its stages.
pub fn resolve(mut spec: Spec, registry: &Registry) -> Result<Plan, SpecError> {
    if spec.stages.is_empty() {
        return Err(error(
            &spec.source.location(&(0..0)),
            "stages".into(),
            "the pipeline has no stages".into(),
            Some("add at least one [stages.NAME] table with a `kind`".into()),
        ));
    }
    let mut stages = Vec::new();
    let mut shared_used: BTreeMap<&str, bool> = spec
        .shared_params
        .keys()
        .map(|k| (k.as_str(), false))
        .collect();
    for s in &mut spec.stages {
        let kind = resolve_kind(s, registry)?;
        check_values(s)?;
        let kind = bind(kind, s, registry)?;
        apply_shared_params(s, kind.as_ref(), &spec.shared_params, &mut shared_used);
        // the shared values it took, checked where [pipeline.params] wrote them
        check_values(s)?;
        let params = resolve_params(s, kind.as_ref())?;
        stages.push(PlannedStage {
            name: s.name.clone(),
            resource: kind.info().resource,
            kind,
            params,
            inputs: BTreeMap::new(),
            paths: BTreeMap::new(),
        });
    }
    if let Some((key, _)) = shared_used.iter().find(|(_, used)| !**used) {
        let (_, at) = &spec.shared_params[*key];
        return Err(error(
            at,
            format!("pipeline.params.{key}"),
            format!("no stage of this pipeline takes a param `{key}`"),
            Some("[pipeline.params] sets a param for every stage whose kind takes it; `seqpipe stages` lists each kind's params".into()),
        ));
    }
    let by_name: BTreeMap<&str, usize> = spec
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();

    for (i, s) in spec.stages.iter().enumerate() {
        let inputs = resolve_inputs(s, &spec.stages, &stages, &by_name)?;
        stages[i].inputs = inputs;
        stages[i].paths = resolve_paths(s, stages[i].kind.as_ref())?;
    }
    let order = order(&spec, &stages)?;
    Ok(Plan {
        spec,
        stages,
        order,
    })
}

fn resolve_kind(s: &StageSpec, registry: &Registry) -> Result<Arc<dyn Stage>, SpecError> {
    registry.get(&s.kind).cloned().ok_or_else(|| {
        error(
            &s.at.kind,
            format!("stages.{}.kind", s.name),
            format!("unknown stage kind `{}`", s.kind),
            did_you_mean(&s.kind, registry.kind_names())
                .or_else(|| Some("`seqpipe stages` lists every kind".into())),
        )
    })
}

/// The stage a kind becomes for this spec: itself, or, for kinds whose
/// ports are written in the stage's TOML (`command`), a stage bound to it.
/// Keys such as `cmd` on any other kind are errors.
fn bind(
    kind: Arc<dyn Stage>,
    s: &mut StageSpec,
    registry: &Registry,
) -> Result<Arc<dyn Stage>, SpecError> {
    if let Some(bound) = kind.bind(s, registry) {
        return bound;
    }
    match s.extra.iter().next() {
        None => Ok(kind),
        Some((key, (_, at))) => Err(error(
            at,
            format!("stages.{}.{key}", s.name),
            format!(
                "`{key}` is a setting of `command` stages, not of kind `{}`",
                kind.info().kind
            ),
            Some("a kind's settings go in params = { … }; `seqpipe stages` lists them".into()),
        )),
    }
}

/// Gives `s` each `[pipeline.params]` value its kind takes and the stage
/// does not set itself (its own value, or a `--set`, wins), located where
/// `[pipeline.params]` wrote it; marks in `used` the names some stage took.
fn apply_shared_params<'a>(
    s: &mut StageSpec,
    kind: &dyn Stage,
    shared: &'a BTreeMap<String, (toml::Value, Location)>,
    used: &mut BTreeMap<&'a str, bool>,
) {
    let defaults = kind.defaults();
    let Some(known) = defaults.as_object() else {
        return;
    };
    for (key, (value, at)) in shared {
        if !known.contains_key(key) {
            continue;
        }
        used.insert(key.as_str(), true);
        if !s.params.contains_key(key) {
            s.params.insert(key.clone(), value.clone());
            s.at.params.insert(key.clone(), at.clone());
        }
    }
}

/// Every param value has a canonical JSON form, whatever the kind
/// ([`crate::stage::canonical_json`]): `nan` and `$__` table keys do not.
fn check_values(s: &StageSpec) -> Result<(), SpecError> {
    for (key, value) in &s.params {
        crate::stage::canonical_json(value).map_err(|m| {
            let help = m
                .starts_with("is nan")
                .then(|| "write it as a string (\"nan\") for the stage to parse".to_string());
            error(
                &s.at.params[key],
                format!("stages.{}.params.{key}", s.name),
                m,
                help,
            )
        })?;
    }
    Ok(())
}

fn resolve_params(s: &StageSpec, kind: &dyn Stage) -> Result<serde_json::Value, SpecError> {
    let defaults = kind.defaults();
    let known: Vec<&str> = defaults
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    for (key, value) in &s.params {
        let at = &s.at.params[key];
        let dotted = format!("stages.{}.params.{key}", s.name);
        if !known.contains(&key.as_str()) {
            let help = did_you_mean(key, known.iter().copied()).or_else(|| {
                Some(format!(
                    "`{}` takes: {}",
                    kind.info().kind,
                    if known.is_empty() {
                        "no params".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            });
            return Err(error(
                at,
                dotted,
                format!("unknown param `{key}` for kind `{}`", kind.info().kind),
                help,
            ));
        }
        kind.check_param(key, value)
            .map_err(|m| error(at, dotted, m, None))?;
    }
    kind.canonical_params(&s.params)
        .map_err(|m| error(&s.at.kind, format!("stages.{}.params", s.name), m, None))
}

fn resolve_inputs(
    s: &StageSpec,
    specs: &[StageSpec],
    planned: &[PlannedStage],
    by_name: &BTreeMap<&str, usize>,
) -> Result<BTreeMap<String, (usize, String)>, SpecError> {
    let info = planned[by_name[s.name.as_str()]].kind.info().clone();
    let mut resolved = BTreeMap::new();
    for (input, reference) in &s.inputs {
        let at = &s.at.inputs[input];
        let key = format!("stages.{}.inputs.{input}", s.name);
        let wanted_type = match info.inputs.iter().find(|p| p.name == input) {
            Some(port) => port.ty,
            None => match info.extra_inputs {
                Some(ty) => ty,
                None => return Err(no_such_input(&info, input, at, key)),
            },
        };
        let Some(&up) = by_name.get(reference.stage.as_str()) else {
            let hint = if wanted_type == PATH_TYPE {
                Some(format!(
                    "a file or folder starts with `./` or `/` (relative to the spec): \"./{reference}\""
                ))
            } else {
                did_you_mean(&reference.stage, by_name.keys().copied())
            };
            return Err(error(
                at,
                key,
                format!("there is no stage `{}` in this pipeline", reference.stage),
                hint,
            ));
        };
        let up_info = planned[up].kind.info();
        let Some(port) = up_info.outputs.iter().find(|p| p.name == reference.output) else {
            let names: Vec<&str> = up_info.outputs.iter().map(|p| p.name).collect();
            return Err(error(
                at,
                key,
                format!(
                    "stage `{}` (kind `{}`) has no output `{}`",
                    reference.stage, up_info.kind, reference.output
                ),
                did_you_mean(&reference.output, names.iter().copied())
                    .or_else(|| Some(format!("its outputs are: {}", names.join(", ")))),
            ));
        };
        // A `path` port reads whatever folder it is given, so another
        // stage's output (e.g. `synth.tecd`'s partitions) serves as well as a
        // folder on disk.
        if port.ty != wanted_type && wanted_type != ANY_TYPE && wanted_type != PATH_TYPE {
            return Err(error(
                at,
                key,
                format!(
                    "`{reference}` is a `{}` artifact but input `{input}` of `{}` takes a `{wanted_type}`",
                    port.ty, info.kind
                ),
                None,
            ));
        }
        resolved.insert(input.clone(), (up, reference.output.clone()));
    }
    for port in info.inputs.iter().filter(|p| !p.optional) {
        if !s.inputs.contains_key(port.name) && !s.paths.contains_key(port.name) {
            let at = &specs[by_name[s.name.as_str()]].at.kind;
            return Err(error(
                at,
                format!("stages.{}.inputs", s.name),
                format!(
                    "kind `{}` needs input `{}` (a `{}` artifact)",
                    info.kind, port.name, port.ty
                ),
                Some(if port.ty == PATH_TYPE {
                    format!("add inputs = {{ {} = \"./path/to/data\" }}", port.name)
                } else {
                    format!("add inputs = {{ {} = \"<stage>.<output>\" }}", port.name)
                }),
            ));
        }
    }
    Ok(resolved)
}

/// The error for an input name the kind does not declare.
fn no_such_input(info: &KindInfo, input: &str, at: &Location, key: String) -> SpecError {
    let names = info.inputs.iter().map(|p| p.name);
    error(
        at,
        key,
        format!("kind `{}` has no input `{input}`", info.kind),
        did_you_mean(input, names),
    )
}

/// Checks the inputs written as paths: the port must take one and the file
/// or folder must exist.
fn resolve_paths(s: &StageSpec, kind: &dyn Stage) -> Result<BTreeMap<String, PathBuf>, SpecError> {
    let info = kind.info();
    let mut paths = BTreeMap::new();
    for (input, path) in &s.paths {
        let at = &s.at.inputs[input];
        let key = format!("stages.{}.inputs.{input}", s.name);
        let Some(port) = info.inputs.iter().find(|p| p.name == input) else {
            return Err(no_such_input(info, input, at, key));
        };
        if port.ty != PATH_TYPE {
            return Err(error(
                at,
                key,
                format!(
                    "input `{input}` of `{}` takes a `{}` artifact from another stage, not a path",
                    info.kind, port.ty
                ),
                Some(format!(
                    "write inputs = {{ {input} = \"<stage>.<output>\" }}"
                )),
            ));
        }
        let Ok(absolute) = path.canonicalize() else {
            return Err(error(
                at,
                key,
                format!("no such file or folder: {}", path.display()),
                Some("paths are relative to the folder of the spec file".into()),
            ));
        };
        paths.insert(input.clone(), absolute);
    }
    Ok(paths)
}

/// Dependency order, ties broken by file order; a cycle is an error naming
/// every stage in it.
fn order(spec: &Spec, stages: &[PlannedStage]) -> Result<Vec<usize>, SpecError> {
    let mut graph: DiGraph<usize, ()> = DiGraph::new();
    let nodes: Vec<NodeIndex> = (0..stages.len()).map(|i| graph.add_node(i)).collect();
    for (i, s) in stages.iter().enumerate() {
        for (up, _) in s.inputs.values() {
            graph.add_edge(nodes[*up], nodes[i], ());
        }
    }
    if toposort(&graph, None).is_err() {
        let cycle = tarjan_scc(&graph)
            .into_iter()
            .find(|scc| scc.len() > 1 || graph.contains_edge(scc[0], scc[0]))
            .unwrap_or_default();
        let mut names: Vec<usize> = cycle.iter().map(|n| graph[*n]).collect();
        names.sort();
        let first = &spec.stages[names[0]];
        let listed: Vec<&str> = names.iter().map(|i| stages[*i].name.as_str()).collect();
        return Err(error(
            &first.at.name,
            format!("stages.{}.inputs", first.name),
            format!("the stages form a cycle: {}", listed.join(" → ")),
            Some("a stage cannot depend, directly or not, on its own outputs".into()),
        ));
    }
    // Kahn's algorithm with the lowest file position first, for a stable order.
    let mut waiting: Vec<usize> = stages.iter().map(|s| s.inputs.len()).collect();
    let mut ready: BTreeSet<usize> = (0..stages.len()).filter(|i| waiting[*i] == 0).collect();
    let mut order = Vec::with_capacity(stages.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for (j, s) in stages.iter().enumerate() {
            for (up, _) in s.inputs.values() {
                if *up == i {
                    waiting[j] -= 1;
                    if waiting[j] == 0 {
                        ready.insert(j);
                    }
                }
            }
        }
    }
    Ok(order)
}
