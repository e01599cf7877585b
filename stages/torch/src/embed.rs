//! The `embed.infonce` kind's implementation (declared, with its params and
//! outputs, in `seqpipe_stages::embed`): read the co-occurrence graph into
//! compact pairs, hold out a seeded share, train the InfoNCE tower
//! ([`crate::models::infonce`]) with per-epoch checkpoints, and write the
//! embeddings with their item map, training log and nearest neighbours.
//!
//! Determinism: the split is a shuffle by a `ChaCha8Rng` seeded with the
//! stage's seed; epoch `e` visits the training pairs in an order drawn from
//! a fresh `ChaCha8Rng` on stream `e` (never a running RNG); the initial
//! weights are drawn from torch's RNG, seeded, under
//! [`trainer::torch_rng_lock`]; nothing else draws. So an epoch's result
//! depends only on the state at its start, which the checkpoint holds
//! (weights, AdamW moments, the plateau schedule, the log) with every float
//! as exact bits: on CPU a resumed run ends bit for bit like an
//! uninterrupted one.

use std::collections::HashMap;
use std::io::Write;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context};
use arrow::array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use rand::distributions::{Distribution, WeightedIndex};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use seqpipe::progress::Bar;
use seqpipe::stage::{KindInfo, StageContext, TypedStage};
use seqpipe_stages::embed::{Embed, Params};
use seqpipe_stages::table;
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::models::infonce::{chunked_infonce, InfoNce, InfoNceConfig, InfoNceLoss, Plateau};
use crate::models::optim::{AdamW, AdamWConfig};
use crate::models::trainer::{self, Fnv};

pub struct EmbedImpl;

impl TypedStage for EmbedImpl {
    type Params = Params;

    fn info(&self) -> KindInfo {
        Embed.info()
    }

    fn validate(&self, p: &Params) -> Result<(), String> {
        Embed.validate(p)
    }

    fn run(&self, p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        Embed
            .validate(&p)
            .map_err(|e| anyhow::anyhow!("params.{e}"))?;
        let device = crate::device::resolve(ctx.device)?;
        crate::note_runtime(ctx, device);
        let dir = ctx.input("graph")?.to_path_buf();
        let items = Items::read(&dir.join("items.parquet"))?;
        let pairs = Pairs::read(&dir.join("edges.parquet"), &items, &p)?;
        let queries = query_rows(&p, &items)?;
        let split = Split::new(&pairs, &p, ctx.seed)?;
        ctx.note("items", items.len());
        ctx.note(
            "edges",
            format!(
                "{} train, {} held out",
                split.train.len(),
                split.valid.len()
            ),
        );
        let trained = fit(&p, &items, &pairs, &split, ctx, device)?;
        let z = trained
            .model
            .encode_all(ENCODE_CHUNK)
            .to_device(Device::Cpu)
            .contiguous();
        let config = serde_json::json!({
            "kind": seqpipe_stages::embed::KIND,
            "params": &p,
            "items": items.len(),
            "dim": p.dim,
            "edge_types": &pairs.types,
            "train_edges": split.train.len(),
            "valid_edges": split.valid.len(),
            "seed": ctx.seed,
        });
        let out = ctx.output("embeddings")?.to_path_buf();
        write_outputs(&out, &p, &items, &z, &trained.log, &queries, &config)
            .with_context(|| format!("{}: writing the embeddings", ctx.stage))?;
        note_timings(ctx, &trained.timings);
        Ok(())
    }
}

/// Rows encoded at once when the whole catalogue is (exports, recall).
const ENCODE_CHUNK: i64 = 65_536;

/// Held-out pairs scored for recall@10 (the first of the seeded split).
const RECALL_PAIRS: usize = 10_000;

/// Recall's cut-off.
const RECALL_K: i64 = 10;

// ---------------------------------------------------------------- the graph

/// The graph's vocabulary (`items.parquet`, sorted by item id): item row
/// `r` (1-based; 0 is padding) is entry `r - 1`.
struct Items {
    ids: Vec<i64>,
    /// Index into `domain_names`.
    domains: Vec<u32>,
    domain_names: Vec<String>,
    occurrences: Vec<i64>,
    row_of: HashMap<i64, u32>,
}

