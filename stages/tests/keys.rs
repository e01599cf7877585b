//! Stage keys that must not move: the exact keys of `pipelines/quickstart.toml`
//! and of a command stage with every ordinary kind of TOML value, pinned as
//! they were computed before the key encoding learnt infinities and
//! datetimes. A change here invalidates every user's cache; it needs a
//! `FORMAT_VERSION` bump and a note, never an accident.

use std::collections::BTreeMap;
use std::path::Path;

use seqpipe::graph::Plan;

/// A stand-in content hash for every input: the keys then depend on the
/// kinds, versions, params and seed alone.
fn fake_inputs(plan: &Plan, i: usize) -> BTreeMap<String, String> {
    let stage = &plan.stages[i];
    stage
        .inputs
        .keys()
        .chain(stage.paths.keys())
        .map(|name| (name.clone(), "0".repeat(64)))
        .collect()
}

fn keys(spec: &Path) -> Vec<(String, String)> {
    let plan = seqpipe::ops::load_plan(spec, &[], &seqpipe_stages::registry()).unwrap();
    (0..plan.stages.len())
        .map(|i| {
            let fp = seqpipe::run::fingerprint(&plan, i, fake_inputs(&plan, i));
            (plan.stages[i].name.clone(), fp.key())
        })
        .collect()
}

fn assert_keys(got: &[(String, String)], want: &[(&str, &str)]) {
    let got: Vec<(&str, &str)> = got.iter().map(|(n, k)| (n.as_str(), k.as_str())).collect();
    assert_eq!(got, want);
}

#[test]
fn the_quickstart_keys_are_unchanged() {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/quickstart.toml");
    assert_keys(&keys(&spec), QUICKSTART);
}

// Moved on purpose since first pinned: `synth` (the quickstart's log now
// plants second-order transitions and taste: new params) and every
// `eval_*` (evaluate VERSION 5: ties at their expected position).
const QUICKSTART: &[(&str, &str)] = &[
    (
        "synth",
        "99d598e909340109238494d958979b16a676b5317765e41e9f37386bc28a9871",
    ),
    (
        "sequences",
        "3a180ad25332d3054fa714213dada5aea86a58a95bb1543d4f72f25b44738f89",
    ),
    (
        "train_pop",
        "93b5c7a010a99fa4c8beeb168ea21e238525565bbc20da1a0797fe3f930c40c4",
    ),
    (
        "train_markov",
        "f405c699b70c9f3ce882cd66d50b0d3346dfaf28f81cd99a8cc063a5eacfd730",
    ),
    (
        "train_sasrec",
        "1ba5ef595ee18cfb5dd00373b547de3ae860d015e8ed52107c8ba5e694cc768d",
    ),
    (
        "train_gru4rec",
        "da15d5236222df7da47e1cb492c5d9e481b44c71b4409b1c5620cf5ba465a40c",
    ),
    // The four evaluations differ only in their (stand-in) inputs.
    (
        "eval_pop",
        "bbead4850ab40faf419a9408ec4639707262e1315dbe603e546d7cefa81e2e21",
    ),
    (
        "eval_markov",
        "bbead4850ab40faf419a9408ec4639707262e1315dbe603e546d7cefa81e2e21",
    ),
    (
        "eval_sasrec",
        "bbead4850ab40faf419a9408ec4639707262e1315dbe603e546d7cefa81e2e21",
    ),
    (
        "eval_gru4rec",
        "bbead4850ab40faf419a9408ec4639707262e1315dbe603e546d7cefa81e2e21",
    ),
    (
        "report",
        "c3f9f5a7e7c1efb753c5a582cc820a474e3922b6c547b8c136fa81c6e07aa12a",
    ),
];

/// Strings, integers, finite floats (plain, exponent, negative zero),
/// booleans, arrays and nested tables in a command stage's params, plus its
/// settings.
const COMMAND_SPEC: &str = r#"
[pipeline]
name = "keys"
seed = 11

