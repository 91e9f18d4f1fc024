//! How a bucket's annotated contacts wait between the first passes and the
//! second when a log has several buckets: in files of the bucket folder,
//! two per partition.
//!
//! Input: the annotated contacts cut to [`LATER_COLUMNS`] (the columns the
//! second passes and the outreach triggers read), one bucket at a time, and
//! the bucket's [`TextDictionaries`]. Output: the same batches read back,
//! column for column.
//!
//! Each batch is stored as two Arrow IPC batches ([`spilled_form`]): its rows
//! without the channel and reason texts (their codes give them back, in as
//! few bytes as the bucket's dictionaries allow) and without the columns
//! that repeat over a customer's rows ([`RUN_COLUMNS`]), and one row per
//! such run. [`ReadAhead`] reads the next bucket's files on a thread of its
//! own while one bucket is passed over.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::codes::{CODED_COLUMNS, TextDictionaries};
use crate::error::{Error, Result};
use crate::timeline::sorted::SortedContactsExec;

/// One bucket's annotated contacts between the first passes and the second:
/// in memory, or in files of the bucket folder (two per partition, see
/// [`spilled_form`]; the bucket's dictionaries give the texts of channel and
/// reason back); `Taken` once the second passes have them.
pub(crate) enum Kept {
    Held(Arc<SortedContactsExec>),
    Spilled(Vec<(PathBuf, PathBuf)>, TextDictionaries),
    Taken,
}

/// The columns of the annotated contacts that the passes and queries after
/// the ranking read (the occurrence and follow-up passes, the outreach
/// triggers, the frequent contacters a bucket's own fence left out), and
/// the partitions cut down to them (without copying).
pub(crate) const LATER_COLUMNS: &[&str] = &[
    "contact_id",
    "customer_id",
    "ts",
    "channel",
    "reason",
    "_customer_contacts",
    "is_repeat",
    "_latest_of_reason",
    "_row",
    "_channel_code",
    "_reason_code",
];

pub(crate) fn later_columns(
    schema: &SchemaRef,
    parts: &[Vec<RecordBatch>],
) -> Result<(SchemaRef, Vec<Vec<RecordBatch>>)> {
    let idx = LATER_COLUMNS
        .iter()
        .map(|c| schema.index_of(c))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    project_parts(schema, parts, &idx)
}

