//! The printing commands end quietly when their reader goes away
//! (`seqpipe show --json | head`), as Unix tools do, instead of panicking
//! on the failed write. The commands that do work (`run | head -1`) finish
//! it, drop what the closed pipe cannot take, and exit as they would have.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Linux's signal number.
const SIGPIPE: i32 = 13;

#[test]
fn a_closed_pipe_ends_a_printing_command_without_a_panic() {
    for args in [&["stages", "--json"][..], &["stages"][..]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_seqpipe"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Close the reading end before the command prints.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            out.status.signal() == Some(SIGPIPE) || out.status.success(),
            "{args:?} ended with {:?}: {err}",
            out.status
        );
    }
}

/// Two command stages, the second failing when `FAIL` is set.
const RUN_SPEC: &str = r#"
[pipeline]
name = "pipes"

[stages.one]
kind = "command"
shell = true
cmd = "echo one > {outputs.out}/x; echo 'the one' > {outputs.out}/summary.txt"
outputs = { out = "dir" }

[stages.two]
kind = "command"
shell = true
cmd = "test -z \"$FAIL\" || { echo failing >&2; exit 3; }; cat {inputs.one}/x > {outputs.out}/y"
inputs = { one = "one.out" }
outputs = { out = "dir" }
"#;

/// `seqpipe run p.toml` with stdout and/or stderr closed before it prints.
fn run_with_closed(dir: &Path, close_stdout: bool, close_stderr: bool, fail: bool) -> Output {
    let mut command = common::command(dir, &["run", "p.toml"]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    if fail {
        command.env("FAIL", "1");
    }
    let mut child = command.spawn().unwrap();
    if close_stdout {
        drop(child.stdout.take());
    }
    if close_stderr {
        drop(child.stderr.take());
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_run_whose_reader_goes_away_finishes_its_work_without_a_panic() {
    let (dir, _) = common::setup(RUN_SPEC);
    let d = dir.path();
    // A failing stage, its error written to a closed stderr: exit 1.
    let out = run_with_closed(d, true, true, true);
    assert_eq!(out.status.code(), Some(1), "{:?}", out.status);
    assert_eq!(common::ran(d), ["one"]);
    // stdout closed (`run | head -1`): the summary table goes nowhere.
    let out = run_with_closed(d, true, false, false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(common::ran(d), ["two"]);
    // The work is recorded: the next run is all hits and says so.
    let out = run_with_closed(d, false, true, false);
    assert_eq!(out.status.code(), Some(0));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("cached") && table.contains("the one"),
        "{table}"
    );
    assert!(common::ran(d).is_empty());
}