impl Items {
    fn read(path: &Path) -> anyhow::Result<Items> {
        let batch = table::read(path)?;
        let ids = table::int64(&batch, "item_id", path)?.values().to_vec();
        let occurrences = table::int64(&batch, "occurrences", path)?.values().to_vec();
        let domain_column = table::utf8_column(&batch, "domain", path, "column")?;
        ensure!(
            ids.len() >= 2,
            "{}: the graph has {} item(s); embeddings need at least 2",
            path.display(),
            ids.len()
        );
        ensure!(
            ids.len() < u32::MAX as usize,
            "{}: more items than rows can address",
            path.display()
        );
        let mut domain_names: Vec<String> = Vec::new();
        let mut domain_index: HashMap<String, u32> = HashMap::new();
        let mut domains = Vec::with_capacity(ids.len());
        for i in 0..ids.len() {
            let name = domain_column.is_valid(i).then(|| domain_column.value(i));
            let name = name.unwrap_or("unknown");
            let next = domain_names.len() as u32;
            let index = *domain_index.entry(name.to_string()).or_insert_with(|| {
                domain_names.push(name.to_string());
                next
            });
            domains.push(index);
        }
        let mut row_of = HashMap::with_capacity(ids.len());
        for (i, &id) in ids.iter().enumerate() {
            ensure!(
                row_of.insert(id, i as u32 + 1).is_none(),
                "{}: item {id} is listed twice",
                path.display()
            );
        }
        Ok(Items {
            ids,
            domains,
            domain_names,
            occurrences,
            row_of,
        })
    }

    /// V, the number of items.
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn id(&self, row: u32) -> i64 {
        self.ids[row as usize - 1]
    }

    fn domain(&self, row: u32) -> &str {
        &self.domain_names[self.domains[row as usize - 1] as usize]
    }
}

/// The graph's edges as pairs of item rows, 8 bytes each (plus 8 for the
/// weight when `weighted`), in file order.
struct Pairs {
    a: Vec<u32>,
    b: Vec<u32>,
    /// The edges' `weight`, only when `weighted`.
    weight: Vec<f64>,
    /// The edge types kept (all the file holds when `edge_types` is empty).
    types: Vec<String>,
}

impl Pairs {
    /// Streams `edges.parquet`, keeping the edges of `p.edge_types`.
    fn read(path: &Path, items: &Items, p: &Params) -> anyhow::Result<Pairs> {
        let mut pairs = Pairs {
            a: Vec::new(),
            b: Vec::new(),
            weight: Vec::new(),
            types: Vec::new(),
        };
        for batch in table::batches(path)? {
            pairs.add_batch(&batch?, path, items, p)?;
        }
        pairs.types.sort();
        ensure!(
            pairs.a.len() < u32::MAX as usize,
            "{}: more edges than this stage can index",
            path.display()
        );
        Ok(pairs)
    }

    fn add_batch(
        &mut self,
        batch: &RecordBatch,
        path: &Path,
        items: &Items,
        p: &Params,
    ) -> anyhow::Result<()> {
        let item_a = non_null(table::int64(batch, "item_a", path)?, "item_a", path)?;
        let item_b = non_null(table::int64(batch, "item_b", path)?, "item_b", path)?;
        let types = table::utf8_column(batch, "edge_type", path, "column")?;
        let weights = if p.weighted {
            Some(float64(batch, "weight", path)?)
        } else {
            None
        };
        let row = |id: i64| {
            items.row_of.get(&id).copied().with_context(|| {
                format!(
                    "{}: edge item {id} is not in the graph's items.parquet",
                    path.display()
                )
            })
        };
        for i in 0..batch.num_rows() {
            let ty = if types.is_valid(i) {
                types.value(i)
            } else {
                ""
            };
            if !p.edge_types.is_empty() && !p.edge_types.iter().any(|t| t == ty) {
                continue;
            }
            if !self.types.iter().any(|t| t == ty) {
                self.types.push(ty.to_string());
            }
            self.a.push(row(item_a.value(i))?);
            self.b.push(row(item_b.value(i))?);
            if let Some(w) = &weights {
                let weight = w.value(i);
                ensure!(
                    w.is_valid(i) && weight >= 0.0 && weight.is_finite(),
                    "{}: edge {} – {} has weight {weight}; `weighted` needs weights >= 0",
                    path.display(),
                    item_a.value(i),
                    item_b.value(i)
                );
                self.weight.push(weight);
            }
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.a.len()
    }

    /// FNV-1a over the rows (and weights): a checkpoint remembers it, so a
    /// run never resumes on other pairs.
    fn fingerprint(&self, items: &Items) -> u64 {
        let mut h = Fnv::new();
        h.eat(items.len() as u64);
        items.ids.iter().for_each(|&id| h.eat(id as u64));
        h.eat(self.len() as u64);
        for (&a, &b) in self.a.iter().zip(&self.b) {
            h.eat(((a as u64) << 32) | b as u64);
        }
        self.weight.iter().for_each(|w| h.eat(w.to_bits()));
        h.0
    }
}

fn non_null<'a>(column: &'a Int64Array, name: &str, path: &Path) -> anyhow::Result<&'a Int64Array> {
    ensure!(
        column.null_count() == 0,
        "{}: column `{name}` has null items",
        path.display()
    );
    Ok(column)
}

