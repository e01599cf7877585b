//! The printing commands end quietly when their reader goes away
//! (`seqpipe show --json | head`), as Unix tools do, instead of panicking
//! on the failed write.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

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
