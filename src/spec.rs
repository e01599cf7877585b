//! Pipeline specs: the TOML a user writes, as typed values that remember where
//! in the file each one came from.
//!
//! Parsing happens in two steps, like cargo's schema/manifest split:
//! [`RawSpec`] is what serde reads (every value wrapped in [`toml::Spanned`]),
//! [`Spec`] is the checked result that the rest of the engine uses. `--set`
//! overrides are applied in between, so they are checked exactly like values
//! written in the file. Stage kinds, params and input references are checked
//! against the stage registry later, in [`crate::graph`]; this module only
//! knows the shape of a pipeline file.
//!
//! ```toml
//! [pipeline]
//! name = "quickstart"
//! seed = 42
//! device = "auto"
//!
//! [stages.train]
//! kind = "train"
//! inputs = { data = "sequences.data" }   # <stage>.<output>
//! params = { model = "sasrec", lr = 1e-3 }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// A spec error: where it is (file:line:col or a `--set` flag), which key,
/// what is wrong, and a hint when one is known (did-you-mean).
#[derive(Debug, Clone, thiserror::Error)]
pub struct SpecError {
    pub location: Location,
    pub key: String,
    pub message: String,
    pub help: Option<String>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.location)?;
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A position in a spec file (1-based line and column).
    File {
        path: PathBuf,
        line: usize,
        col: usize,
    },
    /// A `--set KEY=VALUE` flag on the command line.
    Flag(String),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File { path, line, col } => write!(f, "{}:{line}:{col}", path.display()),
            Location::Flag(flag) => write!(f, "--set {flag}"),
        }
    }
}

/// The source text of a spec, to turn byte spans into locations.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    /// The 1-based line and column of a byte offset.
    pub fn location(&self, span: &Range<usize>) -> Location {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let col = before.rfind('\n').map_or(start, |nl| start - nl - 1) + 1;
        Location::File {
            path: self.path.clone(),
            line,
            col,
        }
    }
}

// ---------------------------------------------------------------------------
// What serde reads.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    pipeline: Spanned<RawPipeline>,
    #[serde(default)]
    stages: BTreeMap<Spanned<String>, Spanned<RawStage>>,
    #[serde(default)]
    sweep: Option<Spanned<crate::sweep::RawSweep>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    seed: Option<Spanned<i64>>,
    #[serde(default)]
    device: Option<Spanned<String>>,
    #[serde(default)]
    executor: Option<Executor>,
    #[serde(default)]
    slurm: Option<RawSlurm>,
    #[serde(default)]
    cache: Option<Spanned<String>>,
    #[serde(default)]
    params: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
}

/// `[pipeline] cache`: a folder, or a URL of a store seqpipe can open.
fn check_cache(cache: &Spanned<String>, source: &Source) -> Result<String, SpecError> {
    let text = cache.get_ref().trim();
    let bad = |message: String, help: &str| SpecError {
        location: source.location(&cache.span()),
        key: "pipeline.cache".into(),
        message,
        help: Some(help.into()),
    };
    if text.is_empty() {
        return Err(bad(
            "is empty".into(),
            "name a folder (relative to this file) or a store URL such as s3://bucket/prefix",
        ));
    }
    if let Some((scheme, _)) = text.split_once("://") {
        if !["s3", "gs", "az", "file"].contains(&scheme) {
            return Err(bad(
                format!("`{scheme}://` is not a cache store seqpipe knows"),
                "use s3://, gs://, az:// or file://, or a folder",
            ));
        }
    }
    Ok(text.to_string())
}