fn float64(batch: &RecordBatch, name: &str, path: &Path) -> anyhow::Result<Float64Array> {
    let schema = batch.schema();
    let column = batch.column_by_name(name).with_context(|| {
        let names = schema.fields().iter().map(|f| f.name().as_str());
        format!(
            "{}: no column `{name}` (`weighted` reads it; {})",
            path.display(),
            table::column_hint(name, names)
        )
    })?;
    let cast = arrow::compute::cast(column, &DataType::Float64).with_context(|| {
        format!(
            "{}: column `{name}` is {}, expected numbers",
            path.display(),
            column.data_type()
        )
    })?;
    Ok(cast
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("cast to Float64 gives a Float64Array")
        .clone())
}

/// The query items of `neighbours.json`: `query_items` as rows, or by
/// default the 3 most frequent items (ties by id) of each domain, domains
/// by name.
fn query_rows(p: &Params, items: &Items) -> anyhow::Result<Vec<u32>> {
    if !p.query_items.is_empty() {
        return p
            .query_items
            .iter()
            .map(|id| {
                items.row_of.get(id).copied().with_context(|| {
                    format!("params.query_items: item {id} is not in the graph's items.parquet")
                })
            })
            .collect();
    }
    let mut by_domain: Vec<(&str, Vec<u32>)> = Vec::new();
    let mut order: Vec<u32> = (1..=items.len() as u32).collect();
    order.sort_by_key(|&r| {
        (
            items.domain(r),
            -items.occurrences[r as usize - 1],
            items.id(r),
        )
    });
    for r in order {
        match by_domain.last_mut() {
            Some((d, rows)) if *d == items.domain(r) => rows.push(r),
            _ => by_domain.push((items.domain(r), vec![r])),
        }
    }
    Ok(by_domain
        .into_iter()
        .flat_map(|(_, rows)| rows.into_iter().take(3))
        .collect())
}

// ---------------------------------------------------------------- the split

/// Which pairs train and which are held out, as indices into [`Pairs`],
/// each list in file order.
struct Split {
    train: Vec<u32>,
    valid: Vec<u32>,
}

impl Split {
    /// Holds out `round(valid_share * n)` pairs (at least 2, the fewest an
    /// in-batch loss can score, when `valid_share > 0`), chosen by a seeded
    /// shuffle.
    fn new(pairs: &Pairs, p: &Params, seed: u64) -> anyhow::Result<Split> {
        let (n, share) = (pairs.len(), p.valid_share);
        let held = if share > 0.0 {
            ((share * n as f64).round() as usize).max(2)
        } else {
            0
        };
        ensure!(
            n >= held + 2,
            "graph: {n} edge(s) of {}; training needs at least 2 besides the {held} held \
             out (valid_share = {share})",
            if p.edge_types.is_empty() {
                "any type".to_string()
            } else {
                format!("type {}", p.edge_types.join(" or "))
            }
        );
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7370_6c69_745f_6564); // "split_ed"
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.shuffle(&mut rng);
        let mut valid = order[..held].to_vec();
        let mut train = order.split_off(held);
        valid.sort_unstable();
        train.sort_unstable();
        Ok(Split { train, valid })
    }
}

/// How an epoch picks its training pairs.
enum Sampler {
    /// Every training pair once, in a fresh seeded order.
    Shuffle,
    /// As many draws as training pairs, with replacement, ∝ weight.
    Weighted(WeightedIndex<f64>),
}

impl Sampler {
    fn new(p: &Params, pairs: &Pairs, split: &Split) -> anyhow::Result<Sampler> {
        if !p.weighted {
            return Ok(Sampler::Shuffle);
        }
        let weights = split.train.iter().map(|&i| pairs.weight[i as usize]);
        WeightedIndex::new(weights)
            .map(Sampler::Weighted)
            .map_err(|e| anyhow::anyhow!("params.weighted: cannot sample the edges by weight: {e}"))
    }

    /// Epoch `epoch`'s pairs (indices into [`Pairs`]): a function of
    /// `(seed, epoch)` only.
    fn epoch(&self, train: &[u32], seed: u64, epoch: usize) -> Vec<u32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(epoch as u64);
        match self {
            Sampler::Shuffle => {
                let mut order = train.to_vec();
                order.shuffle(&mut rng);
                order
            }
            Sampler::Weighted(dist) => (0..train.len())
                .map(|_| train[dist.sample(&mut rng)])
                .collect(),
        }
    }
}

/// `0..n` in batches of `size`; a last batch of one pair (no negative to
/// contrast with) joins the one before.
fn batch_ranges(n: usize, size: usize) -> Vec<Range<usize>> {
    let mut ranges: Vec<Range<usize>> =
        (0..n).step_by(size).map(|s| s..(s + size).min(n)).collect();
    if ranges.len() >= 2 && ranges.last().is_some_and(|r| r.len() == 1) {
        let last = ranges.pop().expect("two ranges");
        ranges.last_mut().expect("one range").end = last.end;
    }
    ranges
}

