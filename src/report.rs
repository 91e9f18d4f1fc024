//! The report files (for stage 5, [`crate::stages::reports`]): Parquet tables
//! under `--out`, `manifest.json`, and the rows the terminal summary shows.
//!
//! Input: DataFrames of the `contacts`, `repeat_summary` and `clusters`
//! tables. Output: `<out>/<table>.parquet` (one file each, readable as is by
//! DuckDB, pandas and Spark) and `<out>/manifest.json`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use serde::Serialize;

use crate::config::PipelineConfig;
use crate::error::{Error, Result};
use crate::ingest::{Excluded, IngestStats, InputFile};

/// The zstd level of every report file: 1, not DataFusion's default 3, for
/// speed (compressing is a visible share of a run at level 3) at a few
/// percent more bytes.
pub const REPORT_ZSTD_LEVEL: i32 = 1;

pub mod contact_days;
mod contacts;
pub use contacts::{
    CONTACTS_COLUMNS, ContactsWriter, contacts_order, contacts_projection, merged_contacts,
};

/// A written table: file name under `--out` and rows.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
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

/// The version of the output tables' schemas (their columns, types and
/// meanings): in the manifest and in every table's Parquet metadata under
/// [`SCHEMA_VERSION_KEY`]. A change of any column bumps it
/// (tests/golden/schema.txt holds the schemas of this version).
pub const SCHEMA_VERSION: u32 = 5;

/// The Parquet key-value metadata key of [`SCHEMA_VERSION`].
pub const SCHEMA_VERSION_KEY: &str = "recur.schema_version";

/// Whether a column holds contact ids: `contact_id`, `trigger_contact_id`,
/// …, and `event_id` (the id of the event's first contact).
fn is_contact_id(name: &str) -> bool {
    name == "contact_id" || name == "event_id" || name.ends_with("_contact_id")
}

/// `schema` as written: string-view columns as Utf8, contact ids as text
/// whatever the input's type (as customer ids are), and lags (a column
/// whose name ends in `lag_s`, or a list of them) in whole seconds, Int64.
pub(crate) fn written_schema(schema: &SchemaRef) -> SchemaRef {
    use datafusion::arrow::datatypes::Field;
    Arc::new(datafusion::arrow::datatypes::Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Utf8View => f.as_ref().clone().with_data_type(DataType::Utf8),
                t if t.is_integer() && is_contact_id(f.name()) => {
                    f.as_ref().clone().with_data_type(DataType::Utf8)
                }
                DataType::Float64 if f.name().ends_with("lag_s") => {
                    f.as_ref().clone().with_data_type(DataType::Int64)
                }
                DataType::List(item)
                    if f.name().ends_with("lag_s") && item.data_type() == &DataType::Float64 =>
                {
                    f.as_ref().clone().with_data_type(DataType::List(Arc::new(
                        Field::new_list_field(DataType::Int64, item.is_nullable()),
                    )))
                }
                _ => f.as_ref().clone(),
            })
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}

