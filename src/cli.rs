//! The command line: parses arguments into an `ops` options struct, calls one
//! `ops` function, and turns the result into an exit code (0 ok, 1 a stage
//! failed, 2 a bad spec or usage). A binary supplies the stage registry:
//! `seqpipe::cli::main(seqpipe_stages::registry())`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::error::{exit_code, EXIT_OK};
use crate::ops::{self, CacheOptions};
use crate::run::RunOptions;
use crate::spec::Executor;
use crate::stage::Registry;

const EXAMPLES: &str = "\
Examples:
  seqpipe run pipelines/quickstart.toml                 run everything not cached
  seqpipe run pipelines/quickstart.toml --set train_sasrec.lr=3e-4
                                                        change one param for this run
  seqpipe status pipelines/quickstart.toml              what would run, and why
  seqpipe sweep pipelines/sweep.toml                    every trial of its [sweep], a leaderboard
  seqpipe show pipelines/quickstart.toml                last run's results and artifacts
  seqpipe verify pipelines/quickstart.toml              recompute cached stages, compare bit for bit
  seqpipe stages                                        every stage kind and its params
  seqpipe run pipelines/ml100k.toml --executor slurm    every stage as a Slurm job (shared cache)
  seqpipe sweep pipelines/sweep.toml --executor slurm --parallel 16
                                                        trials as a Slurm job array, 16 at once
  seqpipe run pipelines/ml100k.toml --cache s3://bucket/exp
                                                        a cache shared by many machines

A pipeline is a TOML file of [stages.NAME] tables, each with a `kind`, its
`params`, and `inputs` naming other stages' outputs as \"<stage>.<output>\".
Every stage's result is cached under a key made of its kind, params, input
contents and the pipeline seed: a rerun computes only what changed.";

#[derive(Debug, Parser)]
#[command(
    name = "seqpipe",
    version,
    about = "Declarative, cached, resumable pipelines for sequential-recommendation experiments",
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// The cache: a folder, or an object store shared by many machines
    /// (`s3://bucket/prefix`, `gs://…`, `az://…`, `file:///…`; credentials
    /// and endpoint from the service's usual environment variables).
    /// [default: the spec's `[pipeline] cache`, else `cache`]
    #[arg(long, global = true, env = "SEQPIPE_CACHE", value_parser = non_empty)]
    cache: Option<String>,
    /// With an object-store cache: this machine's working folder (stages
    /// read and write local files; artifacts are downloaded here once).
    #[arg(
        long,
        global = true,
        env = "SEQPIPE_LOCAL_CACHE",
        default_value = "cache",
        value_name = "DIR",
        value_parser = non_empty_path
    )]
    local_cache: PathBuf,
    /// Fail instead of waiting when `gc` holds the cache (or, for `gc`, when
    /// runs do).
    #[arg(long, global = true)]
    no_wait: bool,
}

/// A cache folder must be named: an empty `--cache` (or `SEQPIPE_CACHE=`)
/// would make the current folder the cache, and `gc` would clean it. A
/// usage error (exit 2), like any bad argument.
fn non_empty(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err(
            "the cache cannot be an empty path (it would be the current folder); \
                    name a folder, e.g. `cache`"
                .into(),
        );
    }
    Ok(text.to_string())
}

fn non_empty_path(text: &str) -> Result<PathBuf, String> {
    non_empty(text).map(PathBuf::from)
}

