//! The `seqpipe-torch` worker: `seqpipe` starts it (`seqpipe-torch serve`)
//! for every tensor stage and sends the request on stdin.

use std::os::unix::process::CommandExt;
use std::process::ExitCode;

/// glibc's malloc returns large freed blocks to the kernel at once (mmap
/// above 128 KiB–32 MiB, trim above 128 KiB), and a training step frees and
/// reallocates the same activation-sized blocks every batch: the page
/// faults cost 25–30 % of CPU time per epoch on SASRec (docs/benchmarks.md).
/// Raising both thresholds keeps the blocks in the heap; it changes no
/// number, only speed and 10–25 % more peak memory. A user's own
/// GLIBC_TUNABLES wins.
const MALLOC_TUNABLES: &str =
    "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296";

fn main() -> ExitCode {
    if std::env::var_os("GLIBC_TUNABLES").is_none() {
        // Tunables are read at start-up only, so run again with them set;
        // exec returns only when it failed, and then we go on untuned.
        if let Ok(exe) = std::env::current_exe() {
            let _ = std::process::Command::new(exe)
                .args(std::env::args_os().skip(1))
                .env("GLIBC_TUNABLES", MALLOC_TUNABLES)
                .exec();
        }
    }
    match std::env::args().nth(1).as_deref() {
        Some("serve") => seqpipe::worker::serve(&seqpipe_torch::registry()),
        _ => {
            eprintln!(
                "seqpipe-torch is the worker that runs seqpipe's tensor stages \
                 (train, evaluate, embed.infonce); `seqpipe run` starts it. Usage: seqpipe-torch serve \
                 < request.json"
            );
            ExitCode::from(2)
        }
    }
}
