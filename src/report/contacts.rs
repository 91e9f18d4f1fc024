//! The `contacts` table: each contact with its repeat and event flags,
//! written while the first passes go through the buckets.
//!
//! Input: each bucket's annotated contacts (one batch per partition, sorted
//! by customer, time and contact id). Output: `<out>/contacts.parquet`, in
//! that order, renamed into place only when whole.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef, UInt64Type};
use datafusion::common::config::{ParquetColumnOptions, TableParquetOptions};
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::prelude::{SessionContext, col};

use super::{TableInfo, replace_output};
use crate::error::{Error, Result};

/// Columns of the written `contacts` table, in order (`agent` null throughout
/// when no agent column is mapped: the table has one schema whatever the
/// input).
pub const CONTACTS_COLUMNS: &[&str] = &[
    "contact_id",
    "customer_id",
    "ts",
    "date",
    "channel",
    "reason",
    "agent",
    "prev_channel",
    "prev_gap_s",
    "is_repeat",
    "is_repeat_same_reason",
    "event_id",
    "event_seq",
    "followed_within_window",
];

/// The written columns of the `contacts` table among the annotated
/// contacts' (`schema`), and the schema they are written in (contact ids as
/// text, see [`super::written_schema`]).
pub fn contacts_projection(schema: &SchemaRef) -> Result<(Vec<usize>, SchemaRef)> {
    let idx = CONTACTS_COLUMNS
        .iter()
        .map(|c| schema.index_of(c))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let projected = Arc::new(schema.project(&idx)?);
    Ok((idx, super::written_schema(&projected)))
}

/// One bucket's part of the `contacts` table as written, in batches of
/// `rows` rows: the columns `idx` of its annotated partitions (one batch
/// each, sorted by customer, time and contact id, with `_customer_contacts`),
/// merged into one sequence sorted the same way.
///
/// The partitions hold distinct customers (they are hash partitions of
/// customer_id), each a run of rows, so the merge compares customer ids once
/// per run instead of comparing (customer, time, contact id) row by row:
/// DataFusion's sort-preserving merge would encode every row's keys. The rows of each output batch are then
/// copied with one `interleave` per column.
pub fn merged_contacts(
    parts: &[RecordBatch],
    idx: &[usize],
    rows: usize,
) -> Result<impl Iterator<Item = Result<RecordBatch>> + use<>> {
    let parts: Vec<RecordBatch> = parts.iter().filter(|b| b.num_rows() > 0).cloned().collect();
    // runs of each partition: (start, length)
    let runs = parts
        .iter()
        .map(|b| {
            let lengths = b
                .column_by_name("_customer_contacts")
                .ok_or_else(|| {
                    datafusion::error::DataFusionError::Internal(
                        "the annotated contacts have no _customer_contacts".into(),
                    )
                })?
                .as_primitive::<Int64Type>()
                .values();
            let mut runs = Vec::new();
            let mut i = 0;
            while i < b.num_rows() {
                let len = (lengths[i] as usize).clamp(1, b.num_rows() - i);
                runs.push((i as u32, len as u32));
                i += len;
            }
            Ok(runs)
        })
        .collect::<Result<Vec<_>>>()?;
    let customers: Vec<_> = parts
        .iter()
        .map(|b| {
            b.column_by_name("customer_id")
                .expect("customer_id")
                .as_string::<i32>()
                .clone()
        })
        .collect();
    // the runs of all partitions in customer order: (partition, start, length)
    let mut next = vec![0usize; parts.len()];
    let mut order: Vec<(u32, u32, u32)> = Vec::with_capacity(runs.iter().map(Vec::len).sum());
    loop {
        let mut best: Option<usize> = None;
        for p in 0..parts.len() {
            let Some(&(start, _)) = runs[p].get(next[p]) else {
                continue;
            };
            let id = customers[p].value(start as usize);
            if best.is_none_or(|b| id < customers[b].value(runs[b][next[b]].0 as usize)) {
                best = Some(p);
            }
        }
        let Some(p) = best else { break };
        let (start, len) = runs[p][next[p]];
        order.push((p as u32, start, len));
        next[p] += 1;
    }
    let projected: Vec<RecordBatch> = parts
        .iter()
        .map(|b| b.project(idx))
        .collect::<std::result::Result<_, _>>()?;
    let rows = rows.max(1);
    let mut segment = 0usize;
    let mut offset = 0u32;
    Ok(std::iter::from_fn(move || {
        let mut take: Vec<(usize, usize)> = Vec::with_capacity(rows);
        while take.len() < rows && segment < order.len() {
            let (p, start, len) = order[segment];
            let k = ((len - offset) as usize).min(rows - take.len());
            take.extend((0..k).map(|j| (p as usize, (start + offset) as usize + j)));
            offset += k as u32;
            if offset == len {
                segment += 1;
                offset = 0;
            }
        }
        if take.is_empty() {
            return None;
        }
        let schema = projected[0].schema();
        let columns = (0..schema.fields().len())
            .map(|c| {
                let arrays: Vec<&dyn Array> =
                    projected.iter().map(|b| b.column(c).as_ref()).collect();
                Ok(datafusion::arrow::compute::interleave(&arrays, &take)?)
            })
            .collect::<Result<Vec<_>>>();
        Some(columns.and_then(|c| Ok(RecordBatch::try_new(schema, c)?)))
    }))
}

