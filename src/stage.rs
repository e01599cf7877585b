//! The contract between the engine and a stage kind.
//!
//! A stage kind is a plain function of (params, input artifacts) → output
//! artifacts behind the [`Stage`] trait. It never touches the cache: the
//! engine hands it read-only input folders and empty output folders through a
//! [`StageContext`], and publishes what it wrote once it returns `Ok`.
//! Most kinds implement the typed [`TypedStage`] instead and are registered
//! with [`Registry::register`], which derives param checking, defaults and
//! canonical params (the part of the key that a user controls) from a serde
//! `Params` struct.
//!
//! Artifact types are names chosen by the stage library (`table`, `model`,
//! `metrics`…); the engine only checks that an output and the input consuming
//! it agree on the name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::artifact::{ArtifactCheck, ArtifactType};
use crate::progress::Progress;
use crate::spec::{SpecError, StageSpec};

/// An input or output port of a stage kind.
#[derive(Debug, Clone, Serialize)]
pub struct Port {
    pub name: &'static str,
    /// Artifact type name, e.g. `table` or `model`.
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub doc: &'static str,
    /// An input the stage can run without (e.g. `train`'s `init`
    /// embeddings); the stage asks with [`StageContext::optional_input`].
    /// Outputs are never optional.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

/// A documented parameter; its default comes from the kind's `Params::default()`.
#[derive(Debug, Clone, Serialize)]
pub struct ParamDoc {
    pub name: &'static str,
    pub doc: &'static str,
}

/// Which executor slot a stage needs: tensor stages are serialised per device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    Cpu,
    Tensor,
}

/// The catalogue entry of a stage kind (`seqpipe stages` prints these).
#[derive(Debug, Clone, Serialize)]
pub struct KindInfo {
    pub kind: &'static str,
    /// Bump when the outputs for the same inputs and params would change; it
    /// is part of every key, so old cache entries are not reused.
    pub version: u32,
    pub summary: &'static str,
    pub inputs: Vec<Port>,
    /// When set, the kind also accepts any number of extra inputs of this
    /// artifact type, under names the user chooses (e.g. `report`).
    pub extra_inputs: Option<&'static str>,
    pub outputs: Vec<Port>,
    pub params: Vec<ParamDoc>,
    pub resource: Resource,
}

/// A stage kind, object-safe. Implement [`TypedStage`] instead where you can.
pub trait Stage: Send + Sync {
    fn info(&self) -> &KindInfo;
    /// Every param with its default value, as JSON.
    fn defaults(&self) -> serde_json::Value;
    /// Checks one param alone; `Err` says what is wrong with it.
    fn check_param(&self, key: &str, value: &toml::Value) -> Result<(), String>;
    /// Checks all params together and returns them canonical: defaults
    /// filled in, keys sorted. This JSON is what enters the key.
    fn canonical_params(
        &self,
        params: &BTreeMap<String, toml::Value>,
    ) -> Result<serde_json::Value, String>;
    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<()>;
    /// For a kind whose ports depend on the stage's own TOML (a `command`
    /// stage declares its outputs, deps and argv there): returns the stage
    /// bound to `spec`, which the plan then uses in place of the kind. It
    /// may add path inputs to `spec` (e.g. `deps`). `None`: the kind is the
    /// same for every stage, and keys in `spec.extra` are errors.
    fn bind(
        &self,
        _spec: &mut StageSpec,
        _registry: &Registry,
    ) -> Option<Result<Arc<dyn Stage>, SpecError>> {
        None
    }
}

/// A stage kind with typed params. `Params` must use `#[serde(default,
/// deny_unknown_fields)]` so that every key is optional and typos are errors.
pub trait TypedStage: Send + Sync + 'static {
    type Params: Serialize + DeserializeOwned + Default;
    fn info(&self) -> KindInfo;
    /// The params as they enter the key. Override to leave out params that
    /// do not affect the outputs in this configuration (e.g. a learning rate
    /// when the model has nothing to train), so changing them reruns nothing.
    fn canonical(&self, params: &Self::Params) -> serde_json::Value {
        serde_json::to_value(params).unwrap_or_default()
    }
    /// Checks the params together, before anything runs; `Err` says which
    /// key is wrong and why (e.g. `model: unknown model "sasrek"`), and the
    /// run stops with a spec error at the stage's TOML line.
    fn validate(&self, _params: &Self::Params) -> Result<(), String> {
        Ok(())
    }
    fn run(&self, params: Self::Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()>;
}