/// The item rows of `picked` pairs as two [B] int64 tensors on `device`.
fn batch_rows(pairs: &Pairs, picked: &[u32], device: Device) -> (Tensor, Tensor) {
    let a: Vec<i64> = picked.iter().map(|&i| pairs.a[i as usize] as i64).collect();
    let b: Vec<i64> = picked.iter().map(|&i| pairs.b[i as usize] as i64).collect();
    (
        Tensor::from_slice(&a).to_device(device),
        Tensor::from_slice(&b).to_device(device),
    )
}

// ------------------------------------------------------------- the training

/// One epoch of `training.json`.
#[derive(Serialize, Clone, Debug, PartialEq)]
struct EpochLog {
    /// 1-based.
    epoch: usize,
    /// Mean InfoNCE over the epoch's pairs (with the weights of the moment).
    train_loss: f64,
    /// Mean InfoNCE over the held-out pairs after the epoch.
    valid_loss: Option<f64>,
    /// Recall@10 of the held-out pairs among all items after the epoch.
    valid_recall_at_10: Option<f64>,
    /// The learning rate the epoch ran with.
    lr: f64,
}

/// An [`EpochLog`] with its floats as exact bits: JSON decimals may not
/// parse back to the same float, and a resumed run must end bit for bit.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct ExactEpoch {
    train_loss: u64,
    valid_loss: Option<u64>,
    valid_recall_at_10: Option<u64>,
    lr: u64,
}

impl ExactEpoch {
    fn of(log: &EpochLog) -> ExactEpoch {
        ExactEpoch {
            train_loss: log.train_loss.to_bits(),
            valid_loss: log.valid_loss.map(f64::to_bits),
            valid_recall_at_10: log.valid_recall_at_10.map(f64::to_bits),
            lr: log.lr.to_bits(),
        }
    }

    fn log(&self, epoch: usize) -> EpochLog {
        EpochLog {
            epoch,
            train_loss: f64::from_bits(self.train_loss),
            valid_loss: self.valid_loss.map(f64::from_bits),
            valid_recall_at_10: self.valid_recall_at_10.map(f64::from_bits),
            lr: f64::from_bits(self.lr),
        }
    }
}

const CHECKPOINT_FORMAT: u32 = 1;

/// `checkpoint.json` in the checkpoint folder (the commit point; the
/// tensors are in the file it names, see [`trainer::write_checkpoint`]).
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    format: u32,
    kind: String,
    epochs_done: usize,
    tensors: String,
    seed: u64,
    /// The params training depends on (all but `epochs`, which may grow on
    /// resume, and the neighbour listing's), and the tower's shape.
    setup: serde_json::Value,
    data_fingerprint: u64,
    log: Vec<ExactEpoch>,
    plateau: Plateau,
    /// The learning rate for the next epoch.
    lr_bits: u64,
}

/// Where training stands: everything a checkpoint restores.
struct State {
    log: Vec<EpochLog>,
    plateau: Plateau,
}

/// A trained tower and what the run did.
struct Trained {
    // Owns the variables the model's tensors point into.
    _vs: VarStore,
    model: InfoNce,
    log: Vec<EpochLog>,
    /// (seconds, pairs per second) of the epochs this run trained.
    timings: Vec<(f64, f64)>,
}

