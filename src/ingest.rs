//! Stage 1 — ingest: find the input files, scan the mapped columns with
//! DataFusion and normalise them into recur's contact schema.
//!
//! Input: Parquet files, folders (read recursively, hive-style folders such as
//! `date=2026-11-01/` allowed) or globs, and a [`ColumnMapping`].
//!
//! Output ([`Ingested`]): batches of the internal `contacts_in` schema
//!
//! | column      | type                    | notes                                   |
//! |-------------|-------------------------|-----------------------------------------|
//! | contact_id  | Int64 or Utf8, not null | from the input, or assigned from file and row (below) |
//! | customer_id | Utf8, not null          | any input type, rendered as text        |
//! | ts          | Timestamp(µs, UTC)      | see the time rules below                |
//! | channel     | Utf8, nullable          | `all` when the log has no channel column |
//! | reason      | Utf8, nullable          |                                         |
//! | agent       | Utf8, nullable          | all null unless `--agent-col` is given  |
//! | _row        | Int64                   | global input row number, the last tie-breaker |
//!
//! plus [`IngestStats`]: rows read, used and excluded by reason.
//!
//! The steps are apart so that a cluster's executors run the per-file one
//! (`crate::distributed::run`): `prepare` (files and columns checked from
//! the footers), `bucket_bounds` (the buckets' customer ranges, from a
//! sample), `read_file` (one file scanned and normalised into a sink),
//! `finish_stats` (every file's counts, then the checks of a log with
//! nothing to analyse).
//!
//! Rules:
//! - The window ([`window`]): with `--as-of`, rows after it are excluded as
//!   `outside_window`, and with its lookback those before it; files whose
//!   folder names a day outside the window (`date=2026-11-01/`) are not
//!   opened (listed as skipped), and row groups whose timestamp statistics
//!   lie outside it are not read (their rows count as `outside_window`).
//! - A log without a contact id column gets ids from file and row: a
//!   31-bit hash of the file's last two path components (its folder and
//!   name) in the high 32 bits, the row's 1-based position in the file in
//!   the low 32; a late file does not shift the others' ids.
//! - Rows whose customer id is null or empty are excluded as `null_customer_id`;
//!   ids listed with `--exclude-customer` as `placeholder_customer_id`.
//!   With `--pseudonymize` the ids kept are then replaced by their
//!   pseudonyms ([`crate::pseudonym`]); nothing after ingest sees a raw id.
//! - Time: Arrow timestamps of any unit (with a zone: taken as is; naive: read
//!   in `--timezone`), Date32/Date64 (local midnight), integer epochs and
//!   strings. An integer epoch's unit is told by its magnitude:
//!   |v| < 10^11 seconds, < 10^14 milliseconds, < 10^17 microseconds, else
//!   nanoseconds — unambiguous for every instant between 1973 and 5138.
//!   Strings: RFC 3339 / ISO 8601 with an offset, or naive ISO 8601
//!   (`2026-11-01 08:30:00`, `2026-11-01T08:30`, `2026-11-01`) read in
//!   `--timezone`. Times before 1900 or from 2200 on are excluded as
//!   `timestamp_out_of_range` (with an example).
//!   Null times are excluded as `null_timestamp`; strings that do
//!   not parse as `unparseable_timestamp` (with an example). A string column in
//!   which no value parses is an error; any other type is an error.
//! - Channels, reasons and agents may be strings, dictionary-encoded strings
//!   or integer codes; they are rendered as text.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use chrono_tz::Tz;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use serde::Serialize;

use crate::buckets::{Buckets, Sink};
use crate::config::{ColumnMapping, PipelineConfig};
use crate::error::{Error, Result};
use crate::time::{epoch_to_us, local_to_utc_us, parse_time_str};

/// The customer ids ingest leaves out (`--exclude-customer`), looked up
/// once per row: hashed with foldhash, faster than the standard SipHash.
type Placeholders = HashSet<String, foldhash::fast::RandomState>;

/// The channel given to every contact of a log without a channel column.
pub const SINGLE_CHANNEL: &str = "all";

/// Exclusion reason: customer id null or empty.
pub const EXCL_NULL_CUSTOMER: &str = "null_customer_id";
/// Exclusion reason: customer id listed as a placeholder.
pub const EXCL_PLACEHOLDER: &str = "placeholder_customer_id";
/// Exclusion reason: timestamp null.
pub const EXCL_NULL_TS: &str = "null_timestamp";
/// Exclusion reason: timestamp string that does not parse.
pub const EXCL_BAD_TS: &str = "unparseable_timestamp";
/// Exclusion reason: a time before 1900 or from 2200 on (or beyond what
/// microseconds hold): no contact log holds one, and keeping them out keeps
/// every gap and window sum within i64.
pub const EXCL_RANGE_TS: &str = "timestamp_out_of_range";
/// The supported times: from 1900-01-01 (inclusive) to 2200-01-01 UTC, µs.
pub const SUPPORTED_TS_US: std::ops::Range<i64> = -2_208_988_800_000_000..7_258_118_400_000_000;
/// Exclusion reason: time outside the run's window (`--as-of`, `--lookback`).
pub const EXCL_OUTSIDE_WINDOW: &str = "outside_window";

/// One input file as read.
#[derive(Debug, Clone, Serialize)]
pub struct InputFile {
    /// Path as resolved.
    pub path: PathBuf,
    /// Rows in the file.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// An input file left unopened.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedFile {
    /// Path as resolved.
    pub path: PathBuf,
    /// Why it was not opened.
    pub reason: String,
}

/// Rows excluded for one reason.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Excluded {
    /// How many rows.
    pub rows: u64,
    /// One offending value, when there is one to show.
    pub example: Option<String>,
}

