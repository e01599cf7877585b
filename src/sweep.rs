//! Sweeps: the `[sweep]` table of a spec and the trials it expands into.
//!
//! ```toml
//! [sweep]
//! metric  = "eval.test.ndcg@10"    # <stage>.<path in its metrics.json>
//! goal    = "max"                  # or "min"
//! repeats = 1                      # seeds per configuration (mean ± std)
//! samples = 4                      # random draws per grid point
//! seed    = 1                      # for the random draws (default: the pipeline seed)
//!
//! [sweep.grid]                     # every combination
//! "train.model" = ["pop", "markov", "sasrec"]
//! "train.lr"    = [1e-3, 3e-3]
//!
//! [sweep.random]                   # `samples` draws per grid point
//! "train.dropout" = { uniform = [0.0, 0.5] }
//! "train.dim"     = { choice = [32, 64] }
//! "train.lr"      = { log_uniform = [1e-4, 1e-2] }
//! "train.layers"  = { int_uniform = [1, 3] }
//!
//! [sweep.halving]                  # successive halving on a budget param
//! param = "train.epochs"           # its value in the spec is the full budget
//! min   = 2                        # the first rung's budget
//! eta   = 3                        # keep the best 1/eta at each rung
//! mode  = "sync"                   # or "async" (ASHA: promote as soon as a trial qualifies)
//! ```
//!
//! A trial is a set of `--set`-style overrides plus a seed; the engine runs
//! it like any pipeline, so every artifact a trial shares with another
//! (the data stages, a model whose keyed params did not change) is a cache
//! hit. This module only knows the shape of a sweep; `ops::sweep` runs it.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use toml::Spanned;

use crate::spec::{did_you_mean, Location, Source, SpecError, StageSpec};

/// What serde reads from `[sweep]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSweep {
    metric: Spanned<String>,
    #[serde(default)]
    goal: Option<Spanned<String>>,
    #[serde(default)]
    grid: BTreeMap<Spanned<String>, Spanned<Vec<toml::Value>>>,
    #[serde(default)]
    random: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    #[serde(default)]
    samples: Option<Spanned<i64>>,
    #[serde(default)]
    seed: Option<Spanned<i64>>,
    #[serde(default)]
    repeats: Option<Spanned<i64>>,
    #[serde(default)]
    halving: Option<RawHalving>,
    #[serde(default)]
    executor: Option<crate::spec::Executor>,
    #[serde(default)]
    slurm: Option<crate::spec::RawSlurm>,
}

/// What serde reads from `[sweep.halving]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHalving {
    param: Spanned<String>,
    min: Spanned<i64>,
    #[serde(default)]
    eta: Option<Spanned<i64>>,
    #[serde(default)]
    mode: Option<Spanned<String>>,
}

/// Successive halving: every configuration runs at budget `min` of the
/// stage param `stage.param`, the best 1/`eta` go on at `min × eta`, and so
/// on up to the spec's own value of the param (the full budget).
#[derive(Debug, Clone)]
pub struct Halving {
    pub stage: String,
    pub param: String,
    pub min: i64,
    pub eta: usize,
    /// ASHA (Li et al., 2020): a trial is promoted from a rung as soon as
    /// it is in the top 1/eta of the trials finished there, instead of
    /// once the whole rung has finished.
    pub asynchronous: bool,
    pub at: Location,
}

impl Halving {
    /// The rung budgets up to `full`: min, min·eta, … (below `full`), full.
    pub fn rungs(&self, full: i64) -> Vec<i64> {
        let mut rungs = vec![];
        let mut budget = self.min;
        while budget < full {
            rungs.push(budget);
            budget *= self.eta as i64;
        }
        rungs.push(full);
        rungs
    }
}

