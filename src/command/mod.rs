//! `command` stages: a researcher's own script as a pipeline stage, cached,
//! checked and resumable like a built-in one.
//!
//! ```toml
//! [stages.my_model]
//! kind    = "command"
//! cmd     = ["python", "train.py", "--lr", "{params.lr}", "--data", "{inputs.data}", "--out", "{outputs.model}"]
//! deps    = ["train.py", "common/"]     # read by the command: hashed into the key
//! inputs  = { data = "sequences.data" }
//! outputs = { model = "dir", scores = "metrics" }
//! params  = { lr = 1e-3 }
//! ```
//!
//! Unlike the other kinds, a command's ports are written in its own TOML,
//! so [`CommandKind::bind`] turns each `[stages.X]` into a [`CommandStage`]
//! with those ports. Its key covers the argv, `shell`, `env`, the declared
//! outputs and params (its canonical params), the content of every `deps`
//! file or folder (as path inputs, named `dep:<path>`, so `status` says
//! which changed), the inputs' hashes and the seed.
//!
//! The process runs in the spec file's folder without a shell (`shell =
//! true` runs `cmd`, then one string, with `sh -c`, every placeholder
//! turned into a variable reference so that no value is ever shell text:
//! [`shell`]), sees its values both as placeholders ([`template`]) and as
//! `SEQPIPE_*` environment variables — every path among them absolute —
//! and writes into the empty output folders the engine gives it. When it
//! exits 0 every output is checked against its declared artifact type
//! ([`crate::artifact`]); any failure publishes nothing and the error quotes
//! the end of its stderr. stdout and stderr are kept as the `log` output.

pub mod process;
pub mod shell;
pub mod template;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use crate::artifact::ArtifactType;
use crate::graph::{ANY_TYPE, PATH_TYPE};
use crate::spec::{Location, SpecError, StageSpec};
use crate::stage::{KindInfo, Port, Registry, Resource, Stage, StageContext};
use shell::ShellScript;
use template::{Names, Template, Values};

/// The kind name.
pub const KIND: &str = "command";

/// Bump when the same command would now publish different outputs.
pub const VERSION: u32 = 1;

/// The output every command stage has: its stdout and stderr.
pub const LOG_OUTPUT: &str = "log";

/// Keys of a command's canonical params that are not user params.
const RESERVED: [&str; 5] = ["cmd", "shell", "env", "outputs", "resource"];

/// The registered kind; every `kind = "command"` stage is bound to its spec.
pub struct CommandKind;

fn unbound_info() -> &'static KindInfo {
    static INFO: OnceLock<KindInfo> = OnceLock::new();
    INFO.get_or_init(|| KindInfo {
        kind: KIND,
        version: VERSION,
        summary: "Runs your own program (cmd = [argv…]) on the stage's inputs; declare \
                  outputs = { NAME = TYPE } and deps = [files it reads]. Placeholders \
                  {params.X} {inputs.X} {outputs.X} {checkpoint_dir} {seed} {device}.",
        inputs: vec![],
        extra_inputs: Some(ANY_TYPE),
        outputs: vec![Port {
            optional: false,
            name: LOG_OUTPUT,
            ty: "log",
            doc: "stdout.txt and stderr.txt",
        }],
        params: vec![],
        resource: Resource::Cpu,
    })
}

impl Stage for CommandKind {
    fn info(&self) -> &KindInfo {
        unbound_info()
    }

    fn defaults(&self) -> serde_json::Value {
        serde_json::json!({})
    }

    fn check_param(&self, _key: &str, _value: &toml::Value) -> Result<(), String> {
        Ok(())
    }

    fn canonical_params(
        &self,
        _params: &BTreeMap<String, toml::Value>,
    ) -> Result<serde_json::Value, String> {
        Err("a command stage is bound to its spec before its params are read".into())
    }

    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        anyhow::bail!("stage `{}`: a command stage runs once bound", ctx.stage)
    }

    fn bind(
        &self,
        spec: &mut StageSpec,
        registry: &Registry,
    ) -> Option<Result<Arc<dyn Stage>, SpecError>> {
        Some(CommandStage::bind(spec, registry).map(|s| Arc::new(s) as Arc<dyn Stage>))
    }
}

