//! The contacts table of an output folder of many runs ([`crate::runs`]):
//! one file per contact day, shared by the runs, each day rewritten only
//! while its rows can still change.
//!
//! Input: the annotated contacts a run writes (the batches
//! [`super::ContactsWriter`] is fed, in customer order), the folder's day
//! index, and the run's as-of, window and repeat window.
//! Output: `<run>/contacts/date=YYYY-MM-DD/part-0.parquet` for each day the
//! run writes (in the run's staging folder), which [`publish`] moves to
//! `ROOT/contacts/date=YYYY-MM-DD/part-0.parquet`, recording in
//! `ROOT/contacts/_written.json` (day → the as-of of the run that wrote it
//! and the fingerprint of the parameters that shape its rows).
//!
//! A run writes day D when D lies wholly in its window and the folder has
//! no final version of D made the same way: none, one whose file is gone,
//! one made from other inputs or parameters (another fingerprint), or one
//! written by a run whose as-of came before D's last contact could be
//! followed within the repeat window (`followed_within_window` could still
//! change) and at or before this run's as-of (a rerun of a past date never
//! overwrites what a later run knew). A nightly run so writes the last day
//! or two; the first run, every day of its window.
//!
//! Rows that arrive for a day after it is final are in that night's tables
//! but not in the stored day; removing `ROOT/contacts/date=D/` makes the
//! next run whose window holds D write it again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use chrono_tz::Tz;
use datafusion::arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{Date32Type, SchemaRef};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::properties::WriterProperties;

use crate::config::PipelineConfig;
use crate::error::{Error, Result};
use crate::time::{epoch_day, from_epoch_day};

/// The folder of the day files, in a run's folder and under ROOT.
pub const CONTACTS_DIR: &str = "contacts";
/// The day index under `ROOT/contacts/`.
const INDEX: &str = "_written.json";
/// A day's file in its folder.
const PART: &str = "part-0.parquet";
/// Rows a day's file is given at once.
const WRITE_ROWS: usize = 8_192;

/// One stored day in the index.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
struct Stored {
    /// The as-of (µs) of the run that wrote the day.
    as_of_us: i64,
    /// [`fingerprint`] of that run's parameters.
    fingerprint: u64,
}

/// A hash of what shapes a contacts row besides the log's rows and the
/// window: the inputs named, the column mapping, the time zone, the repeat
/// and session windows, the excluded customers, the pseudonyms' key, recur's version and the
/// tables' schema version. Two
/// runs with equal fingerprints write a final day the same way.
pub fn fingerprint(cfg: &PipelineConfig) -> u64 {
    let shaping = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "schema_version": super::SCHEMA_VERSION,
        "inputs": cfg.inputs,
        "columns": cfg.columns,
        "timezone": cfg.timezone,
        "repeat_window_us": cfg.repeat_window_us,
        "max_gap_us": cfg.max_gap_us,
        "max_span_us": cfg.max_span_us,
        "exclude_customers": cfg.exclude_customers,
        "pseudonym": cfg.pseudonym,
    });
    twox_hash::XxHash64::oneshot(0, shaping.to_string().as_bytes())
}

/// Which contact days a run writes.
#[derive(Debug, Clone)]
pub struct ContactDays {
    /// Day (days since the epoch) → the run that wrote it; only days whose
    /// file is in place.
    index: BTreeMap<i32, Stored>,
    fingerprint: u64,
    as_of_us: i64,
    repeat_window_us: i64,
    window_start_us: Option<i64>,
    tz: Tz,
}

/// The folder name of a day.
fn day_dir(day: i32) -> String {
    format!("date={}", from_epoch_day(day))
}

fn read_index(root: &Path) -> Result<BTreeMap<i32, Stored>> {
    let path = root.join(CONTACTS_DIR).join(INDEX);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let by_date: BTreeMap<String, Stored> =
        serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.clone(),
            source,
        })?;
    by_date
        .into_iter()
        .map(|(d, a)| {
            let date = NaiveDate::parse_from_str(&d, "%Y-%m-%d")
                .map_err(|e| Error::io(&path, std::io::Error::other(format!("day '{d}': {e}"))))?;
            Ok((epoch_day(date), a))
        })
        .collect()
}