/// A checked `[sweep]` table.
#[derive(Debug, Clone)]
pub struct SweepSpec {
    pub metric: MetricRef,
    pub maximize: bool,
    pub grid: Vec<Axis<Vec<toml::Value>>>,
    pub random: Vec<Axis<Distribution>>,
    /// Random draws per grid point (1 when there is no random space).
    pub samples: usize,
    /// Seed of the random draws.
    pub seed: u64,
    /// Seeds per configuration: pipeline seed, seed + 1, …
    pub repeats: usize,
    /// Successive halving, when asked for.
    pub halving: Option<Halving>,
    /// Where every trial's stages run (`executor = "slurm"`), unless
    /// `--executor` says otherwise; `None`: as the pipeline says.
    pub executor: Option<crate::spec::Executor>,
    /// What each trial's task of the sweep's Slurm job array asks for:
    /// `[sweep] slurm = { … }` over the pipeline's `slurm` defaults.
    pub slurm: crate::spec::SlurmOptions,
}

/// The selection metric: a stage and a path in its `metrics.json`.
#[derive(Debug, Clone)]
pub struct MetricRef {
    pub stage: String,
    pub path: Vec<String>,
    pub at: Location,
}

impl std::fmt::Display for MetricRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.stage, self.path.join("."))
    }
}

/// One swept param and its values (a list, or a distribution).
#[derive(Debug, Clone)]
pub struct Axis<V> {
    pub stage: String,
    pub param: String,
    pub values: V,
    pub at: Location,
}

impl<V> Axis<V> {
    /// `stage.param`.
    pub fn name(&self) -> String {
        format!("{}.{}", self.stage, self.param)
    }
}

/// A random space.
#[derive(Debug, Clone, PartialEq)]
pub enum Distribution {
    Uniform(f64, f64),
    LogUniform(f64, f64),
    IntUniform(i64, i64),
    Choice(Vec<toml::Value>),
}

impl Distribution {
    fn draw(&self, rng: &mut ChaCha8Rng) -> toml::Value {
        match self {
            Distribution::Uniform(lo, hi) => toml::Value::Float(rng.gen_range(*lo..*hi)),
            Distribution::LogUniform(lo, hi) => {
                toml::Value::Float(rng.gen_range(lo.ln()..hi.ln()).exp())
            }
            Distribution::IntUniform(lo, hi) => toml::Value::Integer(rng.gen_range(*lo..=*hi)),
            Distribution::Choice(values) => values[rng.gen_range(0..values.len())].clone(),
        }
    }
}

/// One run of the pipeline in a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// 1-based, in expansion order.
    pub id: usize,
    /// 1-based configuration (trials differing only in seed share it).
    pub config: usize,
    /// (stage, param, value), grid axes first.
    pub values: Vec<(String, String, toml::Value)>,
    /// 0-based repeat: the trial runs with pipeline seed + repeat.
    pub repeat: usize,
}

impl SweepSpec {
    /// Every trial: each grid point × `samples` random draws × `repeats`.
    pub fn trials(&self) -> Vec<Trial> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut trials = Vec::new();
        let mut config = 0;
        for point in grid_points(&self.grid) {
            for _ in 0..self.samples {
                let mut values = point.clone();
                for axis in &self.random {
                    let value = axis.values.draw(&mut rng);
                    values.retain(|(s, p, _)| !(s == &axis.stage && p == &axis.param));
                    values.push((axis.stage.clone(), axis.param.clone(), value));
                }
                config += 1;
                for repeat in 0..self.repeats {
                    trials.push(Trial {
                        id: trials.len() + 1,
                        config,
                        values: values.clone(),
                        repeat,
                    });
                }
            }
        }
        trials
    }
}

/// The cartesian product of the grid axes, first axis slowest.
fn grid_points(grid: &[Axis<Vec<toml::Value>>]) -> Vec<Vec<(String, String, toml::Value)>> {
    let mut points = vec![vec![]];
    for axis in grid {
        points = points
            .into_iter()
            .flat_map(|point| {
                axis.values.iter().map(move |v| {
                    let mut p = point.clone();
                    p.push((axis.stage.clone(), axis.param.clone(), v.clone()));
                    p
                })
            })
            .collect();
    }
    points
}

fn error(at: &Location, key: String, message: String, help: Option<String>) -> SpecError {
    SpecError {
        location: at.clone(),
        key,
        message,
        help,
    }
}

