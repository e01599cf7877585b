//! # seqpipe-stages — the built-in stage library
//!
//! Every stage kind that `seqpipe` ships, one file per kind, each opening
//! with its catalogue entry (params with defaults, inputs, outputs):
//!
//! - [`synth`]: a seeded synthetic interaction log.
//! - [`sequences`]: per-user sequences and a leave-one-out split.
//! - [`train`]: pop, markov and SASRec (on LibTorch through `tch`).
//! - [`evaluate`]: full-ranking HR / NDCG / MRR at K.
//! - [`report`]: a comparison table across evaluated models.
//!
//! Shared pieces: [`table`] (Parquet I/O), [`seqdata`] (the sequences
//! artifact), [`metrics`], [`models`], [`device`] (CPU or CUDA). Stages
//! never touch the cache: they read their input folders and write their
//! output folders, and the engine does the rest.

pub mod device;
pub mod evaluate;
pub mod metrics;
pub mod models;
pub mod report;
pub mod seqdata;
pub mod sequences;
pub mod synth;
pub mod table;
pub mod train;

use std::collections::BTreeMap;

use seqpipe::stage::Registry;

/// Every built-in stage kind.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(synth::Synth)
        .register(sequences::Sequences)
        .register(train::Train)
        .register(evaluate::Evaluate)
        .register(report::Report)
        .set_environment_probe(environment);
    r
}

/// What the run manifest records about LibTorch.
fn environment(_device: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("libtorch".to_string(), "2.11.0".to_string()),
        (
            "torch_threads".to_string(),
            tch::get_num_threads().to_string(),
        ),
        ("cuda_loaded".to_string(), device::load_cuda_state()),
    ])
}