/// What ingest read, used and left out.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestStats {
    /// The files read, in order.
    pub inputs: Vec<InputFile>,
    /// The files not opened, with why: their partition day is outside the
    /// window, or they are not regular files, or a link to a folder read.
    pub skipped: Vec<SkippedFile>,
    /// Rows read from all files.
    pub rows_read: u64,
    /// Rows passed on to analysis.
    pub rows_used: u64,
    /// Rows left out, by reason.
    pub excluded: BTreeMap<String, Excluded>,
    /// Notes on how the input was interpreted (single channel, assigned ids…).
    pub notes: Vec<String>,
    /// Earliest used timestamp (µs since epoch, UTC).
    pub min_ts_us: Option<i64>,
    /// Latest used timestamp (µs since epoch, UTC).
    pub max_ts_us: Option<i64>,
}

/// Normalised contacts and the ingest statistics.
#[derive(Debug)]
pub struct Ingested {
    /// The `contacts_in` schema.
    pub schema: SchemaRef,
    /// The normalised contacts, by bucket.
    pub buckets: Buckets,
    /// Counts.
    pub stats: IngestStats,
    /// Seconds spent sampling customer ids to cut buckets (0: one bucket).
    pub sample_seconds: f64,
}

mod files;
pub mod window;
use files::{FilePlan, inspect_file, missing};
pub use files::{Resolved, resolve_inputs};
pub use window::Window;

