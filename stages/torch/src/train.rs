//! The `train` kind's implementation (declared in `seqpipe_stages::train`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;

use seqpipe::stage::{KindInfo, StageContext, TypedStage};
use seqpipe_stages::seqdata::SequenceData;
use seqpipe_stages::table;
use seqpipe_stages::train::{Params, Train, NEURAL};
use tch::{Device, Kind, Tensor};

use crate::models::bert4rec::Bert4RecConfig;
use crate::models::caser::CaserConfig;
use crate::models::gru4rec::Gru4RecConfig;
use crate::models::gsrec::GsRecConfig;
use crate::models::optim::Schedule;
use crate::models::sasrec::SasRecConfig;
use crate::models::trainer::{
    self, EarlyStopping, ItemInit, Loss, ModelConfig, Optimizer, StopMetric, TrainConfig,
    TrainData, Trained,
};
use crate::models::{itemknn::ItemKnn, markov::Markov, pop::Pop, Activation};

pub struct TrainImpl;

impl TypedStage for TrainImpl {
    type Params = Params;

    fn info(&self) -> KindInfo {
        Train.info()
    }

    fn validate(&self, p: &Params) -> Result<(), String> {
        Train.validate(p)
    }

    fn run(&self, p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        Train
            .validate(&p)
            .map_err(|e| anyhow::anyhow!("params.{e}"))?;
        let p = seqpipe_stages::train::with_preset(&p);
        let data = SequenceData::read(ctx.input("data")?)?;
        let out = ctx.output("model")?.to_path_buf();
        let n = data.meta.num_items;
        if ctx.optional_input("init").is_some() && !NEURAL.contains(&p.model.as_str()) {
            anyhow::bail!(
                "init: model `{}` has no item embeddings to initialise; init works with {}",
                p.model,
                NEURAL.join(", ")
            );
        }
        match p.model.as_str() {
            "pop" => Pop::fit(&data.train, n).save(&out),
            "markov" => Markov::fit_order(&data.train, n, p.order as usize).save(&out),
            "itemknn" => ItemKnn::fit(&data.train, n, p.knn_k as usize, p.shrink).save(&out),
            "sasrec" => {
                let model = SasRecConfig {
                    num_items: n,
                    max_len: p.max_len,
                    dim: p.dim,
                    layers: p.layers,
                    heads: p.heads,
                    ffn_dim: p.ffn_dim,
                    dropout: p.dropout,
                    pre_norm: p.pre_norm,
                    activation: match p.activation.as_str() {
                        "relu" => Activation::Relu,
                        _ => Activation::Gelu,
                    },
                };
                train_neural(&model, &p, &data, ctx, &out)
            }
            "gru4rec" => {
                let model = Gru4RecConfig {
                    num_items: n,
                    max_len: p.max_len,
                    dim: p.dim,
                    hidden: p.hidden,
                    layers: p.layers,
                    dropout: p.dropout,
                };
                train_neural(&model, &p, &data, ctx, &out)
            }
            "bert4rec" => {
                let model = Bert4RecConfig {
                    num_items: n,
                    max_len: p.max_len,
                    dim: p.dim,
                    layers: p.layers,
                    heads: p.heads,
                    ffn_dim: p.ffn_dim,
                    dropout: p.dropout,
                    pre_norm: p.pre_norm,
                    mask_prob: p.mask_prob,
                };
                train_neural(&model, &p, &data, ctx, &out)
            }
            "caser" => {
                let model = CaserConfig {
                    num_items: n,
                    max_len: p.max_len,
                    dim: p.dim,
                    h_filters: p.h_filters,
                    v_filters: p.v_filters,
                    dropout: p.dropout,
                    train_len: p.train_len,
                };
                train_neural(&model, &p, &data, ctx, &out)
            }
            "gsrec" => {
                let model = GsRecConfig {
                    num_items: n,
                    max_len: p.max_len,
                    dim: p.dim,
                    layers: p.layers,
                    heads: p.heads,
                    ffn: p.ffn,
                    ffn_dim: p.ffn_dim,
                    gru_layers: p.gru_layers,
                    hidden: p.hidden,
                    dropout: p.dropout,
                    pre_norm: p.pre_norm,
                };
                train_neural(&model, &p, &data, ctx, &out)
            }
            other => anyhow::bail!("params.model: no implementation for model `{other}`"),
        }
    }
}

