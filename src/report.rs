//! Stage 4 — reports: Parquet tables under `--out`, `manifest.json`, and the
//! rows the terminal summary shows.
//!
//! Input: DataFrames of the `contacts`, `repeat_summary` and `clusters`
//! tables. Output: `<out>/<table>.parquet` (one file each, readable as is by
//! DuckDB, pandas and Spark) and `<out>/manifest.json`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef, UInt64Type};
use datafusion::common::config::{ParquetColumnOptions, TableParquetOptions};
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::prelude::{SessionContext, col};
use serde::Serialize;

use crate::config::PipelineConfig;
use crate::error::{Error, Result};
use crate::ingest::{Excluded, IngestStats, InputFile};

/// Columns of the written `contacts` table, in order (`agent` only when mapped).
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
/// contacts' (`schema`), and the schema they make.
pub fn contacts_projection(
    schema: &SchemaRef,
    with_agent: bool,
) -> Result<(Vec<usize>, SchemaRef)> {
    let idx = CONTACTS_COLUMNS
        .iter()
        .filter(|c| with_agent || **c != "agent")
        .map(|c| schema.index_of(c))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let projected = Arc::new(schema.project(&idx)?);
    Ok((idx, projected))
}

/// One bucket's part of the `contacts` table as written, in batches of
/// `rows` rows: the columns `idx` of its annotated partitions (one batch
/// each, sorted by customer, time and contact id, with `_customer_contacts`),
/// merged into one sequence sorted the same way.
///
/// The partitions hold distinct customers (they are hash partitions of
/// customer_id), each a run of rows, so the merge compares customer ids once
/// per run instead of comparing (customer, time, contact id) row by row:
/// DataFusion's sort-preserving merge, used before, encoded every row's keys
/// and took 5% of a 10M run's cycles. The rows of each output batch are then
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
    ["customer_id", "ts", "contact_id"]
        .iter()
        .map(|c| col(*c).sort(true, false))
        .collect()
}