/// The internal `contacts_in` schema. `agent` is always present (all null
/// when no agent column is mapped) so that queries need no variants.
pub fn contacts_in_schema(contact_id_type: &DataType) -> SchemaRef {
    let mut fields = vec![
        Field::new("contact_id", contact_id_type.clone(), false),
        Field::new("customer_id", DataType::Utf8, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("channel", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, true),
    ];
    fields.push(Field::new("agent", DataType::Utf8, true));
    fields.push(Field::new("_row", DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

/// What ingest knows of a log before reading its rows: the files to read
/// (their schemas checked against the column mapping), those passed over,
/// the notes on how the log is read, the contacts' schema. Made from the
/// configuration alone (file footers, no rows), so every process of a
/// cluster run makes the same one.
pub(crate) struct Prepared {
    plans: Vec<FilePlan>,
    /// Files passed over and notes; no rows yet.
    stats: IngestStats,
    /// The `contacts_in` schema.
    pub schema: SchemaRef,
    contact_id_type: DataType,
    use_contact_id: bool,
    placeholders: Placeholders,
    window: Window,
}

// (what a cluster run's client reads of it)
#[cfg_attr(not(feature = "ballista"), allow(dead_code))]
impl Prepared {
    /// The files to read, in order: how many.
    pub fn files(&self) -> usize {
        self.plans.len()
    }

    /// The files to read, in order.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.plans.iter().map(|p| p.path.clone()).collect()
    }

    /// Whether the log's contact ids are read from it (else assigned).
    pub fn reads_contact_ids(&self) -> bool {
        self.use_contact_id
    }
}

/// Finds and inspects the inputs of `cfg` (see [`Prepared`]).
pub(crate) fn prepare(cfg: &PipelineConfig) -> Result<Prepared> {
    let Resolved { files, passed_over } = resolve_inputs(&cfg.inputs)?;
    if files.is_empty() {
        return Err(Error::param("inputs", "no input files given"));
    }
    let window = Window::of(cfg);
    let mut stats = IngestStats::default();
    let (files, skipped): (Vec<_>, Vec<_>) = files.into_iter().partition(|f| {
        window::partition_day(f, &cfg.partition_col).is_none_or(|d| window.may_hold_day(d))
    });
    let outside = skipped.len();
    stats.skipped = passed_over;
    stats
        .skipped
        .extend(skipped.into_iter().map(|path| SkippedFile {
            reason: format!("its {} partition is outside the window", cfg.partition_col),
            path,
        }));
    if files.is_empty() {
        return Err(Error::NoDataInWindow {
            window: window_text(&window),
            found: format!(
                "the {} input files' {} partitions are all outside it",
                outside, cfg.partition_col
            ),
        });
    }
    let cols = &cfg.columns;
    let mut plans = files
        .iter()
        .map(|p| inspect_file(p))
        .collect::<Result<Vec<_>>>()?;
    for plan in &mut plans {
        for (name, role) in [
            (&cols.customer, "customer"),
            (&cols.time, "time"),
            (&cols.reason, "reason"),
        ] {
            if plan.schema.index_of(name).is_err() {
                return Err(missing(plan, name, role));
            }
        }
        if let Some(agent) = &cols.agent
            && plan.schema.index_of(agent).is_err()
        {
            return Err(missing(plan, agent, "agent"));
        }
        plan.has_channel = plan.schema.index_of(&cols.channel).is_ok();
        plan.has_contact_id = plan.schema.index_of(&cols.contact_id).is_ok();
        if cols.channel_explicit && !plan.has_channel {
            return Err(missing(plan, &cols.channel, "channel"));
        }
        if cols.contact_id_explicit && !plan.has_contact_id {
            return Err(missing(plan, &cols.contact_id, "contact id"));
        }
    }
    let any_channel = plans.iter().any(|p| p.has_channel);
    if !any_channel {
        stats.notes.push(format!(
            "no '{}' column: every contact is on one channel, '{SINGLE_CHANNEL}'",
            cols.channel
        ));
    } else if let Some(p) = plans.iter().find(|p| !p.has_channel) {
        return Err(missing(p, &cols.channel, "channel"));
    }
    let use_contact_id = plans.iter().all(|p| p.has_contact_id);
    if !use_contact_id {
        stats.notes.push(format!(
            "no '{}' column in every file: contact ids assigned from file and row \
             (file key << 32 | row in file, 1-based)",
            cols.contact_id
        ));
    }
    let contact_id_type = if use_contact_id
        && plans.iter().all(|p| {
            let f = p
                .schema
                .field_with_name(&cols.contact_id)
                .expect("checked above");
            f.data_type().is_integer()
        }) {
        DataType::Int64
    } else if use_contact_id {
        DataType::Utf8
    } else {
        DataType::Int64
    };
    Ok(Prepared {
        plans,
        stats,
        schema: contacts_in_schema(&contact_id_type),
        contact_id_type,
        use_contact_id,
        placeholders: cfg.exclude_customers.iter().cloned().collect(),
        window,
    })
}

/// What [`prepare`] gives for one file of a log, `path`, whose contact ids
/// `prepare` found to be read from it (`use_contact_id`, of type
/// `contact_id_type`) or assigned: the form a cluster's task reads its file
/// in, without opening the others (the log's checks were made by the
/// client).
#[cfg_attr(not(feature = "ballista"), allow(dead_code))]
pub(crate) fn prepare_file(
    cfg: &PipelineConfig,
    path: &std::path::Path,
    use_contact_id: bool,
    contact_id_type: &DataType,
) -> Result<Prepared> {
    let mut plan = inspect_file(path)?;
    plan.has_channel = plan.schema.index_of(&cfg.columns.channel).is_ok();
    plan.has_contact_id = plan.schema.index_of(&cfg.columns.contact_id).is_ok();
    Ok(Prepared {
        plans: vec![plan],
        stats: IngestStats::default(),
        schema: contacts_in_schema(contact_id_type),
        contact_id_type: contact_id_type.clone(),
        use_contact_id,
        placeholders: cfg.exclude_customers.iter().cloned().collect(),
        window: Window::of(cfg),
    })
}

/// The upper bounds of `n_buckets` ranges of customer ids of about equal
/// contacts, from a sample of the ids (none for one bucket).
pub(crate) fn bucket_bounds(
    cfg: &PipelineConfig,
    prep: &Prepared,
    n_buckets: usize,
) -> Result<Vec<String>> {
    if n_buckets <= 1 {
        return Ok(Vec::new());
    }
    let placeholders = &prep.placeholders;
    let mut sample = sample_customers(
        &prep.plans,
        &cfg.columns.customer,
        placeholders,
        SAMPLE_ROWS,
    )?;
    // the buckets are ranges of the ids the contacts carry
    if let Some(p) = &cfg.pseudonym {
        sample.iter_mut().for_each(|id| *id = p.pseudonym(id));
        sample.retain(|id| !placeholders.contains(id));
    }
    Ok(crate::buckets::range_bounds(sample, n_buckets))
}

/// What reading one file gave: its counts, and the scan partitions it was
/// read in.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub(crate) struct FileRead {
    counts: BatchCounts,
    partitions: u64,
}

/// Reads file `j` of `prep` into `sink`, its scan partitions numbered from
/// `g0` (row numbers, see [`crate::buckets`]); `read` counts the rows read
/// so far, for a progress bar.
pub(crate) async fn read_file(
    ctx: &SessionContext,
    cfg: &PipelineConfig,
    prep: &Prepared,
    j: usize,
    g0: u64,
    sink: &Arc<Sink>,
    read: &Arc<std::sync::atomic::AtomicU64>,
) -> Result<FileRead> {
    let cols = &cfg.columns;
    let plan = &prep.plans[j];
    let mut names = vec![
        cols.customer.clone(),
        cols.time.clone(),
        cols.reason.clone(),
    ];
    if plan.has_channel {
        names.push(cols.channel.clone());
    }
    if prep.use_contact_id {
        names.push(cols.contact_id.clone());
    }
    if let Some(agent) = &cols.agent {
        names.push(agent.clone());
    }
    let opts = ParquetReadOptions {
        file_extension: "",
        ..Default::default()
    };
    let path_str = plan.path.to_string_lossy().to_string();
    let ctx = &scan_context(ctx);
    let df = ctx
        .read_parquet(path_str, opts)
        .await
        .map_err(|e| Error::UnreadableFile {
            path: plan.path.clone(),
            reason: e.to_string(),
        })?;
    let name_refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    let mut df = df.select_columns(&name_refs)?;
    let time_type = plan.schema.field_with_name(&cols.time)?.data_type().clone();
    if let Some(keep) = prep.window.scan_predicate(&cols.time, &time_type) {
        df = df.filter(keep)?;
    }
    let job = Arc::new(NormalizeJob {
        plan: plan.clone(),
        cols: cols.clone(),
        schema: prep.schema.clone(),
        contact_id_type: prep.contact_id_type.clone(),
        use_contact_id: prep.use_contact_id,
        tz: cfg.tz(),
        placeholders: prep.placeholders.clone(),
        window: prep.window,
        pseudonym: cfg.pseudonym.clone(),
    });
    // One task per scan partition, each decoding, normalising and handing
    // its batches on as they come; the partitions of a file scan are
    // contiguous byte ranges in file order, so (partition, batch, row)
    // numbers rows in input order (see crate::buckets).
    let mut tasks = tokio::task::JoinSet::new();
    let mut file = FileRead::default();
    for stream in df.execute_stream_partitioned().await? {
        let g = g0 + file.partitions;
        file.partitions += 1;
        let (job, sink, read) = (job.clone(), sink.clone(), read.clone());
        tasks.spawn(async move { job.read_partition(stream, g, &sink, &read).await });
    }
    while let Some(done) = tasks.join_next().await {
        let counts =
            done.map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))??;
        file.counts.merge(counts);
    }
    Ok(file)
}