/// Trains a neural model through the shared trainer: progress bar, resume
/// message, validation, schedule, early stopping and notes are the same for
/// every model.
fn train_neural<C: ModelConfig>(
    model: &C,
    p: &Params,
    data: &SequenceData,
    ctx: &mut StageContext<'_>,
    out: &Path,
) -> anyhow::Result<()> {
    let device = crate::device::resolve(ctx.device)?;
    crate::note_runtime(ctx, device);
    let cfg = train_config(p)?;
    if let (Some(user), true) = (cfg.needs_validation(), data.valid.is_empty()) {
        let param = if cfg.early_stopping.is_some() {
            "early_stopping"
        } else {
            "schedule"
        };
        anyhow::bail!(
            "params.{param}: {user} reads the validation split, but the sequences \
             have no validation examples (valid.parquet is empty)"
        );
    }
    let seqs: Vec<Vec<i64>> = data
        .train
        .iter()
        .map(|(_, s)| s.clone())
        .filter(|s| s.len() >= 2)
        .collect();
    let init = match ctx.optional_input("init") {
        Some(dir) => {
            let init = pretrained_rows(dir, ctx.input("data")?, p.dim, device)?;
            ctx.note("init_items", init.coverage());
            Some(init.rows)
        }
        None => None,
    };
    let bar = ctx.progress.bar(ctx.stage, "epochs", p.epochs as u64);
    let resumed = trainer::checkpointed_epochs(&ctx.checkpoint_dir);
    if resumed > 0 {
        ctx.progress.println(&format!(
            "{}: resuming from the checkpoint after epoch {resumed} of {}",
            ctx.stage, p.epochs
        ));
        ctx.note("resumed_after_epoch", resumed);
        bar.set_position(resumed as u64);
    }
    let stage = ctx.stage.to_string();
    let mut on_epoch = |s: &trainer::EpochStats| {
        bar.set_position(s.epoch as u64 + 1);
        bar.set_message(match s.valid {
            Some(v) => format!(
                "loss {:.4}, valid ndcg@10 {:.4}",
                s.train_loss, v.ndcg_at_10
            ),
            None => format!("loss {:.4}", s.train_loss),
        });
        tracing::info!("{stage}: {}", epoch_line(s));
    };
    // The validation protocol is evaluate's: the same exclusions.
    let valid_seen: Vec<Vec<usize>> = if p.exclude_seen {
        let training = crate::evaluate::training_items(data);
        data.valid
            .iter()
            .map(|e| crate::evaluate::seen_items(e, &training))
            .collect()
    } else {
        vec![]
    };
    let train_data = TrainData {
        train: &seqs,
        valid: &data.valid,
        valid_seen: &valid_seen,
        init: init.as_ref(),
    };
    let trained = trainer::fit(
        model,
        &cfg,
        &train_data,
        ctx.seed,
        device,
        &ctx.checkpoint_dir,
        &mut on_epoch,
    )?;
    bar.finish_and_clear();
    // config.json is tagged with the model name so `models::load` can dispatch.
    trainer::save_model(&trained.vs, model, out)
        .with_context(|| format!("{}: saving the trained {}", ctx.stage, C::NAME))?;
    write_training_log(out, &trained)?;
    note_outcome(ctx, &trained, resumed);
    Ok(())
}