/// The schema and the partitions cut down to the columns `idx` (without
/// copying).
fn project_parts(
    schema: &SchemaRef,
    parts: &[Vec<RecordBatch>],
    idx: &[usize],
) -> Result<(SchemaRef, Vec<Vec<RecordBatch>>)> {
    let parts = parts
        .iter()
        .map(|p| {
            p.iter()
                .map(|b| b.project(idx))
                .collect::<std::result::Result<Vec<_>, _>>()
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((Arc::new(schema.project(idx)?), parts))
}

/// The columns of the annotated contacts that are the same over each
/// customer's run of rows: spill files keep them once per run.
const RUN_COLUMNS: [&str; 2] = ["customer_id", "_customer_contacts"];

/// Rows of a run in the runs file of [`spilled_form`].
const RUN_ROWS: &str = "_run_rows";

/// The schemas of the two spill files of [`spilled_form`] for annotated
/// contacts of `schema` and a bucket's `dictionaries`.
fn spilled_schemas(
    schema: &SchemaRef,
    dictionaries: &TextDictionaries,
) -> Result<(SchemaRef, SchemaRef)> {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let rows = schema
        .fields()
        .iter()
        .filter(|f| {
            let name = f.name().as_str();
            !CODED_COLUMNS.iter().any(|(text, _)| *text == name) && !RUN_COLUMNS.contains(&name)
        })
        .map(|f| match spilled_code_type(f.name(), dictionaries) {
            Some(t) => Arc::new(f.as_ref().clone().with_data_type(t)),
            None => f.clone(),
        })
        .collect::<Vec<_>>();
    let mut runs = RUN_COLUMNS
        .iter()
        .map(|c| Ok(schema.field_with_name(c)?.clone()))
        .collect::<Result<Vec<Field>>>()?;
    runs.push(Field::new(RUN_ROWS, DataType::UInt32, false));
    Ok((Arc::new(Schema::new(rows)), Arc::new(Schema::new(runs))))
}

/// The type a code column of [`CODED_COLUMNS`] is spilled as: the narrowest
/// unsigned integer that holds every code of its dictionary (`None`: not a
/// code column).
fn spilled_code_type(
    name: &str,
    dictionaries: &TextDictionaries,
) -> Option<datafusion::arrow::datatypes::DataType> {
    let c = CODED_COLUMNS.iter().position(|(_, code)| *code == name)?;
    // (the dictionaries in CODED_COLUMNS' order)
    let codes = [&dictionaries.channel, &dictionaries.reason][c].len();
    Some(crate::codes::storage_type(codes))
}

/// One batch of annotated contacts as it is spilled, in two parts that
/// [`from_spilled_form`] puts back together: the rows without the channel
/// and reason texts (their codes and the bucket's dictionaries give them
/// back) and without [`RUN_COLUMNS`], their codes in as few bytes as the
/// bucket's `dictionaries` allow; and the runs, one row per run of rows
/// with equal values of those columns (a customer's rows), with its number
/// of rows. Both cut the bytes written and read back by about a third.
fn spilled_form(
    batch: &RecordBatch,
    dictionaries: &TextDictionaries,
) -> Result<(RecordBatch, RecordBatch)> {
    use datafusion::arrow::array::{Array, AsArray, Int64Array, UInt32Array};
    use datafusion::arrow::compute::take;
    use datafusion::arrow::datatypes::Int64Type;
    let schema = batch.schema();
    let (rows_schema, runs_schema) = spilled_schemas(&schema, dictionaries)?;
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| spill_mismatch(format!("no column {name} to spill")))
    };
    let customer = column(RUN_COLUMNS[0])?.as_string::<i32>();
    let counts = column(RUN_COLUMNS[1])?.as_primitive::<Int64Type>();
    if customer.null_count() > 0 || counts.null_count() > 0 {
        return Err(spill_mismatch("a null customer to spill".into()));
    }
    let counts = counts.values();
    let n = batch.num_rows();
    let mut starts: Vec<u32> = Vec::new();
    for i in 0..n {
        if i == 0 || counts[i] != counts[i - 1] || customer.value(i) != customer.value(i - 1) {
            starts.push(i as u32);
        }
    }
    let lengths: Vec<u32> = starts
        .iter()
        .zip(starts.iter().skip(1).chain([&(n as u32)]))
        .map(|(a, b)| b - a)
        .collect();
    let starts = UInt32Array::from(starts);
    let runs = RecordBatch::try_new(
        runs_schema,
        vec![
            take(customer, &starts, None)?,
            Arc::new(Int64Array::from_iter_values(
                starts.values().iter().map(|s| counts[*s as usize]),
            )),
            Arc::new(UInt32Array::from(lengths)),
        ],
    )?;
    // (a code past its type is an error, not a null)
    let strict = datafusion::arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    let rows = rows_schema
        .fields()
        .iter()
        .map(|f| {
            let c = column(f.name())?;
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                Ok(datafusion::arrow::compute::cast_with_options(
                    c,
                    f.data_type(),
                    &strict,
                )?)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let rows = RecordBatch::try_new_with_options(
        rows_schema,
        rows,
        &datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(n)),
    )?;
    Ok((rows, runs))
}

/// A batch spilled as [`spilled_form`] (its `rows` and `runs`), back in
/// `schema`: the channel and reason texts from their codes and the bucket's
/// `dictionaries`, [`RUN_COLUMNS`] from the runs.
fn from_spilled_form(
    schema: &SchemaRef,
    rows: &RecordBatch,
    runs: &RecordBatch,
    dictionaries: &TextDictionaries,
) -> Result<RecordBatch> {
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{Int64Type, UInt32Type};
    let by_name = |batch: &RecordBatch, name: &str| {
        batch
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| spill_mismatch(format!("no column {name} read back")))
    };
    // the codes, spilled narrow, as wide as in `schema`
    let by_name_as = |batch: &RecordBatch, name: &str| {
        let c = by_name(batch, name)?;
        let want = schema.field_with_name(name)?.data_type();
        if c.data_type() == want {
            Ok(c)
        } else {
            Ok(datafusion::arrow::compute::cast(&c, want)?)
        }
    };
    let lengths = by_name(runs, RUN_ROWS)?;
    let lengths = lengths.as_primitive::<UInt32Type>().values();
    let n: usize = lengths.iter().map(|l| *l as usize).sum();
    if n != rows.num_rows() {
        return Err(spill_mismatch(format!(
            "{n} rows in runs for {} rows",
            rows.num_rows()
        )));
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let name = f.name().as_str();
            if let Some(c) = CODED_COLUMNS.iter().position(|(text, _)| *text == name) {
                // (the dictionaries in CODED_COLUMNS' order)
                let texts = [&dictionaries.channel, &dictionaries.reason][c];
                let codes = by_name_as(rows, CODED_COLUMNS[c].1)?;
                return Ok(crate::codes::decode_texts(
                    codes.as_primitive::<UInt32Type>(),
                    texts,
                )?);
            }
            if name == RUN_COLUMNS[0] {
                let ids = by_name(runs, name)?;
                return Ok(crate::codes::repeat_texts(ids.as_string::<i32>(), lengths)?);
            }
            if name == RUN_COLUMNS[1] {
                let counts = by_name(runs, name)?;
                let counts = counts.as_primitive::<Int64Type>().values();
                let mut values = Vec::with_capacity(n);
                for (count, len) in counts.iter().zip(lengths) {
                    values.extend(std::iter::repeat_n(*count, *len as usize));
                }
                return Ok(Arc::new(Int64Array::from(values)));
            }
            by_name_as(rows, name)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// One partition's spill files of [`spilled_form`] as read: the batches of
/// rows and of runs.
pub(crate) type SpilledPart = (Vec<RecordBatch>, Vec<RecordBatch>);

/// Reads the spill files (rows, runs) of each partition of a bucket.
fn read_spilled(files: &[(PathBuf, PathBuf)]) -> Result<Vec<SpilledPart>> {
    files
        .iter()
        .map(|(rows, runs)| {
            let rows = crate::buckets::read_file(rows)?;
            let runs = crate::buckets::read_file(runs)?;
            if rows.len() != runs.len() {
                return Err(spill_mismatch(format!(
                    "{} batches of rows and {} of runs",
                    rows.len(),
                    runs.len()
                )));
            }
            Ok((rows, runs))
        })
        .collect()
}

/// An error of spill files that do not fit together.
fn spill_mismatch(what: String) -> Error {
    Error::DataFusion(datafusion::error::DataFusionError::Internal(format!(
        "the spilled annotated contacts: {what}"
    )))
}

/// Writes bucket `b`'s annotated contacts (`parts`, of `schema`) to `dir`,
/// the partitions side by side on `pool`. Returns the files of each
/// partition and the bytes written.
pub(crate) fn write_bucket(
    pool: &rayon::ThreadPool,
    dir: &Path,
    b: usize,
    schema: &SchemaRef,
    parts: &[Vec<RecordBatch>],
    dictionaries: &TextDictionaries,
) -> Result<(Vec<(PathBuf, PathBuf)>, u64)> {
    use rayon::prelude::*;
    let (rows_schema, runs_schema) = spilled_schemas(schema, dictionaries)?;
    let written = pool.install(|| {
        parts
            .par_iter()
            .enumerate()
            .map(|(p, batches)| {
                let (rows, runs): (Vec<_>, Vec<_>) = batches
                    .iter()
                    .map(|b| spilled_form(b, dictionaries))
                    .collect::<Result<Vec<_>>>()?
                    .into_iter()
                    .unzip();
                let path = dir.join(format!("annotated-{b}-{p}.arrow"));
                let runs_path = dir.join(format!("runs-{b}-{p}.arrow"));
                let bytes = crate::buckets::spill(&path, &rows_schema, &rows)?
                    + crate::buckets::spill(&runs_path, &runs_schema, &runs)?;
                Ok(((path, runs_path), bytes))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let bytes = written.iter().map(|(_, n)| n).sum();
    Ok((written.into_iter().map(|(paths, _)| paths).collect(), bytes))
}

/// A bucket's files as read back into annotated contacts of `schema`, the
/// partitions decoded side by side on `pool`.
pub(crate) fn decode_bucket(
    pool: &rayon::ThreadPool,
    schema: &SchemaRef,
    read: Vec<SpilledPart>,
    dictionaries: &TextDictionaries,
) -> Result<SortedContactsExec> {
    use rayon::prelude::*;
    let parts = pool.install(|| {
        read.par_iter()
            .map(|(rows, runs)| {
                rows.iter()
                    .zip(runs)
                    .map(|(b, r)| from_spilled_form(schema, b, r, dictionaries))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()
    })?;
    drop(read);
    Ok(SortedContactsExec::try_new(schema.clone(), parts)?)
}

/// The next spilled bucket's files, read on a thread of its own while a
/// bucket is decoded and passed over (one read at a time: the device is the
/// bound). Dropped early (an error in the bucket before), it waits for the
/// read to end, so that no thread outlives the run reading its files.
#[derive(Default)]
pub(crate) struct ReadAhead(Option<(usize, std::thread::JoinHandle<Result<Vec<SpilledPart>>>)>);

impl ReadAhead {
    /// Starts reading bucket `b`'s `files`.
    pub fn start(&mut self, b: usize, files: Vec<(PathBuf, PathBuf)>) -> Result<()> {
        let dir = files
            .first()
            .and_then(|(p, _)| p.parent().map(Path::to_path_buf));
        let handle = std::thread::Builder::new()
            .name("recur-read".into())
            .spawn(move || read_spilled(&files))
            .map_err(|e| Error::io(dir.unwrap_or_default(), e))?;
        self.0 = Some((b, handle));
        Ok(())
    }

    /// Bucket `b`'s files: as read ahead, or read now.
    pub fn take(&mut self, b: usize, files: &[(PathBuf, PathBuf)]) -> Result<Vec<SpilledPart>> {
        match self.0.take() {
            Some((a, reading)) if a == b => reading
                .join()
                .map_err(|_| spill_mismatch("a read ahead panicked".into()))?,
            other => {
                self.0 = other;
                read_spilled(files)
            }
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        if let Some((_, reading)) = self.0.take() {
            // (its result is of no use any more; only its end is awaited)
            let _ = reading.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray, UInt32Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Annotated contacts as spilled and read back are the ones spilled:
    /// customers of one row and of many, ids short and past 16 bytes,
    /// null codes, an empty batch, and a customer whose rows a batch
    /// boundary splits.
    #[test]
    fn spilled_contacts_read_back_as_they_were() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("contact_id", DataType::Int64, false),
            Field::new("customer_id", DataType::Utf8, false),
            Field::new("channel", DataType::Utf8, true),
            Field::new("reason", DataType::Utf8, true),
            Field::new("_customer_contacts", DataType::Int64, false),
            Field::new("_channel_code", DataType::UInt32, true),
            Field::new("_reason_code", DataType::UInt32, true),
        ]));
        let dictionaries = TextDictionaries {
            channel: vec!["phone".into(), "a channel name past sixteen bytes".into()],
            reason: vec!["billing".into(), "r".into(), "x".into()],
        };
        let mut rng = StdRng::seed_from_u64(7);
        let mut rows: Vec<(String, i64, Option<u32>, Option<u32>)> = Vec::new();
        for c in 0..300 {
            let id = if c % 7 == 0 {
                format!("a customer id longer than sixteen bytes {c:04}")
            } else {
                format!("C{c:05}")
            };
            let n = if c % 3 == 0 {
                1
            } else {
                rng.random_range(1..9)
            };
            for _ in 0..n {
                let mut code = |k: u32| (!rng.random_bool(0.1)).then(|| rng.random_range(0..k));
                let (ch, re) = (code(2), code(3));
                rows.push((id.clone(), n as i64, ch, re));
            }
        }
        let text = |codes: &[Option<u32>], texts: &[String]| {
            StringArray::from(
                codes
                    .iter()
                    .map(|c| c.map(|c| texts[c as usize].clone()))
                    .collect::<Vec<_>>(),
            )
        };
        let batch_of = |rows: &[(String, i64, Option<u32>, Option<u32>)], first: i64| {
            let ch: Vec<Option<u32>> = rows.iter().map(|r| r.2).collect();
            let re: Vec<Option<u32>> = rows.iter().map(|r| r.3).collect();
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values(
                        (0..rows.len() as i64).map(|i| first + i),
                    )),
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
                    Arc::new(text(&ch, &dictionaries.channel)),
                    Arc::new(text(&re, &dictionaries.reason)),
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                    Arc::new(UInt32Array::from(ch)),
                    Arc::new(UInt32Array::from(re)),
                ],
            )
            .unwrap()
        };
        // batch boundaries at 0 (an empty batch), inside a customer's rows
        // and at the end
        let cut = rows.iter().position(|r| r.1 > 2).unwrap() + 1;
        let batches = [
            batch_of(&rows[..0], 0),
            batch_of(&rows[..cut], 0),
            batch_of(&rows[cut..], cut as i64),
        ];
        let dir = tempfile::tempdir().unwrap();
        let (rows_schema, runs_schema) = spilled_schemas(&schema, &dictionaries).unwrap();
        let (spilled_rows, spilled_runs): (Vec<_>, Vec<_>) = batches
            .iter()
            .map(|b| spilled_form(b, &dictionaries).unwrap())
            .unzip();
        assert!(spilled_rows.iter().all(|b| b.schema() == rows_schema));
        // the codes of 2 channels and 3 reasons in a byte each
        for code in ["_channel_code", "_reason_code"] {
            let t = rows_schema.field_with_name(code).unwrap().data_type();
            assert_eq!(t, &DataType::UInt8, "{code}");
        }
        assert!(spilled_runs.iter().all(|b| b.schema() == runs_schema));
        // one row per customer run, not per contact
        let runs: usize = spilled_runs.iter().map(|b| b.num_rows()).sum();
        assert_eq!(runs, 300 + 1, "300 customers, one split by a batch");
        let (rows_path, runs_path) = (dir.path().join("rows"), dir.path().join("runs"));
        crate::buckets::spill(&rows_path, &rows_schema, &spilled_rows).unwrap();
        crate::buckets::spill(&runs_path, &runs_schema, &spilled_runs).unwrap();
        let back_rows = crate::buckets::read_file(&rows_path).unwrap();
        let back_runs = crate::buckets::read_file(&runs_path).unwrap();
        assert_eq!(back_rows.len(), batches.len());
        for ((want, r), u) in batches.iter().zip(&back_rows).zip(&back_runs) {
            let got = from_spilled_form(&schema, r, u, &dictionaries).unwrap();
            assert_eq!(&got, want);
        }
    }

    /// Codes are spilled in the narrowest type for their dictionary, and a
    /// code past it fails the spill instead of becoming a null.
    #[test]
    fn spilled_codes_are_narrow_and_checked() {
        let texts = |n: usize| (0..n).map(|i| format!("t{i}")).collect::<Vec<_>>();
        for (n, want) in [
            (1, DataType::UInt8),
            (256, DataType::UInt8),
            (257, DataType::UInt16),
            (65_536, DataType::UInt16),
            (65_537, DataType::UInt32),
        ] {
            let d = TextDictionaries {
                channel: texts(1),
                reason: texts(n),
            };
            assert_eq!(spilled_code_type("_reason_code", &d), Some(want), "{n}");
            assert_eq!(
                spilled_code_type("_channel_code", &d),
                Some(DataType::UInt8)
            );
            assert_eq!(spilled_code_type("reason", &d), None);
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, false),
            Field::new("_customer_contacts", DataType::Int64, false),
            Field::new("_channel_code", DataType::UInt32, true),
            Field::new("_reason_code", DataType::UInt32, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(Int64Array::from(vec![1, 1])),
                Arc::new(UInt32Array::from(vec![Some(0), None])),
                Arc::new(UInt32Array::from(vec![Some(1), Some(256)])),
            ],
        )
        .unwrap();
        let small = TextDictionaries {
            channel: texts(1),
            reason: texts(2),
        };
        assert!(spilled_form(&batch, &small).is_err());
        let large = TextDictionaries {
            channel: texts(1),
            reason: texts(257),
        };
        assert!(spilled_form(&batch, &large).is_ok());
    }
}
