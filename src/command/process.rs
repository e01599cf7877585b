//! Runs a command stage's process: its stdout and stderr go to the stage's
//! log artifact line by line (and to the terminal with `-v`), lines
//! `SEQPIPE_PROGRESS DONE/TOTAL` on stdout drive a progress bar, and the last
//! lines of stderr are kept for the error message if it fails.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;

use anyhow::Context;

use crate::progress::{Bar, Progress};

/// How many lines of stderr a failure message quotes.
pub const STDERR_TAIL: usize = 20;

/// The prefix of a progress line on the command's stdout.
pub const PROGRESS_PREFIX: &str = "SEQPIPE_PROGRESS ";

/// How the process ended, with the end of its stderr.
pub struct Finished {
    pub status: ExitStatus,
    pub stderr_tail: Vec<String>,
}

/// Starts `command`, relays its output into `log_dir/{stdout,stderr}.txt`,
/// and waits for it.
pub fn run(
    mut command: Command,
    stage: &str,
    log_dir: &Path,
    progress: &Progress,
) -> anyhow::Result<Finished> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    crate::worker::die_with_parent(&mut command);
    let program = command.get_program().to_string_lossy().to_string();
    let mut child = command.spawn().with_context(|| {
        format!(
            "cannot start `{program}` (is it installed and on PATH? it runs in {})",
            command
                .get_current_dir()
                .map_or("the current folder".into(), |d| d.display().to_string())
        )
    })?;
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let echo = tracing::enabled!(tracing::Level::INFO);
    let bar: Mutex<Option<Bar>> = Mutex::new(None);
    let tail = std::thread::scope(|scope| -> anyhow::Result<VecDeque<String>> {
        let out = scope.spawn(|| {
            relay(stdout, &log_dir.join("stdout.txt"), |line| {
                if let Some((done, total)) = parse_progress(line) {
                    let mut bar = bar.lock().expect("bar lock");
                    let bar = bar.get_or_insert_with(|| progress.bar(stage, "command", total));
                    bar.set_position(done);
                } else if echo {
                    progress.println(&format!("{stage} | {line}"));
                }
            })
        });
        let mut tail = VecDeque::new();
        relay(stderr, &log_dir.join("stderr.txt"), |line| {
            if tail.len() == STDERR_TAIL {
                tail.pop_front();
            }
            tail.push_back(line.to_string());
            if echo {
                progress.println(&format!("{stage} ! {line}"));
            }
        })?;
        out.join().expect("stdout relay")?;
        Ok(tail)
    })?;
    if let Some(bar) = bar.into_inner().expect("bar lock") {
        bar.finish_and_clear();
    }
    let status = child.wait()?;
    Ok(Finished {
        status,
        stderr_tail: tail.into(),
    })
}

/// Copies `from` into the file `to` and hands every line to `each`.
fn relay(from: impl Read, to: &Path, mut each: impl FnMut(&str)) -> anyhow::Result<()> {
    let mut file = File::create(to).with_context(|| format!("cannot create {}", to.display()))?;
    let mut reader = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        file.write_all(&line)?;
        let text = String::from_utf8_lossy(&line);
        each(text.trim_end_matches(['\n', '\r']));
    }
}

/// `SEQPIPE_PROGRESS 37/100` → (37, 100).
pub fn parse_progress(line: &str) -> Option<(u64, u64)> {
    let (done, total) = line.strip_prefix(PROGRESS_PREFIX)?.trim().split_once('/')?;
    Some((done.trim().parse().ok()?, total.trim().parse().ok()?))
}

/// "exited with status 3" / "was killed by signal 9 (SIGKILL)".
pub fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}{}", signal_name(signal)),
        (None, None) => format!("ended abnormally ({status})"),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGINT => " (SIGINT)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGABRT => " (SIGABRT)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_parse() {
        assert_eq!(parse_progress("SEQPIPE_PROGRESS 37/100"), Some((37, 100)));
        assert_eq!(parse_progress("SEQPIPE_PROGRESS 1 / 2 "), Some((1, 2)));
        assert_eq!(parse_progress("SEQPIPE_PROGRESS x/2"), None);
        assert_eq!(parse_progress("epoch 3/10"), None);
    }

    #[test]
    fn output_is_logged_and_stderr_tail_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "echo out; echo SEQPIPE_PROGRESS 1/2; for i in $(seq 1 25); do echo err$i >&2; done; exit 3",
        ]);
        let finished = run(command, "s", dir.path(), &Progress::hidden()).unwrap();
        assert_eq!(describe(&finished.status), "exited with status 3");
        assert_eq!(finished.stderr_tail.len(), STDERR_TAIL);
        assert_eq!(finished.stderr_tail[0], "err6");
        assert_eq!(finished.stderr_tail[19], "err25");
        let stdout = std::fs::read_to_string(dir.path().join("stdout.txt")).unwrap();
        assert_eq!(stdout, "out\nSEQPIPE_PROGRESS 1/2\n");
    }
}