/// The tag of a float JSON cannot write (`inf`, `-inf`) in canonical params.
pub const FLOAT_TAG: &str = "$__seqpipe_float";

/// The tag of a TOML date-time in canonical params: toml's own serde form,
/// so that keys made before seqpipe knew of date-times stay as they were.
pub const DATETIME_TAG: &str = "$__toml_private_datetime";

/// One TOML value as canonical JSON, the form params take in a key and on
/// their way to a stage. Strings, integers, finite floats, booleans, arrays
/// and tables are what serde_json makes of them (existing keys depend on
/// it); `inf` and `-inf`, which serde_json would both write as `null`, are
/// `{"$__seqpipe_float": "inf"}` and `"-inf"`; a date-time is
/// `{"$__toml_private_datetime": "<its TOML text>"}`. `Err` for what no key
/// can hold: `nan`, which equals nothing, not even itself, and table keys
/// starting with `$__`, which could pass for a tagged value. The message
/// names the place inside the value (`[2]`, `.a.b`) when it is nested.
pub fn canonical_json(value: &toml::Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    let at = |path: &str| {
        if path.is_empty() {
            String::new()
        } else {
            format!(" (at `{path}`)")
        }
    };
    fn walk(value: &toml::Value, path: &mut String) -> Result<J, (String, String)> {
        Ok(match value {
            toml::Value::String(s) => J::String(s.clone()),
            toml::Value::Integer(i) => J::from(*i),
            toml::Value::Boolean(b) => J::Bool(*b),
            toml::Value::Float(f) if f.is_nan() => {
                return Err((
                    path.clone(),
                    "is nan, which equals no value (not even itself), so it cannot be \
                     part of a stage key"
                        .into(),
                ))
            }
            toml::Value::Float(f) if f.is_infinite() => {
                let text = if *f > 0.0 { "inf" } else { "-inf" };
                serde_json::json!({ FLOAT_TAG: text })
            }
            toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            toml::Value::Datetime(d) => serde_json::json!({ DATETIME_TAG: d.to_string() }),
            toml::Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    out.push(walk(item, path)?);
                    path.truncate(len);
                }
                J::Array(out)
            }
            toml::Value::Table(table) => {
                let mut out = serde_json::Map::new();
                for (key, item) in table {
                    let len = path.len();
                    path.push('.');
                    path.push_str(key);
                    if key.starts_with("$__") {
                        return Err((
                            path.clone(),
                            format!("`{key}`: table keys starting with `$__` are reserved"),
                        ));
                    }
                    out.insert(key.clone(), walk(item, path)?);
                    path.truncate(len);
                }
                J::Object(out)
            }
        })
    }
    walk(value, &mut String::new()).map_err(|(path, m)| format!("{m}{}", at(&path)))
}

/// A params table as canonical JSON (see [`canonical_json`]); `Err` names
/// the param.
pub fn canonical_table(
    params: &BTreeMap<String, toml::Value>,
) -> Result<serde_json::Value, String> {
    let mut out = serde_json::Map::new();
    for (key, value) in params {
        let json = canonical_json(value).map_err(|m| format!("`{key}` {m}"))?;
        out.insert(key.clone(), json);
    }
    Ok(out.into())
}

/// Whether `value` is or holds an infinite float.
fn holds_infinity(value: &toml::Value) -> bool {
    match value {
        toml::Value::Float(f) => f.is_infinite(),
        toml::Value::Array(items) => items.iter().any(holds_infinity),
        toml::Value::Table(table) => table.values().any(holds_infinity),
        _ => false,
    }
}

