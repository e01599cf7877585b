//! Where tensor stages run: the `seqpipe-torch` worker program.
//!
//! Loading LibTorch costs most of a second, so the `seqpipe` binary does not
//! link it: `train` and `evaluate` are declared here (params, ports, key) and
//! executed by `seqpipe-torch`, which `cargo build --workspace` puts next to
//! `seqpipe`. `SEQPIPE_TORCH_WORKER` points elsewhere.

use std::path::PathBuf;

use seqpipe::stage::StageContext;

/// The worker program's file name.
pub const PROGRAM: &str = "seqpipe-torch";

/// Runs `ctx`'s stage as `kind` in the worker.
pub fn run(kind: &str, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
    let program = locate()?;
    seqpipe::worker::delegate(&program, kind, ctx)
}

/// `$SEQPIPE_TORCH_WORKER`, else `seqpipe-torch` beside the running binary.
pub fn locate() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("SEQPIPE_TORCH_WORKER") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let beside = exe.with_file_name(PROGRAM);
    anyhow::ensure!(
        beside.exists(),
        "tensor stages run in the `{PROGRAM}` worker, which is not at {}: build it with \
         `cargo build --release --workspace` (or set SEQPIPE_TORCH_WORKER)",
        beside.display()
    );
    Ok(beside)
}
