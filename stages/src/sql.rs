//! `sql` — one SQL query over the stage's named input tables, run by
//! Apache DataFusion (built with the default cargo feature `sql`).
//!
//! Params (defaults): `query` (required) one `SELECT` / `WITH` / `VALUES`
//! statement; `threads` (1) DataFusion partitions and worker threads, 0 =
//! every core; `memory_mb` (0 = unbounded) the memory pool: sorts, joins
//! and aggregations that need more spill to disk (under the stage's
//! checkpoint folder, removed when the stage ends); `output` ("events")
//! the output file's stem.
//! Inputs: any names, each a table (every `*.parquet` in its folder); each
//! is registered as a table under its input name, so `inputs = { events =
//! "clean.table", items = "items.table" }` lets the query `JOIN items`.
//! Outputs: `table` (table: `<output>.parquet`, `plan.txt` with the
//! optimized logical and physical plans, `summary.txt`).
//!
//! Why these defaults: with one partition DataFusion reads the files in
//! name order and every operator keeps its order, so the same inputs give
//! the same bytes — seqpipe's promise. With `threads > 1` the rows' order
//! is fixed only by the query's `ORDER BY`, and floating-point sums may
//! differ in the last bits between runs; the stage notes that in the run
//! manifest. Strings come out as Arrow `Utf8` (not DataFusion's `Utf8View`)
//! so the other stages read them as they read any table.
//!
//! The query is parsed when the pipeline is planned (a syntax error points
//! at the `query` line of the TOML, and statements with side effects —
//! `CREATE`, `COPY`, `INSERT` — are refused there); table and column names
//! are checked when the stage runs, and the error lists the input tables
//! and their columns. Results stream to disk batch by batch.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::{displayable, execute_stream, ExecutionPlan};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement;
use futures::StreamExt;
use seqpipe::stage::{KindInfo, ParamDoc, Port, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

use crate::table::{self, TableWriter};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub query: String,
    pub threads: usize,
    pub memory_mb: u64,
    pub output: String,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            query: String::new(),
            threads: 1,
            memory_mb: 0,
            output: "events".to_string(),
        }
    }
}

pub struct Sql;

/// 2: plan.txt and summary.txt without input paths and wall time (the same
/// bytes in every cache).
pub const VERSION: u32 = 2;

impl TypedStage for Sql {
    type Params = Params;

    fn info(&self) -> KindInfo {
        KindInfo {
            kind: "sql",
            version: VERSION,
            summary:
                "Runs one SQL query (Apache DataFusion) over the named input tables into a table.",
            inputs: vec![],
            extra_inputs: Some("table"),
            outputs: vec![Port {
                optional: false,
                name: "table",
                ty: "table",
                doc: "<output>.parquet (the query's rows), plan.txt, summary.txt",
            }],
            params: vec![
                ParamDoc {
                    name: "query",
                    doc: "one SELECT / WITH / VALUES statement; input names are table names",
                },
                ParamDoc {
                    name: "threads",
                    doc: "partitions and threads (1 = same bytes every run; 0 = every core)",
                },
                ParamDoc {
                    name: "memory_mb",
                    doc: "memory pool in MiB before operators spill to disk (0 = unbounded)",
                },
                ParamDoc {
                    name: "output",
                    doc: "stem of the output file (\"events\" → events.parquet)",
                },
            ],
            resource: Resource::Cpu,
        }
    }