/// Adds what reading file `j` gave to `stats` (and to `seen`, the earliest
/// and latest time read, in the window or not); a time column in which no
/// value parses is an error naming the file.
pub(crate) fn absorb(
    cfg: &PipelineConfig,
    prep: &Prepared,
    j: usize,
    file: FileRead,
    stats: &mut IngestStats,
    seen: &mut (Option<i64>, Option<i64>),
) -> Result<()> {
    let plan = &prep.plans[j];
    let mut file_counts = file.counts;
    if file_counts.time_parsed == 0 && file_counts.bad_ts.rows > 0 {
        return Err(Error::UnparseableTimeColumn {
            path: plan.path.clone(),
            column: cfg.columns.time.clone(),
            count: file_counts.bad_ts.rows,
            example: file_counts.bad_ts.example.unwrap_or_default(),
        });
    }
    stats.inputs.push(InputFile {
        path: plan.path.clone(),
        rows: plan.rows,
        bytes: plan.bytes,
    });
    // rows in row groups the scan skipped by their statistics
    file_counts.outside.rows += plan.rows.saturating_sub(file_counts.read);
    stats.rows_read += plan.rows.max(file_counts.read);
    stats.rows_used += file_counts.used;
    *seen = (
        min_opt(seen.0, file_counts.seen.0),
        max_opt(seen.1, file_counts.seen.1),
    );
    for (reason, ex) in [
        (EXCL_NULL_CUSTOMER, file_counts.null_customer),
        (EXCL_PLACEHOLDER, file_counts.placeholder),
        (EXCL_NULL_TS, file_counts.null_ts),
        (EXCL_BAD_TS, file_counts.bad_ts),
        (EXCL_RANGE_TS, file_counts.range_ts),
        (EXCL_OUTSIDE_WINDOW, file_counts.outside),
    ] {
        let entry = stats.excluded.entry(reason.to_string()).or_default();
        entry.rows += ex.rows;
        if entry.example.is_none() {
            entry.example = ex.example;
        }
    }
    stats.min_ts_us = min_opt(stats.min_ts_us, file_counts.min_ts);
    stats.max_ts_us = max_opt(stats.max_ts_us, file_counts.max_ts);
    Ok(())
}

/// The statistics of a log read whole: every file's [`FileRead`] absorbed
/// in order, then the checks of a log with nothing to analyse.
#[cfg_attr(not(feature = "ballista"), allow(dead_code))]
pub(crate) fn finish_stats(
    cfg: &PipelineConfig,
    prep: &Prepared,
    files: Vec<FileRead>,
) -> Result<IngestStats> {
    let mut stats = prep.stats.clone();
    let mut seen = (None, None);
    for (j, file) in files.into_iter().enumerate() {
        absorb(cfg, prep, j, file, &mut stats, &mut seen)?;
    }
    read_whole(cfg, prep, &stats, seen)?;
    Ok(stats)
}

/// The log read whole: logged, and checked for something to analyse
/// ([`check_rows`]); `seen`: the earliest and latest time read.
fn read_whole(
    cfg: &PipelineConfig,
    prep: &Prepared,
    stats: &IngestStats,
    seen: (Option<i64>, Option<i64>),
) -> Result<()> {
    tracing::info!(
        files = stats.inputs.len(),
        skipped = stats.skipped.len(),
        rows_read = stats.rows_read,
        rows_used = stats.rows_used,
        "input read"
    );
    check_rows(cfg, &prep.window, stats, seen)
}

/// The contact ids assigned to a log without an id column, for files
/// `files` of `prep` whose first scan partitions are `first_partitions`
/// (None when the log has ids).
pub(crate) fn assigned_ids(
    prep: &Prepared,
    files: std::ops::Range<usize>,
    first_partitions: Vec<u64>,
) -> Result<Option<crate::buckets::AssignedIds>> {
    if prep.use_contact_id {
        return Ok(None);
    }
    let keys = file_keys(&prep.plans)?;
    Ok(Some(crate::buckets::AssignedIds {
        files: first_partitions
            .into_iter()
            .zip(keys[files].iter().copied())
            .collect(),
    }))
}

/// Reads and normalises all inputs.
pub async fn ingest(
    ctx: &SessionContext,
    cfg: &PipelineConfig,
    progress: &dyn crate::session::Progress,
) -> Result<Ingested> {
    let prep = prepare(cfg)?;
    let total_rows: u64 = prep.plans.iter().map(|p| p.rows).sum();
    let per_bucket = crate::buckets::bucket_contacts(cfg.bucket_contacts, cfg.memory_limit_bytes);
    let n_buckets = crate::buckets::bucket_count(total_rows, per_bucket);
    // Buckets are ranges of customer ids, cut at quantiles of a sample, so
    // that the buckets in turn are the customers in order (see crate::buckets)
    let t = std::time::Instant::now();
    let bounds = bucket_bounds(cfg, &prep, n_buckets)?;
    let sample_seconds = t.elapsed().as_secs_f64();
    let sink = Arc::new(Sink::new(
        prep.schema.clone(),
        bounds,
        cfg.columns.agent.is_some(),
    )?);
    let mut scan_partitions: u64 = 0;
    let mut file_first_partition = Vec::with_capacity(prep.plans.len());
    // rows the scan of the current file has read, for the progress bar
    let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut stats = prep.stats.clone();
    let mut seen = (None, None);
    for j in 0..prep.plans.len() {
        file_first_partition.push(scan_partitions);
        let reading = read_file(ctx, cfg, &prep, j, scan_partitions, &sink, &read);
        tokio::pin!(reading);
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
        let file = loop {
            tokio::select! {
                done = &mut reading => break done?,
                _ = tick.tick() => progress.rows_read(
                    stats.rows_read + read.load(std::sync::atomic::Ordering::Relaxed),
                    total_rows,
                ),
            }
        };
        read.store(0, std::sync::atomic::Ordering::Relaxed);
        scan_partitions += file.partitions;
        absorb(cfg, &prep, j, file, &mut stats, &mut seen)?;
        progress.rows_read(stats.rows_read, total_rows);
    }
    read_whole(cfg, &prep, &stats, seen)?;
    let assigned = assigned_ids(&prep, 0..prep.plans.len(), file_first_partition)?;
    let sink = Arc::into_inner(sink).expect("every reading task has ended");
    Ok(Ingested {
        schema: prep.schema,
        buckets: sink.finish(assigned.as_ref())?,
        stats,
        sample_seconds,
    })
}