/// Trains (or resumes training) the tower on the split's training pairs.
fn fit(
    p: &Params,
    items: &Items,
    pairs: &Pairs,
    split: &Split,
    ctx: &mut StageContext<'_>,
    device: Device,
) -> anyhow::Result<Trained> {
    let cfg = InfoNceConfig {
        num_items: items.len() as i64,
        dim: p.dim,
        hidden: p.hidden_size(),
    };
    let (vs, model) = {
        // Only the initial weights draw from torch's RNG (nothing in
        // training does): seeded, and with no other training interleaving.
        let _rng = trainer::torch_rng_lock();
        tch::manual_seed(ctx.seed as i64);
        let vs = VarStore::new(device);
        let model = InfoNce::new(&vs.root(), &cfg);
        (vs, model)
    };
    let mut opt = AdamW::from_var_store(
        &vs,
        AdamWConfig {
            lr: p.lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: p.weight_decay,
            clip_norm: 0.0,
            coupled_decay: false,
        },
    );
    let setup = setup_json(p, &cfg)?;
    let fingerprint = pairs.fingerprint(items);
    let dir = ctx.checkpoint_dir.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut state = match trainer::read_meta::<Checkpoint>(&dir)? {
        Some(saved) => {
            check_checkpoint(&saved, p, &setup, ctx.seed, fingerprint, &dir)?;
            resume(saved, &dir, &vs, &mut opt, p, ctx)?
        }
        None => State {
            log: Vec::new(),
            plateau: Plateau::new(p.plateau_factor, p.plateau_patience),
        },
    };
    let sampler = Sampler::new(p, pairs, split)?;
    let mut timings = Vec::new();
    for epoch in state.log.len()..p.epochs {
        let start = Instant::now();
        let order = sampler.epoch(&split.train, ctx.seed, epoch);
        let ranges = batch_ranges(order.len(), p.batch_size);
        let what = format!("epoch {}/{}", epoch + 1, p.epochs);
        let bar = ctx.progress.bar(ctx.stage, &what, ranges.len() as u64);
        let train_loss = train_epoch(&model, &mut opt, pairs, &order, &ranges, p, &bar)
            .with_context(|| format!("{}: {what}", ctx.stage))?;
        bar.finish_and_clear();
        let seconds = start.elapsed().as_secs_f64();
        let (valid_loss, recall) = validate(&model, pairs, &split.valid, p);
        let lr = opt.lr();
        opt.set_lr(state.plateau.step(valid_loss.unwrap_or(train_loss), lr));
        let log = EpochLog {
            epoch: epoch + 1,
            train_loss,
            valid_loss,
            valid_recall_at_10: recall,
            lr,
        };
        ctx.progress.println(&epoch_line(ctx.stage, &log, seconds));
        state.log.push(log);
        timings.push((seconds, order.len() as f64 / seconds.max(1e-9)));
        let saved = Checkpoint {
            format: CHECKPOINT_FORMAT,
            kind: seqpipe_stages::embed::KIND.into(),
            epochs_done: state.log.len(),
            tensors: trainer::checkpoint_tensors_name(state.log.len()),
            seed: ctx.seed,
            setup: setup.clone(),
            data_fingerprint: fingerprint,
            log: state.log.iter().map(ExactEpoch::of).collect(),
            plateau: state.plateau.clone(),
            lr_bits: opt.lr().to_bits(),
        };
        trainer::write_checkpoint(&dir, &vs, &opt, &saved.tensors, &saved)?;
    }
    Ok(Trained {
        _vs: vs,
        model,
        log: state.log,
        timings,
    })
}

/// Loads checkpoint `saved` from `dir` into the tower and the optimiser;
/// returns the schedule and log it holds.
fn resume(
    saved: Checkpoint,
    dir: &Path,
    vs: &VarStore,
    opt: &mut AdamW,
    p: &Params,
    ctx: &mut StageContext<'_>,
) -> anyhow::Result<State> {
    trainer::restore_checkpoint(dir, &saved.tensors, vs, opt)?;
    opt.set_lr(f64::from_bits(saved.lr_bits));
    let resumed = saved.epochs_done;
    ctx.progress.println(&format!(
        "{}: resuming from the checkpoint after epoch {resumed} of {}",
        ctx.stage, p.epochs
    ));
    ctx.note("resumed_after_epoch", resumed);
    let log = saved.log.iter().enumerate();
    Ok(State {
        log: log.map(|(e, x)| x.log(e + 1)).collect(),
        plateau: saved.plateau,
    })
}

/// The params a checkpoint must match, with the tower's shape.
fn setup_json(p: &Params, cfg: &InfoNceConfig) -> anyhow::Result<serde_json::Value> {
    let mut setup = serde_json::to_value(p)?;
    if let Some(obj) = setup.as_object_mut() {
        for free in ["epochs", "query_items", "neighbours"] {
            obj.remove(free);
        }
        obj.insert("tower".into(), serde_json::to_value(cfg)?);
    }
    Ok(setup)
}

fn check_checkpoint(
    saved: &Checkpoint,
    p: &Params,
    setup: &serde_json::Value,
    seed: u64,
    fingerprint: u64,
    dir: &Path,
) -> anyhow::Result<()> {
    let at = dir.display();
    ensure!(
        saved.format == CHECKPOINT_FORMAT && saved.kind == seqpipe_stages::embed::KIND,
        "checkpoint in {at} is not an {} checkpoint of format {CHECKPOINT_FORMAT}",
        seqpipe_stages::embed::KIND
    );
    ensure!(
        &saved.setup == setup,
        "checkpoint in {at} was written with other params"
    );
    ensure!(
        saved.seed == seed,
        "checkpoint in {at} was written with seed {}, not {seed}",
        saved.seed
    );
    ensure!(
        saved.data_fingerprint == fingerprint,
        "checkpoint in {at} was written for another graph"
    );
    ensure!(
        saved.log.len() == saved.epochs_done,
        "checkpoint in {at} is inconsistent"
    );
    ensure!(
        saved.epochs_done <= p.epochs,
        "checkpoint in {at} already has {} epochs, more than the {} asked for",
        saved.epochs_done,
        p.epochs
    );
    Ok(())
}

