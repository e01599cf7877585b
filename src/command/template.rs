//! Placeholders in a command's argv and env: `{params.lr}`, `{inputs.data}`,
//! `{outputs.model}`, `{checkpoint_dir}`, `{seed}`, `{device}`, `{stage}`.
//! Braces around anything else (`awk '{ print $1 }'`, JSON) stay as written;
//! `{{` and `}}` also stand for literal braces.
//!
//! A template is parsed and checked when the plan is built, so a
//! placeholder naming a param, input or output the stage does not have is a
//! spec error before anything runs; it is rendered when the stage runs.

use std::collections::BTreeMap;
use std::path::Path;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Param(String),
    Input(String),
    Output(String),
    CheckpointDir,
    Seed,
    Device,
    Stage,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub Vec<Piece>);

/// The names a template may refer to.
pub struct Names<'a> {
    pub params: Vec<&'a str>,
    pub inputs: Vec<&'a str>,
    pub outputs: Vec<&'a str>,
}

/// What a template is rendered with at run time.
pub struct Values<'a> {
    pub params: &'a serde_json::Value,
    pub inputs: &'a BTreeMap<String, std::path::PathBuf>,
    /// Output name → the path the command writes it to.
    pub outputs: &'a BTreeMap<String, std::path::PathBuf>,
    pub checkpoint_dir: &'a Path,
    pub seed: u64,
    pub device: &'a str,
    pub stage: &'a str,
}

impl Template {
    /// Parses `text`; `Err` names the bad placeholder and what is allowed.
    pub fn parse(text: &str, names: &Names<'_>) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                literal.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            // Only `{word}` or `{group.word}` is a placeholder; other braces
            // (an awk program, JSON) are text.
            if let Some(after) = tail.strip_prefix('}') {
                literal.push('}');
                rest = after;
                continue;
            }
            let end = tail.find('}');
            let inner = end.map(|e| &tail[1..e]);
            let Some((end, _)) = end.zip(inner.filter(|i| looks_like_placeholder(i))) else {
                literal.push_str(&tail[..1]);
                rest = &tail[1..];
                continue;
            };
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(placeholder(&tail[1..end], names)?);
            rest = &tail[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template(pieces))
    }

    /// The text with every placeholder replaced by its value, as is (argv
    /// words and `env` values reach the program without a shell; a shell
    /// script goes through [`super::shell::ShellScript`] instead).
    pub fn render(&self, values: &Values<'_>) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => out.push_str(text),
                _ => out.push_str(&values.text(piece)),
            }
        }
        out
    }
}

impl Values<'_> {
    /// The value a placeholder stands for, as text.
    pub fn text(&self, piece: &Piece) -> String {
        match piece {
            Piece::Text(text) => text.clone(),
            Piece::Param(name) => param_text(&self.params[name]),
            Piece::Input(name) => path_text(self.inputs.get(name)),
            Piece::Output(name) => path_text(self.outputs.get(name)),
            Piece::CheckpointDir => self.checkpoint_dir.display().to_string(),
            Piece::Seed => self.seed.to_string(),
            Piece::Device => self.device.to_string(),
            Piece::Stage => self.stage.to_string(),
        }
    }
}

fn looks_like_placeholder(inner: &str) -> bool {
    !inner.is_empty()
        && inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

fn placeholder(inner: &str, names: &Names<'_>) -> Result<Piece, String> {
    let inner = inner.trim();
    let lookup = |group: &str, name: &str, known: &[&str], piece: fn(String) -> Piece| {
        if known.contains(&name) {
            Ok(piece(name.to_string()))
        } else {
            let listed = if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            };
            Err(format!(
                "`{{{inner}}}`: this stage has no {group} `{name}` (its {group}s: {listed})"
            ))
        }
    };
    match inner.split_once('.') {
        Some(("params", name)) => lookup("param", name, &names.params, Piece::Param),
        Some(("inputs", name)) => lookup("input", name, &names.inputs, Piece::Input),
        Some(("outputs", name)) => lookup("output", name, &names.outputs, Piece::Output),
        None if inner == "checkpoint_dir" => Ok(Piece::CheckpointDir),
        None if inner == "seed" => Ok(Piece::Seed),
        None if inner == "device" => Ok(Piece::Device),
        None if inner == "stage" => Ok(Piece::Stage),
        _ => Err(format!(
            "`{{{inner}}}` is not a placeholder: use {{params.NAME}}, {{inputs.NAME}}, \
             {{outputs.NAME}}, {{checkpoint_dir}}, {{seed}}, {{device}} or {{stage}} \
             (`{{{{` for a literal brace)"
        )),
    }
}

/// A param as a command-line word, as the TOML wrote it: strings bare,
/// numbers, booleans, `inf`/`-inf` and date-times as their TOML text,
/// lists and tables as JSON (as in `SEQPIPE_PARAMS`).
pub fn param_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => match tagged(other) {
            Some(Tagged::Float(text)) | Some(Tagged::Datetime(text)) => text.to_string(),
            None => params_json(other),
        },
    }
}

