//! The malformed-spec corpus (`stages/tests/malformed/*.toml`, 41 specs,
//! each opening with `# expect: <text>` and `# command: run|sweep`): every
//! one exits 2 before anything runs, names `p.toml:line:col` and says what
//! is wrong. Then a fuzz pass: thousands of seeded mutations of the corpus
//! and of a valid spec go through the planner in-process, which must answer
//! each with a plan or an error — never a panic.

mod common;

use std::path::Path;

use common::{seqpipe, setup};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn corpus() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/malformed");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().to_string();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

fn header<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
        .unwrap_or_else(|| panic!("no `# {key}:` line"))
}

#[test]
fn every_malformed_spec_exits_2_naming_the_place_and_the_problem() {
    let corpus = corpus();
    assert!(corpus.len() >= 40, "the corpus has {} specs", corpus.len());
    for (name, text) in &corpus {
        let (dir, _) = setup(text);
        let command = header(text, "command");
        let out = seqpipe(dir.path(), &[command, "p.toml", "--quiet"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: expected exit 2: {err}");
        let needle = header(text, "expect");
        assert!(err.contains(needle), "{name}: {needle:?} not in: {err}");
        assert!(
            err.contains("p.toml:"),
            "{name}: no file location in: {err}"
        );
        let objects = dir.path().join("cache/objects");
        assert!(
            !objects.exists() || std::fs::read_dir(&objects).unwrap().next().is_none(),
            "{name}: nothing may be cached"
        );
    }
}

/// One seeded mutation of `text`: delete, duplicate or replace a span, or
/// insert a TOML-ish token.
fn mutate(text: &str, rng: &mut ChaCha8Rng) -> String {
    const TOKENS: [&str; 14] = [
        "\"",
        "[",
        "]",
        "{",
        "}",
        "=",
        ",",
        ".",
        "\n",
        "[stages.x]\n",
        "kind = \"train\"\n",
        "inputs = { a = \"b.c\" }",
        "1e400",
        "-0",
    ];
    let chars: Vec<char> = text.chars().collect();
    let at = rng.gen_range(0..=chars.len());
    let len = rng.gen_range(0..=8).min(chars.len() - at.min(chars.len()));
    let (head, tail) = (&chars[..at], &chars[at..]);
    let mut out: String = head.iter().collect();
    match rng.gen_range(0..4) {
        0 => out.extend(&tail[len..]),
        1 => {
            out.extend(&tail[..len]);
            out.extend(tail);
        }
        2 => {
            out.push_str(TOKENS[rng.gen_range(0..TOKENS.len())]);
            out.extend(&tail[len..]);
        }
        _ => {
            out.push_str(TOKENS[rng.gen_range(0..TOKENS.len())]);
            out.extend(tail);
        }
    }
    out
}

#[test]
fn mutated_specs_never_panic_the_planner() {
    let registry = seqpipe_stages::registry();
    let malformed: Vec<String> = corpus().into_iter().map(|(_, t)| t).collect();
    let valid = [
        include_str!("../../pipelines/quickstart.toml"),
        include_str!("../../pipelines/sweep.toml"),
        include_str!("../../pipelines/tecd.toml"),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("p.toml");
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let (mut planned, mut rejected) = (0, 0);
    for round in 0..3000 {
        // half the rounds start from a valid spec, half from a malformed one
        let mut text = if round % 2 == 0 {
            valid[(round / 2) % valid.len()].to_string()
        } else {
            malformed[(round / 2) % malformed.len()].clone()
        };
        for _ in 0..rng.gen_range(1..=3) {
            text = mutate(&text, &mut rng);
        }
        std::fs::write(&path, &text).unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            seqpipe::ops::load_plan(&path, &[], &registry).map(|_| ())
        }));
        match result {
            Ok(Ok(())) => planned += 1,
            Ok(Err(_)) => rejected += 1,
            Err(_) => panic!("the planner panicked on mutation {round}:\n{text}"),
        }
    }
    // The mutations must exercise both outcomes to mean anything.
    assert!(
        planned > 50 && rejected > 1000,
        "planned {planned}, rejected {rejected}"
    );
}