/// The order of the `contacts` table: customer, time, contact id.
pub fn contacts_order() -> Vec<datafusion::logical_expr::SortExpr> {
    // (the pass's order without the input row, which the table leaves out:
    // a prefix of an order holds wherever the order does)
    crate::timeline::sorted::ORDER_COLUMNS[..3]
        .iter()
        .map(|c| col(*c).sort(true, false))
        .collect()
}

/// What the contacts write did: rows written, and the days (one file each,
/// days since the epoch) in day mode.
type Written = (u64, Vec<i32>);

/// The `contacts` table, written while the run goes through its buckets:
/// DataFusion's Parquet write (zstd level 1, its parallel encoding) over one
/// stream that [`ContactsWriter::write`] feeds a bucket at a time. Buckets
/// are ranges of customer ids taken in order ([`crate::buckets`]), so the
/// stream is the whole table in its order with no merge across buckets.
///
/// The file is written as `<out>/contacts.parquet.partial` and only renamed
/// to `contacts.parquet` by [`ContactsWriter::finish`]; a run that fails
/// removes the partial file (when the writer is dropped). In day mode (a
/// run into an output folder of many runs) the same stream goes instead to
/// one file per contact day the run writes ([`super::contact_days`]).
pub struct ContactsWriter {
    /// The written schema.
    schema: SchemaRef,
    tx: Option<tokio::sync::mpsc::Sender<RecordBatch>>,
    /// The write.
    task: Option<tokio::task::JoinHandle<Result<Written>>>,
    /// In day mode ([`super::contact_days`]), the folder of the day files.
    days_dir: Option<std::path::PathBuf>,
    /// The merge feeding the last bucket's part into the stream.
    feeding: Option<tokio::task::JoinHandle<Result<bool>>>,
    partial: std::path::PathBuf,
    out: std::path::PathBuf,
    started: std::time::Instant,
}

/// Columns of the contacts table with about as many distinct values as
/// rows in a row group: written without a dictionary. The Parquet writer
/// would hash every value into one until the dictionary page is full (1 MB,
/// ~130,000 values), then write the rest plain anyway.
const CONTACTS_PLAIN_COLUMNS: &[&str] =
    &["contact_id", "customer_id", "ts", "prev_gap_s", "event_id"];

/// The encoding of a column of [`CONTACTS_PLAIN_COLUMNS`] of type `t`,
/// where another than plain is better: times and integer ids ascend within
/// a customer's rows (ids as most systems assign them), so their
/// differences take fewer bytes (`delta_binary_packed`, which DuckDB,
/// pyarrow and Spark 3.3+ read). An event's rows share its `event_id`,
/// which zstd finds in the plain values but not in their differences: it
/// stays plain, as do texts and the gaps (floats, for which no encoding
/// read as widely saves enough).
fn contacts_encoding(name: &str, t: &DataType) -> Option<&'static str> {
    match t {
        DataType::Int64 | DataType::Timestamp(..) if name != "event_id" => {
            Some("delta_binary_packed")
        }
        _ => None,
    }
}

/// Columns of the contacts table with a few distinct values, found in
/// every row group: written without min/max statistics, which could not
/// skip a row group and cost a comparison of texts per value and column.
const CONTACTS_NO_STATISTICS_COLUMNS: &[&str] = &["channel", "reason", "agent", "prev_channel"];