/// A column in its written type (see [`written_schema`]): lags rounded to
/// whole seconds, anything else cast.
pub(crate) fn written_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| written_column(c, f.data_type()))
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// A column in its written type (see [`written_schema`]).
fn written_column(
    column: &datafusion::arrow::array::ArrayRef,
    to: &DataType,
) -> Result<datafusion::arrow::array::ArrayRef> {
    use datafusion::arrow::array::{Float64Array, ListArray};
    let seconds = |a: &Float64Array| -> Int64Array { a.unary(|v| v.round() as i64) };
    Ok(match (column.data_type(), to) {
        (DataType::Float64, DataType::Int64) => Arc::new(seconds(column.as_primitive())),
        (DataType::List(_), DataType::List(item)) if item.data_type() == &DataType::Int64 => {
            let list: &ListArray = column.as_list();
            Arc::new(ListArray::try_new(
                item.clone(),
                list.offsets().clone(),
                Arc::new(seconds(list.values().as_primitive())),
                list.nulls().cloned(),
            )?)
        }
        _ => datafusion::arrow::compute::cast(column, to)?,
    })
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
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(REPORT_ZSTD_LEVEL)?))
        .set_key_value_metadata(Some(vec![
            datafusion::parquet::file::metadata::KeyValue::new(
                SCHEMA_VERSION_KEY.to_string(),
                SCHEMA_VERSION.to_string(),
            ),
        ]))
        .build();
    // a failed write (a full disk) names the file
    let failed = |e: datafusion::parquet::errors::ParquetError| {
        Error::io(&path, std::io::Error::other(e.to_string()))
    };
    // text is written as Utf8 whatever the query made of it (a string view
    // in some), lags in whole seconds: one type per column for every reader
    let schema = written_schema(&schema);
    let mut w = ArrowWriter::try_new(f, schema.clone(), Some(props)).map_err(failed)?;
    for b in batches {
        w.write(&written_batch(b, &schema)?).map_err(failed)?;
    }
    let written = w.close().map_err(failed)?;
    let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
    tracing::info!(
        table = name,
        rows,
        bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
        row_groups = written.row_groups().len(),
        "table written"
    );
    tables.insert(
        name.to_string(),
        TableInfo {
            path: file,
            rows,
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
    /// Distinct customers among the rows analysed.
    pub customers: u64,
    /// Rows left out, by reason (every reason listed, zero included).
    pub excluded: BTreeMap<String, Excluded>,
}

/// The run's `manifest.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// recur's version.
    pub recur_version: String,
    /// The version of the output tables' schemas ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// When the run started (UTC, RFC 3339).
    pub started_at: String,
    /// The validated parameters.
    pub parameters: PipelineConfig,
    /// The run's as-of (RFC 3339, UTC): `--as-of`, else the last contact's time.
    pub as_of: Option<String>,
    /// The input files read.
    pub inputs: Vec<InputFile>,
    /// The input files not opened: their partition day is outside the
    /// window, or they are not regular files (a FIFO, a link to nothing), or
    /// a link leads back into a folder already read; each with why.
    pub skipped_inputs: Vec<crate::ingest::SkippedFile>,
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
    /// The contact days this run wrote into the folder's contacts table
    /// (runs into an output folder of many runs; see
    /// [`contact_days`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contact_days_written: Vec<String>,
    /// Today's outreach list: rows listed, new, control, left out as reached.
    pub outreach_list: crate::daily_list::ListSummary,
    /// The surge test: reason-days tested, significant, surges.
    pub surges: crate::surges::SurgeSummary,
    /// The cluster trends: the first instant of the recent period (or why
    /// there are none), changes tested, patterns by status.
    pub trends: crate::stages::trends::TrendSummary,
    /// Memory: the limit, what recur held in its in-memory tables at most, and
    /// what the sort spilled to disk.
    pub memory: MemoryUse,
    /// The frequent contacters: the rule's threshold, how many, their
    /// contacts, and the ids taken for placeholders (`crate::contacters`).
    pub frequent_contacters: crate::contacters::ContactersSummary,
    /// With `--null-check N`: the clusters and sequences each of N logs with
    /// their reasons permuted yielded (`crate::stages::nullcheck`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub null_check: Option<NullCheckSummary>,
    /// report.html: its size and the seconds it took (absent under
    /// `--no-report`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<crate::html::ReportFile>,
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
        let fmt = crate::time::format_utc;
        Manifest {
            recur_version: env!("CARGO_PKG_VERSION").to_string(),
            schema_version: SCHEMA_VERSION,
            started_at: started.to_rfc3339(),
            parameters: cfg.clone(),
            as_of: cfg.as_of_us.map(fmt),
            inputs: stats.inputs.clone(),
            skipped_inputs: stats.skipped.clone(),
            rows: RowCounts {
                read: stats.rows_read,
                used: stats.rows_used,
                customers: 0,
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
            contact_days_written: Vec::new(),
            outreach_list: Default::default(),
            surges: Default::default(),
            trends: Default::default(),
            memory: MemoryUse::default(),
            frequent_contacters: Default::default(),
            null_check: None,
            report: None,
        }
    }

    /// Records the frequent contacters' figures, with a note for each
    /// placeholder suspect naming the flag that leaves it out.
    pub fn add_frequent_contacters(&mut self, summary: crate::contacters::ContactersSummary) {
        if let Some(note) = summary.duplicates_note() {
            self.notes.push(note);
        }
        for id in &summary.placeholder_suspects {
            self.notes.push(format!(
                "customer id '{id}' makes more contacts than any real customer could \
                 (see frequent_contacters); if it stands for unidentified callers, \
                 leave it out with --exclude-customer '{id}'"
            ));
        }
        self.frequent_contacters = summary;
    }

    /// Writes the manifest as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }
}