/// One pass over `order` (indices into `pairs`); returns the mean loss per
/// pair. A non-finite loss fails the epoch, naming the batch, before its
/// checkpoint is written.
fn train_epoch(
    model: &InfoNce,
    opt: &mut AdamW,
    pairs: &Pairs,
    order: &[u32],
    ranges: &[Range<usize>],
    p: &Params,
    bar: &Bar,
) -> anyhow::Result<f64> {
    let device = model.device();
    let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
    // Per batch "was the loss finite", kept on the device (reading it every
    // batch would stall a GPU; it is read once if the epoch fails) in one
    // tensor filled in place: a small tensor kept alive per batch pins the
    // heap between the batches' large blocks, and the heap then grew by
    // about a megabyte per batch (batch 1024; far more at 8192).
    let finite = Tensor::ones([ranges.len() as i64], (Kind::Bool, device));
    for (i, range) in ranges.iter().enumerate() {
        let n = range.len() as f64;
        let (z, loss) = batch_loss(model, pairs, &order[range.clone()], p.temperature, true);
        finite.get(i as i64).copy_(&loss.loss.isfinite());
        opt.backward_step(&loss.surrogate(&z));
        loss_sum += &loss.loss * n;
        bar.inc(1);
    }
    let mean = loss_sum.double_value(&[]) / order.len() as f64;
    if !mean.is_finite() {
        let bad = Vec::<bool>::try_from(finite.to_device(Device::Cpu))?
            .iter()
            .position(|f| !f)
            .unwrap_or(0);
        bail!(
            "training diverged in batch {} of {}: the loss is not finite; the checkpoint of \
             the last good epoch is kept (try a lower lr or a higher temperature)",
            bad + 1,
            ranges.len()
        );
    }
    Ok(mean)
}

/// The symmetric InfoNCE of the pairs `picked`, both ends through one
/// forward pass of the tower: the tower's output `z` [2B, D] (with
/// autograd) and the loss, with its gradient for `z` when `with_grad`
/// (the loss is computed in blocks, see [`chunked_infonce`]).
fn batch_loss(
    model: &InfoNce,
    pairs: &Pairs,
    picked: &[u32],
    temperature: f64,
    with_grad: bool,
) -> (Tensor, InfoNceLoss) {
    let (a, b) = batch_rows(pairs, picked, model.device());
    let n = a.size()[0];
    let z = model.encode(&Tensor::cat(&[&a, &b], 0));
    let zd = z.detach();
    let loss = chunked_infonce(
        &zd.narrow(0, 0, n),
        &zd.narrow(0, n, n),
        &a,
        &b,
        temperature,
        with_grad,
    );
    (z, loss)
}

/// The held-out loss (in file order, batches of `batch_size`) and recall@10
/// (see `seqpipe_stages::embed`); `None`s without held-out pairs.
fn validate(
    model: &InfoNce,
    pairs: &Pairs,
    valid: &[u32],
    p: &Params,
) -> (Option<f64>, Option<f64>) {
    if valid.is_empty() {
        return (None, None);
    }
    tch::no_grad(|| {
        let mut sum = Tensor::zeros([], (Kind::Double, model.device()));
        for range in batch_ranges(valid.len(), p.batch_size) {
            let n = range.len() as f64;
            let (_, loss) = batch_loss(model, pairs, &valid[range], p.temperature, false);
            sum += loss.loss * n;
        }
        let loss = sum.double_value(&[]) / valid.len() as f64;
        let scored = &valid[..valid.len().min(RECALL_PAIRS)];
        (Some(loss), Some(recall_at_k(model, pairs, scored)))
    })
}

/// The share of pairs `(a, b)` for which fewer than [`RECALL_K`] items
/// score above `b` when `a` queries every item but itself (ties count for
/// `b`). Queries go in chunks that keep the score matrix near 64 MiB.
fn recall_at_k(model: &InfoNce, pairs: &Pairs, scored: &[u32]) -> f64 {
    let z = model.encode_all(ENCODE_CHUNK); // [V, D]; row k is item row k + 1
    let items = z.size()[0];
    let chunk = ((1usize << 24) / items as usize).clamp(1, 1024);
    let mut hits = Tensor::zeros([], (Kind::Int64, model.device()));
    for picked in scored.chunks(chunk) {
        let (a, b) = batch_rows(pairs, picked, model.device());
        let (a, b) = (a - 1, (b - 1).unsqueeze(1));
        let mut scores = z.index_select(0, &a).matmul(&z.tr()); // [c, V]
        let _ = scores.scatter_value_(1, &a.unsqueeze(1), f64::NEG_INFINITY);
        let target = scores.gather(1, &b, false);
        let above = scores
            .gt_tensor(&target)
            .sum_dim_intlist(1, false, Kind::Int64);
        hits += above.lt(RECALL_K).sum(Kind::Int64);
    }
    hits.int64_value(&[]) as f64 / scored.len() as f64
}

