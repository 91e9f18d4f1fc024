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
/// and session windows, the excluded customers and recur's version. Two
/// runs with equal fingerprints write a final day the same way.
pub fn fingerprint(cfg: &PipelineConfig) -> u64 {
    let shaping = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "inputs": cfg.inputs,
        "columns": cfg.columns,
        "timezone": cfg.timezone,
        "repeat_window_us": cfg.repeat_window_us,
        "max_gap_us": cfg.max_gap_us,
        "max_span_us": cfg.max_span_us,
        "exclude_customers": cfg.exclude_customers,
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

fn epoch_day(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date")).num_days() as i32
}

fn day_date(day: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date") + chrono::Duration::days(day as i64)
}

/// The folder name of a day.
fn day_dir(day: i32) -> String {
    format!("date={}", day_date(day))
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
        let date = day_date(day);
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

/// Writes the batches of `rx` (the contacts table's rows, in its order)
/// into one file per day that `days` writes, under `dir`; returns the rows
/// written and the days.
pub(super) fn write_days(
    mut rx: tokio::sync::mpsc::Receiver<RecordBatch>,
    schema: SchemaRef,
    props: WriterProperties,
    dir: &Path,
    days: &ContactDays,
) -> Result<(u64, Vec<i32>)> {
    struct Day {
        writer: ArrowWriter<std::fs::File>,
        path: PathBuf,
        pending: Vec<RecordBatch>,
        rows: usize,
    }
    let failed = |path: &Path, e: &dyn std::fmt::Display| {
        Error::io(path, std::io::Error::other(e.to_string()))
    };
    let mut open: BTreeMap<i32, Day> = BTreeMap::new();
    let mut rows = 0u64;
    let flush = |d: &mut Day| -> Result<()> {
        if d.rows > 0 {
            let batch = concat_batches(&schema, &d.pending)?;
            d.writer.write(&batch).map_err(|e| failed(&d.path, &e))?;
            d.pending.clear();
            d.rows = 0;
        }
        Ok(())
    };
    while let Some(batch) = rx.blocking_recv() {
        let date = batch
            .column_by_name("date")
            .expect("the contacts table has a date")
            .as_primitive::<Date32Type>();
        // each day's rows of the batch, in order
        let mut rows_of: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
        for i in 0..date.len() {
            if date.is_valid(i) {
                rows_of.entry(date.value(i)).or_default().push(i as u32);
            }
        }
        for (day, idx) in rows_of {
            if !open.contains_key(&day) && !days.writes(day) {
                continue;
            }
            let part = take_record_batch(&batch, &UInt32Array::from(idx))?;
            rows += part.num_rows() as u64;
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
    }
    let written: Vec<i32> = open.keys().copied().collect();
    for (_, mut d) in open {
        flush(&mut d)?;
        d.writer.close().map_err(|e| failed(&d.path, &e))?;
    }
    Ok((rows, written))
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
        .map(|(d, a)| (day_date(d).to_string(), a))
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

/// A day (days since the epoch) as a date.
pub fn date_of(day: i32) -> NaiveDate {
    day_date(day)
}

#[cfg(test)]
mod tests {
    use super::*;

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