impl ContactDays {
    /// The days the run of `cfg` (its as-of set) writes into output folder
    /// `root`.
    pub fn load(root: &Path, cfg: &PipelineConfig) -> Result<ContactDays> {
        let store = root.join(CONTACTS_DIR);
        let mut index = read_index(root)?;
        index.retain(|&day, _| store.join(day_dir(day)).join(PART).is_file());
        Ok(ContactDays {
            index,
            fingerprint: fingerprint(cfg),
            as_of_us: cfg.as_of_us.expect("a run into many runs has its as-of"),
            repeat_window_us: cfg.repeat_window_us,
            window_start_us: crate::ingest::Window::of(cfg).start_us,
            tz: cfg.tz(),
        })
    }

    /// Whether the run writes day `day` (days since the epoch, local).
    pub fn writes(&self, day: i32) -> bool {
        let date = from_epoch_day(day);
        let start = crate::time::day_start_us(self.tz, date);
        let end = date
            .succ_opt()
            .map(|n| crate::time::day_start_us(self.tz, n) - 1)
            .unwrap_or(i64::MAX);
        // whole from its start (a day the window cuts is left to the runs
        // that hold it all), and begun by the as-of
        if self.window_start_us.is_some_and(|s| start <= s) || start > self.as_of_us {
            return false;
        }
        match self.index.get(&day) {
            None => true,
            Some(stored) if stored.fingerprint != self.fingerprint => true,
            Some(stored) => {
                stored.as_of_us < end.saturating_add(self.repeat_window_us)
                    && stored.as_of_us <= self.as_of_us
            }
        }
    }
}

/// Queued parts per day writer before the split waits for it.
const WRITER_QUEUE: usize = 64;

/// Writes the batches of `rx` (the contacts table's rows, in its order)
/// into one file per day that `days` writes, under `dir`; returns the rows
/// written and the days.
///
/// One thread splits each batch by day (a stable counting sort: each day's
/// rows keep their order); up to `writers` threads encode, each the files
/// of its own days (day mod `writers`), so that the encoding of a whole
/// window's days runs in parallel.
pub(super) fn write_days(
    mut rx: tokio::sync::mpsc::Receiver<RecordBatch>,
    schema: SchemaRef,
    props: WriterProperties,
    dir: &Path,
    days: &ContactDays,
    writers: usize,
) -> Result<(u64, Vec<i32>)> {
    type Part = (i32, RecordBatch);
    let writers = writers.max(1);
    let mut queues = Vec::with_capacity(writers);
    let mut threads = Vec::with_capacity(writers);
    for _ in 0..writers {
        let (tx, parts) = std::sync::mpsc::sync_channel::<Part>(WRITER_QUEUE);
        let (schema, props, dir) = (schema.clone(), props.clone(), dir.to_path_buf());
        queues.push(tx);
        threads.push(std::thread::spawn(move || {
            write_day_files(parts, schema, props, &dir)
        }));
    }
    let mut decided: BTreeMap<i32, bool> = BTreeMap::new();
    let mut rows = 0u64;
    let mut split_error = None;
    'batches: while let Some(batch) = rx.blocking_recv() {
        let parts = match split_by_day(&batch) {
            Ok(p) => p,
            Err(e) => {
                split_error = Some(e);
                break;
            }
        };
        for (day, part) in parts {
            if !*decided.entry(day).or_insert_with(|| days.writes(day)) {
                continue;
            }
            rows += part.num_rows() as u64;
            if queues[day.rem_euclid(writers as i32) as usize]
                .send((day, part))
                .is_err()
            {
                // that writer failed: its error is reported below
                break 'batches;
            }
        }
    }
    drop(queues);
    let mut written = Vec::new();
    for t in threads {
        written.extend(t.join().map_err(|_| {
            Error::io(dir, std::io::Error::other("a contacts day writer panicked"))
        })??);
    }
    if let Some(e) = split_error {
        return Err(e);
    }
    written.sort_unstable();
    Ok((rows, written))
}