/// A command stage bound to its `[stages.X]` table.
pub struct CommandStage {
    info: KindInfo,
    /// `cmd` as argv templates, or the one script when `shell` is set.
    argv: Vec<Template>,
    /// With `shell = true`: the script, its placeholders as variables.
    script: Option<ShellScript>,
    env: BTreeMap<String, Template>,
    /// Output name → declared type (without `log`).
    outputs: BTreeMap<String, ArtifactType>,
    /// Declared inputs (stage outputs and paths), without `deps`.
    inputs: Vec<String>,
    /// The user's params, as JSON.
    params: serde_json::Value,
    /// `cmd`, `shell`, `env`, `outputs`, `resource` as written: part of the key.
    settings: serde_json::Map<String, serde_json::Value>,
    /// Where the command runs: the spec file's folder.
    dir: PathBuf,
}

/// A port name that lives as long as the process: a plan is built once per
/// command, and `Port` keeps `&'static str` names so the built-in kinds can
/// declare theirs as literals.
fn leak(name: String) -> &'static str {
    Box::leak(name.into_boxed_str())
}

/// A spec error about key `key` of stage `spec`.
fn spec_error(spec: &StageSpec, at: &Location, key: &str, message: String) -> SpecError {
    SpecError {
        location: at.clone(),
        key: format!("stages.{}.{key}", spec.name),
        message,
        help: None,
    }
}

impl CommandStage {
    fn bind(spec: &mut StageSpec, registry: &Registry) -> Result<CommandStage, SpecError> {
        let kind_at = spec.at.kind.clone();
        for name in spec.params.keys() {
            if RESERVED.contains(&name.as_str()) {
                let at = spec.at.params.get(name).unwrap_or(&kind_at).clone();
                return Err(with_help(
                    spec_error(
                        spec,
                        &at,
                        &format!("params.{name}"),
                        format!("`{name}` is a setting of the command stage, not a param"),
                    ),
                    format!("write `{name} = …` directly under [stages.{}]", spec.name),
                ));
            }
        }
        let outputs = bind_outputs(spec, registry)?;
        let shell = match spec.extra.get("shell") {
            None => false,
            Some((toml::Value::Boolean(b), _)) => *b,
            Some((_, at)) => {
                return Err(spec_error(
                    spec,
                    at,
                    "shell",
                    "must be true or false".into(),
                ))
            }
        };
        let resource = bind_resource(spec)?;
        let deps = bind_deps(spec)?;
        let mut inputs: Vec<String> = spec
            .inputs
            .keys()
            .chain(spec.paths.keys())
            .cloned()
            .collect();
        inputs.sort();
        let input_names: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let output_names: Vec<&str> = outputs.keys().map(String::as_str).collect();
        let names = Names {
            params: spec.params.keys().map(String::as_str).collect(),
            inputs: input_names,
            outputs: output_names,
        };
        let (argv, script, cmd_json) = bind_cmd(spec, shell, &names)?;
        let (env, env_json) = bind_env(spec, &names)?;
        let params = crate::stage::canonical_table(&spec.params)
            .map_err(|e| spec_error(spec, &kind_at, "params", e))?;
        let mut settings = serde_json::Map::new();
        settings.insert("cmd".into(), cmd_json);
        settings.insert("shell".into(), shell.into());
        settings.insert("env".into(), env_json);
        settings.insert(
            "outputs".into(),
            outputs
                .iter()
                .map(|(n, t)| (n.clone(), serde_json::Value::from(t.name)))
                .collect(),
        );
        if resource == Resource::Tensor {
            settings.insert("resource".into(), "tensor".into());
        }
        let info = bound_info(&spec.inputs, &spec.paths, &deps, &outputs, resource);
        for (name, path, at) in deps {
            spec.at.inputs.insert(name.clone(), at);
            spec.paths.insert(name, path);
        }
        Ok(CommandStage {
            info,
            argv,
            script,
            env,
            outputs,
            inputs,
            params,
            settings,
            dir: spec.dir.clone(),
        })
    }
}

fn with_help(mut error: SpecError, help: String) -> SpecError {
    error.help = Some(help);
    error
}