/// The trainer's config from the stage's params (already validated).
fn train_config(p: &Params) -> anyhow::Result<TrainConfig> {
    let schedule = match p.schedule.as_str() {
        "constant" => Schedule::Constant,
        "cosine" => Schedule::Cosine {
            warmup_epochs: p.warmup_epochs,
            min_lr: p.min_lr,
        },
        "plateau" => Schedule::Plateau {
            factor: p.plateau_factor,
            patience: p.plateau_patience,
        },
        other => anyhow::bail!("params.schedule: no implementation for schedule {other:?}"),
    };
    let early_stopping = match p.early_stopping {
        0 => None,
        patience => Some(EarlyStopping {
            patience,
            metric: StopMetric::from_name(&p.early_stopping_metric).ok_or_else(|| {
                anyhow::anyhow!(
                    "params.early_stopping_metric: no implementation for {:?}",
                    p.early_stopping_metric
                )
            })?,
        }),
    };
    let loss = match p.loss.as_str() {
        "ce" => Loss::CrossEntropy,
        "bce" => Loss::SampledBce {
            negatives: p.negatives,
        },
        "bce_full" => Loss::FullBce,
        other => anyhow::bail!("params.loss: no implementation for loss {other:?}"),
    };
    Ok(TrainConfig {
        epochs: p.epochs,
        batch_size: p.batch_size,
        lr: p.lr,
        weight_decay: p.weight_decay,
        clip_norm: p.clip_norm,
        schedule,
        early_stopping,
        valid_every: p.valid_every,
        loss,
        precision: crate::autocast::Precision::parse(&p.precision)
            .map_err(|e| anyhow::anyhow!("params.precision: {e}"))?,
        sliding: p.training == "sliding",
        ties: p.ties,
        optimizer: match p.optimizer.as_str() {
            "adam" => Optimizer::Adam,
            _ => Optimizer::AdamW,
        },
        ..TrainConfig::default()
    })
}

/// "epoch 3 loss 4.1234 valid 4.3012 ndcg@10 0.1234 lr 1.000e-3 (1.2s + 0.1s, 5230 seq/s)":
/// the epoch's log line (training seconds + validation seconds).
fn epoch_line(s: &trainer::EpochStats) -> String {
    let valid = s.valid.map_or(String::new(), |v| {
        format!(" valid {:.4} ndcg@10 {:.4}", v.loss, v.ndcg_at_10)
    });
    format!(
        "epoch {} loss {:.4}{valid} lr {:.3e} ({:.1}s + {:.1}s, {:.0} seq/s)",
        s.epoch + 1,
        s.train_loss,
        s.lr,
        s.seconds,
        s.valid_seconds,
        s.samples_per_sec
    )
}

/// The run-manifest notes: timings of the epochs this run trained (facts
/// about the run, not the model, so they stay out of the artifact) and,
/// under early stopping, the best epoch (1-based) and where training
/// stopped.
fn note_outcome(ctx: &mut StageContext<'_>, trained: &Trained, resumed: usize) {
    let fresh: Vec<_> = trained.stats.iter().skip(resumed).collect();
    if !fresh.is_empty() {
        let seconds: f64 = fresh.iter().map(|s| s.seconds).sum();
        let valid: f64 = fresh.iter().map(|s| s.valid_seconds).sum();
        let rate = fresh.iter().map(|s| s.samples_per_sec).sum::<f64>() / fresh.len() as f64;
        ctx.note("train_seconds", format!("{seconds:.2}"));
        ctx.note("sequences_per_second", format!("{rate:.0}"));
        ctx.note("valid_seconds", format!("{valid:.2}"));
    }
    if let Some(best) = trained.best_epoch {
        ctx.note("best_epoch", best + 1);
    }
    if trained.stopped_early {
        ctx.note("stopped_after_epoch", trained.stats.len());
    }
}

/// `training.json`: per epoch (1-based) the training loss, the validation
/// loss, HR@10 and NDCG@10 (null without validation examples) and the
/// learning rate; under early stopping also `best_epoch`, the epoch whose
/// weights were saved. Nothing run-dependent (no timings), so the bytes are
/// reproducible.
fn write_training_log(out: &Path, trained: &Trained) -> anyhow::Result<()> {
    let epochs: Vec<_> = trained
        .stats
        .iter()
        .map(|s| {
            serde_json::json!({
                "epoch": s.epoch + 1,
                "train_loss": s.train_loss,
                "valid_loss": s.valid.map(|v| v.loss),
                "valid_hr@10": s.valid.map(|v| v.hr_at_10),
                "valid_ndcg@10": s.valid.map(|v| v.ndcg_at_10),
                "lr": s.lr,
            })
        })
        .collect();
    let mut log = serde_json::json!({ "epochs": epochs });
    if let Some(best) = trained.best_epoch {
        log["best_epoch"] = (best + 1).into();
    }
    std::fs::write(out.join("training.json"), serde_json::to_vec_pretty(&log)?)?;
    Ok(())
}