/// The rows of `batch` by contact day, each day's in their order.
fn split_by_day(batch: &RecordBatch) -> Result<Vec<(i32, RecordBatch)>> {
    let date = batch
        .column_by_name("date")
        .expect("the contacts table has a date")
        .as_primitive::<Date32Type>();
    let valid = || {
        (0..date.len())
            .filter(|&i| date.is_valid(i))
            .map(|i| date.value(i))
    };
    let (Some(min), Some(max)) = (valid().min(), valid().max()) else {
        return Ok(Vec::new());
    };
    // a counting sort over the batch's days
    let mut counts = vec![0u32; (max - min) as usize + 1];
    for d in valid() {
        counts[(d - min) as usize] += 1;
    }
    let mut next: Vec<u32> = counts
        .iter()
        .scan(0u32, |at, &c| {
            let start = *at;
            *at += c;
            Some(start)
        })
        .collect();
    let mut order = vec![0u32; counts.iter().sum::<u32>() as usize];
    for i in 0..date.len() {
        if date.is_valid(i) {
            let slot = &mut next[(date.value(i) - min) as usize];
            order[*slot as usize] = i as u32;
            *slot += 1;
        }
    }
    let sorted = take_record_batch(batch, &UInt32Array::from(order))?;
    let mut parts = Vec::new();
    let mut at = 0usize;
    for (k, &c) in counts.iter().enumerate() {
        if c > 0 {
            parts.push((min + k as i32, sorted.slice(at, c as usize)));
            at += c as usize;
        }
    }
    Ok(parts)
}

/// One day writer: the parts it is sent into one file per day under `dir`;
/// returns its days.
fn write_day_files(
    parts: std::sync::mpsc::Receiver<(i32, RecordBatch)>,
    schema: SchemaRef,
    props: WriterProperties,
    dir: &Path,
) -> Result<Vec<i32>> {
    struct Day {
        writer: ArrowWriter<std::fs::File>,
        path: PathBuf,
        pending: Vec<RecordBatch>,
        rows: usize,
    }
    let failed = |path: &Path, e: &dyn std::fmt::Display| {
        Error::io(path, std::io::Error::other(e.to_string()))
    };
    // (parts are gathered into batches of WRITE_ROWS: a part is a day's
    // share of one batch, often a few rows)
    let flush = |d: &mut Day| -> Result<()> {
        if d.rows > 0 {
            let batch = concat_batches(&schema, &d.pending)?;
            d.writer.write(&batch).map_err(|e| failed(&d.path, &e))?;
            d.pending.clear();
            d.rows = 0;
        }
        Ok(())
    };
    let mut open: BTreeMap<i32, Day> = BTreeMap::new();
    for (day, part) in parts {
        let d = match open.entry(day) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                let folder = dir.join(day_dir(day));
                std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
                let path = folder.join(PART);
                let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
                let writer = ArrowWriter::try_new(file, schema.clone(), Some(props.clone()))
                    .map_err(|e| failed(&path, &e))?;
                v.insert(Day {
                    writer,
                    path,
                    pending: Vec::new(),
                    rows: 0,
                })
            }
        };
        d.rows += part.num_rows();
        d.pending.push(part);
        if d.rows >= WRITE_ROWS {
            flush(d)?;
        }
    }
    let written: Vec<i32> = open.keys().copied().collect();
    for (_, mut d) in open {
        flush(&mut d)?;
        d.writer.close().map_err(|e| failed(&d.path, &e))?;
    }
    Ok(written)
}

