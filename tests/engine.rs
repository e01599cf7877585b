//! The engine on its own, with toy stage kinds (the word-counting kinds of
//! `examples/custom_stage` plus two test probes): hits and misses counted,
//! early cutoff, raw path inputs, kind versions, cycles, `--jobs`, tensor
//! serialisation, `--keep-going`, `--only` and `--force`.

#[path = "../examples/custom_stage/kinds.rs"]
mod kinds;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use seqpipe::cache::Cache;
use seqpipe::ops::{self, status::StatusCommand, CacheOptions};
use seqpipe::progress::Progress;
use seqpipe::run::{self, Outcome, RunError, RunOptions, RunReport};
use seqpipe::spec::SpecError;
use seqpipe::stage::{KindInfo, Port, Registry, Resource, StageContext, TypedStage};

fn registry() -> Registry {
    let mut r = Registry::new();
    kinds::register(&mut r);
    r.register(Probe {
        resource: Resource::Cpu,
        kind: "probe",
    })
    .register(Probe {
        resource: Resource::Tensor,
        kind: "tensor_probe",
    })
    .register(Fail);
    r
}

/// A temporary folder with `p.toml` (= `spec`) and `corpus.txt` (= `text`).
fn setup(spec: &str, text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), spec).unwrap();
    std::fs::write(dir.path().join("corpus.txt"), text).unwrap();
    dir
}

fn try_run(
    dir: &Path,
    registry: &Registry,
    sets: &[&str],
    options: RunOptions,
) -> Result<RunReport, anyhow::Error> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let plan = ops::load_plan(&dir.join("p.toml"), &sets, registry)?;
    let cache = Cache::open(&dir.join("cache"), true)?;
    Ok(run::execute(&plan, &cache, &options, &Progress::hidden())?)
}

fn run_with(dir: &Path, registry: &Registry, sets: &[&str], options: RunOptions) -> RunReport {
    try_run(dir, registry, sets, options).expect("the run proceeds")
}

/// (stage, outcome) in dependency order.
fn outcomes(report: &RunReport) -> Vec<(&str, Outcome)> {
    report
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s.outcome))
        .collect()
}

fn ran(report: &RunReport) -> Vec<&str> {
    report
        .stages
        .iter()
        .filter(|s| s.outcome == Outcome::Ran)
        .map(|s| s.name.as_str())
        .collect()
}

/// stage → `why` of `seqpipe status`.
fn status_why(dir: &Path, registry: &Registry) -> Vec<(String, &'static str, Option<String>)> {
    let cmd = StatusCommand {
        spec: dir.join("p.toml"),
        sets: vec![],
        cache: CacheOptions::new(
            Some(&dir.join("cache").to_string_lossy()),
            dir.join("cache"),
            true,
        ),
        json: true,
    };
    ops::status::status(&cmd, registry)
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.state, s.why))
        .collect()
}

const WORDS: &str = r#"
[pipeline]
name = "words"

[stages.count]
kind = "words"
inputs = { text = "./corpus.txt" }

[stages.top]
kind = "top"
inputs = { counts = "count.counts" }
params = { n = 2 }
"#;

#[test]
fn hits_misses_early_cutoff_and_path_inputs() {
    let r = registry();
    let dir = setup(WORDS, "The cat saw the dog");
    let d = dir.path();
    assert_eq!(
        ran(&run_with(d, &r, &[], RunOptions::default())),
        ["count", "top"]
    );
    let again = run_with(d, &r, &[], RunOptions::default());
    assert_eq!(
        outcomes(&again),
        [("count", Outcome::Cached), ("top", Outcome::Cached)]
    );

    // Editing the raw text changes `count`'s key; `status` says so first.
    std::fs::write(d.join("corpus.txt"), "the CAT saw THE dog").unwrap();
    let why = status_why(d, &r);
    assert_eq!(
        why[0],
        ("count".into(), "stale", Some("input `text` changed".into()))
    );
    assert_eq!(why[1].1, "stale");
    // Case is folded, so the counts come out byte-identical and `top` is
    // not rerun (early cutoff).
    let edited = run_with(d, &r, &[], RunOptions::default());
    assert_eq!(
        outcomes(&edited),
        [("count", Outcome::Ran), ("top", Outcome::Cached)]
    );

    // A param change reruns that stage only, and the stage sees the value.
    let more = run_with(d, &r, &["top.n=3"], RunOptions::default());
    assert_eq!(ran(&more), ["top"]);
    let cache = Cache::open(&d.join("cache"), true).unwrap();
    let summary = cache
        .store()
        .path(&more.stages[1].outputs["report"])
        .join("summary.txt");
    assert_eq!(
        std::fs::read_to_string(summary).unwrap(),
        "Top 3 words\n     2 the\n     1 cat\n     1 dog\n"
    );
}

