//! # seqpipe — the engine
//!
//! A declarative pipeline engine: a user writes stages in TOML, seqpipe
//! resolves them into a DAG, derives a content-hashed key for every stage,
//! and runs only the stages whose key is not in the cache. The engine knows
//! nothing about what the stages compute; the stage library (the
//! `seqpipe-stages` crate) hands it a [`stage::Registry`] of stage kinds.
//!
//! Modules depend one way, left to right (plus `error` and `stage`):
//!
//! `spec` → `graph` → `key` → `cache` → `run` → `ops` → `cli`
//!
//! - [`spec`]: the TOML a user wrote, parsed with positions so that every
//!   error names `file:line:col` and the key.
//! - [`stage`]: the [`stage::Stage`] trait a stage kind implements, its
//!   catalogue entry ([`stage::KindInfo`]) and the [`stage::Registry`].
//! - [`graph`]: the checked DAG ([`graph::Plan`]): kinds, params, inputs and
//!   types resolved, cycles rejected, before anything runs.
//! - [`key`]: a stage's [`key::Fingerprint`] (kind, version, params, input
//!   hashes, seed, format) and the [`key::StaleReason`] that explains a miss.
//! - [`lock`]: `<spec>.lock`, each stage's key, fingerprint and output
//!   hashes from the last complete run, to commit and compare.
//! - [`cache`]: content-addressed artifacts published by atomic rename,
//!   stage records as files, per-key claims: a cache many processes share.
//! - [`run`]: the scheduler that executes a plan against the cache.
//! - [`remote`]: a stage run as a Slurm job (ticket, follow, resubmit,
//!   cancel on Ctrl-C), over [`slurm`], a client of Slurm's own commands.
//! - [`ops`]: one function per command (`run`, `status`, `show`, `gc`, `stages`).
//! - [`command`]: the `command` kind — a user's own program as a stage,
//!   its outputs checked against the [`artifact`] types they declare.
//! - [`sweep`]: the `[sweep]` table (grid and random spaces, repeats) and
//!   the trials it expands into; `ops::sweep` runs them.
//! - [`worker`]: runs a stage kind in a separate worker program (for kinds
//!   whose runtime is too heavy to load in every `seqpipe` call).
//! - [`cli`]: argument parsing; calls one `ops` function and maps errors to
//!   exit codes (0 ok, 1 a stage failed, 2 bad spec or usage).

pub mod artifact;
pub mod cache;
pub mod cli;
pub mod command;
pub mod error;
pub mod graph;
pub mod key;
pub mod lock;
pub mod ops;
pub mod progress;
pub mod remote;
pub mod run;
pub mod slurm;
pub mod spec;
pub mod stage;
pub mod sweep;
pub mod worker;

/// Bumped whenever the engine changes how keys or artifacts are laid out; it is
/// part of every key, so a new format never reads an old cache entry.
pub const FORMAT_VERSION: u32 = 1;

/// The engine's version, recorded in every run manifest.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git revision seqpipe was built from (`unknown` outside a checkout).
pub const GIT_REVISION: &str = env!("SEQPIPE_GIT_REVISION");
