//! A custom stage library: the engine's CLI with your own stage kinds.
//!
//! ```sh
//! cargo run --release --example custom_stage -- run examples/custom_stage/words.toml
//! cargo run --release --example custom_stage -- stages
//! ```
//!
//! A binary that wants the built-in kinds too registers them first
//! (`let mut r = seqpipe_stages::registry();`) and adds its own.

mod kinds;

fn main() -> std::process::ExitCode {
    let mut registry = seqpipe::stage::Registry::new();
    kinds::register(&mut registry);
    seqpipe::cli::main(registry)
}