#[test]
fn a_new_kind_version_reruns_the_kind_and_status_names_it() {
    let dir = setup(WORDS, "a b c");
    let d = dir.path();
    run_with(d, &registry(), &[], RunOptions::default());
    let mut newer = registry();
    newer.register(kinds::Words { version: 2 });
    let why = status_why(d, &newer);
    assert_eq!(why[0].2.as_deref(), Some("kind version 1 → 2"));
    let report = run_with(d, &newer, &[], RunOptions::default());
    // Same counts from the new version: `top` stays cached.
    assert_eq!(
        outcomes(&report),
        [("count", Outcome::Ran), ("top", Outcome::Cached)]
    );
}

fn spec_error(dir: &Path) -> SpecError {
    let err = try_run(dir, &registry(), &[], RunOptions::default()).expect_err("rejected");
    assert!(
        !dir.join("cache").exists(),
        "nothing may run before the spec is checked"
    );
    err.downcast::<SpecError>().expect("a spec error")
}

#[test]
fn a_cycle_is_rejected_before_anything_runs() {
    let spec = r#"
[pipeline]
name = "loop"

[stages.a]
kind = "merge"
inputs = { other = "b.counts" }

[stages.b]
kind = "merge"
inputs = { other = "a.counts" }
"#;
    let dir = setup(spec, "");
    let err = spec_error(dir.path()).to_string();
    assert!(err.contains("the stages form a cycle: a → b"), "{err}");
    assert!(err.contains("p.toml:5:"), "{err}");
}

#[test]
fn path_inputs_are_checked() {
    let missing = WORDS.replace("./corpus.txt", "./nope.txt");
    let err = spec_error(setup(&missing, "").path()).to_string();
    assert!(
        err.contains("no such file or folder") && err.contains("p.toml:7:"),
        "{err}"
    );

    // A path port also reads another stage's output folder.
    let artifact_for_path =
        WORDS.replace("\"./corpus.txt\"", "\"probe.out\"") + "\n[stages.probe]\nkind = \"probe\"\n";
    let dir = setup(&artifact_for_path, "");
    let plan = ops::load_plan(&dir.path().join("p.toml"), &[], &registry()).unwrap();
    let count = plan.index_of("count").unwrap();
    let probe = plan.index_of("probe").unwrap();
    assert_eq!(
        plan.stages[count].inputs["text"],
        (probe, "out".to_string())
    );

    let path_for_artifact = WORDS.replace("\"count.counts\"", "\"./corpus.txt\"");
    let err = spec_error(setup(&path_for_artifact, "").path()).to_string();
    assert!(
        err.contains("takes a `counts` artifact from another stage, not a path"),
        "{err}"
    );

    // Without `./` a path reads as `<stage>.<output>`; the help shows the fix.
    let unprefixed = WORDS.replace("./corpus.txt", "corpus.txt");
    let err = spec_error(setup(&unprefixed, "").path()).to_string();
    assert!(
        err.contains("there is no stage `corpus`") && err.contains("\"./corpus.txt\""),
        "{err}"
    );

    let bad_param = WORDS.replace(
        "params = { n = 2 }",
        "params = { n = 2 }\n[stages.count.params]\nmin_len = 0",
    );
    let err = spec_error(setup(&bad_param, "").path()).to_string();
    assert!(err.contains("min_len: must be at least 1"), "{err}");
}

/// Sleeps a little and records the most stages of its kind running at once.
struct Probe {
    resource: Resource,
    kind: &'static str,
}

static CPU_NOW: AtomicUsize = AtomicUsize::new(0);
static CPU_MAX: AtomicUsize = AtomicUsize::new(0);
static TENSOR_NOW: AtomicUsize = AtomicUsize::new(0);
static TENSOR_MAX: AtomicUsize = AtomicUsize::new(0);

#[derive(Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ProbeParams {
    tag: u32,
}

