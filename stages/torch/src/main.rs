//! The `seqpipe-torch` worker: `seqpipe` starts it (`seqpipe-torch serve`)
//! for every tensor stage and sends the request on stdin.

use std::process::ExitCode;

fn main() -> ExitCode {
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