    fn validate(&self, p: &Params) -> Result<(), String> {
        check_query(&p.query)?;
        if p.output.is_empty()
            || !p
                .output
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "output: `{}` must be a non-empty file stem of letters, digits, `_` or `-`",
                p.output
            ));
        }
        if p.threads > 1024 {
            return Err(format!("threads: {} is more than 1024", p.threads));
        }
        Ok(())
    }

    fn run(&self, p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let threads = match p.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let spill_dir = ctx.checkpoint_dir.join("spill");
        std::fs::create_dir_all(&spill_dir)
            .with_context(|| format!("cannot create {}", spill_dir.display()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .context("cannot start the query's thread pool")?;
        let out = ctx.output("table")?.join(format!("{}.parquet", p.output));
        let plan_path = ctx.output("table")?.join("plan.txt");
        let bar = ctx.progress.bar(ctx.stage, "sql rows", 0);
        let started = Instant::now();
        let inputs = ctx.inputs.clone();
        let query = Query {
            sql: &p.query,
            threads,
            memory_mb: p.memory_mb,
            spill_dir: &spill_dir,
        };
        let rows = runtime.block_on(async {
            let session = query.session()?;
            register_inputs(&session, &inputs).await?;
            let dataframe = match session.sql(query.sql).await {
                Ok(df) => df,
                Err(e) => return Err(plan_error(&session, &inputs, e).await),
            };
            let logical = dataframe.logical_plan().clone();
            let physical = dataframe
                .create_physical_plan()
                .await
                .context("the query does not compile to a physical plan")?;
            let optimized = session.state().optimize(&logical)?;
            let plan = format!(
                "# logical plan (optimized)\n{}\n\n# physical plan\n{}",
                optimized.display_indent(),
                displayable(physical.as_ref()).indent(true)
            );
            std::fs::write(&plan_path, without_input_paths(&plan, &inputs))
                .with_context(|| format!("cannot write {}", plan_path.display()))?;
            let mut stream = execute_stream(physical.clone(), session.task_ctx())?;
            let schema = utf8_schema(&stream.schema());
            let mut writer = TableWriter::create(&out, schema.clone(), table::Dictionary::All)?;
            while let Some(batch) = stream.next().await {
                let batch = batch.context("the query failed while running")?;
                writer.write(&to_utf8(&batch, &schema)?)?;
                bar.inc(batch.num_rows() as u64);
            }
            Ok::<_, anyhow::Error>((writer.close()?, spills(physical.as_ref())))
        })?;
        let (rows, (spill_count, spilled_bytes)) = rows;
        bar.finish_and_clear();
        let _ = std::fs::remove_dir_all(&spill_dir);
        // No wall time in the artifact: its bytes must not change between
        // runs (the time goes to the run manifest).
        let summary = format!(
            "{rows} rows from {} input table(s) on {threads} thread(s); \
             {spill_count} spill(s), {spilled_bytes} bytes spilled",
            inputs.len()
        );
        std::fs::write(
            ctx.output("table")?.join("summary.txt"),
            format!("{summary}\n"),
        )?;
        ctx.note("sql", &summary);
        ctx.note(
            "sql_seconds",
            format!("{:.2}", started.elapsed().as_secs_f64()),
        );
        ctx.note("sql_spilled_bytes", spilled_bytes);
        if threads > 1 {
            ctx.note(
                "sql_determinism",
                "threads > 1: row order is fixed only by ORDER BY; float sums may vary in the last bits",
            );
        }
        Ok(())
    }
}

/// What one run of the query needs to build its DataFusion session.
struct Query<'a> {
    sql: &'a str,
    threads: usize,
    memory_mb: u64,
    spill_dir: &'a Path,
}

impl Query<'_> {
    fn session(&self) -> anyhow::Result<SessionContext> {
        let mut config = SessionConfig::new()
            .with_target_partitions(self.threads)
            .with_batch_size(8192);
        // Plain Utf8 strings: every other stage reads StringArray.
        config
            .options_mut()
            .execution
            .parquet
            .schema_force_view_types = false;
        config.options_mut().sql_parser.map_string_types_to_utf8view = false;
        let disk =
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Directories(vec![self
                .spill_dir
                .to_path_buf()]));
        let mut runtime = RuntimeEnvBuilder::new().with_disk_manager_builder(disk);
        if self.memory_mb > 0 {
            runtime = runtime.with_memory_limit((self.memory_mb as usize) << 20, 1.0);
        }
        Ok(SessionContext::new_with_config_rt(
            config,
            runtime.build_arc()?,
        ))
    }
}

/// Spill files written and bytes spilled by every operator of `plan`
/// (read after the run: operators record them as they go).
fn spills(plan: &dyn ExecutionPlan) -> (usize, usize) {
    let (count, bytes) = plan.metrics().map_or((0, 0), |m| {
        (m.spill_count().unwrap_or(0), m.spilled_bytes().unwrap_or(0))
    });
    plan.children()
        .iter()
        .fold((count, bytes), |(c, b), child| {
            let (cc, cb) = spills(child.as_ref());
            (c + cc, b + cb)
        })
}