/// Checks the shape of `[sweep]`: stage names exist, values and ranges make
/// sense. Whether each param exists is checked against the stage kinds by
/// `ops::sweep` (the registry is not known here).
pub(crate) fn check(
    raw: Spanned<RawSweep>,
    source: &Source,
    stages: &[StageSpec],
    pipeline_seed: u64,
    slurm_defaults: &crate::spec::RawSlurm,
) -> Result<SweepSpec, SpecError> {
    let raw = raw.into_inner();
    let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
    let stage_of = |text: &str, at: &Location, key: &str| -> Result<(String, String), SpecError> {
        let Some((stage, rest)) = text
            .split_once('.')
            .filter(|(s, r)| !s.is_empty() && !r.is_empty())
        else {
            return Err(error(
                at,
                key.into(),
                format!("`{text}` must be written <stage>.<name>"),
                None,
            ));
        };
        if !names.contains(&stage) {
            return Err(error(
                at,
                key.into(),
                format!("there is no stage `{stage}` in this pipeline"),
                did_you_mean(stage, names.iter().copied()),
            ));
        }
        Ok((stage.to_string(), rest.to_string()))
    };

    let metric_at = source.location(&raw.metric.span());
    let (stage, path) = stage_of(raw.metric.get_ref(), &metric_at, "sweep.metric")?;
    let metric = MetricRef {
        stage,
        path: path.split('.').map(String::from).collect(),
        at: metric_at,
    };
    let maximize = match &raw.goal {
        None => true,
        Some(g) => match g.get_ref().as_str() {
            "max" => true,
            "min" => false,
            other => {
                return Err(error(
                    &source.location(&g.span()),
                    "sweep.goal".into(),
                    format!("`{other}` is not a goal"),
                    Some("write goal = \"max\" or goal = \"min\"".into()),
                ))
            }
        },
    };

    let mut grid = Vec::new();
    for (key, values) in raw.grid {
        let at = source.location(&key.span());
        let dotted = format!("sweep.grid.\"{}\"", key.get_ref());
        let (stage, param) = stage_of(key.get_ref(), &at, &dotted)?;
        if values.get_ref().is_empty() {
            return Err(error(&at, dotted, "lists no values".into(), None));
        }
        grid.push(Axis {
            stage,
            param,
            values: values.into_inner(),
            at,
        });
    }
    let mut random = Vec::new();
    for (key, value) in raw.random {
        let at = source.location(&key.span());
        let dotted = format!("sweep.random.\"{}\"", key.get_ref());
        let (stage, param) = stage_of(key.get_ref(), &at, &dotted)?;
        let values = distribution(value.get_ref()).map_err(|m| {
            error(
                &at,
                dotted.clone(),
                m,
                Some(
                    "write { uniform = [lo, hi] }, { log_uniform = [lo, hi] }, \
                     { int_uniform = [lo, hi] } or { choice = [a, b, …] }"
                        .into(),
                ),
            )
        })?;
        random.push(Axis {
            stage,
            param,
            values,
            at,
        });
    }
    let positive = |v: &Option<Spanned<i64>>, key: &str, default: usize| match v {
        None => Ok(default),
        Some(n) if *n.get_ref() >= 1 => Ok(*n.get_ref() as usize),
        Some(n) => Err(error(
            &source.location(&n.span()),
            format!("sweep.{key}"),
            format!("must be 1 or more, not {}", n.get_ref()),
            None,
        )),
    };
    let samples = if random.is_empty() {
        1
    } else {
        positive(&raw.samples, "samples", 10)?
    };
    let repeats = positive(&raw.repeats, "repeats", 1)?;
    let seed = match &raw.seed {
        None => pipeline_seed,
        Some(s) if *s.get_ref() >= 0 => *s.get_ref() as u64,
        Some(s) => {
            return Err(error(
                &source.location(&s.span()),
                "sweep.seed".into(),
                "must be zero or positive".into(),
                None,
            ))
        }
    };
    let halving = match raw.halving {
        None => None,
        Some(h) => {
            let at = source.location(&h.param.span());
            let (stage, param) = stage_of(h.param.get_ref(), &at, "sweep.halving.param")?;
            let swept = grid
                .iter()
                .map(|a| (&a.stage, &a.param))
                .chain(random.iter().map(|a| (&a.stage, &a.param)));
            if swept.into_iter().any(|(s, p)| *s == stage && *p == param) {
                return Err(error(
                    &at,
                    "sweep.halving.param".into(),
                    format!("`{stage}.{param}` is the halving budget, so it cannot also be swept"),
                    None,
                ));
            }
            if *h.min.get_ref() < 1 {
                return Err(error(
                    &source.location(&h.min.span()),
                    "sweep.halving.min".into(),
                    format!("must be 1 or more, not {}", h.min.get_ref()),
                    None,
                ));
            }
            let eta = match &h.eta {
                None => 3,
                Some(e) if *e.get_ref() >= 2 => *e.get_ref() as usize,
                Some(e) => {
                    return Err(error(
                        &source.location(&e.span()),
                        "sweep.halving.eta".into(),
                        format!("must be 2 or more, not {}", e.get_ref()),
                        None,
                    ))
                }
            };
            let asynchronous = match &h.mode {
                None => false,
                Some(m) if m.get_ref() == "sync" => false,
                Some(m) if m.get_ref() == "async" => true,
                Some(m) => {
                    return Err(error(
                        &source.location(&m.span()),
                        "sweep.halving.mode".into(),
                        format!("`{}` is neither \"sync\" nor \"async\"", m.get_ref()),
                        None,
                    ))
                }
            };
            Some(Halving {
                stage,
                param,
                min: *h.min.get_ref(),
                eta,
                asynchronous,
                at,
            })
        }
    };
    Ok(SweepSpec {
        metric,
        maximize,
        grid,
        random,
        samples,
        seed,
        repeats,
        halving,
        executor: raw.executor,
        slurm: crate::spec::SlurmOptions::merged(slurm_defaults, &raw.slurm.unwrap_or_default()),
    })
}