/// `slurm = { … }` on the pipeline (defaults) or a stage.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSlurm {
    cpus: Option<u32>,
    mem: Option<String>,
    gpus: Option<u32>,
    time: Option<String>,
    partition: Option<String>,
    retries: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    kind: Spanned<String>,
    #[serde(default)]
    inputs: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    params: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    // Keys only some kinds take (today the `command` kind); the kind checks
    // their values when the stage is bound (see `Stage::bind`).
    #[serde(default)]
    cmd: Option<Spanned<toml::Value>>,
    #[serde(default)]
    shell: Option<Spanned<toml::Value>>,
    #[serde(default)]
    deps: Option<Spanned<toml::Value>>,
    #[serde(default)]
    env: Option<Spanned<toml::Value>>,
    #[serde(default)]
    outputs: Option<Spanned<toml::Value>>,
    #[serde(default)]
    resource: Option<Spanned<toml::Value>>,
    #[serde(default)]
    executor: Option<Executor>,
    #[serde(default)]
    slurm: Option<RawSlurm>,
}

// ---------------------------------------------------------------------------
// The checked spec.

/// A checked pipeline spec.
#[derive(Debug, Clone)]
pub struct Spec {
    pub source: Source,
    pub name: String,
    pub description: Option<String>,
    pub seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`; resolved by the stage library.
    pub device: String,
    /// Stages in the order they appear in the file.
    pub stages: Vec<StageSpec>,
    /// The `[sweep]` table, if any (`seqpipe sweep`; `run` ignores it).
    pub sweep: Option<crate::sweep::SweepSpec>,
    /// Where stages run unless they say otherwise (`[pipeline] executor`).
    pub executor: Executor,
    /// `[pipeline] cache`: the cache to use when `--cache` (or
    /// `SEQPIPE_CACHE`) does not name one — a folder (relative to the spec
    /// file) or a store URL. Not part of any key.
    pub cache: Option<String>,
    /// The `--set` flags applied, as written: a Slurm job rebuilds the same
    /// plan from the spec file and these.
    pub overrides: Vec<String>,
    /// `[pipeline.params]`: values set once for every stage whose kind
    /// takes a param of that name and that does not set it itself (e.g. an
    /// evaluation protocol shared by `train`'s validation and `evaluate`);
    /// applied when the plan is resolved, where kinds are known. Each value
    /// with where it was written.
    pub shared_params: BTreeMap<String, (toml::Value, Location)>,
}

/// Where a stage runs. Placement never enters a key: a stage computed on a
/// cluster node is the same artifact as one computed here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Executor {
    /// In this process (or its worker), on this machine.
    #[default]
    Local,
    /// As a Slurm batch job running `seqpipe job` against the same cache.
    Slurm,
}

impl std::str::FromStr for Executor {
    type Err = String;
    fn from_str(s: &str) -> Result<Executor, String> {
        match s {
            "local" => Ok(Executor::Local),
            "slurm" => Ok(Executor::Slurm),
            other => Err(format!("`{other}` is not an executor (local or slurm)")),
        }
    }
}

/// What a stage's Slurm job asks for (`slurm = { cpus, mem, gpus, time,
/// partition, retries }`; a stage's keys override the pipeline's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlurmOptions {
    pub resources: crate::slurm::Resources,
    /// Resubmissions of a failed job before the stage fails.
    pub retries: u32,
}

impl SlurmOptions {
    pub(crate) fn merged(base: &RawSlurm, stage: &RawSlurm) -> SlurmOptions {
        SlurmOptions {
            resources: crate::slurm::Resources {
                cpus: stage.cpus.or(base.cpus),
                mem: stage.mem.clone().or_else(|| base.mem.clone()),
                gpus: stage.gpus.or(base.gpus),
                time: stage.time.clone().or_else(|| base.time.clone()),
                partition: stage.partition.clone().or_else(|| base.partition.clone()),
            },
            retries: stage.retries.or(base.retries).unwrap_or(0),
        }
    }
}

/// One `[stages.NAME]` table.
#[derive(Debug, Clone)]
pub struct StageSpec {
    pub name: String,
    pub kind: String,
    pub inputs: BTreeMap<String, InputRef>,
    /// Inputs naming a file or folder on disk (written `./…`, `../…` or
    /// `/…`), resolved against the spec file's folder.
    pub paths: BTreeMap<String, PathBuf>,
    pub params: BTreeMap<String, toml::Value>,
    /// Keys that only some kinds take (`cmd`, `shell`, `deps`, `env`,
    /// `outputs`, `resource`), with where each was written; see `Stage::bind`.
    pub extra: BTreeMap<String, (toml::Value, Location)>,
    /// The spec file's folder: relative paths in the stage are relative to it.
    pub dir: PathBuf,
    /// Where each part was written, for error messages.
    pub at: StageLocations,
    /// `executor = …` on the stage (`None`: the pipeline's).
    pub executor: Option<Executor>,
    /// Its Slurm request, merged over the pipeline's.
    pub slurm: SlurmOptions,
}

/// Locations of a stage's parts.
#[derive(Debug, Clone)]
pub struct StageLocations {
    pub name: Location,
    pub kind: Location,
    pub inputs: BTreeMap<String, Location>,
    pub params: BTreeMap<String, Location>,
}

/// An input reference `<stage>.<output>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InputRef {
    pub stage: String,
    pub output: String,
}