/// The session's Parquet options (zstd level 1, see
/// [`REPORT_ZSTD_LEVEL`]) for a contacts table of
/// `schema`, with no dictionary (and the encoding [`contacts_encoding`]
/// picks) for [`CONTACTS_PLAIN_COLUMNS`] and no statistics for
/// [`CONTACTS_NO_STATISTICS_COLUMNS`].
fn contacts_parquet_options(ctx: &SessionContext, schema: &SchemaRef) -> TableParquetOptions {
    let mut options = ctx.state().default_table_options().parquet.clone();
    options.key_value_metadata.insert(
        super::SCHEMA_VERSION_KEY.to_string(),
        Some(super::SCHEMA_VERSION.to_string()),
    );
    for c in CONTACTS_PLAIN_COLUMNS {
        let encoding = schema
            .field_with_name(c)
            .ok()
            .and_then(|f| contacts_encoding(c, f.data_type()))
            .map(str::to_string);
        options.column_specific_options.insert(
            c.to_string(),
            ParquetColumnOptions {
                dictionary_enabled: Some(false),
                encoding,
                ..Default::default()
            },
        );
    }
    for c in CONTACTS_NO_STATISTICS_COLUMNS {
        options.column_specific_options.insert(
            c.to_string(),
            ParquetColumnOptions {
                statistics_enabled: Some("none".into()),
                ..Default::default()
            },
        );
    }
    options
}

/// Batches the contacts stream holds before the bucket loop waits for the
/// writer.
const CONTACTS_CHANNEL_BATCHES: usize = 8;

/// Rows per batch of the contacts stream.
const CONTACTS_BATCH_ROWS: usize = 8_192;

impl ContactsWriter {
    /// Starts the write of a `schema` table (the columns
    /// [`contacts_projection`] selects) into `out`, which must exist: one
    /// file, or with `days` one file per contact day it writes
    /// (`out/contacts/date=YYYY-MM-DD/part-0.parquet`).
    pub fn start(
        ctx: &SessionContext,
        schema: SchemaRef,
        out: &Path,
        days: Option<super::contact_days::ContactDays>,
    ) -> Result<ContactsWriter> {
        use datafusion::catalog::streaming::StreamingTable;
        let partial = out.join("contacts.parquet.partial");
        let schema_kept = schema.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(CONTACTS_CHANNEL_BATCHES);
        if let Some(days) = days {
            let mut options = contacts_parquet_options(ctx, &schema);
            // (the Arrow writer adds the Arrow schema to the file itself)
            options.global.skip_arrow_metadata = true;
            let props =
                datafusion::parquet::file::properties::WriterPropertiesBuilder::try_from(&options)?
                    .build();
            let dir = out.join(super::contact_days::CONTACTS_DIR);
            let task_dir = dir.clone();
            let writers = ctx.state().config().target_partitions();
            let task = tokio::task::spawn_blocking(move || {
                super::contact_days::write_days(rx, schema, props, &task_dir, &days, writers)
            });
            return Ok(ContactsWriter {
                schema: schema_kept,
                tx: Some(tx),
                task: Some(task),
                days_dir: Some(dir),
                feeding: None,
                partial,
                out: out.to_path_buf(),
                started: std::time::Instant::now(),
            });
        }
        let stream = Arc::new(ChannelPartition {
            schema: schema.clone(),
            rx: std::sync::Mutex::new(Some(rx)),
        });
        let options = contacts_parquet_options(ctx, &schema);
        let table =
            // (declared by customer and time only: the ids, written as text,
            // are in the order of the input's ids, not of their text)
            StreamingTable::try_new(schema, vec![stream])?
                .with_sort_order(contacts_order()[..2].to_vec());
        let df = ctx.read_table(Arc::new(table))?;
        let path = partial.to_string_lossy().to_string();
        let failed_path = partial.clone();
        let task = tokio::spawn(async move {
            // a failed write (a full disk) names the file
            let res = df
                .write_parquet(
                    &path,
                    DataFrameWriteOptions::new().with_single_file_output(true),
                    Some(options),
                )
                .await
                .map_err(|e| Error::io(&failed_path, std::io::Error::other(e.to_string())))?;
            let rows = res
                .first()
                .filter(|b| b.num_rows() > 0)
                .map(|b| b.column(0).as_primitive::<UInt64Type>().value(0))
                .unwrap_or(0);
            Ok((rows, Vec::new()))
        });
        Ok(ContactsWriter {
            schema: schema_kept,
            tx: Some(tx),
            task: Some(task),
            days_dir: None,
            feeding: None,
            partial,
            out: out.to_path_buf(),
            started: std::time::Instant::now(),
        })
    }