fn distribution(value: &toml::Value) -> Result<Distribution, String> {
    let table = value
        .as_table()
        .filter(|t| t.len() == 1)
        .ok_or("must be a table with one distribution")?;
    let (name, args) = table.iter().next().expect("one entry");
    let pair = || -> Result<(f64, f64), String> {
        let nums: Option<Vec<f64>> = args
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| v.as_float().or(v.as_integer().map(|i| i as f64)))
                    .collect()
            })
            .unwrap_or(None);
        match nums.as_deref() {
            Some([lo, hi]) if lo < hi => Ok((*lo, *hi)),
            Some([lo, hi]) => Err(format!(
                "{name}: the low end {lo} is not below the high end {hi}"
            )),
            _ => Err(format!("{name}: write [lo, hi]")),
        }
    };
    match name.as_str() {
        "uniform" => pair().map(|(lo, hi)| Distribution::Uniform(lo, hi)),
        "log_uniform" => {
            let (lo, hi) = pair()?;
            if lo <= 0.0 {
                return Err(format!("log_uniform: the low end {lo} must be above 0"));
            }
            Ok(Distribution::LogUniform(lo, hi))
        }
        "int_uniform" => {
            let ints: Option<Vec<i64>> = args
                .as_array()
                .map(|a| a.iter().map(toml::Value::as_integer).collect())
                .unwrap_or(None);
            match ints.as_deref() {
                Some([lo, hi]) if lo <= hi => Ok(Distribution::IntUniform(*lo, *hi)),
                _ => Err("int_uniform: write [lo, hi] with integers, lo <= hi".into()),
            }
        }
        "choice" => match args.as_array() {
            Some(values) if !values.is_empty() => Ok(Distribution::Choice(values.clone())),
            _ => Err("choice: write a non-empty list".into()),
        },
        other => Err(format!("`{other}` is not a distribution")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep(text: &str) -> Result<SweepSpec, SpecError> {
        let full = format!(
            "[pipeline]\nname = 'p'\nseed = 5\n[stages.train]\nkind = 'x'\n[stages.eval]\nkind = 'y'\n{text}"
        );
        let spec = crate::spec::parse(
            Source {
                path: "p.toml".into(),
                text: full,
            },
            &[],
        )?;
        Ok(spec.sweep.expect("a sweep"))
    }

    #[test]
    fn grid_expands_to_every_combination_times_repeats() {
        let s = sweep(
            "[sweep]\nmetric = 'eval.test.ndcg@10'\nrepeats = 2\n[sweep.grid]\n\
             'train.model' = ['pop', 'markov']\n'train.lr' = [1, 2, 3]\n",
        )
        .unwrap();
        assert_eq!(s.metric.stage, "eval");
        assert_eq!(s.metric.path, ["test", "ndcg@10"]);
        let trials = s.trials();
        assert_eq!(trials.len(), 12);
        assert_eq!(trials.last().unwrap().config, 6);
        // Keys sort: "train.lr" is the slower axis.
        let first: Vec<String> = trials[0]
            .values
            .iter()
            .map(|(_, _, v)| v.to_string())
            .collect();
        assert_eq!(first, ["1", "\"pop\""]);
        assert_eq!((trials[0].repeat, trials[1].repeat), (0, 1));
        assert_eq!(trials[0].values, trials[1].values);
    }

    #[test]
    fn random_draws_are_seeded_and_in_range() {
        let text = "[sweep]\nmetric = 'eval.x'\nsamples = 20\nseed = 3\n[sweep.random]\n\
                    'train.lr' = { log_uniform = [1e-4, 1e-2] }\n'train.dim' = { choice = [32, 64] }\n\
                    'train.layers' = { int_uniform = [1, 3] }\n";
        let a = sweep(text).unwrap().trials();
        let b = sweep(text).unwrap().trials();
        assert_eq!(a, b, "the same seed draws the same trials");
        let c = sweep(&text.replace("seed = 3", "seed = 4"))
            .unwrap()
            .trials();
        assert_ne!(a, c);
        assert_eq!(a.len(), 20);
        for t in &a {
            for (_, param, v) in &t.values {
                match param.as_str() {
                    "lr" => assert!((1e-4..1e-2).contains(&v.as_float().unwrap())),
                    "dim" => assert!([32, 64].contains(&v.as_integer().unwrap())),
                    "layers" => assert!((1..=3).contains(&v.as_integer().unwrap())),
                    _ => panic!("{param}"),
                }
            }
        }
        // The pipeline seed is the default seed of the draws.
        let d = sweep(&text.replace("seed = 3\n", "")).unwrap();
        assert_eq!(d.seed, 5);
    }

    #[test]
    fn bad_sweeps_name_the_key() {
        let e = sweep("[sweep]\nmetric = 'evl.test.hr@10'\n").unwrap_err();
        assert!(e.to_string().contains("no stage `evl`"), "{e}");
        assert!(e.to_string().contains("did you mean `eval`?"), "{e}");
        let e = sweep("[sweep]\nmetric = 'eval.x'\n[sweep.grid]\n'train.lr' = []\n").unwrap_err();
        assert!(e.to_string().contains("lists no values"), "{e}");
        let e = sweep(
            "[sweep]\nmetric = 'eval.x'\n[sweep.random]\n'train.lr' = { log_uniform = [0, 1] }\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("must be above 0"), "{e}");
        assert!(e.to_string().starts_with("p.toml:11:1"), "{e}");
        let e =
            sweep("[sweep]\nmetric = 'eval.x'\n[sweep.random]\n'train.lr' = { normal = [0, 1] }\n")
                .unwrap_err();
        assert!(
            e.to_string().contains("`normal` is not a distribution"),
            "{e}"
        );
        let e = sweep("[sweep]\nmetric = 'eval.x'\ngoal = 'maximize'\n").unwrap_err();
        assert!(e.to_string().contains("not a goal"), "{e}");
        let e = sweep("[sweep]\nmetric = 'eval'\n").unwrap_err();
        assert!(
            e.to_string().contains("must be written <stage>.<name>"),
            "{e}"
        );
    }
}