impl fmt::Display for InputRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.stage, self.output)
    }
}

/// A `--set STAGE.PARAM=VALUE` override.
#[derive(Debug, Clone)]
pub struct Override {
    pub stage: String,
    pub param: String,
    pub value: toml::Value,
    pub flag: String,
}

impl Override {
    /// Parses `STAGE.PARAM=VALUE`. The value is read as a TOML value
    /// (`3e-4`, `true`, `[5, 10]`, `"x"`); anything that is not valid TOML is
    /// taken as a bare string, so `--set train.model=sasrec` works.
    pub fn parse(flag: &str) -> Result<Override, SpecError> {
        let err = |message: &str| SpecError {
            location: Location::Flag(flag.to_string()),
            key: String::new(),
            message: message.to_string(),
            help: Some("write --set STAGE.PARAM=VALUE, e.g. --set train.lr=3e-4".into()),
        };
        let (path, raw) = flag.split_once('=').ok_or_else(|| err("missing `=`"))?;
        let (stage, param) = path
            .trim()
            .split_once('.')
            .ok_or_else(|| err("the key must be STAGE.PARAM"))?;
        let param = param.strip_prefix("params.").unwrap_or(param);
        if stage.is_empty() || param.is_empty() {
            return Err(err("the key must be STAGE.PARAM"));
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_string()));
        Ok(Override {
            stage: stage.to_string(),
            param: param.to_string(),
            value,
            flag: flag.to_string(),
        })
    }
}

/// Reads and checks a spec file, applying `overrides` on top of it.
pub fn load(path: &Path, overrides: &[Override]) -> Result<Spec, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|e| SpecError {
        location: Location::File {
            path: path.to_path_buf(),
            line: 1,
            col: 1,
        },
        key: String::new(),
        message: format!("cannot read the spec: {e}"),
        help: None,
    })?;
    parse(
        Source {
            path: path.to_path_buf(),
            text,
        },
        overrides,
    )
}

/// Parses and checks spec text.
pub fn parse(source: Source, overrides: &[Override]) -> Result<Spec, SpecError> {
    let raw: RawSpec = toml::from_str(&source.text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        SpecError {
            location: source.location(&span),
            key: key_at(&source.text, &span),
            message: e.message().trim().to_string(),
            help: None,
        }
    })?;
    check(raw, source, overrides)
}

/// The dotted key a span points into, best effort, for TOML syntax errors.
fn key_at(text: &str, span: &Range<usize>) -> String {
    let line_start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    line.split_once('=')
        .map(|(k, _)| k.trim().to_string())
        .unwrap_or_default()
}