fn bound_info(
    refs: &BTreeMap<String, crate::spec::InputRef>,
    paths: &BTreeMap<String, PathBuf>,
    deps: &[(String, PathBuf, Location)],
    outputs: &BTreeMap<String, ArtifactType>,
    resource: Resource,
) -> KindInfo {
    let mut inputs: Vec<Port> = refs
        .keys()
        .map(|n| Port {
            optional: false,
            name: leak(n.clone()),
            ty: ANY_TYPE,
            doc: "an input of any artifact type",
        })
        .collect();
    inputs.extend(paths.keys().map(|n| Port {
        optional: false,
        name: leak(n.clone()),
        ty: PATH_TYPE,
        doc: "a file or folder on disk",
    }));
    inputs.extend(deps.iter().map(|(n, _, _)| Port {
        optional: false,
        name: leak(n.clone()),
        ty: PATH_TYPE,
        doc: "a file or folder the command reads (deps)",
    }));
    let mut ports: Vec<Port> = outputs
        .iter()
        .map(|(n, t)| Port {
            optional: false,
            name: leak(n.clone()),
            ty: t.name,
            doc: t.doc,
        })
        .collect();
    ports.push(unbound_info().outputs[0].clone());
    KindInfo {
        kind: KIND,
        version: VERSION,
        summary: unbound_info().summary,
        inputs,
        extra_inputs: None,
        outputs: ports,
        params: vec![],
        resource,
    }
}

fn bind_outputs(
    spec: &StageSpec,
    registry: &Registry,
) -> Result<BTreeMap<String, ArtifactType>, SpecError> {
    let known: Vec<&str> = registry
        .artifact_types()
        .map(|t| t.name)
        .filter(|n| *n != "log")
        .collect();
    let Some((value, at)) = spec.extra.get("outputs") else {
        return Err(with_help(
            spec_error(
                spec,
                &spec.at.kind,
                "outputs",
                "a command stage must declare its outputs".into(),
            ),
            format!(
                "add outputs = {{ NAME = \"TYPE\" }}; TYPE is one of {}",
                known.join(", ")
            ),
        ));
    };
    let Some(table) = value.as_table() else {
        return Err(spec_error(
            spec,
            at,
            "outputs",
            "must be a table: outputs = { NAME = \"TYPE\" }".into(),
        ));
    };
    let mut outputs = BTreeMap::new();
    for (name, ty) in table {
        let key = format!("outputs.{name}");
        if name == LOG_OUTPUT {
            return Err(spec_error(
                spec,
                at,
                &key,
                "`log` is the command's own output (stdout and stderr); pick another name".into(),
            ));
        }
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(spec_error(
                spec,
                at,
                &key,
                format!("`{name}` is not a valid output name (letters, digits, `_` and `-`)"),
            ));
        }
        let ty_name = ty.as_str().unwrap_or("");
        let Some(ty) = registry.artifact_type(ty_name).filter(|t| t.name != "log") else {
            let help = crate::spec::did_you_mean(ty_name, known.iter().copied())
                .unwrap_or_else(|| format!("the types are: {}", known.join(", ")));
            return Err(with_help(
                spec_error(spec, at, &key, format!("unknown artifact type {ty}")),
                help,
            ));
        };
        outputs.insert(name.clone(), *ty);
    }
    if outputs.is_empty() {
        return Err(spec_error(
            spec,
            at,
            "outputs",
            "declare at least one output".into(),
        ));
    }
    Ok(outputs)
}

fn bind_resource(spec: &StageSpec) -> Result<Resource, SpecError> {
    match spec.extra.get("resource") {
        None => Ok(Resource::Cpu),
        Some((toml::Value::String(s), _)) if s == "cpu" => Ok(Resource::Cpu),
        Some((toml::Value::String(s), _)) if s == "tensor" => Ok(Resource::Tensor),
        Some((_, at)) => Err(with_help(
            spec_error(spec, at, "resource", "must be \"cpu\" or \"tensor\"".into()),
            "\"tensor\" runs it one at a time with the other tensor stages (it uses the GPU)"
                .into(),
        )),
    }
}

/// `deps` as path inputs named `dep:<path as written>`.
fn bind_deps(spec: &StageSpec) -> Result<Vec<(String, PathBuf, Location)>, SpecError> {
    let Some((value, at)) = spec.extra.get("deps") else {
        return Ok(vec![]);
    };
    let items = value.as_array().ok_or_else(|| {
        spec_error(
            spec,
            at,
            "deps",
            "must be a list of files and folders".into(),
        )
    })?;
    let mut deps = Vec::new();
    for item in items {
        let Some(text) = item.as_str().filter(|t| !t.trim().is_empty()) else {
            return Err(spec_error(
                spec,
                at,
                "deps",
                format!("{item} is not a path"),
            ));
        };
        deps.push((format!("dep:{text}"), spec.dir.join(text), at.clone()));
    }
    Ok(deps)
}