impl Cli {
    /// `--cache` (a local folder, or a store URL with its working folder);
    /// when not given, the spec's `[pipeline] cache` decides.
    fn cache_options(&self) -> CacheOptions {
        CacheOptions::new(
            self.cache.as_deref(),
            self.local_cache.clone(),
            !self.no_wait,
        )
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline: every stage whose key is not cached is computed.
    Run(RunArgs),
    /// Run every trial of the spec's [sweep] table; print a leaderboard and
    /// write the best trial as `<spec>.best.toml`.
    #[command(after_help = SWEEP_HELP)]
    Sweep(SweepArgs),
    /// Say, per stage, whether it is cached, and if not, why it would run.
    Status(StatusArgs),
    /// Compute cached stages again in a scratch folder and check that their
    /// outputs are bit-identical to the cache (exit 1 if any is not).
    Verify(VerifyArgs),
    /// Show the last run of a pipeline: results, artifacts and their paths.
    Show(ShowArgs),
    /// Remove cached artifacts that no recorded run references.
    Gc(GcArgs),
    /// What a Slurm job runs on its node: one stage of a submitted run
    /// (written by `seqpipe run` for stages with `executor = "slurm"`).
    #[command(hide = true)]
    Job {
        /// The job ticket (`<cache>/jobs/<key>/ticket.json`).
        ticket: PathBuf,
    },
    /// List every stage kind with its inputs, outputs and params.
    Stages {
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct SpecArgs {
    /// The pipeline spec (TOML).
    spec: PathBuf,
    /// Override a param for this invocation: STAGE.PARAM=VALUE (VALUE is TOML,
    /// or a bare string). Repeatable.
    #[arg(long = "set", value_name = "STAGE.PARAM=VALUE")]
    sets: Vec<String>,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Stages to run at once (tensor stages still run one at a time).
    #[arg(short, long, default_value_t = 2)]
    jobs: usize,
    /// Rerun this stage even if cached (repeatable).
    #[arg(long, value_name = "STAGE")]
    force: Vec<String>,
    /// Run only this stage; its inputs must already be in the cache.
    #[arg(long, value_name = "STAGE")]
    only: Option<String>,
    /// After a failure, go on with stages that do not depend on it.
    #[arg(long)]
    keep_going: bool,
    /// Where every stage runs, overriding the spec's `executor` keys:
    /// `local`, or `slurm` (each stage a batch job over the shared cache).
    #[arg(long, value_name = "local|slurm")]
    executor: Option<Executor>,
    /// No progress bars or summary.
    #[arg(short, long)]
    quiet: bool,
}

const SWEEP_HELP: &str = "\
A sweep is a [sweep] table in the pipeline spec:

  [sweep]
  metric  = \"eval.valid.ndcg@10\"    # <stage>.<path in its metrics.json>: select on valid, keep test untouched
  goal    = \"max\"                   # or \"min\"
  repeats = 3                       # seeds per configuration: mean ± std
  samples = 8                       # random draws per grid point

  [sweep.grid]                      # every combination
  \"train.model\" = [\"pop\", \"markov\", \"sasrec\"]

  [sweep.random]                    # uniform, log_uniform, int_uniform, choice
  \"train.lr\" = { log_uniform = [1e-4, 1e-2] }

  [sweep.halving]                   # optional: successive halving
  param = \"train.epochs\"            # the spec's value is the full budget
  min   = 2                         # first rung; the best 1/eta go on
  eta   = 3

Trials share every artifact they have in common (the data stages run once),
and trials a stage's key cannot tell apart (lr on `pop`) run once. Rerun an
interrupted sweep: finished trials are cache hits. With halving, promoted
trials continue training from their last rung's checkpoint. The sweep folder
holds leaderboard.csv/.md and trials.json; a `report` stage with
inputs = { sweep = \"<that folder>\" } compares every trial. `seqpipe run` on
the same spec ignores [sweep] and runs the params as written.";

#[derive(Debug, Args)]
struct GcArgs {
    /// Also clean the shared object store of `--cache s3://…` (gs, az,
    /// file): artifacts no run manifest in the store references, and the
    /// stage records pointing at them.
    #[arg(long)]
    store: bool,
    /// With --store: keep unreferenced artifacts younger than this (a run on
    /// another machine uploads artifacts as it goes and its manifest at the
    /// end). `30m`, `2h`, `0s`, …
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    grace: humantime::Duration,
}

#[derive(Debug, Args)]
struct SweepArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Stages to run at once within a trial (tensor stages one at a time).
    #[arg(short, long, default_value_t = 2)]
    jobs: usize,
    /// Trials to run at once (after the first, which fills the shared data
    /// stages). Each trial's tensor stages still run one at a time.
    #[arg(short, long, default_value_t = 1, value_name = "N")]
    parallel: usize,
    /// Devices to spread parallel trials over, one per trial slot in turn
    /// (e.g. `cuda:0,cuda:1`: one tensor trial per GPU) [default: the spec's].
    #[arg(long, value_delimiter = ',', value_name = "DEVICE,...")]
    devices: Vec<String>,
    /// Folder for leaderboard.csv and leaderboard.md [default: <cache>/sweeps/<pipeline>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Where trials run, overriding `[sweep] executor`: `local`, or `slurm`
    /// (each trial a task of a Slurm job array, N at once with --parallel N;
    /// resources from `[sweep] slurm = { … }`).
    #[arg(long, value_name = "local|slurm")]
    executor: Option<Executor>,
    /// No progress bars or leaderboard on the terminal.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Only this stage (its inputs come from the cache).
    stage: Option<String>,
    /// One JSON document: a verdict per stage.
    #[arg(long)]
    json: bool,
    /// No progress bars.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// One JSON document: an object per stage with name, kind, state and reason.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ShowArgs {
    /// The pipeline spec (TOML).
    spec: PathBuf,
    /// Only this stage.
    stage: Option<String>,
    /// The run manifest with artifact paths, as JSON.
    #[arg(long)]
    json: bool,
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    crate::worker::set_log_filter(default);
    let filter = crate::worker::log_filter(default);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// For the commands that only print: `seqpipe show --json | head` should
/// end quietly when `head` closes the pipe, as `cat` does, instead of
/// panicking in `println!` (Rust ignores SIGPIPE, so the write fails with
/// EPIPE). Commands that change the cache keep ignoring it: a run is not
/// killed halfway because its log reader went away; they print with
/// [`crate::outln!`], which drops what a closed pipe cannot take.
fn die_quietly_on_closed_pipe() {
    // SAFETY: restores the default disposition of one signal before any
    // thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Parses the command line, runs the command, returns the exit code.
pub fn main(registry: Registry) -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let cache = cli.cache_options();
    if matches!(
        cli.command,
        Command::Status(_) | Command::Show(_) | Command::Stages { .. }
    ) {
        die_quietly_on_closed_pipe();
    }
    let result = dispatch(cli.command, cache, &registry);
    match result {
        Ok(()) => ExitCode::from(EXIT_OK as u8),
        Err(err) => {
            crate::errln!("error: {err:#}");
            ExitCode::from(exit_code(&err) as u8)
        }
    }
}

fn dispatch(command: Command, cache: CacheOptions, registry: &Registry) -> anyhow::Result<()> {
    match command {
        Command::Run(a) => {
            let cmd = ops::run::RunCommand {
                spec: a.spec.spec,
                sets: a.spec.sets,
                run: RunOptions {
                    jobs: a.jobs,
                    force: a.force.into_iter().collect::<BTreeSet<_>>(),
                    only: a.only,
                    keep_going: a.keep_going,
                    executor: a.executor,
                    ..RunOptions::default()
                },
                cache,
                quiet: a.quiet,
            };
            ops::run::run(&cmd, registry).map(|_| ())
        }
        Command::Sweep(a) => {
            let cmd = ops::sweep::SweepCommand {
                spec: a.spec.spec,
                sets: a.spec.sets,
                run: RunOptions {
                    jobs: a.jobs,
                    executor: a.executor,
                    ..RunOptions::default()
                },
                cache,
                parallel: a.parallel.max(1),
                devices: a.devices,
                out: a.out,
                quiet: a.quiet,
            };
            ops::sweep::sweep(&cmd, registry).map(|_| ())
        }
        Command::Verify(a) => {
            let cmd = ops::verify::VerifyCommand {
                spec: a.spec.spec,
                sets: a.spec.sets,
                stage: a.stage,
                cache,
                quiet: a.quiet || a.json,
            };
            let verdicts = ops::verify::verify(&cmd, registry)?;
            ops::verify::print(&verdicts, a.json)
        }
        Command::Status(a) => {
            let cmd = ops::status::StatusCommand {
                spec: a.spec.spec,
                sets: a.spec.sets,
                cache,
                json: a.json,
            };
            let statuses = ops::status::status(&cmd, registry)?;
            ops::status::print(&statuses, cmd.json)
        }
        Command::Show(a) => ops::show::show(
            &ops::show::ShowCommand {
                spec: a.spec,
                stage: a.stage,
                cache,
                json: a.json,
            },
            registry,
        ),
        Command::Gc(a) => {
            let r = ops::gc::gc(&ops::gc::GcCommand {
                cache,
                store: a.store,
                grace: a.grace.into(),
            })?;
            crate::outln!(
                "removed {} artifact(s), {:.1} MB; forgot {} index record(s)",
                r.artifacts_removed,
                r.bytes_freed as f64 / 1e6,
                r.records_forgotten
            );
            if let Some(s) = r.store {
                crate::outln!(
                    "store: removed {} artifact(s), {:.1} MB; forgot {} record(s); kept {} \
                     unreferenced artifact(s) younger than {}",
                    s.artifacts_removed,
                    s.bytes_freed as f64 / 1e6,
                    s.records_forgotten,
                    s.young_kept,
                    a.grace
                );
            }
            Ok(())
        }
        Command::Job { ticket } => ops::job::job(&ticket, &cache, registry),
        Command::Stages { json } => ops::stages::stages(registry, json),
    }
}