/// "emb: epoch 3 loss 1.2345 valid 1.3456 recall@10 0.4567 lr 1e-3 (2.1s)".
fn epoch_line(stage: &str, log: &EpochLog, seconds: f64) -> String {
    let mut line = format!("{stage}: epoch {} loss {:.4}", log.epoch, log.train_loss);
    if let (Some(loss), Some(recall)) = (log.valid_loss, log.valid_recall_at_10) {
        line += &format!(" valid {loss:.4} recall@10 {recall:.4}");
    }
    line + &format!(" lr {:e} ({seconds:.1}s)", log.lr)
}

/// Timings are facts about this run, not about the embeddings: they go to
/// the run manifest, so the artifact's bytes do not depend on them.
fn note_timings(ctx: &mut StageContext<'_>, timings: &[(f64, f64)]) {
    if timings.is_empty() {
        return;
    }
    let seconds: Vec<String> = timings.iter().map(|(s, _)| format!("{s:.2}")).collect();
    let rate = timings.iter().map(|(_, r)| r).sum::<f64>() / timings.len() as f64;
    let total: f64 = timings.iter().map(|(s, _)| s).sum();
    ctx.note("epoch_seconds", seconds.join(", "));
    ctx.note("train_seconds", format!("{total:.2}"));
    ctx.note("pairs_per_second", format!("{rate:.0}"));
}

// -------------------------------------------------------------- the outputs

/// Writes every file of the `embeddings` artifact into `out`; `z` [V, D]
/// holds item rows `1..=V` (unit norm).
fn write_outputs(
    out: &Path,
    p: &Params,
    items: &Items,
    z: &Tensor,
    log: &[EpochLog],
    queries: &[u32],
    config: &serde_json::Value,
) -> anyhow::Result<()> {
    let dim = z.size()[1];
    let matrix = Tensor::cat(
        &[
            Tensor::zeros([1, dim], (Kind::Float, Device::Cpu)),
            z.shallow_clone(),
        ],
        0,
    )
    .to_kind(Kind::Float)
    .contiguous();
    Tensor::write_safetensors(
        &[("embeddings", &matrix)],
        out.join("embeddings.safetensors"),
    )?;
    let values = Vec::<f32>::try_from(matrix.flatten(0, -1))?;
    write_npy(&out.join("embeddings.npy"), &values, matrix.size()[0], dim)?;
    write_items(&out.join("items.parquet"), items)?;
    write_json(&out.join("config.json"), config)?;
    let training = serde_json::json!({
        "valid_metric": format!(
            "recall@{RECALL_K}: held-out edges (a, b) with fewer than {RECALL_K} items scoring above b \
             when a queries every item but itself, on the first {RECALL_PAIRS} held-out edges"
        ),
        "epochs": log,
    });
    write_json(&out.join("training.json"), &training)?;
    let lists = neighbour_lists(items, z, queries, p.neighbours)?;
    write_json(
        &out.join("neighbours.json"),
        &serde_json::json!({ "metric": "cosine", "queries": lists }),
    )?;
    std::fs::write(out.join("neighbours.md"), neighbours_markdown(&lists))?;
    Ok(())
}