type BoundCmd = (Vec<Template>, Option<ShellScript>, serde_json::Value);

fn bind_cmd(spec: &StageSpec, shell: bool, names: &Names<'_>) -> Result<BoundCmd, SpecError> {
    let Some((value, at)) = spec.extra.get("cmd") else {
        return Err(with_help(
            spec_error(
                spec,
                &spec.at.kind,
                "cmd",
                "a command stage needs `cmd`".into(),
            ),
            "e.g. cmd = [\"python\", \"train.py\", \"--out\", \"{outputs.model}\"]".into(),
        ));
    };
    let words: Vec<&str> = match (value, shell) {
        (toml::Value::String(script), true) => vec![script.as_str()],
        (toml::Value::String(_), false) => {
            return Err(with_help(
                spec_error(
                    spec,
                    at,
                    "cmd",
                    "is a string, but commands run without a shell".into(),
                ),
                "write the argv as a list, cmd = [\"prog\", \"arg\"], or set shell = true".into(),
            ))
        }
        (toml::Value::Array(items), _) => {
            let words: Option<Vec<&str>> = items.iter().map(toml::Value::as_str).collect();
            words.ok_or_else(|| {
                spec_error(spec, at, "cmd", "every argument must be a string".into())
            })?
        }
        _ => {
            return Err(spec_error(
                spec,
                at,
                "cmd",
                "must be a list of strings".into(),
            ))
        }
    };
    if words.is_empty() || words[0].trim().is_empty() {
        return Err(spec_error(spec, at, "cmd", "names no program".into()));
    }
    let parse =
        |word: &str| Template::parse(word, names).map_err(|m| spec_error(spec, at, "cmd", m));
    if shell {
        let text = words.join(" ");
        let script = ShellScript::parse(&text, names).map_err(|m| {
            with_help(
                spec_error(spec, at, "cmd", m),
                "with shell = true each placeholder reaches the script as a variable \
                 (\"${SEQPIPE_ARG_1}\"), never as shell text"
                    .into(),
            )
        })?;
        let template = script.template().clone();
        return Ok((vec![template], Some(script), serde_json::json!(text)));
    }
    let argv = words
        .iter()
        .map(|w| parse(w))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((argv, None, serde_json::json!(words)))
}

fn bind_env(
    spec: &StageSpec,
    names: &Names<'_>,
) -> Result<(BTreeMap<String, Template>, serde_json::Value), SpecError> {
    let Some((value, at)) = spec.extra.get("env") else {
        return Ok((BTreeMap::new(), serde_json::json!({})));
    };
    let table = value.as_table().ok_or_else(|| {
        spec_error(
            spec,
            at,
            "env",
            "must be a table: env = { NAME = \"value\" }".into(),
        )
    })?;
    let mut env = BTreeMap::new();
    let mut json = serde_json::Map::new();
    for (name, v) in table {
        let key = format!("env.{name}");
        let Some(text) = v.as_str() else {
            return Err(spec_error(spec, at, &key, "must be a string".into()));
        };
        let t = Template::parse(text, names).map_err(|m| spec_error(spec, at, &key, m))?;
        env.insert(name.clone(), t);
        json.insert(name.clone(), text.into());
    }
    Ok((env, json.into()))
}

/// `data` → `SEQPIPE_INPUT_DATA`.
fn env_name(prefix: &str, name: &str) -> String {
    format!("{prefix}{}", name.to_ascii_uppercase().replace('-', "_"))
}

impl Stage for CommandStage {
    fn info(&self) -> &KindInfo {
        &self.info
    }

    fn defaults(&self) -> serde_json::Value {
        self.params.clone()
    }

    fn check_param(&self, _key: &str, _value: &toml::Value) -> Result<(), String> {
        Ok(())
    }

