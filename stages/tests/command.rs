//! `command` stages through the real binary: a user's own program as a
//! stage, cached by argv, params, deps and inputs; every way it can fail
//! publishes nothing and says why; a killed command resumes from the
//! checkpoint it saved; bad placeholders are spec errors before anything
//! runs. The two examples (`examples/shell-stage`, `examples/python-stage`)
//! run end to end.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{command, ran, run_ok, seqpipe, setup, spawn_run, stage_record};

/// A data stage, a command stage reading its output with a script that is
/// a dep, a second command reading the first, and a built-in stage beside.
const CHAIN: &str = r#"
[pipeline]
name = "cmd"
seed = 3

[stages.synth]
kind = "synth"
params = { users = 50, items = 30, min_len = 5, max_len = 10 }

[stages.stats]
kind = "command"
cmd = ["sh", "stats.sh", "{inputs.events}", "{outputs.m}", "{params.scale}"]
deps = ["stats.sh", "lib/"]
inputs = { events = "synth.events" }
outputs = { m = "metrics" }
params = { scale = 2 }

[stages.double]
kind = "command"
shell = true
cmd = "sed 's/\"files\"/\"doubled\"/' {inputs.m}/metrics.json > {outputs.m}/metrics.json"
inputs = { m = "stats.m" }
outputs = { m = "metrics" }

[stages.sequences]
kind = "sequences"
inputs = { events = "synth.events" }
"#;

const STATS_V1: &str = r#"n=$(ls "$1" | wc -l)
echo "{\"files\": $((n * $3)), \"version\": 1}" > "$2/metrics.json"
"#;

fn chain() -> tempfile::TempDir {
    let (dir, _) = setup(CHAIN);
    std::fs::write(dir.path().join("stats.sh"), STATS_V1).unwrap();
    std::fs::create_dir(dir.path().join("lib")).unwrap();
    std::fs::write(dir.path().join("lib/helper.txt"), "helper").unwrap();
    dir
}