fn write_json(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `values` as a NumPy `.npy` file (format 1.0): a `rows` × `cols`
/// little-endian float32 matrix in C order, the header padded so that the
/// data starts at a multiple of 64 bytes, as NumPy writes it.
fn write_npy(path: &Path, values: &[f32], rows: i64, cols: i64) -> anyhow::Result<()> {
    ensure!(
        values.len() as i64 == rows * cols,
        "npy: {} values for a {rows} x {cols} matrix",
        values.len()
    );
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // magic (6) + version (2) + header length (2) + dict + padding + '\n'.
    let unpadded = 10 + dict.len() + 1;
    let header = format!("{dict}{}\n", " ".repeat((64 - unpadded % 64) % 64));
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    w.write_all(b"\x93NUMPY\x01\x00")?;
    w.write_all(&(header.len() as u16).to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    for v in values {
        w.write_all(&v.to_le_bytes())?;
    }
    w.flush()?;
    Ok(())
}

/// `items.parquet`: `row` (1..=V), `item_id`, `domain`.
fn write_items(path: &Path, items: &Items) -> anyhow::Result<()> {
    let rows: Vec<i64> = (1..=items.len() as i64).collect();
    let domains: Vec<&str> = (1..=items.len() as u32).map(|r| items.domain(r)).collect();
    table::write(
        path,
        &table::batch(vec![
            ("row", Arc::new(Int64Array::from(rows))),
            ("item_id", Arc::new(Int64Array::from(items.ids.clone()))),
            ("domain", Arc::new(StringArray::from(domains))),
        ])?,
    )
}

/// One query of `neighbours.json`.
#[derive(Serialize)]
struct NeighbourList {
    item_id: i64,
    domain: String,
    neighbours: Vec<Neighbour>,
}

#[derive(Serialize)]
struct Neighbour {
    rank: usize,
    item_id: i64,
    domain: String,
    /// Cosine, rounded to 6 decimals.
    score: f64,
    cross_domain: bool,
}

/// Each query's `k` nearest items by cosine (itself excluded; ties by row).
fn neighbour_lists(
    items: &Items,
    z: &Tensor,
    queries: &[u32],
    k: usize,
) -> anyhow::Result<Vec<NeighbourList>> {
    let mut lists = Vec::with_capacity(queries.len());
    for &q in queries {
        let scores = Vec::<f32>::try_from(z.mv(&z.get(q as i64 - 1)))?;
        let mut rows: Vec<u32> = (1..=items.len() as u32).filter(|&r| r != q).collect();
        let by_score = |x: &u32, y: &u32| {
            let (sx, sy) = (scores[*x as usize - 1], scores[*y as usize - 1]);
            sy.total_cmp(&sx).then(x.cmp(y))
        };
        let k = k.min(rows.len());
        if k < rows.len() {
            rows.select_nth_unstable_by(k, by_score);
            rows.truncate(k);
        }
        rows.sort_by(by_score);
        let neighbours = rows
            .iter()
            .enumerate()
            .map(|(i, &r)| Neighbour {
                rank: i + 1,
                item_id: items.id(r),
                domain: items.domain(r).to_string(),
                score: (scores[r as usize - 1] as f64 * 1e6).round() / 1e6,
                cross_domain: items.domain(r) != items.domain(q),
            })
            .collect();
        lists.push(NeighbourList {
            item_id: items.id(q),
            domain: items.domain(q).to_string(),
            neighbours,
        });
    }
    Ok(lists)
}

fn neighbours_markdown(lists: &[NeighbourList]) -> String {
    let mut md = String::from("# Nearest neighbours by cosine\n");
    for list in lists {
        md += &format!("\n## Item {} ({})\n\n", list.item_id, list.domain);
        md += "| rank | item | domain | cosine | |\n|---:|---:|---|---:|---|\n";
        for n in &list.neighbours {
            let mark = if n.cross_domain { "cross-domain" } else { "" };
            md += &format!(
                "| {} | {} | {} | {:.4} | {mark} |\n",
                n.rank, n.item_id, n.domain, n.score
            );
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ranges_merge_a_lone_last_pair() {
        assert_eq!(batch_ranges(10, 4), vec![0..4, 4..8, 8..10]);
        assert_eq!(batch_ranges(9, 4), vec![0..4, 4..9]);
        assert_eq!(batch_ranges(8, 4), vec![0..4, 4..8]);
        assert_eq!(batch_ranges(3, 8), vec![0..3]);
        assert!(batch_ranges(0, 8).is_empty());
    }

    fn pairs(n: u32, weight: Vec<f64>) -> Pairs {
        Pairs {
            a: (0..n).collect(),
            b: (1..=n).collect(),
            weight,
            types: vec!["co_view".into()],
        }
    }

    #[test]
    fn the_split_is_seeded_disjoint_and_holds_at_least_two() {
        let p = Params {
            valid_share: 0.1,
            ..Params::default()
        };
        let split = Split::new(&pairs(50, vec![]), &p, 4).unwrap();
        assert_eq!((split.train.len(), split.valid.len()), (45, 5));
        let mut all = [split.train.clone(), split.valid.clone()].concat();
        all.sort();
        assert_eq!(all, (0..50).collect::<Vec<u32>>());
        assert!(split.valid.windows(2).all(|w| w[0] < w[1]));
        let again = Split::new(&pairs(50, vec![]), &p, 4).unwrap();
        assert_eq!(again.valid, split.valid);
        let other = Split::new(&pairs(50, vec![]), &p, 5).unwrap();
        assert_ne!(other.valid, split.valid);
        // 1% of 50 rounds to 1, too few for an in-batch loss: 2 are held out.
        let few = Params {
            valid_share: 0.01,
            ..p
        };
        assert_eq!(
            Split::new(&pairs(50, vec![]), &few, 4).unwrap().valid.len(),
            2
        );
    }

    #[test]
    fn weighted_epochs_draw_only_weighted_pairs() {
        let p = Params {
            weighted: true,
            valid_share: 0.0,
            ..Params::default()
        };
        let edges = pairs(4, vec![0.0, 1.0, 0.0, 3.0]);
        let split = Split::new(&edges, &p, 1).unwrap();
        let sampler = Sampler::new(&p, &edges, &split).unwrap();
        let drawn = sampler.epoch(&split.train, 1, 0);
        assert_eq!(drawn.len(), 4);
        assert!(drawn.iter().all(|&i| i == 1 || i == 3), "{drawn:?}");
        assert_eq!(drawn, sampler.epoch(&split.train, 1, 0));
        // All-zero weights cannot be sampled: the error names the param.
        let zero = pairs(4, vec![0.0; 4]);
        let e = Sampler::new(&p, &zero, &split).err().unwrap();
        assert!(e.to_string().starts_with("params.weighted:"), "{e}");
    }
}