[stages.cmd]
kind = "command"
cmd = ["sh", "-c", "echo {params.s} > {outputs.out}/x", "{params.t}"]
env = { A = "b" }
outputs = { out = "dir" }
params = { s = "hé \"q\"", i = -7, big = 9007199254740993, f = 0.1, e = 3e-4, z = -0.0, b = true, a = [1, 2.5, "x", [true]], t = { n = 1, m = { k = "v" } } }
"#;

#[test]
fn a_command_stage_key_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("p.toml");
    std::fs::write(&spec, COMMAND_SPEC).unwrap();
    assert_keys(&keys(&spec), COMMAND);
}

const COMMAND: &[(&str, &str)] = &[(
    "cmd",
    "787ef8acf6d0d9e9f00352b63750fe80e7e04ee336b3fad4428607876286b5bd",
)];

/// The key of a command stage whose one param is `x = <value>` (TOML), or
/// the planner's error.
fn command_key(value: &str) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("p.toml");
    std::fs::write(
        &spec,
        format!(
            "[pipeline]\nname = \"k\"\n\n[stages.cmd]\nkind = \"command\"\n\
             cmd = [\"echo\", \"{{params.x}}\"]\noutputs = {{ out = \"dir\" }}\n\
             params = {{ x = {value} }}\n"
        ),
    )
    .unwrap();
    let plan = seqpipe::ops::load_plan(&spec, &[], &seqpipe_stages::registry())
        .map_err(|e| format!("{e:#}"))?;
    Ok(seqpipe::run::fingerprint(&plan, 0, BTreeMap::new()).key())
}

#[test]
fn every_toml_value_has_a_key_of_its_own() {
    // serde_json writes inf, -inf (and nan) as `null`: these shared a key.
    let values = [
        "inf",
        "-inf",
        "\"inf\"",
        "1e308",
        "-1e308",
        "0.0",
        "-0.0",
        "[inf]",
        "[-inf]",
        "{ a = inf }",
        "{ a = -inf }",
        "{ a = \"inf\" }",
        "1979-05-27T07:32:00Z",
        "\"1979-05-27T07:32:00Z\"",
        "1979-05-27T07:32:00",
        "1979-05-27",
        "07:32:00",
    ];
    let keys: Vec<String> = values.iter().map(|v| command_key(v).unwrap()).collect();
    for (i, a) in keys.iter().enumerate() {
        for (j, b) in keys.iter().enumerate().skip(i + 1) {
            assert_ne!(a, b, "{} and {} share a key", values[i], values[j]);
        }
    }
    // `+inf` is `inf` written another way.
    assert_eq!(command_key("+inf").unwrap(), keys[0]);
}

#[test]
fn nan_and_reserved_table_keys_are_refused_at_plan_time() {
    for (value, message) in [
        ("nan", "stages.cmd.params.x: is nan"),
        ("-nan", "stages.cmd.params.x: is nan"),
        ("[1, nan]", "(at `[1]`)"),
        (
            "{ \"$__seqpipe_float\" = \"inf\" }",
            "table keys starting with `$__` are reserved",
        ),
    ] {
        let e = command_key(value).unwrap_err();
        assert!(e.contains(message), "{value}: {e}");
        assert!(e.contains("p.toml:"), "{value}: {e}");
    }
    // A built-in kind would get `null` for an infinity: refused too.
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("p.toml");
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/quickstart.toml"),
    )
    .unwrap();
    std::fs::write(&spec, text).unwrap();
    for set in [
        "train_sasrec.lr=inf",
        "train_sasrec.lr=-inf",
        "eval_pop.k=[5, inf]",
    ] {
        let e = seqpipe::ops::load_plan(&spec, &[set.to_string()], &seqpipe_stages::registry())
            .map(|_| ())
            .unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("is infinite"), "{set}: {e}");
    }
}