    /// Writes the next bucket's part: its annotated partitions `parts` (one
    /// batch each, sorted; see [`merged_contacts`]), columns `idx`.
    ///
    /// The merge runs as a task of its own (outside the memory pool: it
    /// holds a batch at a time of rows the run already holds and counts), so
    /// the run goes on with the bucket's other passes while the part is
    /// written; the next call (or [`ContactsWriter::finish`]) waits for it
    /// first.
    pub async fn write(&mut self, parts: Vec<RecordBatch>, idx: Vec<usize>) -> Result<()> {
        self.wait_fed().await?;
        let tx = self.tx.clone().expect("not finished");
        let schema = self.schema.clone();
        self.feeding = Some(tokio::task::spawn_blocking(move || {
            for batch in merged_contacts(&parts, &idx, CONTACTS_BATCH_ROWS)? {
                let batch = super::written_batch(&batch?, &schema)?;
                if tx.blocking_send(batch).is_err() {
                    // the write ended early: wait_fed reports its error
                    return Ok(false);
                }
            }
            Ok(true)
        }));
        Ok(())
    }

    /// Waits until the last part given to [`ContactsWriter::write`] is in
    /// the stream.
    async fn wait_fed(&mut self) -> Result<()> {
        let Some(feeding) = self.feeding.take() else {
            return Ok(());
        };
        if joined(feeding.await)? {
            return Ok(());
        }
        // the write ended before its input: its error is the one to report
        self.tx = None;
        joined(self.task.take().expect("not finished").await)?;
        Err(datafusion::error::DataFusionError::Internal(
            "the contacts write ended before its input".into(),
        )
        .into())
    }

    /// Ends the stream, waits for the write, and puts the file in place of
    /// an earlier run's `contacts.parquet`; records it in `tables`. Returns
    /// the days written in day mode (else none).
    pub async fn finish(
        mut self,
        tables: &mut BTreeMap<String, TableInfo>,
    ) -> Result<Vec<chrono::NaiveDate>> {
        self.wait_fed().await?;
        self.tx = None;
        let (rows, days) = joined(self.task.take().expect("not finished").await)?;
        let file = if self.days_dir.take().is_some() {
            // (moved there when the run is published, see crate::runs)
            format!("../{}/", super::contact_days::CONTACTS_DIR)
        } else {
            let (file, path) = replace_output(&self.out, "contacts")?;
            std::fs::rename(&self.partial, &path).map_err(|e| Error::io(&path, e))?;
            file
        };
        tables.insert(
            "contacts".to_string(),
            TableInfo {
                path: file,
                rows,
                seconds: self.started.elapsed().as_secs_f64(),
            },
        );
        Ok(days.into_iter().map(crate::time::from_epoch_day).collect())
    }
}

impl Drop for ContactsWriter {
    fn drop(&mut self) {
        if let Some(feeding) = self.feeding.take() {
            feeding.abort();
        }
        if let Some(task) = self.task.take() {
            // the run failed before finish: no partial file is left behind
            task.abort();
            let _ = std::fs::remove_file(&self.partial);
            if let Some(dir) = &self.days_dir {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// What a task of the contacts writer returned, or why it did not end.
fn joined<T>(r: std::result::Result<Result<T>, tokio::task::JoinError>) -> Result<T> {
    r.map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?
}

/// The stream the contacts write reads: batches sent by the bucket loop.
#[derive(Debug)]
struct ChannelPartition {
    schema: SchemaRef,
    rx: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<RecordBatch>>>,
}

impl datafusion::physical_plan::streaming::PartitionStream for ChannelPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(
        &self,
        _ctx: Arc<datafusion::execution::TaskContext>,
    ) -> datafusion::physical_plan::SendableRecordBatchStream {
        let rx = self.rx.lock().ok().and_then(|mut rx| rx.take());
        let stream = futures::stream::unfold(rx, |rx| async move {
            let mut rx = rx?;
            let batch = rx.recv().await?;
            Some((Ok(batch), Some(rx)))
        });
        Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                self.schema.clone(),
                stream,
            ),
        )
    }
}