fn check(raw: RawSpec, source: Source, overrides: &[Override]) -> Result<Spec, SpecError> {
    let pipeline = raw.pipeline.into_inner();
    let name = pipeline.name.get_ref().trim().to_string();
    if name.is_empty() || !name.chars().all(is_name_char) {
        return Err(SpecError {
            location: source.location(&pipeline.name.span()),
            key: "pipeline.name".into(),
            message: format!("`{name}` is not a valid name (letters, digits, `_` and `-`)"),
            help: None,
        });
    }
    let seed = match &pipeline.seed {
        None => 0,
        Some(s) if *s.get_ref() >= 0 => *s.get_ref() as u64,
        Some(s) => {
            return Err(SpecError {
                location: source.location(&s.span()),
                key: "pipeline.seed".into(),
                message: "the seed must be zero or positive".into(),
                help: None,
            })
        }
    };
    let device = match &pipeline.device {
        None => "auto".to_string(),
        Some(d) => check_device(d, &source)?,
    };

    let cache = match &pipeline.cache {
        None => None,
        Some(c) => Some(check_cache(c, &source)?),
    };
    let slurm_defaults = pipeline.slurm.clone().unwrap_or_default();
    let shared_params = pipeline
        .params
        .into_iter()
        .map(|(key, value)| {
            let at = source.location(&key.span());
            (key.into_inner(), (value.into_inner(), at))
        })
        .collect();
    let mut stages = Vec::new();
    for (name, stage) in raw.stages {
        let span = name.span();
        stages.push((
            span.start,
            check_stage(name, stage, &source, &slurm_defaults)?,
        ));
    }
    stages.sort_by_key(|(start, _)| *start);
    let mut stages: Vec<StageSpec> = stages.into_iter().map(|(_, s)| s).collect();
    apply_overrides(&mut stages, overrides)?;
    let sweep = match raw.sweep {
        Some(sweep) => Some(crate::sweep::check(
            sweep,
            &source,
            &stages,
            seed,
            &slurm_defaults,
        )?),
        None => None,
    };

    Ok(Spec {
        source,
        name,
        description: pipeline.description,
        seed,
        device,
        stages,
        sweep,
        executor: pipeline.executor.unwrap_or_default(),
        cache,
        overrides: overrides.iter().map(|o| o.flag.clone()).collect(),
        shared_params,
    })
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn check_device(d: &Spanned<String>, source: &Source) -> Result<String, SpecError> {
    let v = d.get_ref().trim();
    let ok = matches!(v, "auto" | "cpu" | "cuda")
        || v.strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<usize>().is_ok());
    if ok {
        Ok(v.to_string())
    } else {
        Err(SpecError {
            location: source.location(&d.span()),
            key: "pipeline.device".into(),
            message: format!("unknown device `{v}`"),
            help: Some("use one of auto, cpu, cuda, cuda:N".into()),
        })
    }
}

fn check_stage(
    name: Spanned<String>,
    stage: Spanned<RawStage>,
    source: &Source,
    slurm_defaults: &RawSlurm,
) -> Result<StageSpec, SpecError> {
    let name_loc = source.location(&name.span());
    let name = name.into_inner();
    if !name.chars().all(is_name_char) {
        return Err(SpecError {
            location: name_loc,
            key: format!("stages.{name}"),
            message: format!("`{name}` is not a valid stage name (letters, digits, `_` and `-`)"),
            help: None,
        });
    }
    let stage = stage.into_inner();
    let base = spec_dir(&source.path);
    let mut extra = BTreeMap::new();
    for (key, value) in [
        ("cmd", stage.cmd),
        ("shell", stage.shell),
        ("deps", stage.deps),
        ("env", stage.env),
        ("outputs", stage.outputs),
        ("resource", stage.resource),
    ] {
        if let Some(value) = value {
            let loc = source.location(&value.span());
            extra.insert(key.to_string(), (value.into_inner(), loc));
        }
    }
    let mut inputs = BTreeMap::new();
    let mut paths = BTreeMap::new();
    let mut input_locs = BTreeMap::new();
    for (input, reference) in stage.inputs {
        let loc = source.location(&reference.span());
        let key = format!("stages.{name}.inputs.{}", input.get_ref());
        let text = reference.get_ref().trim();
        if is_path(text) {
            paths.insert(input.get_ref().clone(), base.join(text));
            input_locs.insert(input.into_inner(), loc);
            continue;
        }
        let parsed = parse_input_ref(text).ok_or_else(|| SpecError {
            location: loc.clone(),
            key,
            message: format!(
                "`{text}` is not an input reference: write `<stage>.<output>`, or a path \
                 starting with `./`, `../` or `/`"
            ),
            help: Some("e.g. inputs = { data = \"sequences.data\" }".into()),
        })?;
        input_locs.insert(input.get_ref().clone(), loc);
        inputs.insert(input.into_inner(), parsed);
    }
    let mut params = BTreeMap::new();
    let mut param_locs = BTreeMap::new();
    for (key, value) in stage.params {
        param_locs.insert(key.get_ref().clone(), source.location(&key.span()));
        params.insert(key.into_inner(), value.into_inner());
    }
    Ok(StageSpec {
        kind: stage.kind.get_ref().trim().to_string(),
        at: StageLocations {
            name: name_loc,
            kind: source.location(&stage.kind.span()),
            inputs: input_locs,
            params: param_locs,
        },
        name,
        inputs,
        paths,
        params,
        extra,
        dir: base,
        executor: stage.executor,
        slurm: SlurmOptions::merged(slurm_defaults, &stage.slurm.unwrap_or_default()),
    })
}

