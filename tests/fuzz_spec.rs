//! The spec parser and planner under libFuzzer (`cargo fuzz`, target
//! `fuzz/fuzz_targets/spec.rs`) for a bounded time, seeded with every spec
//! in the repository — the bundled pipelines and the malformed corpus.
//! A panic, a hang (10 s per input) or runaway memory fails the test with
//! libFuzzer's report and the path of the input that did it.
//!
//! Needs `cargo-fuzz` (scripts/test.sh installs it with `cargo install`).
//! It builds with `-s none` (no AddressSanitizer), which the stable
//! toolchain can do. Without cargo-fuzz the test says it skipped — unless
//! SEQPIPE_REQUIRE_FUZZ is set, as scripts/test.sh sets it once cargo-fuzz
//! is installed.

use std::path::Path;
use std::process::Command;

/// Seconds of fuzzing; SEQPIPE_FUZZ_SECONDS overrides (e.g. 600 for a
/// longer hunt).
const DEFAULT_SECONDS: u64 = 30;

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn cargo_fuzz_available() -> bool {
    Command::new(cargo())
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Copies every `.toml` file under `dir` into `corpus`.
fn seed(corpus: &Path, dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, corpus.join(path.file_name().unwrap())).unwrap();
            n += 1;
        }
    }
    n
}

#[test]
fn the_spec_parser_survives_bounded_fuzzing() {
    if !cargo_fuzz_available() {
        assert!(
            std::env::var_os("SEQPIPE_REQUIRE_FUZZ").is_none(),
            "SEQPIPE_REQUIRE_FUZZ is set but `cargo fuzz` does not run"
        );
        eprintln!("skipped: cargo-fuzz is not installed (cargo install cargo-fuzz --locked)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = tempfile::tempdir().unwrap();
    let seeds = seed(corpus.path(), &root.join("pipelines"))
        + seed(corpus.path(), &root.join("stages/tests/malformed"));
    assert!(seeds > 40, "only {seeds} seed specs");
    let seconds: u64 = std::env::var("SEQPIPE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SECONDS);
    let artifacts = corpus.path().join("artifacts");
    std::fs::create_dir(&artifacts).unwrap();
    let out = Command::new(cargo())
        .current_dir(root.join("fuzz"))
        .args(["fuzz", "run", "--sanitizer", "none", "--release", "spec"])
        .arg(corpus.path())
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .output()
        .expect("cargo fuzz starts");
    let err = String::from_utf8_lossy(&out.stderr);
    let tail: String = err
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    let found: Vec<_> = std::fs::read_dir(&artifacts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // The temporary folder goes when the test ends: show the inputs.
    let inputs: Vec<String> = found
        .iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned())
        .collect();
    assert!(
        out.status.success() && found.is_empty(),
        "the fuzzer found a failing spec (exit {:?}):\n{tail}\nfailing inputs: {inputs:#?}",
        out.status.code()
    );
    // libFuzzer's last line: "Done N runs in S second(s)".
    let runs: u64 = err
        .lines()
        .rev()
        .find_map(|l| {
            l.strip_prefix("Done ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no run count in the fuzzer's output:\n{tail}"));
    assert!(runs > 1000, "only {runs} inputs fuzzed:\n{tail}");
    eprintln!("fuzzed {runs} specs in {seconds} s from {seeds} seeds");
}