fn status_text(dir: &Path) -> String {
    let out = seqpipe(dir, &["status", "p.toml"]);
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn metrics_of(dir: &Path, stage: &str, output: &str) -> serde_json::Value {
    let path = stage_record(dir, stage)["artifacts"][output]["path"]
        .as_str()
        .unwrap()
        .to_string();
    serde_json::from_slice(&std::fs::read(Path::new(&path).join("metrics.json")).unwrap()).unwrap()
}

#[test]
fn command_stages_are_cached_and_rerun_exactly_when_a_dep_changes() {
    let dir = chain();
    let d = dir.path();
    run_ok(d, &[]);
    assert_eq!(ran(d), ["synth", "stats", "double", "sequences"]);
    assert_eq!(metrics_of(d, "stats", "m")["files"], 2); // events.parquet × 2
    assert_eq!(metrics_of(d, "double", "m")["doubled"], 2);
    // The artifact types are in `show --json`, for notebooks.
    let stats = stage_record(d, "stats");
    assert_eq!(stats["artifacts"]["m"]["type"], "metrics");
    assert_eq!(stats["artifacts"]["log"]["type"], "log");
    // A metrics output shows in `show` like an evaluation's.
    let show = seqpipe(d, &["show", "p.toml"]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("stats.m:\n  files 2, version 1"), "{text}");

    run_ok(d, &[]);
    assert!(ran(d).is_empty(), "a rerun is all cache hits");

    // Touching a dep (same bytes) or writing an unrelated file reruns nothing.
    std::fs::write(d.join("lib/helper.txt"), "helper").unwrap();
    std::fs::write(d.join("notes.txt"), "unrelated").unwrap();
    run_ok(d, &[]);
    assert!(ran(d).is_empty());

    // Editing the script reruns it and what reads it, nothing else.
    std::fs::write(d.join("stats.sh"), STATS_V1.replace("1}", "2}")).unwrap();
    assert!(
        status_text(d).contains("input `dep:stats.sh` changed"),
        "{}",
        status_text(d)
    );
    run_ok(d, &[]);
    assert_eq!(ran(d), ["stats", "double"]);

    // A file inside a dep folder counts too; a param reaches the argv.
    std::fs::write(d.join("lib/helper.txt"), "changed").unwrap();
    run_ok(d, &["--set", "stats.scale=5"]);
    assert_eq!(ran(d), ["stats", "double"]);
    assert_eq!(metrics_of(d, "stats", "m")["files"], 5);
}

/// Runs a one-command pipeline whose command is `cmd` (a shell script) and
/// whose output `out` is declared `ty`; returns (exit code, stderr).
fn run_failing(cmd: &str, ty: &str) -> (tempfile::TempDir, i32, String) {
    let spec = format!(
        r#"
[pipeline]
name = "fail"

[stages.mine]
kind = "command"
shell = true
cmd = '''{cmd}'''
outputs = {{ out = "{ty}" }}
"#
    );
    let (dir, _) = setup(&spec);
    let out = seqpipe(dir.path(), &["run", "p.toml", "--quiet"]);
    let code = out.status.code().unwrap_or(-1);
    (dir, code, String::from_utf8_lossy(&out.stderr).to_string())
}

/// Artifacts in the cache (none may be published by a failed stage).
fn published(dir: &Path) -> usize {
    let Ok(shards) = std::fs::read_dir(dir.join("cache/objects")) else {
        return 0;
    };
    shards
        .flatten()
        .map(|s| std::fs::read_dir(s.path()).map_or(0, |e| e.count()))
        .sum()
}

#[test]
fn failing_commands_publish_nothing_and_name_the_cause() {
    let cases = [
        (
            "echo working; echo 'boom: bad things' >&2; exit 3",
            "dir",
            "exited with status 3",
        ),
        ("echo 'no output' >&2", "dir", "nothing was written"),
        (
            "echo 'not parquet' > {outputs.out}/events.parquet; echo wrote >&2",
            "table",
            "events.parquet is not a readable Parquet file",
        ),
        (
            "echo '{\"hr\": true}' > {outputs.out}/metrics.json; echo wrote >&2",
            "metrics",
            "`hr` is true, not a number",
        ),
        (
            "echo 'about to die' >&2; kill -9 $$",
            "dir",
            "was killed by signal 9 (SIGKILL)",
        ),
    ];
    for (cmd, ty, cause) in cases {
        let (dir, code, stderr) = run_failing(cmd, ty);
        assert_eq!(code, 1, "{cmd}: {stderr}");
        assert!(
            stderr.contains("stage `mine` (command) failed"),
            "{cmd}: {stderr}"
        );
        assert!(
            stderr.contains(cause),
            "{cmd}: wanted {cause:?} in {stderr}"
        );
        assert!(stderr.contains("nothing was published"), "{stderr}");
        assert!(stderr.contains("lines of stderr:"), "{cmd}: {stderr}");
        assert_eq!(published(dir.path()), 0, "{cmd}: published something");
    }
    let (_, _, stderr) = run_failing("echo 'boom: bad things' >&2; exit 3", "dir");
    assert!(stderr.contains("    boom: bad things"), "{stderr}");
}

#[test]
fn bad_command_specs_exit_2_before_anything_runs() {
    let base = r#"
[pipeline]
name = "bad"

[stages.synth]
kind = "synth"
params = { users = 20, items = 10 }
"#;
    let cases = [
        (
            r#"cmd = ["echo", "{params.lrr}"]
outputs = { o = "dir" }
params = { lr = 1 }"#,
            "no param `lrr` (its params: lr)",
        ),
        (
            r#"cmd = ["cat", "{inputs.dta}"]
inputs = { data = "synth.events" }
outputs = { o = "dir" }"#,
            "no input `dta` (its inputs: data)",
        ),
        (
            r#"cmd = ["echo", "{outputs.x}"]
outputs = { o = "dir" }"#,
            "no output `x`",
        ),
        (
            r#"cmd = ["true"]
outputs = { o = "tabel" }"#,
            "did you mean `table`?",
        ),
        (r#"cmd = ["true"]"#, "must declare its outputs"),
        (
            r#"cmd = "echo hi"
outputs = { o = "dir" }"#,
            "commands run without a shell",
        ),
        (
            r#"cmd = ["true"]
outputs = { o = "dir" }
params = { cmd = 1 }"#,
            "is a setting of the command stage, not a param",
        ),
        (
            r#"cmd = ["true"]
resource = "gpu"
outputs = { o = "dir" }"#,
            "must be \"cpu\" or \"tensor\"",
        ),
        (
            r#"cmd = ["true"]
deps = ["missing.py"]
outputs = { o = "dir" }"#,
            "no such file or folder",
        ),
    ];
    for (body, message) in cases {
        let spec = format!("{base}\n[stages.mine]\nkind = \"command\"\n{body}\n");
        let (dir, _) = setup(&spec);
        let out = seqpipe(dir.path(), &["run", "p.toml"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{body}: {stderr}");
        assert!(
            stderr.contains(message),
            "{body}: wanted {message:?} in {stderr}"
        );
        assert!(stderr.contains("p.toml:"), "{stderr}");
        assert_eq!(published(dir.path()), 0, "{body}: synth ran");
    }
    // `cmd` on a built-in kind.
    let spec = format!("{base}cmd = [\"true\"]\n");
    let (dir, _) = setup(&spec);
    let out = seqpipe(dir.path(), &["run", "p.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("is a setting of `command` stages, not of kind `synth`"),
        "{stderr}"
    );
}

/// Param values that are shell code if the shell ever parses them.
const HOSTILE: &str = r#"a = '$(touch PWNED)', b = '"; touch PWNED2; "', c = '`touch PWNED3`', d = "'; touch PWNED4; '""#;

/// No file named PWNED* anywhere under `dir`.
fn assert_not_pwned(dir: &Path) {
    for path in files_under(dir) {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(!name.starts_with("PWNED"), "a value ran as code: {path:?}");
    }
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            out.extend(files_under(&path));
        }
        out.push(path);
    }
    out
}

/// The script of the injection test: each value bare, in double quotes,
/// inside a word, in a here-document and in a command substitution.
const INJECT_CMD: &str = r#"printf '%s\n' {params.a} {params.b} {params.c} {params.d} "{params.a}" "{params.b}" "{params.c}" "{params.d}" "x{params.b}y" > {outputs.out}
cat >> {outputs.out} <<END
{params.a}{params.c}
END
echo "$(printf '%s' "{params.d}")" >> {outputs.out}"#;

#[test]
fn with_a_shell_values_reach_the_script_literally_and_never_run() {
    let spec = format!(
        "[pipeline]\nname = \"inject\"\n\n[stages.echo]\nkind = \"command\"\nshell = true\n\
         cmd = '''{INJECT_CMD}'''\noutputs = {{ out = \"file\" }}\nparams = {{ {HOSTILE} }}\n"
    );
    let (dir, _) = setup(&spec);
    let d = dir.path();
    run_ok(d, &[]);
    assert_not_pwned(d);
    let path = stage_record(d, "echo")["artifacts"]["out"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let text = std::fs::read_to_string(Path::new(&path).join("out")).unwrap();
    let (a, b, c, e) = (
        "$(touch PWNED)",
        r#""; touch PWNED2; ""#,
        "`touch PWNED3`",
        "'; touch PWNED4; '",
    );
    let inside = format!("x{b}y");
    let joined = format!("{a}{c}");
    let want = [a, b, c, e, a, b, c, e, &inside, &joined, e];
    assert_eq!(text.lines().collect::<Vec<_>>(), want, "{text}");

    // Inside single quotes the shell would expand nothing: refused at plan
    // time, and nothing runs.
    for cmd in [
        "echo '{params.a}' > {outputs.out}",
        "echo 'x {params.b} y' > {outputs.out}",
    ] {
        let spec = format!(
            "[pipeline]\nname = \"q\"\n\n[stages.echo]\nkind = \"command\"\nshell = true\n\
             cmd = \"{cmd}\"\noutputs = {{ out = \"file\" }}\nparams = {{ {HOSTILE} }}\n"
        );
        let (dir, _) = setup(&spec);
        let out = seqpipe(dir.path(), &["run", "p.toml", "--quiet"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(err.contains("stands inside single quotes"), "{cmd}: {err}");
        assert!(err.contains("p.toml:"), "{err}");
        assert_not_pwned(dir.path());
        assert_eq!(published(dir.path()), 0);
    }

    // In `$(( ))` the shell evaluates the value: only an integer may go in.
    let spec = format!(
        "[pipeline]\nname = \"arith\"\n\n[stages.echo]\nkind = \"command\"\nshell = true\n\
         cmd = \"echo $(( {{params.a}} + 1 )) > {{outputs.out}}\"\noutputs = {{ out = \"file\" }}\n\
         params = {{ {HOSTILE} }}\n"
    );
    let (dir, _) = setup(&spec);
    let out = seqpipe(dir.path(), &["run", "p.toml", "--quiet"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is not an integer"), "{err}");
    assert_not_pwned(dir.path());
}

/// A script that counts to 8, one step a checkpoint, sleeping between steps;
/// it resumes from `$SEQPIPE_CHECKPOINT_DIR/step` and logs where it started.
const COUNTER: &str = r#"
[pipeline]
name = "counter"

[stages.count]
kind = "command"
cmd = ["sh", "count.sh"]
deps = ["count.sh"]
outputs = { m = "metrics" }
"#;

const COUNT_SH: &str = r#"step=0
[ -f "$SEQPIPE_CHECKPOINT_DIR/step" ] && step=$(cat "$SEQPIPE_CHECKPOINT_DIR/step")
echo "starting at $step"
while [ "$step" -lt 8 ]; do
  sleep 0.3
  step=$((step + 1))
  echo "$step" > "$SEQPIPE_CHECKPOINT_DIR/step.tmp" && mv "$SEQPIPE_CHECKPOINT_DIR/step.tmp" "$SEQPIPE_CHECKPOINT_DIR/step"
  echo "SEQPIPE_PROGRESS $step/8"
done
echo "{\"steps\": $step}" > "$SEQPIPE_OUTPUT_M/metrics.json"
"#;

fn checkpointed_step(dir: &Path) -> u32 {
    let Ok(entries) = std::fs::read_dir(dir.join("cache/checkpoints")) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("step")).ok())
        .filter_map(|s| s.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn a_killed_command_resumes_from_its_checkpoint() {
    let (reference, _) = setup(COUNTER);
    std::fs::write(reference.path().join("count.sh"), COUNT_SH).unwrap();
    run_ok(reference.path(), &[]);
    let expected = stage_record(reference.path(), "count")["outputs"]["m"].clone();

    let (killed, _) = setup(COUNTER);
    let d = killed.path();
    std::fs::write(d.join("count.sh"), COUNT_SH).unwrap();
    let mut child = spawn_run(d, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while checkpointed_step(d) < 3 {
        assert!(Instant::now() < deadline, "no checkpoint after 60 s");
        assert!(child.try_wait().unwrap().is_none(), "ended before the kill");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL to seqpipe; the command dies with it
    child.wait().unwrap();
    let at_kill = checkpointed_step(d);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        checkpointed_step(d),
        at_kill,
        "the command outlived seqpipe"
    );
    assert_eq!(published(d), 0, "a killed stage published something");

    run_ok(d, &[]);
    let log = stage_record(d, "count")["artifacts"]["log"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let stdout = std::fs::read_to_string(Path::new(&log).join("stdout.txt")).unwrap();
    assert!(
        stdout.starts_with(&format!("starting at {at_kill}\n")),
        "{stdout}"
    );
    assert_eq!(stage_record(d, "count")["outputs"]["m"], expected);
    assert!(
        std::fs::read_dir(d.join("cache/checkpoints"))
            .unwrap()
            .next()
            .is_none(),
        "the checkpoint is removed once the stage succeeds"
    );
}

fn example(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .join("pipeline.toml")
}

#[test]
fn the_shell_example_counts_words() {
    let cache = tempfile::tempdir().unwrap();
    let spec = example("shell-stage");
    let out = command(cache.path(), &["run", spec.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let show = command(cache.path(), &["show", spec.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let top = manifest["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "top")
        .unwrap();
    let path = top["artifacts"]["words"]["path"].as_str().unwrap();
    let text = std::fs::read_to_string(Path::new(path).join("words")).unwrap();
    // words.txt: "the" 4 times, "cache" 3 times, "a" twice.
    let first: Vec<&str> = text.lines().take(3).map(str::trim).collect();
    assert_eq!(first, ["4 the", "3 cache", "2 a"], "{text}");
}

#[test]
fn the_python_example_trains_beside_gru4rec() {
    let cache = tempfile::tempdir().unwrap();
    let spec = example("python-stage");
    let spec = spec.to_str().unwrap();
    // Two epochs each: this checks the mechanism, not the models.
    let args = [
        "run",
        spec,
        "--set",
        "my_gru.epochs=2",
        "--set",
        "train_gru4rec.epochs=2",
    ];
    let out = command(cache.path(), &args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("python_gru"),
        "the report compares both: {stdout}"
    );
    let show = command(cache.path(), &["show", spec, "--json"])
        .output()
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let mine = manifest["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "my_gru")
        .unwrap();
    let metrics = Path::new(mine["artifacts"]["metrics"]["path"].as_str().unwrap());
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(metrics.join("metrics.json")).unwrap()).unwrap();
    let hr10 = m["test"]["hr@10"].as_f64().unwrap();
    let ndcg10 = m["test"]["ndcg@10"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&hr10) && ndcg10 <= hr10, "{m}");
    // Better than chance over 400 items (HR@10 = 0.025) after two epochs.
    assert!(hr10 > 0.05, "{m}");
    assert_eq!(mine["artifacts"]["model"]["type"], "tensor");
    // The rerun is all cache hits, the Python stage included.
    let out = command(cache.path(), &args).output().unwrap();
    assert!(out.status.success());
    let show = command(cache.path(), &["show", spec, "--json"])
        .output()
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert!(manifest["stages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["outcome"] == "cached"));
}

/// `path` relative to the folder `from` (symlinks resolved in both).
fn relative(from: &Path, path: &Path) -> std::path::PathBuf {
    let (from, path) = (from.canonicalize().unwrap(), path.canonicalize().unwrap());
    let common = from
        .components()
        .zip(path.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut rel = std::path::PathBuf::new();
    for _ in from.components().skip(common) {
        rel.push("..");
    }
    for c in path.components().skip(common) {
        rel.push(c);
    }
    rel
}

/// Runs `spec` twice with seqpipe started in `cwd`, the spec and the cache
/// both named relative to `cwd`: the first run must succeed, the second
/// be all cache hits.
fn run_twice_from(cwd: &Path, spec: &Path, cache: &Path, extra: &[&str]) {
    std::fs::create_dir_all(cache).unwrap();
    let (spec, cache) = (relative(cwd, spec), relative(cwd, cache));
    assert!(spec.is_relative() && cache.is_relative());
    for round in 0..2 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_seqpipe"))
            .arg("run")
            .arg(&spec)
            .args(extra)
            .arg("--quiet")
            .arg("--cache")
            .arg(&cache)
            .current_dir(cwd)
            .env_remove("SEQPIPE_CACHE")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{spec:?} from {cwd:?}: {err}");
        let show = std::process::Command::new(env!("CARGO_BIN_EXE_seqpipe"))
            .arg("show")
            .arg(&spec)
            .args(["--json", "--cache"])
            .arg(&cache)
            .current_dir(cwd)
            .output()
            .unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
        let outcomes: Vec<&str> = manifest["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["outcome"].as_str().unwrap())
            .collect();
        if round == 1 {
            assert!(outcomes.iter().all(|o| *o == "cached"), "{outcomes:?}");
        } else {
            assert!(outcomes.contains(&"ran"), "{outcomes:?}");
        }
    }
}

fn project_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_shell_example_runs_from_the_project_root_and_from_elsewhere() {
    let root = project_root();
    let spec = example("shell-stage");
    let caches = tempfile::tempdir().unwrap();
    // The README's command, from the project root, with a relative cache.
    run_twice_from(&root, &spec, &caches.path().join("a"), &[]);
    // From an unrelated folder, the spec given by a relative path.
    let elsewhere = tempfile::tempdir().unwrap();
    let cache = elsewhere.path().join("cache");
    run_twice_from(elsewhere.path(), &spec, &cache, &["--set", "top.n=2"]);
}

#[test]
fn the_python_example_runs_from_elsewhere() {
    let root = project_root();
    let python = root.join(".venv/bin/python");
    let deps = std::process::Command::new(&python)
        .args(["-c", "import torch, pyarrow, safetensors"])
        .status();
    if !deps.is_ok_and(|s| s.success()) {
        eprintln!(
            "skipped: {} lacks torch, pyarrow or safetensors",
            python.display()
        );
        return;
    }
    let spec = example("python-stage");
    let one_epoch = [
        "--set",
        "my_gru.epochs=1",
        "--set",
        "train_gru4rec.epochs=1",
    ];
    let elsewhere = tempfile::tempdir().unwrap();
    let cache = elsewhere.path().join("cache");
    run_twice_from(elsewhere.path(), &spec, &cache, &one_epoch);
    let caches = tempfile::tempdir().unwrap();
    run_twice_from(&root, &spec, &caches.path().join("c"), &one_epoch);
}

/// Infinities and date-times, which JSON lacks, and plain values beside.
const AS_WRITTEN: &str = r#"
[pipeline]
name = "written"

[stages.show]
kind = "command"
cmd = ["sh", "-c", "printf '%s\n' \"$1\" \"$2\" \"$3\" \"$SEQPIPE_PARAMS\" > \"$4\"", "sh", "{params.when}", "{params.big}", "{params.small}", "{outputs.out}"]
outputs = { out = "file" }
params = { when = 1979-05-27T07:32:00Z, day = 1979-05-27, big = inf, small = -inf, n = 1.5, s = "x" }

[stages.shell]
kind = "command"
shell = true
cmd = "echo {params.when} \"{params.big}\" > {outputs.out}"
outputs = { out = "file" }
params = { when = 07:32:00, big = -inf }
"#;

#[test]
fn params_reach_the_command_as_written_and_infinities_key_apart() {
    let (dir, _) = setup(AS_WRITTEN);
    let d = dir.path();
    run_ok(d, &[]);
    let read = |stage: &str| {
        let path = stage_record(d, stage)["artifacts"]["out"]["path"]
            .as_str()
            .unwrap()
            .to_string();
        std::fs::read_to_string(Path::new(&path).join("out")).unwrap()
    };
    assert_eq!(
        read("show").lines().collect::<Vec<_>>(),
        [
            "1979-05-27T07:32:00Z",
            "inf",
            "-inf",
            r#"{"big":Infinity,"day":"1979-05-27","n":1.5,"s":"x","small":-Infinity,"when":"1979-05-27T07:32:00Z"}"#,
        ]
    );
    assert_eq!(read("shell"), "07:32:00 -inf\n");
    // `inf` and `-inf` are different keys: the flip reruns the stage.
    run_ok(d, &["--set", "show.big=-inf"]);
    assert_eq!(ran(d), ["show"]);
    run_ok(d, &[]);
    assert!(ran(d).is_empty(), "the original is still cached");
}
