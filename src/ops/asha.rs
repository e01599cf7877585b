//! Asynchronous successive halving (ASHA; Li et al., "A System for
//! Massively Parallel Hyperparameter Tuning", MLSys 2020) over a sweep's
//! trials — `[sweep.halving] mode = "async"`.
//!
//! Synchronous halving (`ops::sweep`) waits for a whole rung before it
//! promotes anyone, so with `--parallel N` slots idle while the rung's
//! slowest trial finishes. Here every free slot asks for work at once:
//! going down from the highest rung, it promotes a trial that is in the top
//! ⌊n/eta⌋ of the n trials finished at that rung and not yet promoted;
//! failing that it starts the next new trial at the first rung; failing
//! that it waits for a running trial to finish (and stops when none runs).
//! A trial never promoted stops where it is, marked `stopped_at`.
//!
//! With one slot the order is fixed (trials start in sweep order), so the
//! sweep is reproducible; with several, which trials are promoted can
//! depend on which finish first — each trial's own numbers stay exact.
//! Promoted trials inherit the checkpoints of their previous rung, as in
//! the synchronous version.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Condvar, Mutex};

use super::sweep::{rung_job, Job, Rung, TrialContext, TrialResult};
use crate::sweep::Halving;

/// What is known while the sweep runs (behind one lock).
#[derive(Default)]
struct Board {
    /// The next trial (position in `which`) not started yet.
    next_new: usize,
    /// Jobs running now.
    running: usize,
    /// Per rung: (trial, selection metric) in the order they finished.
    finished: Vec<Vec<(usize, Option<f64>)>>,
    /// Per rung: trials promoted out of it.
    promoted: Vec<BTreeSet<usize>>,
    /// Per trial: its latest result and the rung it came from.
    latest: BTreeMap<usize, (usize, anyhow::Result<TrialResult>)>,
    /// Per trial: the budget stage's key at its latest rung (to inherit).
    keys: BTreeMap<usize, String>,
    /// Per trial: (budget, metric) per rung run.
    history: BTreeMap<usize, Vec<(i64, Option<f64>)>>,
    /// Checkpoints kept for promotion, dropped at the end.
    kept: Vec<String>,
}

/// Runs trials `which` of `jobs` under ASHA; returns each trial's last
/// result (stopped ones marked with the budget they stopped at).
pub(super) fn asynchronous_halving(
    ctx: &TrialContext<'_>,
    jobs: &[Job],
    which: &[usize],
    h: &Halving,
    full: i64,
    base_seed: u64,
) -> anyhow::Result<BTreeMap<usize, anyhow::Result<TrialResult>>> {
    let budgets = h.rungs(full);
    let board = Mutex::new(Board {
        finished: vec![vec![]; budgets.len()],
        promoted: vec![BTreeSet::new(); budgets.len()],
        ..Board::default()
    });
    let changed = Condvar::new();
    let asha = Asha {
        ctx,
        jobs,
        which,
        h,
        budgets: &budgets,
        base_seed,
        board: &board,
        changed: &changed,
    };
    // The first trial alone: it fills the stages every trial shares.
    asha.work(None, true)?;
    let slots = ctx.cmd.parallel.max(1);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..slots)
            .map(|slot| {
                let device = (!ctx.cmd.devices.is_empty())
                    .then(|| ctx.cmd.devices[slot % ctx.cmd.devices.len()].clone());
                let asha = &asha;
                scope.spawn(move || asha.work(device.as_deref(), false))
            })
            .collect();
        for w in workers {
            w.join().expect("an ASHA worker panicked")?;
        }
        Ok(())
    })?;
    let board = board.into_inner().unwrap_or_else(|e| e.into_inner());
    for key in &board.kept {
        let _ = ctx.cache.drop_checkpoints(key);
    }
    let last = budgets.len() - 1;
    Ok(board
        .latest
        .into_iter()
        .map(|(j, (rung, result))| {
            let result = result.map(|mut t| {
                t.rungs = board.history.get(&j).cloned().unwrap_or_default();
                if rung < last {
                    t.stopped_at = Some(budgets[rung]);
                }
                t
            });
            (j, result)
        })
        .collect())
}