struct Typed<T: TypedStage> {
    stage: T,
    info: KindInfo,
}

fn to_params<P: DeserializeOwned>(params: &BTreeMap<String, toml::Value>) -> Result<P, String> {
    let table: toml::Table = params.clone().into_iter().collect();
    toml::Value::Table(table)
        .try_into::<P>()
        .map_err(|e| e.to_string().trim().to_string())
}

impl<T: TypedStage> Stage for Typed<T> {
    fn info(&self) -> &KindInfo {
        &self.info
    }

    fn defaults(&self) -> serde_json::Value {
        serde_json::to_value(T::Params::default()).unwrap_or_default()
    }

    fn check_param(&self, key: &str, value: &toml::Value) -> Result<(), String> {
        // A typed kind gets its params through serde_json, which writes an
        // infinity as `null`: `inf` and `-inf` would share a key, and the
        // stage could not read either back.
        if holds_infinity(value) {
            return Err("is infinite, and built-in kinds take finite numbers only \
                        (write a large finite one such as 1e308)"
                .into());
        }
        let one = BTreeMap::from([(key.to_string(), value.clone())]);
        to_params::<T::Params>(&one).map(|_| ())
    }

    fn canonical_params(
        &self,
        params: &BTreeMap<String, toml::Value>,
    ) -> Result<serde_json::Value, String> {
        let typed: T::Params = to_params(params)?;
        self.stage.validate(&typed)?;
        Ok(self.stage.canonical(&typed))
    }

    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let params: T::Params = serde_json::from_value(ctx.params.clone())?;
        self.stage.run(params, ctx)
    }
}

/// Facts about the runtime a stage library wants in every run manifest
/// (e.g. the LibTorch version and the device), gathered lazily.
pub type EnvironmentProbe = fn(device: &str) -> BTreeMap<String, String>;

/// The stage kinds a binary offers, by kind name, and the artifact types
/// whose contents can be checked (what a `command` stage may declare).
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn Stage>>,
    artifact_types: BTreeMap<&'static str, ArtifactType>,
    probe: Option<EnvironmentProbe>,
}

impl Registry {
    /// The engine's own kinds (`command`) and artifact types (`dir`,
    /// `file`, `metrics`, `log`); a stage library adds its own.
    pub fn new() -> Registry {
        let mut r = Registry::default();
        r.register_dyn(Arc::new(crate::command::CommandKind));
        for t in crate::artifact::builtin_types() {
            r.artifact_types.insert(t.name, t);
        }
        r
    }

    /// Declares an artifact type that `command` stages may produce, with the
    /// check their output must pass before it is published.
    pub fn register_artifact_type(
        &mut self,
        name: &'static str,
        doc: &'static str,
        check: ArtifactCheck,
    ) -> &mut Self {
        self.artifact_types
            .insert(name, ArtifactType { name, doc, check });
        self
    }

    pub fn artifact_type(&self, name: &str) -> Option<&ArtifactType> {
        self.artifact_types.get(name)
    }

    pub fn artifact_types(&self) -> impl Iterator<Item = &ArtifactType> {
        self.artifact_types.values()
    }

    /// Adds a typed stage kind.
    pub fn register<T: TypedStage>(&mut self, stage: T) -> &mut Self {
        let info = stage.info();
        self.register_dyn(Arc::new(Typed { stage, info }))
    }

    /// Adds an object-safe stage kind.
    pub fn register_dyn(&mut self, stage: Arc<dyn Stage>) -> &mut Self {
        self.kinds.insert(stage.info().kind, stage);
        self
    }

    /// Sets the function that describes the runtime in run manifests.
    pub fn set_environment_probe(&mut self, probe: EnvironmentProbe) -> &mut Self {
        self.probe = Some(probe);
        self
    }

    pub fn environment(&self, device: &str) -> BTreeMap<String, String> {
        self.probe.map(|p| p(device)).unwrap_or_default()
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Stage>> {
        self.kinds.get(kind)
    }

    pub fn kinds(&self) -> impl Iterator<Item = &Arc<dyn Stage>> {
        self.kinds.values()
    }

    pub fn kind_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }
}