    /// The user's params plus the command's settings: all of it is the key.
    fn canonical_params(
        &self,
        params: &BTreeMap<String, toml::Value>,
    ) -> Result<serde_json::Value, String> {
        let mut all = crate::stage::canonical_table(params)?
            .as_object()
            .cloned()
            .unwrap_or_default();
        all.extend(self.settings.clone());
        Ok(all.into())
    }

    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let log_dir = ctx.output(LOG_OUTPUT)?.to_path_buf();
        // The command runs in the spec's folder, not in ours: every path it
        // is handed must be absolute (the cache and the spec may both be
        // named relative to the folder seqpipe was started in).
        let mut targets = BTreeMap::new();
        for (name, ty) in &self.outputs {
            let dir = absolute(ctx.output(name)?)?;
            // A `file` output is one file named after the output, in its folder.
            let target = if ty.name == "file" {
                dir.join(name)
            } else {
                dir
            };
            targets.insert(name.clone(), target);
        }
        let inputs = ctx
            .inputs
            .iter()
            .map(|(name, path)| Ok((name.clone(), absolute(path)?)))
            .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
        let checkpoint_dir = absolute(&ctx.checkpoint_dir)?;
        let user_params = self.user_params(&ctx.params);
        let values = Values {
            params: &user_params,
            inputs: &inputs,
            outputs: &targets,
            checkpoint_dir: &checkpoint_dir,
            seed: ctx.seed,
            device: ctx.device,
            stage: ctx.stage,
        };
        let (mut command, script_vars) = self.command(&values)?;
        command.current_dir(absolute(&self.dir)?);
        for name in &self.inputs {
            command.env(env_name("SEQPIPE_INPUT_", name), &inputs[name]);
        }
        for (name, target) in &targets {
            command.env(env_name("SEQPIPE_OUTPUT_", name), target);
        }
        command
            .env("SEQPIPE_PARAMS", template::params_json(&user_params))
            .env("SEQPIPE_CHECKPOINT_DIR", &checkpoint_dir)
            .env("SEQPIPE_SEED", ctx.seed.to_string())
            .env("SEQPIPE_DEVICE", ctx.device)
            .env("SEQPIPE_STAGE", ctx.stage)
            // Python would write __pycache__ folders into `deps`, changing
            // their hash after the first run and so rerunning the stage once.
            .env("PYTHONDONTWRITEBYTECODE", "1");
        for (name, t) in &self.env {
            command.env(name, t.render(&values));
        }
        // After the user's `env`, so that nothing there can replace them.
        command.envs(script_vars);
        let shown = self.shown(&values);
        let finished = process::run(command, ctx.stage, &log_dir, ctx.progress)?;
        let tail = stderr_tail(&finished.stderr_tail);
        if !finished.status.success() {
            anyhow::bail!(
                "command `{shown}` {}; nothing was published{tail}",
                process::describe(&finished.status)
            );
        }
        for (name, ty) in &self.outputs {
            (ty.check)(ctx.output(name)?).map_err(|e| {
                anyhow::anyhow!(
                    "output `{name}` (declared `{}`) is not valid: {e}; nothing was published{tail}",
                    ty.name
                )
            })?;
        }
        Ok(())
    }
}

impl CommandStage {
    /// The canonical params without the command's own settings.
    fn user_params(&self, canonical: &serde_json::Value) -> serde_json::Value {
        let mut params = canonical.as_object().cloned().unwrap_or_default();
        params.retain(|k, _| !self.settings.contains_key(k));
        params.into()
    }

    /// The process to start, and the variables carrying a shell script's
    /// values ([`shell`]).
    fn command(&self, values: &Values<'_>) -> anyhow::Result<(Command, Vec<(String, String)>)> {
        if let Some(script) = &self.script {
            let (text, vars) = script.render(values).map_err(anyhow::Error::msg)?;
            let mut command = Command::new("sh");
            command.arg("-c").arg(text);
            Ok((command, vars))
        } else {
            let mut command = Command::new(self.argv[0].render(values));
            command.args(self.argv[1..].iter().map(|t| t.render(values)));
            Ok((command, Vec::new()))
        }
    }

    /// The command line for messages, abbreviated.
    fn shown(&self, values: &Values<'_>) -> String {
        let words: Vec<String> = self.argv.iter().take(3).map(|t| t.render(values)).collect();
        let more = if self.argv.len() > 3 { " …" } else { "" };
        format!("{}{more}", words.join(" "))
    }
}

/// `path` made absolute against the current folder (symlinks kept).
fn absolute(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path)
        .map_err(|e| anyhow::anyhow!("cannot make {} absolute: {e}", path.display()))
}

fn stderr_tail(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut text = format!("\n  last {} lines of stderr:", lines.len());
    for line in lines {
        text.push_str("\n    ");
        text.push_str(line);
    }
    text
}
