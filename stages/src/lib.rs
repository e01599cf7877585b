//! # seqpipe-stages — the built-in stage library
//!
//! Every stage kind that `seqpipe` ships, one file per kind, each opening
//! with its catalogue entry (params with defaults, inputs, outputs):
//!
//! - [`synth`]: a seeded synthetic interaction log.
//! - [`synth_tecd`] (`synth.tecd`): a seeded T-ECD-shaped cross-domain
//!   e-commerce dataset in daily Parquet partitions, defects included.
//! - [`load_atomic`] (`load.atomic`): RecBole atomic files into Parquet.
//! - [`load_parquet`] (`load.parquet`): a folder of Parquet partitions,
//!   filtered by path, day and count, streamed into one table.
//! - [`load_text`] (`load.text`): whitespace-separated `user item` text
//!   files (SASRec's format); time is the line order.
//! - [`load_csv`] (`load.csv`): delimited logs such as YooChoose clicks,
//!   ISO 8601 or unix times into epoch milliseconds.
//! - [`clean`]: casts, null fills, required columns and dedup, with a
//!   validation report.
//! - [`sql`]: one SQL query over named input tables (Apache DataFusion;
//!   cargo feature `sql`, on by default).
//! - [`profile`]: per-column types, nulls, distinct values, statistics and
//!   top values of a table.
//! - [`graph_cooccurrence`] (`graph.cooccurrence`): co-purchase and
//!   co-view item pairs, per and across domains, with counts and weights.
//! - [`sequences`]: per-user or per-session sequences and a leave-one-out,
//!   temporal or ratio split (the latter two in [`splits`]).
//! - [`train`]: pop, markov (order k), itemknn, SASRec, GRU4Rec, BERT4Rec
//!   and Caser (on LibTorch, in the worker).
//! - [`embed`] (`embed.infonce`): contrastive item embeddings (InfoNCE)
//!   on co-occurrence pairs, for `train`'s `init` input (in the worker).
//! - [`evaluate`]: full-ranking HR / NDCG / MRR at K (in the worker).
//! - [`report`]: a comparison table across evaluated models.
//!
//! Shared pieces: [`table`] (Parquet I/O), [`attributes`] (held-out
//! examples' event attributes, for breakdowns), [`seqdata`] (the sequences
//! artifact), [`metrics`], [`sampled`] (sampled-ranking negatives),
//! [`significance`] (paired tests between models). Stages never touch the cache: they read their
//! input folders and write their output folders, and the engine does the
//! rest.
//!
//! This crate does not link LibTorch, so the `seqpipe` binary starts in
//! milliseconds. Tensor kinds (`train`, `evaluate`) are declared here and
//! run by the `seqpipe-torch` worker (the `stages/torch` crate), which holds
//! the models; see [`torch_worker`].

pub mod artifact_types;
pub mod attributes;
pub mod clean;
pub mod embed;
pub mod evaluate;
pub mod graph_cooccurrence;
pub mod load_atomic;
pub mod load_csv;
pub mod load_parquet;
pub mod load_text;
pub mod metrics;
pub mod profile;
pub mod rank;
pub mod report;
pub mod sampled;
pub mod seqdata;
pub mod sequences;
pub mod significance;
pub mod splits;
#[cfg(feature = "sql")]
pub mod sql;
pub mod synth;
pub mod synth_tecd;
pub mod table;
pub mod torch_worker;
pub mod train;

use std::collections::BTreeMap;

use seqpipe::stage::Registry;

/// Every built-in stage kind.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(synth::Synth)
        .register(synth_tecd::SynthTecd)
        .register(load_atomic::LoadAtomic)
        .register(load_parquet::LoadParquet)
        .register(load_text::LoadText)
        .register(load_csv::LoadCsv)
        .register(clean::Clean)
        .register(profile::ProfileStage)
        .register(graph_cooccurrence::GraphCooccurrence)
        .register(sequences::Sequences)
        .register(train::Train)
        .register(embed::Embed)
        .register(evaluate::Evaluate)
        .register(report::Report)
        .set_environment_probe(environment);
    #[cfg(feature = "sql")]
    r.register(sql::Sql);
    artifact_types::register(&mut r);
    r
}

/// What the run manifest records about the tensor runtime. The worker adds
/// per-stage notes (device, LibTorch version, threads) of its own.
fn environment(_device: &str) -> BTreeMap<String, String> {
    let worker = torch_worker::locate()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("missing: {e}"));
    BTreeMap::from([("tensor_worker".to_string(), worker)])
}