/// `plan` with each input folder's path (a cache path, different in every
/// cache) written as `<input NAME>`, so plan.txt has the same bytes
/// wherever the inputs live.
fn without_input_paths(
    plan: &str,
    inputs: &std::collections::BTreeMap<String, std::path::PathBuf>,
) -> String {
    let mut plan = plan.to_string();
    for (name, dir) in inputs {
        let path = dir.display().to_string();
        let path = path.trim_start_matches('/');
        plan = plan.replace(path, &format!("<input {name}>"));
    }
    plan
}

/// Registers each input folder as a table named after its input.
async fn register_inputs(
    session: &SessionContext,
    inputs: &std::collections::BTreeMap<String, std::path::PathBuf>,
) -> anyhow::Result<()> {
    for (name, dir) in inputs {
        // Checks the folder as the other stages do (one schema, ≥ 1 file).
        table::open_table(dir).with_context(|| format!("input `{name}`"))?;
        let path = format!("{}/", dir.display());
        session
            .register_parquet(name, &path, ParquetReadOptions::default())
            .await
            .with_context(|| format!("input `{name}`: cannot register {}", dir.display()))?;
    }
    Ok(())
}

/// A planning error with what the query could have named: each input table
/// and its columns.
async fn plan_error(
    session: &SessionContext,
    inputs: &std::collections::BTreeMap<String, std::path::PathBuf>,
    error: datafusion::error::DataFusionError,
) -> anyhow::Error {
    let mut tables = Vec::new();
    for name in inputs.keys() {
        let columns = match session.table(name.as_str()).await {
            Ok(df) => df
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect::<Vec<_>>()
                .join(", "),
            Err(_) => "?".to_string(),
        };
        tables.push(format!("`{name}` ({columns})"));
    }
    anyhow::anyhow!(
        "the query does not plan: {error}\n  input tables: {}",
        if tables.is_empty() {
            "none (give the stage inputs)".to_string()
        } else {
            tables.join("; ")
        }
    )
}

/// Parses `sql` and accepts exactly one query statement.
fn check_query(sql: &str) -> Result<(), String> {
    if sql.trim().is_empty() {
        return Err("query: is empty; write one SELECT statement".to_string());
    }
    let statements = DFParser::parse_sql(sql).map_err(|e| format!("query: does not parse: {e}"))?;
    if statements.len() != 1 {
        return Err(format!(
            "query: holds {} statements; write exactly one",
            statements.len()
        ));
    }
    match &statements[0] {
        DfStatement::Statement(s) if matches!(s.as_ref(), Statement::Query(_)) => Ok(()),
        other => Err(format!(
            "query: only SELECT / WITH / VALUES queries are allowed (a stage writes nothing but its output), not `{}`",
            first_words(&other.to_string())
        )),
    }
}

fn first_words(statement: &str) -> String {
    statement
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `schema` with every view or large string type as `Utf8` (and binary
/// likewise), nested types left alone.
fn utf8_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_data_type(plain(f.data_type())))
        .collect();
    Arc::new(Schema::new(fields))
}

fn plain(ty: &DataType) -> DataType {
    match ty {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        other => other.clone(),
    }
}

fn to_utf8(batch: &RecordBatch, schema: &SchemaRef) -> anyhow::Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_query_statement_passes_validation() {
        assert!(check_query("SELECT user_id FROM events WHERE x > 1").is_ok());
        assert!(check_query("WITH a AS (SELECT 1 AS x) SELECT x FROM a").is_ok());
        let e = check_query("SELEC user_id FROM events").unwrap_err();
        assert!(e.starts_with("query: does not parse"), "{e}");
        let e = check_query("SELECT 1; SELECT 2").unwrap_err();
        assert!(e.contains("holds 2 statements"), "{e}");
        let e = check_query("CREATE TABLE t AS SELECT 1").unwrap_err();
        assert!(e.contains("only SELECT"), "{e}");
        let e = check_query("COPY events TO '/tmp/x.parquet'").unwrap_err();
        assert!(e.contains("only SELECT"), "{e}");
        assert!(check_query("  ").unwrap_err().contains("is empty"));
    }
}