/// The folder of the spec file, absolute when it exists (`p.toml` → the
/// current folder), so commands and paths resolve the same from anywhere.
fn spec_dir(spec: &Path) -> PathBuf {
    let parent = match spec.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    parent
        .canonicalize()
        .unwrap_or_else(|_| parent.to_path_buf())
}

/// Whether an input value names a file or folder rather than `<stage>.<output>`.
fn is_path(text: &str) -> bool {
    text.starts_with('/') || text.starts_with("./") || text.starts_with("../")
}

fn parse_input_ref(text: &str) -> Option<InputRef> {
    let (stage, output) = text.trim().split_once('.')?;
    let valid = |s: &str| !s.is_empty() && s.chars().all(is_name_char);
    (valid(stage) && valid(output)).then(|| InputRef {
        stage: stage.to_string(),
        output: output.to_string(),
    })
}

fn apply_overrides(stages: &mut [StageSpec], overrides: &[Override]) -> Result<(), SpecError> {
    for o in overrides {
        let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
        let help = did_you_mean(&o.stage, names.iter().copied());
        let Some(stage) = stages.iter_mut().find(|s| s.name == o.stage) else {
            return Err(SpecError {
                location: Location::Flag(o.flag.clone()),
                key: o.stage.clone(),
                message: format!("there is no stage `{}` in this pipeline", o.stage),
                help,
            });
        };
        stage.params.insert(o.param.clone(), o.value.clone());
        stage
            .at
            .params
            .insert(o.param.clone(), Location::Flag(o.flag.clone()));
    }
    Ok(())
}

/// `did you mean `x`?` for the closest candidate, when one is close enough.
pub fn did_you_mean<'a>(
    wrong: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(wrong, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> Source {
        Source {
            path: "p.toml".into(),
            text: text.into(),
        }
    }

    #[test]
    fn locations_are_one_based() {
        let s = src("ab\ncde\n");
        let Location::File { line, col, .. } = s.location(&(4..5)) else {
            panic!()
        };
        assert_eq!((line, col), (2, 2));
    }

    #[test]
    fn overrides_parse_toml_values_and_bare_strings() {
        let o = Override::parse("train.lr=3e-4").unwrap();
        assert_eq!(o.value, toml::Value::Float(3e-4));
        let o = Override::parse("train.model=sasrec").unwrap();
        assert_eq!(o.value, toml::Value::String("sasrec".into()));
        let o = Override::parse("eval.params.k=[5, 10]").unwrap();
        assert_eq!(o.param, "k");
        assert!(Override::parse("nodot=1").is_err());
    }

    #[test]
    fn stages_keep_file_order() {
        let spec = parse(
            src("[pipeline]\nname='p'\n[stages.b]\nkind='x'\n[stages.a]\nkind='y'\n"),
            &[],
        )
        .unwrap();
        let names: Vec<_> = spec.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
    }
}