/// The `contacts` table, written while the run goes through its buckets:
/// DataFusion's Parquet write (zstd level 1, its parallel encoding) over one
/// stream that [`ContactsWriter::write`] feeds a bucket at a time. Buckets
/// are ranges of customer ids taken in order ([`crate::buckets`]), so the
/// stream is the whole table in its order with no merge across buckets.
///
/// The file is written as `<out>/contacts.parquet.partial` and only renamed
/// to `contacts.parquet` by [`ContactsWriter::finish`]; a run that fails
/// removes the partial file (when the writer is dropped).
pub struct ContactsWriter {
    tx: Option<tokio::sync::mpsc::Sender<RecordBatch>>,
    task: Option<tokio::task::JoinHandle<Result<u64>>>,
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
/// pyarrow and Spark 3.3+ read; at 10M, times 63 → 53 MB and contact ids 34
/// → 30 MB, the file 205 → 190 MB). An event's rows share its `event_id`,
/// which zstd finds in the plain values but not in their differences (23 →
/// 27 MB): it stays plain, as do texts and the gaps (floats: splitting
/// their bytes by position saved 1 of 49 MB, not worth a less widely read
/// encoding).
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
/// skip a row group and cost a comparison of texts per value and column
/// (the Parquet writer's comparisons were 1.7% of a 100M run's cycles).
const CONTACTS_NO_STATISTICS_COLUMNS: &[&str] = &["channel", "reason", "agent", "prev_channel"];

/// The session's Parquet options (zstd level 1, see
/// [`crate::session::REPORT_COMPRESSION`]) for a contacts table of
/// `schema`, with no dictionary (and the encoding [`contacts_encoding`]
/// picks) for [`CONTACTS_PLAIN_COLUMNS`] and no statistics for
/// [`CONTACTS_NO_STATISTICS_COLUMNS`].
fn contacts_parquet_options(ctx: &SessionContext, schema: &SchemaRef) -> TableParquetOptions {
    let mut options = ctx.state().default_table_options().parquet.clone();
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
    /// [`contacts_projection`] selects) into `out`, which must exist.
    pub fn start(ctx: &SessionContext, schema: SchemaRef, out: &Path) -> Result<ContactsWriter> {
        use datafusion::catalog::streaming::StreamingTable;
        let partial = out.join("contacts.parquet.partial");
        let (tx, rx) = tokio::sync::mpsc::channel(CONTACTS_CHANNEL_BATCHES);
        let stream = Arc::new(ChannelPartition {
            schema: schema.clone(),
            rx: std::sync::Mutex::new(Some(rx)),
        });
        let options = contacts_parquet_options(ctx, &schema);
        let table =
            StreamingTable::try_new(schema, vec![stream])?.with_sort_order(contacts_order());
        let df = ctx.read_table(Arc::new(table))?;
        let path = partial.to_string_lossy().to_string();
        let task = tokio::spawn(async move {
            let res = df
                .write_parquet(
                    &path,
                    DataFrameWriteOptions::new().with_single_file_output(true),
                    Some(options),
                )
                .await?;
            Ok(res
                .first()
                .filter(|b| b.num_rows() > 0)
                .map(|b| b.column(0).as_primitive::<UInt64Type>().value(0))
                .unwrap_or(0))
        });
        Ok(ContactsWriter {
            tx: Some(tx),
            task: Some(task),
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
        self.feeding = Some(tokio::task::spawn_blocking(move || {
            for batch in merged_contacts(&parts, &idx, CONTACTS_BATCH_ROWS)? {
                if tx.blocking_send(batch?).is_err() {
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
    /// an earlier run's `contacts.parquet`; records it in `tables`.
    pub async fn finish(mut self, tables: &mut BTreeMap<String, TableInfo>) -> Result<()> {
        self.wait_fed().await?;
        self.tx = None;
        let rows = joined(self.task.take().expect("not finished").await)?;
        let (file, path) = replace_output(&self.out, "contacts")?;
        std::fs::rename(&self.partial, &path).map_err(|e| Error::io(&path, e))?;
        tables.insert(
            "contacts".to_string(),
            TableInfo {
                path: file,
                rows,
                seconds: self.started.elapsed().as_secs_f64(),
            },
        );
        Ok(())
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

/// A written table: file name under `--out` and rows.
#[derive(Debug, Clone, Serialize)]
pub struct TableInfo {
    /// File name relative to the output folder.
    pub path: String,
    /// Rows written.
    pub rows: u64,
    /// Seconds spent computing and writing it.
    pub seconds: f64,
}

/// `<name>.parquet` and its path under `out`, with an earlier run's file (or
/// folder) of that name removed.
fn replace_output(out: &Path, name: &str) -> Result<(String, std::path::PathBuf)> {
    let file = format!("{name}.parquet");
    let path = out.join(&file);
    if path.is_dir() {
        std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
    } else if path.exists() {
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
    }
    Ok((file, path))
}

/// Writes batches already in memory, in their order, as
/// `<out>/<name>.parquet` (zstd level 1, as DataFusion's writer is set up
/// in [`crate::session::session`]), replacing an earlier
/// run's file, and records it in `tables`.
pub fn write_batches(
    schema: SchemaRef,
    batches: &[RecordBatch],
    out: &Path,
    name: &str,
    tables: &mut BTreeMap<String, TableInfo>,
) -> Result<()> {
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::basic::{Compression, ZstdLevel};
    use datafusion::parquet::file::properties::WriterProperties;
    let started = std::time::Instant::now();
    let (file, path) = replace_output(out, name)?;
    let f = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .build();
    let mut w = ArrowWriter::try_new(f, schema, Some(props))?;
    for b in batches {
        w.write(b)?;
    }
    w.close()?;
    tables.insert(
        name.to_string(),
        TableInfo {
            path: file,
            rows: batches.iter().map(|b| b.num_rows() as u64).sum(),
            seconds: started.elapsed().as_secs_f64(),
        },
    );
    Ok(())
}

/// The headline figures: the repeat_summary row of dimension 'all'.
#[derive(Debug, Clone, Copy)]
pub struct Overall {
    /// Contacts analysed.
    pub contacts: u64,
    /// repeats / contacts.
    pub repeat_rate: Option<f64>,
    /// contacts / events.
    pub contacts_per_event: Option<f64>,
    /// Share of closed-window contacts not followed.
    pub fcr_rate: Option<f64>,
}

/// Finds the 'all' row of repeat_summary.
pub fn summary_all_row(batches: &[RecordBatch]) -> Option<Overall> {
    for b in batches {
        let dim = utf8(b.column_by_name("dimension")?);
        for i in 0..b.num_rows() {
            if dim.value(i) == "all" {
                let f = |name: &str| {
                    let a = b.column_by_name(name)?.as_primitive::<Float64Type>();
                    a.is_valid(i).then(|| a.value(i))
                };
                let contacts = b
                    .column_by_name("contacts")?
                    .as_primitive::<Int64Type>()
                    .value(i);
                return Some(Overall {
                    contacts: contacts as u64,
                    repeat_rate: f("repeat_rate"),
                    contacts_per_event: f("contacts_per_event"),
                    fcr_rate: f("fcr_rate"),
                });
            }
        }
    }
    None
}

/// One row of the clusters table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClusterRow {
    /// Rank, 1 = best.
    pub rank: u64,
    /// Reason A.
    pub antecedent: String,
    /// Reason B.
    pub consequent: String,
    /// Window, seconds.
    pub window_s: i64,
    /// Contacts with reason A.
    pub n_antecedent: i64,
    /// A-contacts followed by a B-contact within the window.
    pub n_support: i64,
    /// n_support / n_antecedent.
    pub confidence: f64,
    /// The chance a counted A-trigger is followed by a B-contact within the
    /// window if B's timing were unrelated to A (expected / counted triggers).
    pub baseline: f64,
    /// Counted follow-ups over what chance gives (n_counted / expected).
    pub lift: f64,
    /// Median lag A → first B, seconds.
    pub median_lag_s: f64,
    /// 90th percentile lag, seconds.
    pub p90_lag_s: f64,
    /// Distinct customers behind n_support.
    pub customers: i64,
    /// Follow-ups of the counted triggers (each customer's first few
    /// A-contacts).
    pub n_counted: i64,
    /// What chance alone gives of n_counted.
    pub expected: f64,
    /// Follow-ups beyond chance: n_counted − expected.
    pub score: f64,
    /// max(score, 0) × effectiveness.
    pub avoidable_contacts: f64,
    /// Avoidable contacts weighted by the mean cost of B's follow-up channels.
    pub value: f64,
    /// p-value of H0 "lift at most --min-lift" (src/significance.rs).
    pub p_value: f64,
    /// Benjamini–Hochberg q-value.
    pub q_value: f64,
}

/// Reads cluster rows from query output batches.
pub fn cluster_rows(batches: &[RecordBatch]) -> Vec<ClusterRow> {
    let mut rows = Vec::new();
    for b in batches {
        let s = |n: &str| utf8(b.column_by_name(n).expect("clusters column"));
        let i64c = |n: &str| {
            b.column_by_name(n)
                .expect("clusters column")
                .as_primitive::<Int64Type>()
                .clone()
        };
        let f64c = |n: &str| {
            b.column_by_name(n)
                .expect("clusters column")
                .as_primitive::<Float64Type>()
                .clone()
        };
        let rank = i64c("rank");
        let (a, c) = (s("antecedent"), s("consequent"));
        let (w, na, ns, cu) = (
            i64c("window_s"),
            i64c("n_antecedent"),
            i64c("n_support"),
            i64c("customers"),
        );
        let (conf, base, lift, med, p90, score) = (
            f64c("confidence"),
            f64c("baseline"),
            f64c("lift"),
            f64c("median_lag_s"),
            f64c("p90_lag_s"),
            f64c("score"),
        );
        let (counted, expected) = (i64c("n_counted"), f64c("expected"));
        let (avoid, value, pv, qv) = (
            f64c("avoidable_contacts"),
            f64c("value"),
            f64c("p_value"),
            f64c("q_value"),
        );
        for i in 0..b.num_rows() {
            rows.push(ClusterRow {
                rank: rank.value(i) as u64,
                antecedent: a.value(i).to_string(),
                consequent: c.value(i).to_string(),
                window_s: w.value(i),
                n_antecedent: na.value(i),
                n_support: ns.value(i),
                confidence: conf.value(i),
                baseline: base.value(i),
                lift: lift.value(i),
                median_lag_s: med.value(i),
                p90_lag_s: p90.value(i),
                customers: cu.value(i),
                n_counted: counted.value(i),
                expected: expected.value(i),
                score: score.value(i),
                avoidable_contacts: avoid.value(i),
                value: value.value(i),
                p_value: pv.value(i),
                q_value: qv.value(i),
            });
        }
    }
    rows.sort_by_key(|r| r.rank);
    rows
}

/// Row accounting of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RowCounts {
    /// Rows read from all inputs.
    pub read: u64,
    /// Rows analysed.
    pub used: u64,
    /// Rows left out, by reason (every reason listed, zero included).
    pub excluded: BTreeMap<String, Excluded>,
}

/// The run's `manifest.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// recur's version.
    pub recur_version: String,
    /// When the run started (UTC, RFC 3339).
    pub started_at: String,
    /// The validated parameters.
    pub parameters: PipelineConfig,
    /// The input files.
    pub inputs: Vec<InputFile>,
    /// Rows read, used and excluded.
    pub rows: RowCounts,
    /// How the input was interpreted.
    pub notes: Vec<String>,
    /// First and last timestamp analysed (UTC, RFC 3339).
    pub data_range: Option<(String, String)>,
    /// Tables written, with rows.
    pub tables: BTreeMap<String, TableInfo>,
    /// Wall-clock seconds per stage.
    pub stage_seconds: BTreeMap<String, f64>,
    /// What the caps left out: customers (and their contacts) with more than
    /// `MAX_SEQUENCE_CONTACTS_PER_CUSTOMER` contacts are not mined for
    /// sequences, and those with more than `MAX_PAIR_CONTACTS_PER_CUSTOMER`
    /// are in no A → B count and no outreach (they still count in contacts and
    /// repeat_summary).
    pub caps: BTreeMap<String, u64>,
    /// Memory: the limit, what recur held in its in-memory tables at most, and
    /// what the sort spilled to disk.
    pub memory: MemoryUse,
    /// The frequent contacters: the rule's threshold, how many, their
    /// contacts, and the ids taken for placeholders (`crate::contacters`).
    pub frequent_contacters: crate::contacters::ContactersSummary,
    /// With `--null-check N`: the clusters and sequences each of N logs with
    /// their reasons permuted yielded (`crate::nullcheck`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub null_check: Option<crate::nullcheck::NullCheckSummary>,
}

/// Memory figures of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemoryUse {
    /// `--memory-limit` in bytes, if set.
    pub limit_bytes: Option<u64>,
    /// The largest total of the tables recur held in memory at once (the
    /// contacts as read, sorted, and annotated), bytes.
    pub held_bytes_peak: u64,
    /// Times the sort spilled to disk (only under a memory limit).
    pub sort_spill_count: u64,
    /// Bytes the sort spilled.
    pub sort_spilled_bytes: u64,
    /// Buckets the contacts were split into by customer (1: all in memory).
    pub buckets: usize,
    /// The most contacts a bucket was to hold (`--bucket-contacts`, or what
    /// `--memory-limit` leaves room for).
    pub bucket_contacts: u64,
    /// Bytes written to bucket files (the annotated contacts of every bucket;
    /// the contacts as read are written too but not counted here).
    pub bucket_spilled_bytes: u64,
}

impl Manifest {
    /// Assembles the manifest.
    pub fn new(
        cfg: &PipelineConfig,
        stats: &IngestStats,
        tables: BTreeMap<String, TableInfo>,
        stage_seconds: BTreeMap<String, f64>,
        started: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        let fmt = |us: i64| {
            chrono::DateTime::from_timestamp_micros(us)
                .map(|d| d.to_rfc3339())
                .unwrap_or_default()
        };
        Manifest {
            recur_version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: started.to_rfc3339(),
            parameters: cfg.clone(),
            inputs: stats.inputs.clone(),
            rows: RowCounts {
                read: stats.rows_read,
                used: stats.rows_used,
                excluded: stats.excluded.clone(),
            },
            notes: stats.notes.clone(),
            data_range: stats
                .min_ts_us
                .zip(stats.max_ts_us)
                .map(|(a, b)| (fmt(a), fmt(b))),
            tables,
            stage_seconds,
            caps: BTreeMap::new(),
            memory: MemoryUse::default(),
            frequent_contacters: Default::default(),
            null_check: None,
        }
    }

    /// Writes the manifest as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }
}

/// Writes `value` as pretty JSON with a final newline.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        source: e,
    })?;
    std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
}

/// Sorted member lags per cluster id, from cluster_members batches.
pub fn member_lags(batches: &[RecordBatch]) -> std::collections::HashMap<String, Vec<f64>> {
    let mut out: std::collections::HashMap<String, Vec<f64>> = Default::default();
    for b in batches {
        let id = utf8(b.column_by_name("cluster_id").expect("cluster_id"));
        let lag = b
            .column_by_name("lag_s")
            .expect("lag_s")
            .as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            // (one String per cluster, not per member)
            let v = match out.get_mut(id.value(i)) {
                Some(v) => v,
                None => out.entry(id.value(i).to_string()).or_default(),
            };
            v.push(lag.value(i));
        }
    }
    for v in out.values_mut() {
        v.sort_by(f64::total_cmp);
    }
    out
}

/// A string column of any string type (Utf8, Utf8View, LargeUtf8,
/// dictionary) as a plain `StringArray`.
pub fn utf8(array: &datafusion::arrow::array::ArrayRef) -> datafusion::arrow::array::StringArray {
    datafusion::arrow::compute::cast(array, &DataType::Utf8)
        .expect("string column casts to Utf8")
        .as_string::<i32>()
        .clone()
}

/// One row of the sequences table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SequenceRow {
    /// Rank, 1 = best.
    pub rank: u64,
    /// The items in order.
    pub pattern: Vec<String>,
    /// Start contacts from which the whole pattern occurs.
    pub n_support: i64,
    /// Distinct customers behind n_support.
    pub customers: i64,
    /// The last step given the prefix.
    pub confidence: f64,
    /// Counted completions over what chance gives (n_counted / expected).
    pub lift: f64,
    /// Median lag of each step, seconds.
    pub median_lag_s: Vec<f64>,
    /// Avoidable contacts weighted by channel cost.
    pub value: f64,
    /// Benjamini–Hochberg q-value.
    pub q_value: f64,
}

/// Reads sequence rows from query output batches.
pub fn sequence_rows(batches: &[RecordBatch]) -> Vec<SequenceRow> {
    let mut rows = Vec::new();
    for b in batches {
        let get = |n: &str| b.column_by_name(n).expect("sequences column").clone();
        let (rank, ns, cu) = (get("rank"), get("n_support"), get("customers"));
        let (rank, ns, cu) = (
            rank.as_primitive::<Int64Type>(),
            ns.as_primitive::<Int64Type>(),
            cu.as_primitive::<Int64Type>(),
        );
        let f = |n: &str| get(n).as_primitive::<Float64Type>().clone();
        let (conf, lift, value, q) = (f("confidence"), f("lift"), f("value"), f("q_value"));
        let pattern = get("pattern");
        let pattern = pattern.as_list::<i32>();
        let lags = get("median_lag_s");
        let lags = lags.as_list::<i32>();
        for i in 0..b.num_rows() {
            let items = utf8(&pattern.value(i));
            let l = lags.value(i);
            let l = l.as_primitive::<Float64Type>();
            rows.push(SequenceRow {
                rank: rank.value(i) as u64,
                pattern: (0..items.len())
                    .map(|k| items.value(k).to_string())
                    .collect(),
                n_support: ns.value(i),
                customers: cu.value(i),
                confidence: conf.value(i),
                lift: lift.value(i),
                median_lag_s: (0..l.len()).map(|k| l.value(k)).collect(),
                value: value.value(i),
                q_value: q.value(i),
            });
        }
    }
    rows.sort_by_key(|r| r.rank);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn annotated_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, false),
            Field::new("ts", DataType::Int64, false),
            Field::new("contact_id", DataType::Int64, false),
            Field::new("_customer_contacts", DataType::Int64, false),
        ]))
    }

    /// A sorted partition of (customer, ts, contact id) rows.
    fn partition(rows: &[(String, i64, i64)]) -> RecordBatch {
        let mut rows = rows.to_vec();
        rows.sort();
        let count = |c: &str| rows.iter().filter(|r| r.0 == c).count() as i64;
        RecordBatch::try_new(
            annotated_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|r| count(&r.0)),
                )),
            ],
        )
        .unwrap()
    }

    fn rows_of(batches: &[RecordBatch]) -> Vec<(String, i64, i64)> {
        batches
            .iter()
            .flat_map(|b| {
                let c = b.column(0).as_string::<i32>();
                let t = b.column(1).as_primitive::<Int64Type>();
                let id = b.column(2).as_primitive::<Int64Type>();
                (0..b.num_rows())
                    .map(|i| (c.value(i).to_string(), t.value(i), id.value(i)))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Partitions of distinct customers merge into all rows in (customer,
    /// time, contact id) order, in batches of at most the given rows; empty
    /// partitions and one-row customers included.
    #[test]
    fn merged_contacts_are_the_partitions_in_order() {
        let mut rng = StdRng::seed_from_u64(5);
        for trial in 0..30 {
            let parts_n = 1 + trial % 4;
            let mut parts: Vec<Vec<(String, i64, i64)>> = vec![Vec::new(); parts_n];
            for c in 0..rng.random_range(0..40) {
                // ids of several lengths, so text order is not number order
                let id = format!("c{}", rng.random_range(0..1_000) * (c % 3 + 1));
                if parts.iter().flatten().any(|r| r.0 == id) {
                    continue;
                }
                let p = rng.random_range(0..parts_n);
                for _ in 0..rng.random_range(1..6) {
                    let row = (
                        id.clone(),
                        rng.random_range(0..5),
                        rng.random_range(0..1_000),
                    );
                    parts[p].push(row);
                }
            }
            let batches: Vec<RecordBatch> = parts.iter().map(|p| partition(p)).collect();
            let rows = 1 + trial % 7;
            let merged: Vec<RecordBatch> = merged_contacts(&batches, &[0, 1, 2], rows)
                .unwrap()
                .collect::<Result<_>>()
                .unwrap();
            assert!(
                merged
                    .iter()
                    .all(|b| b.num_rows() <= rows && b.num_columns() == 3)
            );
            let mut want: Vec<(String, i64, i64)> = parts.into_iter().flatten().collect();
            want.sort();
            assert_eq!(rows_of(&merged), want, "trial {trial}");
        }
    }

    /// Parts written in turn make one file, in their order, put in place only
    /// by finish, with the encodings `contacts_encoding` picks; a writer
    /// dropped before finish (a failed run) leaves no file behind, partial
    /// or whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn contacts_writer_writes_parts_in_order_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = SessionContext::new();
        let part = |ids: Vec<i64>| {
            let rows: Vec<(String, i64, i64)> =
                ids.iter().map(|i| (format!("c{i}"), *i, *i)).collect();
            vec![partition(&rows)]
        };
        let idx = vec![0, 1, 2];
        let schema = Arc::new(annotated_schema().project(&idx).unwrap());
        let mut w = ContactsWriter::start(&ctx, schema.clone(), dir.path()).unwrap();
        for ids in [vec![1, 2], vec![3], vec![4, 5, 6]] {
            w.write(part(ids), idx.clone()).await.unwrap();
        }
        assert!(!dir.path().join("contacts.parquet").exists());
        let mut tables = BTreeMap::new();
        w.finish(&mut tables).await.unwrap();
        assert_eq!(tables["contacts"].rows, 6);
        assert!(!dir.path().join("contacts.parquet.partial").exists());
        let file = std::fs::File::open(dir.path().join("contacts.parquet")).unwrap();
        let read: Vec<i64> =
            datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1024)
                .unwrap()
                .flat_map(|b| {
                    b.unwrap()
                        .column(2)
                        .as_primitive::<Int64Type>()
                        .values()
                        .to_vec()
                })
                .collect();
        assert_eq!(read, vec![1, 2, 3, 4, 5, 6]);
        // times and integer ids as differences, texts plain
        use datafusion::parquet::basic::Encoding;
        use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
        let file = std::fs::File::open(dir.path().join("contacts.parquet")).unwrap();
        let reader = SerializedFileReader::new(file).unwrap();
        let chunks = reader.metadata().row_group(0).columns().to_vec();
        let delta = |c: usize| {
            chunks[c]
                .encodings()
                .any(|e| e == Encoding::DELTA_BINARY_PACKED)
        };
        assert_eq!((delta(0), delta(1), delta(2)), (false, true, true));

        let failed = tempfile::tempdir().unwrap();
        let mut w = ContactsWriter::start(&ctx, schema.clone(), failed.path()).unwrap();
        w.write(part(vec![7]), idx.clone()).await.unwrap();
        drop(w);
        let left: Vec<_> = std::fs::read_dir(failed.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
