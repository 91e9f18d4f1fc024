//! `recur query`: DataFusion SQL over the tables a run wrote.
//!
//! Input: an output folder — one run's tables, or a folder of runs
//! (`OUT/as_of=DATE/`, see [`crate::runs`]) — and a query. Output: the
//! query's batches ([`run`]), which [`write`] prints as a table or writes as
//! CSV, JSON (one object per line) or Parquet.
//!
//! The tables registered ([`session`]):
//!
//! - every `NAME.parquet` of the run (in a folder of runs, the latest) as
//!   `NAME`: `clusters`, `sequences`, `surges`, `cluster_trends`, …;
//! - `contacts`: the run's contacts table, or in a folder of runs the
//!   contact store every run shares (`OUT/contacts/date=DATE/`);
//! - in a folder of runs, schema `runs`: each table over every run, with the
//!   run's as-of date as a column `as_of` (`SELECT as_of, COUNT(*) FROM
//!   runs.clusters GROUP BY as_of`). A column added in a later version is
//!   null in the runs written before it.
//!
//! `queries/analyst/` holds ready queries of this kind.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::MemorySchemaProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::error::{Error, Result};

/// How `recur query` gives its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table for the terminal.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per row, a line each.
    Json,
    /// A Parquet file (needs `--output`).
    Parquet,
}

/// The runs' folders of a folder of runs, oldest first (empty for one run's
/// folder).
fn run_dirs(out: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for e in std::fs::read_dir(out).map_err(|e| Error::io(out, e))? {
        let e = e.map_err(|e| Error::io(out, e))?;
        let name = e.file_name();
        if name.to_string_lossy().starts_with("as_of=") && e.path().is_dir() {
            dirs.push(e.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// The table names of a run's folder: its `NAME.parquet` files.
fn table_names(run: &Path) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for e in std::fs::read_dir(run).map_err(|e| Error::io(run, e))? {
        let path = e.map_err(|e| Error::io(run, e))?.path();
        if path.extension().is_some_and(|x| x == "parquet")
            && path.is_file()
            && let Some(stem) = path.file_stem()
        {
            names.insert(stem.to_string_lossy().into_owned());
        }
    }
    Ok(names)
}

/// A session with the tables of the output folder `out` (module docs).
pub async fn session(out: &Path) -> Result<SessionContext> {
    if !out.is_dir() {
        return Err(Error::InputNotFound {
            path: out.display().to_string(),
        });
    }
    let ctx = SessionContext::new();
    crate::udf::register_all(&ctx);
    let runs = run_dirs(out)?;
    let run = crate::runs::resolve_run_dir(out);
    let names = table_names(&run)?;
    if names.is_empty() {
        return Err(Error::NoParquetFiles {
            path: out.display().to_string(),
        });
    }
    for name in &names {
        let path = run.join(format!("{name}.parquet"));
        ctx.register_parquet(
            name.as_str(),
            path_str(&path)?,
            ParquetReadOptions::default(),
        )
        .await?;
    }
    let store = out.join("contacts");
    if !names.contains("contacts") && store.is_dir() {
        let url = ListingTableUrl::parse(format!("{}/", path_str(&store)?))?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let schema = options.infer_schema(&ctx.state(), &url).await?;
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(schema);
        ctx.register_table("contacts", Arc::new(ListingTable::try_new(config)?))?;
    }
    if !runs.is_empty() {
        let catalog = ctx.catalog("datafusion").expect("the default catalog");
        catalog.register_schema("runs", Arc::new(MemorySchemaProvider::new()))?;
        let mut all = BTreeSet::new();
        for r in &runs {
            all.extend(table_names(r)?);
        }
        for name in &all {
            // each run's NAME.parquet, with its folder's as_of as a column
            // (a listing matches the glob against the path without its
            // `key=value` folders: `latest/` and `contacts/` do not match)
            let url = ListingTableUrl::parse(format!("{}/", path_str(out)?))?
                .with_glob(&format!("{name}.parquet"))?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet")
                .with_table_partition_cols(vec![("as_of".to_string(), DataType::Date32)]);
            let schema = options.infer_schema(&ctx.state(), &url).await?;
            let config = ListingTableConfig::new(url)
                .with_listing_options(options)
                .with_schema(schema);
            ctx.register_table(
                format!("runs.{name}").as_str(),
                Arc::new(ListingTable::try_new(config)?),
            )?;
        }
    }
    Ok(ctx)
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| Error::param("OUTDIR", format!("{} is not a UTF-8 path", path.display())))
}

/// Runs `sql` over the tables of `out`: its schema and batches. A query
/// that does not plan (a syntax error, an unknown table or column) is the
/// user's input: [`Error::Query`].
pub async fn run(out: &Path, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    use datafusion::error::DataFusionError;
    let ctx = session(out).await?;
    let planned = ctx.sql(sql).await.map_err(|e| match e.find_root() {
        DataFusionError::SQL(..) | DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => {
            Error::Query {
                reason: e.to_string(),
            }
        }
        _ => Error::DataFusion(e),
    })?;
    let schema = planned.schema().inner().clone();
    let batches = planned.collect().await?;
    Ok((schema, batches))
}

/// Writes a query's result in `format` to `output`, or to `stdout` (every
/// format but Parquet).
pub fn write(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    format: Format,
    output: Option<&Path>,
    stdout: &mut dyn std::io::Write,
) -> Result<()> {
    use datafusion::arrow::{csv, json};
    if format == Format::Parquet {
        let Some(path) = output else {
            return Err(Error::param(
                "--format parquet",
                "needs --output FILE (Parquet is not written to a terminal)",
            ));
        };
        let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None)?;
        for b in batches {
            w.write(b)?;
        }
        w.close()?;
        return Ok(());
    }
    let mut file;
    let out: &mut dyn std::io::Write = match output {
        Some(path) => {
            file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
            &mut file
        }
        None => stdout,
    };
    let failed = |e: std::io::Error| Error::io(output.unwrap_or(Path::new("stdout")), e);
    match format {
        Format::Table => {
            let text = datafusion::arrow::util::pretty::pretty_format_batches(batches)?;
            writeln!(out, "{text}").map_err(failed)?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            writeln!(out, "{rows} row{}", if rows == 1 { "" } else { "s" }).map_err(failed)?;
        }
        Format::Csv => {
            let mut w = csv::WriterBuilder::new().with_header(true).build(out);
            if batches.is_empty() {
                // (the header alone)
                w.write(&RecordBatch::new_empty(schema.clone()))?;
            }
            for b in batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = json::LineDelimitedWriter::new(out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        // (written above)
        Format::Parquet => {}
    }
    Ok(())
}
