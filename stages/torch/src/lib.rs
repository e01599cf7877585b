//! # seqpipe-torch — the tensor stages on LibTorch
//!
//! The implementations behind the `train`, `evaluate` and `embed.infonce` kinds that
//! `seqpipe-stages` declares. They run in the `seqpipe-torch` worker
//! program, so only stages that need LibTorch pay for loading it.
//!
//! - [`train`]: fits pop, markov (order k), itemknn, SASRec, GRU4Rec,
//!   BERT4Rec or Caser.
//! - [`embed`]: `embed.infonce`, contrastive item embeddings on a
//!   co-occurrence graph (for `train`'s `init`).
//! - [`evaluate`]: full-ranking evaluation of a trained model.
//! - [`models`]: one file per model, plus the optimiser and training loop.
//! - [`autocast`]: bf16 mixed precision (`train`'s `precision`).
//! - [`device`]: `auto` / `cpu` / `cuda[:N]`, loading LibTorch's CUDA library.

pub mod autocast;
pub mod device;
pub mod embed;
pub mod evaluate;
pub mod models;
pub mod train;

use seqpipe::stage::Registry;

/// The kinds this worker implements, under the names `seqpipe-stages`
/// declares them with.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(train::TrainImpl)
        .register(embed::EmbedImpl)
        .register(evaluate::EvaluateImpl);
    r
}

/// Facts every tensor stage records in the run manifest.
pub fn note_runtime(ctx: &mut seqpipe::stage::StageContext<'_>, device: tch::Device) {
    ctx.note("device", device::describe(device));
    ctx.note("libtorch", LIBTORCH_VERSION);
    ctx.note("torch_threads", tch::get_num_threads());
    ctx.note("cuda_loaded", device::load_cuda_state());
}

/// The LibTorch release tch 0.24 is built against (`scripts/setup.sh`
/// installs the matching PyPI wheel).
pub const LIBTORCH_VERSION: &str = "2.11.0";