impl TypedStage for Probe {
    type Params = ProbeParams;
    fn info(&self) -> KindInfo {
        KindInfo {
            kind: self.kind,
            version: 1,
            summary: "test probe",
            inputs: vec![],
            extra_inputs: None,
            outputs: vec![Port {
                optional: false,
                name: "out",
                ty: "counts",
                doc: "",
            }],
            params: vec![],
            resource: self.resource,
        }
    }
    fn run(&self, p: ProbeParams, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let (now, max) = match self.resource {
            Resource::Cpu => (&CPU_NOW, &CPU_MAX),
            Resource::Tensor => (&TENSOR_NOW, &TENSOR_MAX),
        };
        let running = now.fetch_add(1, Ordering::SeqCst) + 1;
        max.fetch_max(running, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        now.fetch_sub(1, Ordering::SeqCst);
        let counts = kinds::Counts::from([(format!("tag{}", p.tag), 1)]);
        kinds::write_counts(ctx.output("out")?, &counts)
    }
}

#[test]
fn jobs_run_cpu_stages_together_and_tensor_stages_one_at_a_time() {
    let mut spec = String::from("[pipeline]\nname = \"par\"\n");
    for i in 0..3 {
        spec.push_str(&format!(
            "[stages.cpu{i}]\nkind = \"probe\"\nparams = {{ tag = {i} }}\n"
        ));
        spec.push_str(&format!(
            "[stages.gpu{i}]\nkind = \"tensor_probe\"\nparams = {{ tag = {i} }}\n"
        ));
    }
    let dir = setup(&spec, "");
    let options = RunOptions {
        jobs: 4,
        ..RunOptions::default()
    };
    let report = run_with(dir.path(), &registry(), &[], options);
    assert_eq!(ran(&report).len(), 6, "{:?}", report.stages);
    assert!(
        CPU_MAX.load(Ordering::SeqCst) >= 2,
        "CPU stages never overlapped"
    );
    assert_eq!(
        TENSOR_MAX.load(Ordering::SeqCst),
        1,
        "tensor stages overlapped"
    );
}

struct Fail;

impl TypedStage for Fail {
    type Params = kinds::NoParams;
    fn info(&self) -> KindInfo {
        KindInfo {
            kind: "fail",
            version: 1,
            summary: "always fails",
            inputs: vec![],
            extra_inputs: None,
            outputs: vec![Port {
                optional: false,
                name: "counts",
                ty: "counts",
                doc: "",
            }],
            params: vec![],
            resource: Resource::Cpu,
        }
    }
    fn run(&self, _: kinds::NoParams, _: &mut StageContext<'_>) -> anyhow::Result<()> {
        anyhow::bail!("broken on purpose")
    }
}

const FAILING: &str = r#"
[pipeline]
name = "failing"

[stages.bad]
kind = "fail"

[stages.after_bad]
kind = "top"
inputs = { counts = "bad.counts" }

[stages.count]
kind = "words"
inputs = { text = "./corpus.txt" }

[stages.top]
kind = "top"
inputs = { counts = "count.counts" }
"#;

#[test]
fn keep_going_runs_what_does_not_depend_on_a_failure() {
    let dir = setup(FAILING, "x y");
    let stopped = run_with(dir.path(), &registry(), &[], RunOptions::default());
    assert_eq!(stopped.stages[0].outcome, Outcome::Failed);
    assert_eq!(
        stopped.stages[0].error.as_deref(),
        Some("broken on purpose")
    );
    assert!(
        ran(&stopped).is_empty(),
        "without --keep-going nothing else starts"
    );

    let options = RunOptions {
        keep_going: true,
        ..RunOptions::default()
    };
    let went_on = run_with(dir.path(), &registry(), &[], options);
    let got: Vec<_> = outcomes(&went_on);
    assert!(got.contains(&("after_bad", Outcome::Skipped)), "{got:?}");
    assert!(
        got.contains(&("count", Outcome::Ran)) && got.contains(&("top", Outcome::Ran)),
        "{got:?}"
    );
}

#[test]
fn only_runs_one_stage_against_a_cache_filled_elsewhere_and_force_reruns() {
    let dir = setup(WORDS, "one two two");
    let d = dir.path();
    let only_top = || RunOptions {
        only: Some("top".into()),
        ..RunOptions::default()
    };
    // Nothing cached yet: `--only top` refuses, naming the missing stage.
    let err = try_run(d, &registry(), &[], only_top()).err().unwrap();
    assert!(
        matches!(err.downcast_ref::<RunError>(), Some(RunError::NotCached { upstream, .. }) if upstream == "count")
    );

    run_with(d, &registry(), &[], RunOptions::default());
    let report = run_with(d, &registry(), &["top.n=1"], only_top());
    assert_eq!(
        outcomes(&report),
        [("count", Outcome::Cached), ("top", Outcome::Ran)]
    );

    let options = RunOptions {
        force: BTreeSet::from(["count".to_string()]),
        ..RunOptions::default()
    };
    let forced = run_with(d, &registry(), &["top.n=1"], options);
    assert_eq!(
        outcomes(&forced),
        [("count", Outcome::Ran), ("top", Outcome::Cached)]
    );
    assert_eq!(
        forced.stages[0].reason.as_deref(),
        Some("forced with --force")
    );
}

/// Two threads of one process running the same stage at once on one cache
/// (parallel sweep trials sharing a stage): one computes it, the other
/// waits for it and finds it cached.
#[test]
fn concurrent_runs_in_one_process_compute_a_shared_stage_once() {
    let spec =
        "[pipeline]\nname = \"shared\"\n[stages.slow]\nkind = \"probe\"\nparams = { tag = 77 }\n";
    let dir = setup(spec, "");
    let registry = registry();
    let plan = ops::load_plan(&dir.path().join("p.toml"), &[], &registry).unwrap();
    let cache = Cache::open(&dir.path().join("cache"), true).unwrap();
    let reports: Vec<RunReport> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    run::execute(&plan, &cache, &RunOptions::default(), &Progress::hidden())
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut outcomes: Vec<Outcome> = reports.iter().map(|r| r.stages[0].outcome).collect();
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(outcomes, [Outcome::Cached, Outcome::Ran]);
    assert_eq!(reports[0].stages[0].outputs, reports[1].stages[0].outputs);
}

/// `[pipeline.params]` gives a param to every stage whose kind takes it —
/// exactly as if the stage had written it (same canonical params, so the
/// same key) — unless the stage sets it itself or a `--set` does; a name no
/// stage takes, or a bad value, is refused at its own line.
#[test]
fn pipeline_params_reach_every_stage_that_takes_them_and_yield_to_the_stage() {
    let r = registry();
    let top_n = |spec: &str, sets: &[&str]| {
        let dir = setup(spec, "a b");
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let plan = ops::load_plan(&dir.path().join("p.toml"), &sets, &r).unwrap();
        let top = plan.stages.iter().find(|s| s.name == "top").unwrap();
        top.params["n"].clone()
    };
    let shared = WORDS
        .replace(
            "name = \"words\"\n",
            "name = \"words\"\n[pipeline.params]\nn = 5\n",
        )
        .replace("params = { n = 2 }\n", "");
    assert_eq!(top_n(&shared, &[]), 5);
    assert_eq!(top_n(&shared, &["top.n=7"]), 7);
    // the stage's own value wins
    let own = WORDS.replace(
        "name = \"words\"\n",
        "name = \"words\"\n[pipeline.params]\nn = 5\n",
    );
    assert_eq!(top_n(&own, &[]), 2);
    // the same plan as writing it on the stage: the same key
    let written = WORDS.replace("n = 2", "n = 5");
    let one = setup(WORDS, "a b");
    let key_of = |spec: &str| {
        std::fs::write(one.path().join("p.toml"), spec).unwrap();
        let plan = ops::load_plan(&one.path().join("p.toml"), &[], &r).unwrap();
        plan.fingerprint()
    };
    assert_eq!(key_of(&shared), key_of(&written));

    let refused = |spec: &str| {
        let dir = setup(spec, "a b");
        let Err(err) = ops::load_plan(&dir.path().join("p.toml"), &[], &r) else {
            panic!("the plan was accepted");
        };
        err.downcast::<SpecError>().expect("a SpecError")
    };
    let nobody = WORDS.replace(
        "name = \"words\"\n",
        "name = \"words\"\n[pipeline.params]\nnope = 1\n",
    );
    let e = refused(&nobody);
    let line = |e: &SpecError| match &e.location {
        seqpipe::spec::Location::File { line, .. } => *line,
        other => panic!("not in the file: {other}"),
    };
    assert_eq!(e.key, "pipeline.params.nope");
    assert_eq!(line(&e), 5, "{e}");
    let bad = shared.replace("n = 5", "n = \"five\"");
    let e = refused(&bad);
    assert_eq!(line(&e), 5, "points at [pipeline.params]: {e}");
    assert!(e.key.contains("params.n"), "{e}");
}
