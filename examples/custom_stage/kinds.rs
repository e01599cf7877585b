//! Three stage kinds that have nothing to do with recommendation — word
//! counting — to show what a stage kind is: a serde `Params` struct with
//! defaults, a catalogue entry ([`KindInfo`]), and a `run` that reads its
//! input folders and writes its output folders. The engine does the rest:
//! keys, cache, reruns, progress, manifest.
//!
//! - `words`: counts the words of a text file or folder on disk (an input
//!   of type `path`, so editing the text reruns it).
//! - `top`: the `n` most frequent words of a `counts` artifact, as a text
//!   report; its `summary.txt` is printed after `seqpipe run`.
//! - `merge`: sums any number of `counts` artifacts (extra inputs).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use seqpipe::stage::{KindInfo, ParamDoc, Port, Registry, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

/// Word → how often it occurs; the `counts.json` of a `counts` artifact.
pub type Counts = BTreeMap<String, u64>;

/// Registers the three kinds.
pub fn register(registry: &mut Registry) {
    registry
        .register(Words { version: 1 })
        .register(Top)
        .register(Merge);
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WordsParams {
    /// Fold case, so `The` and `the` count as one word.
    pub lowercase: bool,
    /// Ignore words shorter than this many characters.
    pub min_len: usize,
}

impl Default for WordsParams {
    fn default() -> Self {
        WordsParams {
            lowercase: true,
            min_len: 1,
        }
    }
}

/// `words`; `version` is a field only so tests can simulate a new release.
pub struct Words {
    pub version: u32,
}

impl TypedStage for Words {
    type Params = WordsParams;

    fn info(&self) -> KindInfo {
        KindInfo {
            kind: "words",
            version: self.version,
            summary: "Counts the words of a text file (or every file of a folder).",
            inputs: vec![Port {
                optional: false,
                name: "text",
                ty: "path",
                doc: "a text file or folder on disk",
            }],
            extra_inputs: None,
            outputs: vec![Port {
                optional: false,
                name: "counts",
                ty: "counts",
                doc: "counts.json: word → count",
            }],
            params: vec![
                ParamDoc {
                    name: "lowercase",
                    doc: "fold case before counting",
                },
                ParamDoc {
                    name: "min_len",
                    doc: "shortest word counted",
                },
            ],
            resource: Resource::Cpu,
        }
    }

    fn validate(&self, p: &WordsParams) -> Result<(), String> {
        if p.min_len == 0 {
            return Err("min_len: must be at least 1".into());
        }
        Ok(())
    }

    fn run(&self, p: WordsParams, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let mut counts = Counts::new();
        for file in text_files(ctx.input("text")?)? {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            for word in text.split(|c: char| !c.is_alphanumeric()) {
                if word.chars().count() < p.min_len {
                    continue;
                }
                let word = if p.lowercase {
                    word.to_lowercase()
                } else {
                    word.to_string()
                };
                *counts.entry(word).or_default() += 1;
            }
        }
        write_counts(ctx.output("counts")?, &counts)
    }
}

fn text_files(path: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<_> = std::fs::read_dir(path)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.is_file());
    files.sort(); // a stable order keeps the output bytes stable
    Ok(files)
}

pub fn write_counts(dir: &Path, counts: &Counts) -> anyhow::Result<()> {
    std::fs::write(dir.join("counts.json"), serde_json::to_vec_pretty(counts)?)?;
    Ok(())
}

pub fn read_counts(dir: &Path) -> anyhow::Result<Counts> {
    let path = dir.join("counts.json");
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(serde_json::from_slice(&bytes)?)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopParams {
    /// How many words to list.
    pub n: usize,
}

impl Default for TopParams {
    fn default() -> Self {
        TopParams { n: 10 }
    }
}

pub struct Top;

impl TypedStage for Top {
    type Params = TopParams;

    fn info(&self) -> KindInfo {
        KindInfo {
            kind: "top",
            version: 1,
            summary: "Lists the most frequent words of a counts artifact.",
            inputs: vec![Port {
                optional: false,
                name: "counts",
                ty: "counts",
                doc: "output of `words` or `merge`",
            }],
            extra_inputs: None,
            outputs: vec![Port {
                optional: false,
                name: "report",
                ty: "text",
                doc: "summary.txt: one `count word` line each",
            }],
            params: vec![ParamDoc {
                name: "n",
                doc: "words listed",
            }],
            resource: Resource::Cpu,
        }
    }

    fn run(&self, p: TopParams, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let counts = read_counts(ctx.input("counts")?)?;
        let mut ranked: Vec<(&String, &u64)> = counts.iter().collect();
        // Most frequent first; ties alphabetical so the output is stable.
        ranked.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut text = format!("Top {} words\n", p.n);
        for (word, count) in ranked.into_iter().take(p.n) {
            text.push_str(&format!("{count:>6} {word}\n"));
        }
        std::fs::write(ctx.output("report")?.join("summary.txt"), text)?;
        Ok(())
    }
}

/// A kind without params still names a struct, so that any param given to it
/// is reported as unknown.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

pub struct Merge;

impl TypedStage for Merge {
    type Params = NoParams;

    fn info(&self) -> KindInfo {
        KindInfo {
            kind: "merge",
            version: 1,
            summary: "Sums the counts of every input (name the inputs as you like).",
            inputs: vec![],
            extra_inputs: Some("counts"),
            outputs: vec![Port {
                optional: false,
                name: "counts",
                ty: "counts",
                doc: "counts.json: the sums",
            }],
            params: vec![],
            resource: Resource::Cpu,
        }
    }

    fn run(&self, _p: Self::Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let mut total = Counts::new();
        for dir in ctx.inputs.values() {
            for (word, n) in read_counts(dir)? {
                *total.entry(word).or_default() += n;
            }
        }
        write_counts(ctx.output("counts")?, &total)
    }
}