/// A canonical value that JSON has no form for (see
/// [`crate::stage::canonical_json`]).
enum Tagged<'a> {
    /// `inf` or `-inf`.
    Float(&'a str),
    /// A date-time's TOML text.
    Datetime(&'a str),
}

fn tagged(value: &serde_json::Value) -> Option<Tagged<'_>> {
    let object = value.as_object().filter(|o| o.len() == 1)?;
    let (key, text) = object.iter().next()?;
    let text = text.as_str()?;
    match key.as_str() {
        crate::stage::FLOAT_TAG => Some(Tagged::Float(text)),
        crate::stage::DATETIME_TAG => Some(Tagged::Datetime(text)),
        _ => None,
    }
}

/// Canonical params as the JSON a command reads (`SEQPIPE_PARAMS`, a list
/// or table placeholder): compact, as serde_json writes it, except that an
/// infinity is `Infinity`/`-Infinity` (what Python's `json` reads and
/// writes) and a date-time its TOML text as a string.
pub fn params_json(value: &serde_json::Value) -> String {
    fn write(value: &serde_json::Value, out: &mut String) {
        match (value, tagged(value)) {
            (_, Some(Tagged::Float(text))) => out.push_str(if text.starts_with('-') {
                "-Infinity"
            } else {
                "Infinity"
            }),
            (_, Some(Tagged::Datetime(text))) => {
                out.push_str(&serde_json::Value::from(text).to_string())
            }
            (serde_json::Value::Array(items), None) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            (serde_json::Value::Object(map), None) => {
                out.push('{');
                for (i, (key, item)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::from(key.as_str()).to_string());
                    out.push(':');
                    write(item, out);
                }
                out.push('}');
            }
            (other, None) => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

fn path_text(path: Option<&std::path::PathBuf>) -> String {
    path.map(|p| p.display().to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names<'static> {
        Names {
            params: vec!["lr", "name"],
            inputs: vec!["data"],
            outputs: vec!["model"],
        }
    }

    #[test]
    fn renders_placeholders_and_literal_braces() {
        let t =
            Template::parse("--lr={params.lr} {inputs.data}/x {{json}} {seed}", &names()).unwrap();
        let params = serde_json::json!({"lr": 0.001, "name": "a b"});
        let inputs = BTreeMap::from([("data".to_string(), "/c/in".into())]);
        let outputs = BTreeMap::new();
        let values = Values {
            params: &params,
            inputs: &inputs,
            outputs: &outputs,
            checkpoint_dir: Path::new("/ck"),
            seed: 7,
            device: "cpu",
            stage: "s",
        };
        assert_eq!(t.render(&values), "--lr=0.001 /c/in/x {json} 7");
    }

    #[test]
    fn params_reach_a_command_as_written() {
        let table: toml::Table = "when = 1979-05-27T07:32:00Z\nbig = inf\nsmall = -inf\n\
                                  n = 1.5\ns = \"x\"\nl = [inf, \"y\", { d = 1979-05-27 }]"
            .parse()
            .unwrap();
        let params = crate::stage::canonical_table(&table.into_iter().collect()).unwrap();
        let text = |k: &str| param_text(&params[k]);
        assert_eq!(text("when"), "1979-05-27T07:32:00Z");
        assert_eq!(text("big"), "inf");
        assert_eq!(text("small"), "-inf");
        assert_eq!(text("n"), "1.5");
        assert_eq!(text("s"), "x");
        assert_eq!(text("l"), r#"[Infinity,"y",{"d":"1979-05-27"}]"#);
        assert_eq!(
            params_json(&params),
            r#"{"big":Infinity,"l":[Infinity,"y",{"d":"1979-05-27"}],"n":1.5,"s":"x","small":-Infinity,"when":"1979-05-27T07:32:00Z"}"#
        );
        // Without tags, exactly what serde_json writes.
        let plain = serde_json::json!({"a": [1, 2.5, "q\"", {"b": null, "c": -0.0}], "z": "é"});
        assert_eq!(params_json(&plain), plain.to_string());
    }

    #[test]
    fn unknown_names_are_errors_that_list_what_exists() {
        let e = Template::parse("{params.lrr}", &names()).unwrap_err();
        assert!(e.contains("no param `lrr` (its params: lr, name)"), "{e}");
        let e = Template::parse("{inputs.x}", &names()).unwrap_err();
        assert!(e.contains("no input `x`"), "{e}");
        let e = Template::parse("{foo}", &names()).unwrap_err();
        assert!(e.contains("is not a placeholder"), "{e}");
        let e = Template::parse("{param.lr}", &names()).unwrap_err();
        assert!(e.contains("is not a placeholder"), "{e}");
    }

    #[test]
    fn other_braces_are_text() {
        let awk = Template::parse("NR <= {params.lr} { print > out }", &names()).unwrap();
        assert_eq!(awk.0[0], Piece::Text("NR <= ".into()));
        assert_eq!(awk.0[1], Piece::Param("lr".into()));
        assert_eq!(awk.0[2], Piece::Text(" { print > out }".into()));
        let json = Template::parse(r#"{"n": 1} a}b {x"#, &names()).unwrap();
        assert_eq!(json.0, [Piece::Text(r#"{"n": 1} a}b {x"#.into())]);
    }
}