/// The window as text, for messages.
fn window_text(w: &Window) -> String {
    let fmt = |us: Option<i64>| {
        us.and_then(DateTime::from_timestamp_micros)
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "…".into())
    };
    format!("({}, {}]", fmt(w.start_us), fmt(w.end_us))
}

/// The errors of an input with nothing to analyse: no rows at all (unless
/// `--allow-empty`), no row in the window, or (`--require-data`) none on
/// the as-of day. `seen`: the earliest and latest time read.
fn check_rows(
    cfg: &PipelineConfig,
    window: &Window,
    stats: &IngestStats,
    seen: (Option<i64>, Option<i64>),
) -> Result<()> {
    let files = || {
        stats
            .inputs
            .iter()
            .map(|f| f.path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let outside = stats
        .excluded
        .get(EXCL_OUTSIDE_WINDOW)
        .map_or(0, |e| e.rows);
    let fmt = |us: i64| {
        DateTime::from_timestamp_micros(us)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default()
    };
    if stats.rows_read == 0 && !cfg.allow_empty {
        return Err(Error::EmptyInput { files: files() });
    }
    if stats.rows_used == 0 && outside > 0 {
        return Err(Error::NoDataInWindow {
            window: window_text(window),
            found: match seen {
                (Some(a), Some(b)) => format!(
                    "the {outside} rows read lie from {} to {} (files: {})",
                    fmt(a),
                    fmt(b),
                    files()
                ),
                _ => format!(
                    "the row groups of {} lie outside it by their statistics",
                    files()
                ),
            },
        });
    }
    if stats.rows_used == 0 && stats.rows_read > 0 && !cfg.allow_empty {
        let why = stats
            .excluded
            .iter()
            .filter(|(_, e)| e.rows > 0)
            .map(|(reason, e)| {
                let column = match reason.as_str() {
                    EXCL_NULL_TS | EXCL_BAD_TS | EXCL_RANGE_TS => {
                        format!(" (column '{}')", cfg.columns.time)
                    }
                    EXCL_NULL_CUSTOMER | EXCL_PLACEHOLDER => {
                        format!(" (column '{}')", cfg.columns.customer)
                    }
                    _ => String::new(),
                };
                match &e.example {
                    Some(x) => format!("{} {reason}{column}, e.g. {x:?}", e.rows),
                    None => format!("{} {reason}{column}", e.rows),
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Error::NoUsableRows {
            read: stats.rows_read,
            files: files(),
            why,
        });
    }
    if let Some(as_of) = cfg.as_of_us.filter(|_| cfg.require_data) {
        let tz = cfg.tz();
        let day = crate::time::local_date(tz, as_of);
        if stats
            .max_ts_us
            .is_none_or(|m| m < crate::time::day_start_us(tz, day))
        {
            return Err(Error::NoDataForAsOf {
                day: day.to_string(),
                found: match stats.max_ts_us {
                    Some(m) => format!("the latest contact in the window is at {}", fmt(m)),
                    None => "the window holds no contact".into(),
                },
            });
        }
    }
    Ok(())
}

/// Each file's key for assigned contact ids: a 31-bit xxHash64 of its last
/// two path components (as canonicalised), so that the key does not depend
/// on how the path was given. Two files of one run with the same key are an
/// error (the ids would collide): such a log needs a contact id column.
fn file_keys(plans: &[FilePlan]) -> Result<Vec<i64>> {
    let mut seen = std::collections::HashMap::new();
    plans
        .iter()
        .map(|p| {
            let full = std::fs::canonicalize(&p.path).unwrap_or_else(|_| p.path.clone());
            let tail: PathBuf = full
                .iter()
                .rev()
                .take(2)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let key =
                (twox_hash::XxHash64::oneshot(0, tail.to_string_lossy().as_bytes()) >> 33) as i64;
            if let Some(other) = seen.insert(key, p.path.clone()) {
                return Err(Error::param(
                    "--contact-id-col",
                    format!(
                        "{} and {} give the same key for assigned contact ids; \
                         name a contact id column of the log",
                        other.display(),
                        p.path.display()
                    ),
                ));
            }
            Ok(key)
        })
        .collect()
}

/// Rows per batch of the log's scan. DataFusion's default (8,192) cut a
/// 100M-contact log into about 12,000 batches, each then split into one
/// small batch per bucket (written to its file, read back, sorted).
pub const SCAN_BATCH_ROWS: usize = 65_536;

/// `ctx` with batches of [`SCAN_BATCH_ROWS`] rows, for the log's scan.
fn scan_context(ctx: &SessionContext) -> SessionContext {
    let mut state = ctx.state();
    let config = state.config_mut();
    *config = config.clone().with_batch_size(SCAN_BATCH_ROWS);
    SessionContext::new_with_state(state)
}

/// Customer ids sampled to cut a log into buckets: about this many rows.
const SAMPLE_ROWS: u64 = 1 << 18;

/// Rows read in one run when sampling a row group (short runs
/// spread over every row group, so that a log sorted by customer is sampled
/// over its whole range and one sorted by time over its whole period).
const SAMPLE_RUN: usize = 128;

/// About `budget` customer ids (as text, the form ingest gives them), read
/// in short runs spread evenly over every row group of every file; ids that
/// ingest leaves out (null, empty, placeholders) are not kept. A customer
/// appears about in proportion to its contacts, so quantiles of the sample
/// cut the log into buckets of about equal contacts.
fn sample_customers(
    plans: &[FilePlan],
    column: &str,
    placeholders: &Placeholders,
    budget: u64,
) -> Result<Vec<String>> {
    use datafusion::parquet::arrow::ProjectionMask;
    use datafusion::parquet::arrow::arrow_reader::{RowSelection, RowSelector};
    let total: u64 = plans.iter().map(|p| p.rows).sum();
    let mut sample = Vec::new();
    for plan in plans {
        let unreadable = |e: &dyn std::fmt::Display| Error::UnreadableFile {
            path: plan.path.clone(),
            reason: e.to_string(),
        };
        let file = std::fs::File::open(&plan.path).map_err(|e| unreadable(&e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| unreadable(&e))?;
        let idx = builder
            .parquet_schema()
            .columns()
            .iter()
            .position(|c| c.path().parts().first().map(|p| p.as_str()) == Some(column))
            .ok_or_else(|| missing(plan, column, "customer"))?;
        let mask = ProjectionMask::leaves(builder.parquet_schema(), [idx]);
        let mut selectors = Vec::new();
        if total > budget {
            for rg in builder.metadata().row_groups() {
                let rows = rg.num_rows().max(0) as usize;
                let want = ((budget as u128 * rows as u128).div_ceil(total as u128) as usize)
                    .clamp(1, rows.max(1));
                let runs = want.div_ceil(SAMPLE_RUN).max(1);
                let stride = rows / runs;
                let mut at = 0;
                for _ in 0..runs {
                    let take = SAMPLE_RUN.min(rows - at).min(stride.max(1));
                    selectors.push(RowSelector::select(take));
                    let skip = stride.saturating_sub(take).min(rows - at - take);
                    if skip > 0 {
                        selectors.push(RowSelector::skip(skip));
                    }
                    at += take + skip;
                }
                if rows > at {
                    selectors.push(RowSelector::skip(rows - at));
                }
            }
        }
        let mut builder = builder.with_projection(mask);
        if total > budget {
            builder = builder.with_row_selection(RowSelection::from(selectors));
        }
        let reader = builder.build().map_err(|e| unreadable(&e))?;
        for batch in reader {
            let batch = batch.map_err(|e| unreadable(&e))?;
            let col = batch.column(0);
            let text = cast(col, &DataType::Utf8).map_err(|_| Error::BadColumnType {
                path: plan.path.clone(),
                column: column.to_string(),
                role: "customer",
                data_type: col.data_type().to_string(),
                expected: "text",
                example: example_value(col),
            })?;
            sample.extend(
                text.as_string::<i32>()
                    .iter()
                    .flatten()
                    .filter(|id| !id.is_empty() && !placeholders.contains(*id))
                    .map(str::to_string),
            );
        }
    }
    Ok(sample)
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[derive(Debug, Default, Serialize, serde::Deserialize)]
struct BatchCounts {
    read: u64,
    used: u64,
    time_parsed: u64,
    null_customer: Excluded,
    placeholder: Excluded,
    null_ts: Excluded,
    bad_ts: Excluded,
    range_ts: Excluded,
    outside: Excluded,
    min_ts: Option<i64>,
    max_ts: Option<i64>,
    /// The earliest and latest time read, in the window or not.
    seen: (Option<i64>, Option<i64>),
}

impl BatchCounts {
    fn merge(&mut self, o: BatchCounts) {
        self.read += o.read;
        self.used += o.used;
        self.time_parsed += o.time_parsed;
        for (a, b) in [
            (&mut self.null_customer, o.null_customer),
            (&mut self.placeholder, o.placeholder),
            (&mut self.null_ts, o.null_ts),
            (&mut self.bad_ts, o.bad_ts),
            (&mut self.range_ts, o.range_ts),
            (&mut self.outside, o.outside),
        ] {
            a.rows += b.rows;
            if a.example.is_none() {
                a.example = b.example;
            }
        }
        self.min_ts = min_opt(self.min_ts, o.min_ts);
        self.max_ts = max_opt(self.max_ts, o.max_ts);
        self.seen = (
            min_opt(self.seen.0, o.seen.0),
            max_opt(self.seen.1, o.seen.1),
        );
    }
}

struct NormalizeJob {
    plan: FilePlan,
    cols: ColumnMapping,
    schema: SchemaRef,
    contact_id_type: DataType,
    use_contact_id: bool,
    tz: Tz,
    placeholders: Placeholders,
    window: Window,
    pseudonym: Option<crate::pseudonym::Pseudonymizer>,
}

impl NormalizeJob {
    /// Reads scan partition `g` of a file to its end, normalising each batch
    /// into `sink`; returns its counts.
    async fn read_partition(
        &self,
        mut stream: datafusion::physical_plan::SendableRecordBatchStream,
        g: u64,
        sink: &Sink,
        read: &std::sync::atomic::AtomicU64,
    ) -> Result<BatchCounts> {
        use futures::StreamExt;
        let mut counts = BatchCounts::default();
        let mut scanned = Vec::new();
        let mut k = 0;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| Error::UnreadableFile {
                path: self.plan.path.clone(),
                reason: e.to_string(),
            })?;
            if batch.num_rows() >= crate::buckets::MAX_BATCH_ROWS {
                return Err(Error::UnreadableFile {
                    path: self.plan.path.clone(),
                    reason: format!("a scan batch of {} rows is too large", batch.num_rows()),
                });
            }
            read.fetch_add(
                batch.num_rows() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            let first = crate::buckets::provisional_row(g, k)?;
            scanned.push((first, batch.num_rows() as u64));
            let (normalized, c) = self.normalize(&batch, first)?;
            counts.merge(c);
            if normalized.num_rows() > 0 {
                sink.push(normalized)?;
            }
            k += 1;
        }
        sink.scanned(scanned);
        Ok(counts)
    }

    fn text_column(&self, batch: &RecordBatch, name: &str, role: &'static str) -> Result<ArrayRef> {
        let col = batch.column_by_name(name).expect("column selected");
        if !is_code_type(col.data_type()) {
            return Err(self.bad_type(col, name, role, "text or integer codes"));
        }
        cast(col, &DataType::Utf8).map_err(|_| self.bad_type(col, name, role, "text"))
    }

    fn bad_type(
        &self,
        col: &ArrayRef,
        name: &str,
        role: &'static str,
        expected: &'static str,
    ) -> Error {
        Error::BadColumnType {
            path: self.plan.path.clone(),
            column: name.to_string(),
            role,
            data_type: col.data_type().to_string(),
            expected,
            example: example_value(col),
        }
    }

    fn normalize(
        &self,
        batch: &RecordBatch,
        row_offset: i64,
    ) -> Result<(RecordBatch, BatchCounts)> {
        let n = batch.num_rows();
        let mut counts = BatchCounts {
            read: n as u64,
            ..Default::default()
        };
        let customer = self.text_column(batch, &self.cols.customer, "customer")?;
        let customer_s = customer.as_string::<i32>();
        // with --pseudonymize, a placeholder may be named by id or pseudonym
        let pseudonyms = self.pseudonym.as_ref().map(|p| p.column(customer_s));
        let placeholder_at = |i: usize| {
            self.placeholders.contains(customer_s.value(i))
                || pseudonyms
                    .as_ref()
                    .is_some_and(|p| self.placeholders.contains(p.value(i)))
        };
        let time_col = batch
            .column_by_name(&self.cols.time)
            .expect("column selected");
        let times = self.parse_times(time_col)?;
        let mut keep = Vec::with_capacity(n);
        let mut ts_vals = Vec::with_capacity(n);
        for (i, t) in times.into_iter().enumerate() {
            let ok = if customer_s.is_null(i) || customer_s.value(i).is_empty() {
                counts.null_customer.rows += 1;
                false
            } else if placeholder_at(i) {
                counts.placeholder.rows += 1;
                if counts.placeholder.example.is_none() {
                    // as --exclude-customer names it (already in the manifest)
                    let raw = customer_s.value(i);
                    let shown = match &pseudonyms {
                        Some(p) if !self.placeholders.contains(raw) => p.value(i),
                        _ => raw,
                    };
                    counts.placeholder.example = Some(shown.to_string());
                }
                false
            } else {
                match t {
                    TimeValue::Ok(_) | TimeValue::OutOfRange if t.supported().is_none() => {
                        counts.range_ts.rows += 1;
                        if counts.range_ts.example.is_none() {
                            counts.range_ts.example = Some(example_at(time_col, i));
                        }
                        false
                    }
                    TimeValue::Ok(v) if !self.window.contains(v) => {
                        counts.outside.rows += 1;
                        if counts.outside.example.is_none() {
                            counts.outside.example = Some(example_at(time_col, i));
                        }
                        false
                    }
                    TimeValue::Ok(_) => true,
                    TimeValue::OutOfRange => unreachable!("counted as out of range above"),
                    TimeValue::Null => {
                        counts.null_ts.rows += 1;
                        false
                    }
                    TimeValue::Bad => {
                        counts.bad_ts.rows += 1;
                        if counts.bad_ts.example.is_none() {
                            counts.bad_ts.example = Some(example_at(time_col, i));
                        }
                        false
                    }
                }
            };
            if let Some(v) = t.supported() {
                counts.time_parsed += 1;
                counts.seen = (
                    min_opt(counts.seen.0, Some(v)),
                    max_opt(counts.seen.1, Some(v)),
                );
                if ok {
                    counts.min_ts = min_opt(counts.min_ts, Some(v));
                    counts.max_ts = max_opt(counts.max_ts, Some(v));
                }
                ts_vals.push(v);
            } else {
                ts_vals.push(0);
            }
            keep.push(ok);
        }
        // Unparseable strings in rows excluded for another reason still count
        // as parsed-or-not for the "whole column is bad" check above.
        counts.used = keep.iter().filter(|k| **k).count() as u64;

        let ts: ArrayRef = Arc::new(TimestampMicrosecondArray::from(ts_vals).with_timezone("UTC"));
        let channel: ArrayRef = if self.plan.has_channel {
            self.text_column(batch, &self.cols.channel, "channel")?
        } else {
            Arc::new(StringArray::from(vec![Some(SINGLE_CHANNEL); n]))
        };
        let reason = self.text_column(batch, &self.cols.reason, "reason")?;
        let contact_id: ArrayRef = if self.use_contact_id {
            let col = batch
                .column_by_name(&self.cols.contact_id)
                .expect("column selected");
            if !is_code_type(col.data_type()) {
                return Err(self.bad_type(
                    col,
                    &self.cols.contact_id,
                    "contact id",
                    "text or an integer",
                ));
            }
            cast(col, &self.contact_id_type)
                .map_err(|_| self.bad_type(col, &self.cols.contact_id, "contact id", "an id"))?
        } else {
            Arc::new(Int64Array::from_iter_values(
                (0..n as i64).map(|i| row_offset + i + 1),
            ))
        };
        let customer = match pseudonyms {
            Some(p) => Arc::new(p) as ArrayRef,
            None => customer,
        };
        let mut columns = vec![contact_id, customer, ts, channel, reason];
        columns.push(match &self.cols.agent {
            Some(agent) => self.text_column(batch, agent, "agent")?,
            None => datafusion::arrow::array::new_null_array(&DataType::Utf8, n),
        });
        columns.push(Arc::new(Int64Array::from_iter_values(
            (0..n as i64).map(|i| row_offset + i),
        )));
        // The input may declare non-null fields as nullable; build with the
        // relaxed schema, filter, then rebind to the strict one.
        let loose = Arc::new(Schema::new(
            self.schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let full = RecordBatch::try_new(loose, columns)?;
        let filtered = filter_record_batch(&full, &BooleanArray::from(keep))?;
        if let Some(pos) = filtered.column(0).logical_nulls().map(|n| n.null_count())
            && pos > 0
        {
            let col = batch
                .column_by_name(&self.cols.contact_id)
                .expect("nulls only come from an input column");
            return Err(Error::BadColumnType {
                path: self.plan.path.clone(),
                column: self.cols.contact_id.clone(),
                role: "contact id",
                data_type: col.data_type().to_string(),
                expected: "a non-null id on every row",
                example: "null".into(),
            });
        }
        let batch = RecordBatch::try_new(self.schema.clone(), filtered.columns().to_vec())?;
        Ok((batch, counts))
    }

    fn parse_times(&self, col: &ArrayRef) -> Result<Vec<TimeValue>> {
        let n = col.len();
        let tz = self.tz;
        let naive_to_utc = |ndt: NaiveDateTime| -> i64 { local_to_utc_us(tz, ndt) };
        match col.data_type() {
            DataType::Timestamp(_, zone) => {
                let micros = cast(col, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
                let a =
                    micros.as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
                let is_utc_like = zone.is_some() || tz == chrono_tz::UTC;
                Ok((0..n)
                    .map(|i| {
                        if a.is_null(i) {
                            // (a value the cast to microseconds could not hold)
                            if col.is_valid(i) {
                                TimeValue::OutOfRange
                            } else {
                                TimeValue::Null
                            }
                        } else if is_utc_like {
                            TimeValue::Ok(a.value(i))
                        } else {
                            match DateTime::from_timestamp_micros(a.value(i)) {
                                Some(dt) => TimeValue::Ok(naive_to_utc(dt.naive_utc())),
                                None => TimeValue::Bad,
                            }
                        }
                    })
                    .collect())
            }
            DataType::Date32 | DataType::Date64 => {
                let days = cast(col, &DataType::Date32)?;
                let a = days.as_primitive::<datafusion::arrow::datatypes::Date32Type>();
                let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
                Ok((0..n)
                    .map(|i| {
                        if a.is_null(i) {
                            return TimeValue::Null;
                        }
                        match epoch.checked_add_signed(chrono::Duration::days(a.value(i) as i64)) {
                            Some(d) => TimeValue::Ok(naive_to_utc(
                                d.and_hms_opt(0, 0, 0).expect("midnight"),
                            )),
                            None => TimeValue::OutOfRange,
                        }
                    })
                    .collect())
            }
            t if t.is_integer() => {
                let v = cast(col, &DataType::Int64)
                    .map_err(|_| self.bad_type(col, &self.cols.time, "time", "a time"))?;
                let a = v.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                Ok((0..n)
                    .map(|i| {
                        if a.is_null(i) {
                            TimeValue::Null
                        } else {
                            TimeValue::Ok(epoch_to_us(a.value(i)))
                        }
                    })
                    .collect())
            }
            DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Dictionary(_, _) => {
                let s = cast(col, &DataType::Utf8)
                    .map_err(|_| self.bad_type(col, &self.cols.time, "time", "a time"))?;
                let a = s.as_string::<i32>();
                Ok((0..n)
                    .map(|i| {
                        if a.is_null(i) {
                            TimeValue::Null
                        } else {
                            match parse_time_str(a.value(i), tz) {
                                Some(v) => TimeValue::Ok(v),
                                None => TimeValue::Bad,
                            }
                        }
                    })
                    .collect())
            }
            _ => Err(self.bad_type(col, &self.cols.time, "time", "a time")),
        }
    }
}

/// Whether a column of type `t` can hold ids, channels or reasons: text or
/// integer codes, plain or dictionary-encoded. A list, a struct, a float or
/// a boolean is none of them, though Arrow would render it as text.
fn is_code_type(t: &DataType) -> bool {
    let usable = |t: &DataType| {
        t.is_integer() || matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
    };
    match t {
        DataType::Dictionary(_, value) => usable(value),
        t => usable(t),
    }
}

#[derive(Debug, Clone, Copy)]
enum TimeValue {
    Ok(i64),
    Null,
    Bad,
    /// A time no timestamp in microseconds holds.
    OutOfRange,
}

impl TimeValue {
    /// The time, when it is one recur analyses ([`SUPPORTED_TS_US`]).
    fn supported(self) -> Option<i64> {
        match self {
            TimeValue::Ok(v) if SUPPORTED_TS_US.contains(&v) => Some(v),
            _ => None,
        }
    }
}

fn example_value(col: &ArrayRef) -> String {
    (0..col.len())
        .find(|i| col.is_valid(*i))
        .map(|i| example_at(col, i))
        .unwrap_or_else(|| "(all values null)".into())
}

fn example_at(col: &ArrayRef, i: usize) -> String {
    array_value_to_string(col.as_ref(), i).unwrap_or_else(|_| "(unprintable)".into())
}