/// What a running stage sees: its params, its inputs (read-only folders), the
/// empty folders to write its outputs into, a checkpoint folder that survives
/// a killed run, and a progress reporter.
pub struct StageContext<'a> {
    pub stage: &'a str,
    /// Canonical params (defaults filled in).
    pub params: serde_json::Value,
    pub seed: u64,
    /// The pipeline's device request: `auto`, `cpu`, `cuda`, `cuda:N`.
    pub device: &'a str,
    pub inputs: BTreeMap<String, PathBuf>,
    pub outputs: BTreeMap<String, PathBuf>,
    /// Kept between attempts with the same key; removed once the stage succeeds.
    pub checkpoint_dir: PathBuf,
    pub progress: &'a Progress,
    /// Facts the stage wants recorded in the run manifest (e.g. the device it
    /// actually ran on).
    pub notes: BTreeMap<String, String>,
}

impl StageContext<'_> {
    /// The folder of input `name`.
    pub fn input(&self, name: &str) -> anyhow::Result<&Path> {
        self.inputs
            .get(name)
            .map(PathBuf::as_path)
            .ok_or_else(|| anyhow::anyhow!("stage `{}` has no input named `{name}`", self.stage))
    }

    /// Input `name` when the spec gave it, `None` when it left the optional
    /// port out.
    pub fn optional_input(&self, name: &str) -> Option<&Path> {
        self.inputs.get(name).map(PathBuf::as_path)
    }

    /// The (empty) folder to write output `name` into.
    pub fn output(&self, name: &str) -> anyhow::Result<&Path> {
        self.outputs
            .get(name)
            .map(PathBuf::as_path)
            .ok_or_else(|| anyhow::anyhow!("stage `{}` has no output named `{name}`", self.stage))
    }

    /// Records a fact in the run manifest.
    pub fn note(&mut self, key: &str, value: impl ToString) {
        self.notes.insert(key.to_string(), value.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn ordinary_values_encode_as_serde_json_writes_them() {
        // Existing keys depend on it: whatever serde_json made of a value
        // before, the canonical form is the same.
        let table = values(
            r#"
s = "hé \"q\""
i = -7
big = 9007199254740993
f = 0.1
e = 3e-4
z = -0.0
b = true
a = [1, 2.5, "x", [true], []]
t = { n = 1, m = { k = "v" } }
when = 1979-05-27T07:32:00.5-07:00
day = 1979-05-27
at = 07:32:00
local = 1979-05-27T07:32:00
"#,
        );
        for (key, value) in &table {
            assert_eq!(
                canonical_json(value).unwrap(),
                serde_json::to_value(value).unwrap(),
                "{key}"
            );
        }
    }

    #[test]
    fn infinities_are_tagged_and_nan_and_reserved_keys_refused() {
        let table = values(
            "p = inf\nn = -inf\nnan = nan\nlist = [1, [2, -nan]]\nt = { a = { \"$__x\" = 1 } }",
        );
        let p = canonical_json(&table["p"]).unwrap();
        let n = canonical_json(&table["n"]).unwrap();
        assert_eq!(p, serde_json::json!({ FLOAT_TAG: "inf" }));
        assert_eq!(n, serde_json::json!({ FLOAT_TAG: "-inf" }));
        assert_ne!(p, n);
        let e = canonical_json(&table["nan"]).unwrap_err();
        assert!(e.starts_with("is nan"), "{e}");
        let e = canonical_json(&table["list"]).unwrap_err();
        assert!(e.contains("(at `[1][1]`)"), "{e}");
        let e = canonical_json(&table["t"]).unwrap_err();
        assert!(
            e.contains("`$__x`: table keys starting with `$__` are reserved (at `.a.$__x`)"),
            "{e}"
        );
        let all: BTreeMap<String, toml::Value> = values("x = nan").into_iter().collect();
        assert!(canonical_table(&all).unwrap_err().starts_with("`x` is nan"));
    }
}
