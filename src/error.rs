//! Errors shared across the engine and how they map to exit codes.
//!
//! Each module has its own typed error ([`crate::spec::SpecError`],
//! [`crate::cache::CacheError`], [`crate::run::RunError`]); the CLI turns them
//! into an exit code with [`exit_code`]: 2 for a bad spec or usage (a cache
//! folder that is not a seqpipe cache included), 1 for a stage (or data)
//! failure.

use crate::cache::CacheError;
use crate::run::RunError;
use crate::spec::SpecError;

/// Everything went well.
pub const EXIT_OK: i32 = 0;
/// A stage failed (bad data, a bug, a full disk…).
pub const EXIT_FAILURE: i32 = 1;
/// The spec or the command line is wrong; nothing ran.
pub const EXIT_USAGE: i32 = 2;

/// The exit code for an error chain: 2 if a spec error is anywhere in it.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.downcast_ref::<SpecError>().is_some() {
            return EXIT_USAGE;
        }
        match cause.downcast_ref::<CacheError>() {
            Some(CacheError::Locked { .. }) => return EXIT_FAILURE,
            // The folder named as the cache is not one: nothing ran.
            Some(
                CacheError::NotACache { .. }
                | CacheError::Unmarked { .. }
                | CacheError::BadMarker { .. },
            ) => return EXIT_USAGE,
            _ => {}
        }
        if cause.downcast_ref::<RunError>().is_some() {
            return EXIT_FAILURE;
        }
    }
    EXIT_FAILURE
}