/// Writes `value` as pretty JSON with a final newline.
/// Writes `value` as pretty JSON to `path`, whole or not at all: written
/// beside it and renamed over it, so that a failure leaves an earlier file
/// as it was. A failure is the machine's (an I/O error, exit code 1), never
/// the user's input.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::io(path, e.into()))?;
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    std::fs::write(&partial, text + "\n").map_err(|e| Error::io(&partial, e))?;
    std::fs::rename(&partial, path).map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        Error::io(path, e)
    })
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

/// A Parquet file opened for reading; a file that cannot be opened or is
/// not Parquet is [`Error::UnreadableFile`], naming it.
pub fn open_parquet(
    path: &Path,
) -> Result<datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder<std::fs::File>>
{
    let unreadable = |e: &dyn std::fmt::Display| Error::UnreadableFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(|e| unreadable(&e))?;
    // A damaged footer (an embedded Arrow schema naming an unknown type,
    // say) makes the Parquet reader panic rather than fail: that panic is
    // the error it stands for. Ingest opens every input here before
    // DataFusion reads it.
    without_panic(|| {
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
    })
    .map_err(|panic| unreadable(&format!("its footer is damaged ({panic})")))?
    .map_err(|e| unreadable(&e))
}

std::thread_local! {
    /// Set while this thread runs [`without_panic`]: its panics are caught
    /// and turned into errors, so none is reported.
    static QUIET_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic into an error carrying its message. The
/// process's panic hook is wrapped once so that it stays silent for the
/// thread inside this call only (a caught panic is not a crash to report);
/// other threads' panics are reported as before.
pub fn without_panic<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    static WRAP_HOOK: std::sync::Once = std::sync::Once::new();
    WRAP_HOOK.call_once(|| {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET_PANICS.with(|q| q.get()) {
                hook(info)
            }
        }));
    });
    QUIET_PANICS.with(|q| q.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET_PANICS.with(|q| q.set(false));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the reader failed".into())
    })
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

/// What the permuted logs of `--null-check` reported.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NullCheckSummary {
    /// Permutations run.
    pub permutations: u32,
    /// Clusters each permuted log reported.
    pub clusters: Vec<u64>,
    /// Sequences each permuted log reported.
    pub sequences: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_without_panic_is_an_error_and_the_hook_comes_back() {
        assert_eq!(without_panic(|| 7), Ok(7));
        assert_eq!(
            without_panic(|| -> u8 { panic!("bad footer {}", 1) }),
            Err("bad footer 1".to_string())
        );
        assert!(
            !QUIET_PANICS.with(|q| q.get()),
            "quiet only inside the call"
        );
        // another thread's panic is still a panic, reported as one
        assert!(std::thread::spawn(|| panic!("elsewhere")).join().is_err());
    }

    /// A manifest that cannot be written is the machine's failure (exit
    /// code 1), not the user's input, and leaves an earlier manifest whole.
    #[test]
    fn a_failed_manifest_write_is_not_bad_input_and_keeps_the_old_one() {
        struct Unwritable;
        impl Serialize for Unwritable {
            fn serialize<S: serde::Serializer>(
                &self,
                _: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("cannot be written"))
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.json");
        write_json(&path, &serde_json::json!({"rows": 1})).unwrap();
        let err = write_json(&path, &Unwritable).unwrap_err();
        assert!(!err.is_bad_input(), "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\n  \"rows\": 1\n}\n"
        );
        // a folder where the file goes: the rename fails, nothing is left
        let taken = dir.path().join("taken");
        std::fs::create_dir_all(taken.join("inside")).unwrap();
        let err = write_json(&taken, &serde_json::json!({})).unwrap_err();
        assert!(!err.is_bad_input(), "{err}");
        assert!(!dir.path().join("taken.partial").exists());
    }
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::prelude::SessionContext;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::sync::Arc;

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
        let mut w = ContactsWriter::start(&ctx, schema.clone(), dir.path(), None).unwrap();
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
        let mut w = ContactsWriter::start(&ctx, schema.clone(), failed.path(), None).unwrap();
        w.write(part(vec![7]), idx.clone()).await.unwrap();
        drop(w);
        let left: Vec<_> = std::fs::read_dir(failed.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