/// The shared state of one ASHA run.
struct Asha<'a> {
    ctx: &'a TrialContext<'a>,
    jobs: &'a [Job],
    which: &'a [usize],
    h: &'a Halving,
    budgets: &'a [i64],
    base_seed: u64,
    board: &'a Mutex<Board>,
    changed: &'a Condvar,
}

impl Asha<'_> {
    /// Takes jobs until there are none left (just one when `once`).
    fn work(&self, device: Option<&str>, once: bool) -> anyhow::Result<()> {
        while let Some((j, rung)) = self.next_job() {
            let result = self.run(j, rung, device);
            self.record(j, rung, result);
            if once {
                break;
            }
        }
        Ok(())
    }

    /// The next (trial, rung) to run, waiting while nothing can be promoted
    /// or started but something still runs; `None` when all is done.
    fn next_job(&self) -> Option<(usize, usize)> {
        let mut board = self.board.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(job) = self.promotion(&mut board) {
                board.running += 1;
                return Some(job);
            }
            if board.next_new < self.which.len() {
                let j = self.which[board.next_new];
                board.next_new += 1;
                board.running += 1;
                return Some((j, 0));
            }
            if board.running == 0 {
                return None;
            }
            board = self.changed.wait(board).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// From the highest rung down: the best trial in the top ⌊n/eta⌋ of a
    /// rung's n finished ones that is not promoted yet (failed or metric-less
    /// trials rank last and are never promoted).
    fn promotion(&self, board: &mut Board) -> Option<(usize, usize)> {
        let maximize = self.ctx.sweep.maximize;
        for rung in (0..self.budgets.len() - 1).rev() {
            let mut ranked: Vec<(usize, f64)> = board.finished[rung]
                .iter()
                .filter_map(|&(j, m)| Some((j, m?)))
                .collect();
            ranked.sort_by(|a, b| {
                let order = if maximize {
                    b.1.total_cmp(&a.1)
                } else {
                    a.1.total_cmp(&b.1)
                };
                order.then(a.0.cmp(&b.0))
            });
            let top = board.finished[rung].len() / self.h.eta;
            let pick = ranked
                .iter()
                .take(top)
                .map(|&(j, _)| j)
                .find(|j| !board.promoted[rung].contains(j));
            if let Some(j) = pick {
                board.promoted[rung].insert(j);
                return Some((j, rung + 1));
            }
        }
        None
    }

    fn run(&self, j: usize, rung: usize, device: Option<&str>) -> anyhow::Result<TrialResult> {
        let inherit = {
            let board = self.board.lock().unwrap_or_else(|e| e.into_inner());
            board.keys.get(&j).cloned()
        };
        let spot = Rung {
            budget: self.budgets[rung],
            last: rung + 1 == self.budgets.len(),
        };
        if !self.ctx.cmd.quiet {
            self.ctx.progress.println(&format!(
                "seqpipe: asha: trial {} at rung {} of {} ({}.{} = {})",
                self.jobs[j].trial.id,
                rung + 1,
                self.budgets.len(),
                self.h.stage,
                self.h.param,
                spot.budget
            ));
        }
        let job = rung_job(
            self.ctx,
            &self.jobs[j],
            self.h,
            spot,
            inherit.as_ref(),
            self.base_seed,
        )?;
        self.ctx.run(&job, device)
    }

    fn record(&self, j: usize, rung: usize, result: anyhow::Result<TrialResult>) {
        let mut board = self.board.lock().unwrap_or_else(|e| e.into_inner());
        let metric = result.as_ref().ok().and_then(|t| t.metric);
        board.finished[rung].push((j, metric));
        board
            .history
            .entry(j)
            .or_default()
            .push((self.budgets[rung], metric));
        if let Ok(t) = &result {
            if let Some(key) = t.keys.get(&self.h.stage) {
                board.keys.insert(j, key.clone());
                if rung + 1 < self.budgets.len() {
                    board.kept.push(key.clone());
                }
            }
        }
        board.latest.insert(j, (rung, result));
        board.running -= 1;
        self.changed.notify_all();
    }
}