/// Moves the day files a run wrote into `<run_dir>/contacts/` to
/// `ROOT/contacts/`, each replacing the day's earlier file in one rename,
/// then records them in the index as written as of `as_of_us` by a run of
/// [`fingerprint`] `fingerprint`; removes the run's folder of them.
pub fn publish(
    root: &Path,
    run_dir: &Path,
    days: &[NaiveDate],
    as_of_us: i64,
    fingerprint: u64,
) -> Result<()> {
    let stored = Stored {
        as_of_us,
        fingerprint,
    };
    let staged = run_dir.join(CONTACTS_DIR);
    let store = root.join(CONTACTS_DIR);
    std::fs::create_dir_all(&store).map_err(|e| Error::io(&store, e))?;
    let mut index = read_index(root)?;
    for &date in days {
        let day = epoch_day(date);
        let folder = store.join(day_dir(day));
        std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
        let from = staged.join(day_dir(day)).join(PART);
        let to = folder.join(PART);
        std::fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
        index.insert(day, stored);
    }
    let by_date: BTreeMap<String, Stored> = index
        .into_iter()
        .map(|(d, a)| (from_epoch_day(d).to_string(), a))
        .collect();
    let text = serde_json::to_string_pretty(&by_date)
        .map_err(|e| Error::io(store.join(INDEX), std::io::Error::other(e.to_string())))?;
    let partial = store.join(format!("{INDEX}.partial"));
    std::fs::write(&partial, text).map_err(|e| Error::io(&partial, e))?;
    std::fs::rename(&partial, store.join(INDEX)).map_err(|e| Error::io(store.join(INDEX), e))?;
    if staged.exists() {
        std::fs::remove_dir_all(&staged).map_err(|e| Error::io(&staged, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_splits_by_day_keeping_each_days_order() {
        use datafusion::arrow::array::{Date32Array, Int64Array};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let schema = std::sync::Arc::new(Schema::new(vec![
            Field::new("row", DataType::Int64, false),
            Field::new("date", DataType::Date32, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                std::sync::Arc::new(Int64Array::from_iter_values(0..7)),
                std::sync::Arc::new(Date32Array::from(vec![
                    Some(12),
                    Some(10),
                    Some(12),
                    None,
                    Some(10),
                    Some(12),
                    Some(14),
                ])),
            ],
        )
        .unwrap();
        let parts: Vec<(i32, Vec<i64>)> = split_by_day(&batch)
            .unwrap()
            .into_iter()
            .map(|(d, b)| {
                let rows = b
                    .column(0)
                    .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                (d, rows.values().to_vec())
            })
            .collect();
        assert_eq!(
            parts,
            vec![(10, vec![1, 4]), (12, vec![0, 2, 5]), (14, vec![6])]
        );
    }

    #[test]
    fn a_day_is_written_until_its_rows_are_final() {
        let tz = chrono_tz::UTC;
        let d = |y: u32| NaiveDate::from_ymd_opt(2026, 11, y).unwrap();
        let end = |x: NaiveDate| crate::time::day_start_us(tz, x.succ_opt().unwrap()) - 1;
        let day = 86_400_000_000;
        let stored = |as_of_us| Stored {
            as_of_us,
            fingerprint: 7,
        };
        let mut days = ContactDays {
            index: BTreeMap::new(),
            fingerprint: 7,
            as_of_us: end(d(10)),
            repeat_window_us: day,
            window_start_us: Some(end(d(10)) - 5 * day),
            tz,
        };
        // in the window, whole: written; before it or after the as-of: not
        assert!(days.writes(epoch_day(d(6))));
        assert!(!days.writes(epoch_day(d(5))));
        assert!(!days.writes(epoch_day(d(11))));
        // written as of the 10th: the 9th was final then, the 10th not
        days.index.insert(epoch_day(d(9)), stored(end(d(10))));
        days.index.insert(epoch_day(d(10)), stored(end(d(10))));
        assert!(!days.writes(epoch_day(d(9))));
        assert!(days.writes(epoch_day(d(10))));
        // a rerun of the 10th after a run as of the 11th wrote it: not
        days.index.insert(epoch_day(d(10)), stored(end(d(11))));
        assert!(!days.writes(epoch_day(d(10))));
        // a final day made with other parameters: written again
        days.index.insert(
            epoch_day(d(9)),
            Stored {
                as_of_us: end(d(10)),
                fingerprint: 8,
            },
        );
        assert!(days.writes(epoch_day(d(9))));
    }
}