/// The `init` embeddings matched to a sequences artifact's items.
pub struct PretrainedRows {
    /// Item-table rows (sequence item indices) and their pretrained values.
    pub rows: ItemInit,
    /// Items of the sequences artifact that the embeddings cover.
    pub covered: usize,
    /// Items of the sequences artifact.
    pub items: usize,
}

impl PretrainedRows {
    /// "812 of 1000 items (81.2%)", for the run manifest.
    pub fn coverage(&self) -> String {
        let share = 100.0 * self.covered as f64 / self.items.max(1) as f64;
        format!("{} of {} items ({share:.1}%)", self.covered, self.items)
    }
}

/// Matches the embeddings in `init_dir` (an `embed.infonce` output:
/// `embeddings.safetensors` and `items.parquet`, `row` → `item_id`) to the
/// items of the sequences artifact in `data_dir` (`vocab.parquet`, `index`
/// → `item_id`) by original item id. Items the embeddings lack are left
/// out (they keep the model's random rows); so is padding. The embeddings
/// must be `dim` wide.
pub fn pretrained_rows(
    init_dir: &Path,
    data_dir: &Path,
    dim: i64,
    device: Device,
) -> anyhow::Result<PretrainedRows> {
    let path = init_dir.join("embeddings.safetensors");
    let table = Tensor::read_safetensors(&path)
        .with_context(|| format!("init: reading {}", path.display()))?
        .into_iter()
        .find_map(|(name, t)| (name == "embeddings").then_some(t))
        .with_context(|| format!("init: {} has no tensor `embeddings`", path.display()))?;
    anyhow::ensure!(
        table.dim() == 2,
        "init: {} holds a {}-dimensional `embeddings`, expected [rows, dim]",
        path.display(),
        table.dim()
    );
    let width = table.size()[1];
    anyhow::ensure!(
        width == dim,
        "init: embeddings are {width}-d but dim = {dim}; set dim = {width}"
    );
    let by_id = id_column_map(&init_dir.join("items.parquet"), "row", table.size()[0])?;
    let vocab = data_dir.join("vocab.parquet");
    let batch = table::read(&vocab)?;
    let index = table::int64(&batch, "index", &vocab)?;
    let ids = table::int64(&batch, "item_id", &vocab)?;
    let (mut rows, mut sources) = (Vec::new(), Vec::new());
    for (index, id) in index.values().iter().zip(ids.values()) {
        if let Some(&source) = by_id.get(id) {
            rows.push(*index);
            sources.push(source);
        }
    }
    let values = table
        .to_kind(Kind::Float)
        .index_select(0, &Tensor::from_slice(&sources));
    Ok(PretrainedRows {
        covered: rows.len(),
        items: ids.len(),
        rows: ItemInit {
            rows: Tensor::from_slice(&rows).to_device(device),
            values: values.to_device(device),
        },
    })
}

/// `item_id` → the `row_column` value of each row of `path`, which must lie
/// in `1..rows` (row 0 is padding).
fn id_column_map(path: &Path, row_column: &str, rows: i64) -> anyhow::Result<HashMap<i64, i64>> {
    let batch = table::read(path).context("init")?;
    let row = table::int64(&batch, row_column, path)?;
    let ids = table::int64(&batch, "item_id", path)?;
    let mut map = HashMap::with_capacity(ids.len());
    for (&r, &id) in row.values().iter().zip(ids.values()) {
        anyhow::ensure!(
            (1..rows).contains(&r),
            "init: {} maps item {id} to row {r}, outside the embeddings' rows 1..{rows}",
            path.display()
        );
        map.insert(id, r);
    }
    Ok(map)
}
