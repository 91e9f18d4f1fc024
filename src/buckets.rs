//! Buckets — how a log larger than memory is cut into parts that are sorted
//! and passed over one at a time.
//!
//! Input: the normalised batches ingest produces (schema `contacts_in`, see
//! [`crate::ingest`]), pushed into a [`Sink`] as they are read. Output:
//! [`Buckets`], from which the pipeline takes one bucket's contacts at a time.
//!
//! A log of at most `bucket_contacts` rows is one bucket, held in memory as
//! read (the usual case, and the fastest). A larger log is split into at most
//! `ceil(rows / bucket_contacts)` buckets, each a range of customer ids cut at
//! quantiles of a sample that ingest reads first ([`range_bounds`]), and each
//! an Arrow IPC file in a temporary folder (under `TMPDIR`, removed when the
//! run ends). The buckets in turn are the customers in order, so each
//! bucket's part of the sorted contacts table is written as soon as the
//! bucket is sorted, with no merge across buckets. Every customer's contacts
//! land in exactly one bucket, so the
//! per-customer passes need nothing from another bucket, and what they count
//! adds up across buckets; the pipeline keeps the columns of each bucket's
//! annotated contacts that the passes and queries after the ranking read in
//! files as well ([`spill`], [`read_file`]). So the memory a run needs follows
//! the bucket size, not the log size.
//!
//! In the bucket files channel and reason are codes into texts the sink
//! numbers as it first sees them, and an unmapped (all-null) agent column
//! is left out (`FileCodec`): a third fewer bytes to write and read back.
//! A bucket is taken back with channel and reason as dictionaries over
//! those texts, which the in-memory sort codes without hashing a text per
//! row, or as texts for DataFusion's sort under a memory limit.
//!
//! Row numbers: ingest reads a file's partitions concurrently, so while it
//! reads it cannot know how many rows come before a batch. It numbers rows
//! `(g << 46) | (k << 24) | i` — the `g`-th scan partition, its `k`-th batch,
//! the `i`-th row of that batch — which already sorts in input order, and
//! records each batch's size. [`RowNumbers`] turns that into the global input
//! row number (and the contact ids assigned from it) as a bucket is taken.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, Int64Array, UInt32Array, new_null_array,
};
use datafusion::arrow::buffer::{Buffer, ScalarBuffer};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, UInt32Type};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::convert::fb_to_schema;
use datafusion::arrow::ipc::reader::{FileDecoder, read_footer_length};
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::ipc::{Block, root_as_footer};
use datafusion::arrow::record_batch::RecordBatch;

use crate::codes::{TextCodes, Texts};
mod direct;
use direct::DirectWriter;

use crate::error::{Error, Result};

/// Contacts per bucket when neither `--bucket-contacts` nor a memory limit
/// says otherwise. Measured on a 100M-contact log: 14M-contact buckets
/// peaked at 6,415 MiB RSS, about 480 bytes per bucket contact with what a
/// run keeps across buckets; 12M kept it at 5,713 MiB, under 6 GiB, and
/// keeps logs up to 12M contacts in memory, in one bucket.
pub const DEFAULT_BUCKET_CONTACTS: u64 = 12_000_000;

/// Memory a run needs per contact of its largest bucket (measured: the
/// tables held peak at ~135 bytes per contact, and a run needs about 2.2×
/// that; rounded up). Under `--memory-limit` the bucket size is the limit
/// over this.
pub const BYTES_PER_CONTACT: u64 = 400;

/// Smallest bucket a memory limit leads to.
const MIN_BUCKET_CONTACTS: u64 = 10_000;

/// Bits of a provisional row number given to the row within its batch.
const ROW_BITS: u32 = 24;
/// Bits given to the batch within its scan partition.
const BATCH_BITS: u32 = 22;
/// Most scan partitions (files × partitions per file) a run can number.
pub const MAX_SCAN_PARTITIONS: u64 = 1 << (63 - ROW_BITS - BATCH_BITS);

/// Contacts per bucket for a run: `--bucket-contacts` if given, else what
/// `--memory-limit` leaves room for, else [`DEFAULT_BUCKET_CONTACTS`].
pub fn bucket_contacts(explicit: Option<u64>, memory_limit: Option<u64>) -> u64 {
    explicit
        .or_else(|| {
            memory_limit.map(|l| {
                (l / BYTES_PER_CONTACT).clamp(MIN_BUCKET_CONTACTS, DEFAULT_BUCKET_CONTACTS)
            })
        })
        .unwrap_or(DEFAULT_BUCKET_CONTACTS)
        .max(1)
}

/// Most buckets a run splits a log into (each is a file open while ingest
/// writes): a smaller `bucket_contacts` than that allows makes larger buckets.
pub const MAX_BUCKETS: u64 = 512;

/// Buckets for a log of `rows` rows (before exclusions) at `per_bucket`.
pub fn bucket_count(rows: u64, per_bucket: u64) -> usize {
    rows.div_ceil(per_bucket.max(1)).clamp(1, MAX_BUCKETS) as usize
}

/// The provisional number of row `i` of batch `k` of scan partition `g`.
pub fn provisional_row(g: u64, k: u64) -> Result<i64> {
    if g >= MAX_SCAN_PARTITIONS || k >= 1 << BATCH_BITS {
        return Err(Error::param(
            "inputs",
            format!(
                "too many files or batches to number rows (scan partition {g}, batch {k}); \
                 merge small files first"
            ),
        ));
    }
    Ok(((g << (BATCH_BITS + ROW_BITS)) | (k << ROW_BITS)) as i64)
}

/// Rows in one batch a scan may yield and still be numbered.
pub const MAX_BATCH_ROWS: usize = 1 << ROW_BITS;

/// Turns provisional row numbers into global input row numbers, and into
/// contact ids where the log has none.
#[derive(Debug, Default)]
pub struct RowNumbers {
    /// By provisional number >> ROW_BITS: the first global row of each
    /// batch, and the contact id of that row when ids are assigned.
    first_row: HashMap<i64, (i64, Option<i64>)>,
}

/// Contact ids assigned to a log without an id column: each file's key
/// (see [`crate::ingest`]) in the high 32 bits, the row's 1-based position
/// in its file in the low 32, so that an id does not change when another
/// file joins the input.
pub struct AssignedIds {
    /// Per file, in scan order: its first scan partition and its key.
    pub files: Vec<(u64, i64)>,
}

impl RowNumbers {
    /// From every batch read, `(provisional number of its first row, rows)`.
    pub fn new(mut batches: Vec<(i64, u64)>, ids: Option<&AssignedIds>) -> Self {
        batches.sort_unstable();
        let mut next = 0i64;
        // (file index, its first global row)
        let mut file: Option<(usize, i64)> = None;
        let first_row = batches
            .into_iter()
            .map(|(key, rows)| {
                let first = next;
                next += rows as i64;
                let id = ids.map(|ids| {
                    let g = (key as u64) >> (BATCH_BITS + ROW_BITS);
                    let f = ids.files.partition_point(|(first_g, _)| *first_g <= g) - 1;
                    let start = match file {
                        Some((at, start)) if at == f => start,
                        _ => {
                            file = Some((f, first));
                            first
                        }
                    };
                    (ids.files[f].1 << 32) + (first - start) + 1
                });
                (key >> ROW_BITS, (first, id))
            })
            .collect();
        RowNumbers { first_row }
    }

    /// `batch` with global row numbers (and contact ids, where assigned).
    /// Every row of `batch` must come from one batch of the scan, as every
    /// batch ingest pushes and every slice of one does.
    pub fn renumber(&self, batch: RecordBatch) -> Result<RecordBatch> {
        if batch.num_rows() == 0 {
            return Ok(batch);
        }
        let schema = batch.schema();
        let row_idx = schema.index_of("_row")?;
        let rows = batch.column(row_idx).as_primitive::<Int64Type>();
        let key = rows.value(0) >> ROW_BITS;
        let (first, first_id) = *self.first_row.get(&key).ok_or_else(|| {
            datafusion::error::DataFusionError::Internal(format!(
                "no row numbers recorded for scan batch {key}"
            ))
        })?;
        let mask = (1i64 << ROW_BITS) - 1;
        let global = Int64Array::from_iter_values(rows.values().iter().map(|v| first + (v & mask)));
        let mut columns = batch.columns().to_vec();
        if let Some(first_id) = first_id {
            let id_idx = schema.index_of("contact_id")?;
            columns[id_idx] = Arc::new(Int64Array::from_iter_values(
                rows.values().iter().map(|v| first_id + (v & mask)),
            ));
        }
        columns[row_idx] = Arc::new(global);
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

/// The upper bounds that cut customer ids into at most `buckets` ranges of
/// about equal contacts: quantiles of `sample` (ids drawn in proportion to
/// their contacts), without repeats, so that a customer with a great share
/// of the contacts makes fewer, not empty, buckets. Bucket `b` holds the ids
/// from bound `b - 1` (included) to bound `b` (excluded).
pub fn range_bounds(mut sample: Vec<String>, buckets: usize) -> Vec<String> {
    sample.sort_unstable();
    let mut bounds: Vec<String> = Vec::with_capacity(buckets.saturating_sub(1));
    for i in 1..buckets {
        let Some(id) = sample.get(i * sample.len() / buckets) else {
            break;
        };
        if bounds.last().is_none_or(|last| last < id) && sample.first() < Some(id) {
            bounds.push(id.clone());
        }
    }
    bounds
}

/// The bucket of a customer id, given the buckets' upper bounds.
pub fn bucket_of(bounds: &[String], customer: &str) -> usize {
    bounds.partition_point(|b| b.as_str() <= customer)
}

/// Where ingest puts the normalised batches; shared by its reading tasks.
pub struct Sink {
    schema: SchemaRef,
    inner: SinkInner,
    scanned: Mutex<Vec<(i64, u64)>>,
}

enum SinkInner {
    Memory(Mutex<Vec<RecordBatch>>),
    Files {
        dir: tempfile::TempDir,
        writers: Vec<Mutex<FileWriter<DirectWriter>>>,
        rows: Vec<std::sync::atomic::AtomicU64>,
        bounds: Vec<String>,
        codec: FileCodec,
        /// The texts behind each coded column's codes, as first seen.
        texts: Vec<Mutex<Texts>>,
    },
}

/// How contacts are stored in the bucket files: the columns of
/// [`FileCodec::CODED`] as codes (UInt32, null where the text is) into texts
/// the sink keeps, and the agent column left out when no agent column is
/// mapped (all null): about a third fewer bytes to write and read back.
#[derive(Debug, Clone)]
struct FileCodec {
    /// The contacts' schema (`contacts_in`).
    schema: SchemaRef,
    /// The files' schema.
    file_schema: SchemaRef,
    with_agent: bool,
}

impl FileCodec {
    /// The text columns stored as codes.
    const CODED: [&str; 2] = ["channel", "reason"];

    fn new(schema: SchemaRef, with_agent: bool) -> Self {
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .filter(|f| with_agent || f.name() != "agent")
            .map(|f| {
                if Self::CODED.contains(&f.name().as_str()) {
                    Field::new(f.name(), DataType::UInt32, true)
                } else {
                    f.as_ref().clone()
                }
            })
            .collect();
        FileCodec {
            file_schema: Arc::new(Schema::new(fields)),
            schema,
            with_agent,
        }
    }

    /// `batch` (schema `contacts_in`) as stored: each coded column's texts
    /// numbered in `texts`, a batch's few distinct texts looked up there.
    fn encode(&self, batch: &RecordBatch, texts: &[Mutex<Texts>]) -> Result<RecordBatch> {
        let mut columns = Vec::with_capacity(self.file_schema.fields().len());
        for (field, array) in self.schema.fields().iter().zip(batch.columns()) {
            let name = field.name().as_str();
            if let Some(c) = Self::CODED.iter().position(|n| *n == name) {
                let values = array.as_string::<i32>();
                let mut local = TextCodes::default();
                let codes: Vec<u32> = (0..values.len()).map(|i| local.code(values, i)).collect();
                let global: Vec<u32> = {
                    let mut t = texts[c].lock().expect("no task panicked holding it");
                    local.values().iter().map(|v| t.code(v)).collect()
                };
                let codes: Vec<u32> = codes
                    .into_iter()
                    .map(|k| global.get(k as usize).copied().unwrap_or(0))
                    .collect();
                columns.push(Arc::new(UInt32Array::new(
                    ScalarBuffer::from(codes),
                    values.nulls().cloned(),
                )) as ArrayRef);
            } else if name != "agent" || self.with_agent {
                columns.push(array.clone());
            }
        }
        Ok(RecordBatch::try_new(self.file_schema.clone(), columns)?)
    }

    /// A stored `batch` with the schema `contacts_in` again, but for each
    /// coded column a dictionary over `values` (its texts, by code), or,
    /// with `as_text`, the texts themselves.
    fn decode(
        &self,
        batch: &RecordBatch,
        values: &[ArrayRef],
        as_text: bool,
    ) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        let mut fields = Vec::with_capacity(self.schema.fields().len());
        let mut stored = batch.columns().iter();
        for field in self.schema.fields() {
            let name = field.name().as_str();
            if name == "agent" && !self.with_agent {
                columns.push(new_null_array(field.data_type(), n));
                fields.push(field.as_ref().clone());
                continue;
            }
            let array = stored.next().expect("a stored column per field").clone();
            match Self::CODED.iter().position(|c| *c == name) {
                Some(c) => {
                    let keys = array.as_primitive::<UInt32Type>().clone();
                    let dict: ArrayRef = Arc::new(DictionaryArray::<UInt32Type>::try_new(
                        keys,
                        values[c].clone(),
                    )?);
                    if as_text {
                        columns.push(cast(&dict, &DataType::Utf8)?);
                        fields.push(field.as_ref().clone());
                    } else {
                        fields.push(
                            field
                                .as_ref()
                                .clone()
                                .with_data_type(dict.data_type().clone()),
                        );
                        columns.push(dict);
                    }
                }
                None => {
                    columns.push(array);
                    fields.push(field.as_ref().clone());
                }
            }
        }
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }
}

impl Sink {
    /// A sink for the buckets `bounds` cut customer ids into (see
    /// [`range_bounds`]; none: one bucket, in memory).
    /// Without `with_agent` (no agent column mapped: all null), the bucket
    /// files leave the agent column out.
    pub fn new(schema: SchemaRef, bounds: Vec<String>, with_agent: bool) -> Result<Sink> {
        let buckets = bounds.len() + 1;
        let inner = if buckets <= 1 {
            SinkInner::Memory(Mutex::new(Vec::new()))
        } else {
            let dir = spill_dir()?;
            // a buffer per bucket file, 64 MiB over all of them at most
            let capacity = ((64 << 20) / buckets).clamp(64 << 10, SPILL_BUFFER);
            let codec = FileCodec::new(schema.clone(), with_agent);
            let writers = (0..buckets)
                .map(|b| {
                    let path = bucket_path(dir.path(), b);
                    let file =
                        DirectWriter::create(&path, capacity).map_err(|e| Error::io(&path, e))?;
                    Ok(Mutex::new(FileWriter::try_new(file, &codec.file_schema)?))
                })
                .collect::<Result<Vec<_>>>()?;
            SinkInner::Files {
                dir,
                writers,
                rows: (0..buckets).map(|_| Default::default()).collect(),
                bounds,
                codec,
                texts: FileCodec::CODED
                    .iter()
                    .map(|_| Default::default())
                    .collect(),
            }
        };
        Ok(Sink {
            schema,
            inner,
            scanned: Mutex::new(Vec::new()),
        })
    }

    /// Records the batches one reading task scanned: (provisional number of
    /// the first row, rows), excluded rows included.
    pub fn scanned(&self, batches: Vec<(i64, u64)>) {
        self.scanned
            .lock()
            .expect("no task panicked holding it")
            .extend(batches);
    }

    /// Adds normalised contacts (all from one scan batch).
    pub fn push(&self, batch: RecordBatch) -> Result<()> {
        match &self.inner {
            SinkInner::Memory(m) => m.lock().expect("no task panicked holding it").push(batch),
            SinkInner::Files {
                writers,
                rows,
                bounds,
                codec,
                texts,
                ..
            } => {
                let stored = codec.encode(&batch, texts)?;
                let customer = batch
                    .column_by_name("customer_id")
                    .expect("contacts_in schema")
                    .as_string::<i32>();
                let mut rows_of: Vec<Vec<u32>> = vec![Vec::new(); writers.len()];
                for i in 0..batch.num_rows() {
                    rows_of[bucket_of(bounds, customer.value(i))].push(i as u32);
                }
                for (b, idx) in rows_of.into_iter().enumerate() {
                    if idx.is_empty() {
                        continue;
                    }
                    let part = take_record_batch(&stored, &UInt32Array::from(idx))?;
                    rows[b].fetch_add(part.num_rows() as u64, std::sync::atomic::Ordering::Relaxed);
                    writers[b]
                        .lock()
                        .expect("no task panicked holding it")
                        .write(&part)?;
                }
            }
        }
        Ok(())
    }

    /// Closes the bucket files and numbers the rows.
    pub fn finish(self, assigned_ids: Option<&AssignedIds>) -> Result<Buckets> {
        let scanned = self
            .scanned
            .into_inner()
            .expect("no task panicked holding it");
        let numbers = RowNumbers::new(scanned, assigned_ids);
        let store = match self.inner {
            SinkInner::Memory(m) => {
                let batches = m.into_inner().expect("no task panicked holding it");
                Store::Memory(
                    batches
                        .into_iter()
                        .map(|b| numbers.renumber(b))
                        .collect::<Result<Vec<_>>>()?,
                )
            }
            SinkInner::Files {
                dir,
                writers,
                rows,
                codec,
                texts,
                ..
            } => {
                for (b, w) in writers.into_iter().enumerate() {
                    let path = bucket_path(dir.path(), b);
                    w.into_inner()
                        .expect("no task panicked holding it")
                        .into_inner()?
                        .finish()
                        .map_err(|e| Error::io(&path, e))?;
                }
                Store::Files {
                    rows: rows.into_iter().map(|r| r.into_inner()).collect(),
                    dir: Arc::new(dir),
                    codec,
                    values: texts
                        .into_iter()
                        .map(|t| {
                            let t = t.into_inner().expect("no task panicked holding it");
                            Arc::new(t.into_values()) as ArrayRef
                        })
                        .collect(),
                }
            }
        };
        Ok(Buckets {
            schema: self.schema,
            store,
            numbers,
        })
    }
}

/// A temporary folder for bucket files, under `TMPDIR`.
fn spill_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("recur-buckets-")
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))
}

#[derive(Debug)]
enum Store {
    Memory(Vec<RecordBatch>),
    Files {
        dir: Arc<tempfile::TempDir>,
        rows: Vec<u64>,
        codec: FileCodec,
        /// The texts of each of [`FileCodec::CODED`], by code.
        values: Vec<ArrayRef>,
    },
}

/// The normalised contacts, by bucket.
#[derive(Debug)]
pub struct Buckets {
    schema: SchemaRef,
    store: Store,
    numbers: RowNumbers,
}

impl Buckets {
    /// One bucket of the contacts `batches` (of `schema`, numbered).
    pub fn from_batches(schema: SchemaRef, batches: Vec<RecordBatch>) -> Buckets {
        Buckets {
            schema,
            store: Store::Memory(batches),
            numbers: RowNumbers::default(),
        }
    }

    /// Number of buckets.
    pub fn len(&self) -> usize {
        match &self.store {
            Store::Memory(_) => 1,
            Store::Files { rows, .. } => rows.len(),
        }
    }

    /// Whether there are no buckets (never: an empty log is one empty bucket).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The folder the bucket files are in (None: in memory), for the
    /// pipeline's own spill files.
    pub fn dir(&self) -> Option<Arc<tempfile::TempDir>> {
        match &self.store {
            Store::Memory(_) => None,
            Store::Files { dir, .. } => Some(dir.clone()),
        }
    }

    /// Contacts in each bucket.
    pub fn rows(&self) -> Vec<u64> {
        match &self.store {
            Store::Memory(b) => vec![b.iter().map(|b| b.num_rows() as u64).sum()],
            Store::Files { rows, .. } => rows.clone(),
        }
    }

    /// The schema of the contacts.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Takes bucket `b`'s contacts, renumbered, dealt into `partitions`
    /// lists of batches (the bucket's file is removed). Read from a file,
    /// channel and reason are dictionaries over the log's texts
    /// (`Dictionary(UInt32, Utf8)`, which the in-memory sort reads as such),
    /// or, with `as_text`, texts as in [`Buckets::schema`].
    pub fn take(
        &mut self,
        b: usize,
        partitions: usize,
        as_text: bool,
    ) -> Result<Vec<Vec<RecordBatch>>> {
        let batches = match &mut self.store {
            Store::Memory(batches) => std::mem::take(batches),
            Store::Files {
                dir, codec, values, ..
            } => {
                let path = bucket_path(dir.path(), b);
                let batches = read_file(&path)?
                    .into_iter()
                    .map(|b| codec.decode(&self.numbers.renumber(b)?, values, as_text))
                    .collect::<Result<Vec<_>>>()?;
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                batches
            }
        };
        let n = partitions.max(1);
        let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); n];
        for (i, b) in batches.into_iter().enumerate() {
            parts[i % n].push(b);
        }
        Ok(parts)
    }
}

/// The buffer a spill file is written through (see `direct`).
const SPILL_BUFFER: usize = 4 << 20;

/// The file of bucket `b` in `dir`.
fn bucket_path(dir: &Path, b: usize) -> PathBuf {
    dir.join(format!("bucket-{b}.arrow"))
}

/// Writes `batches` to an Arrow IPC file at `path` (around the page cache,
/// see `direct`); returns its size.
pub fn spill(path: &Path, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<u64> {
    let file = DirectWriter::create(path, SPILL_BUFFER).map_err(|e| Error::io(path, e))?;
    let mut w = FileWriter::try_new(file, schema)?;
    for b in batches {
        w.write(b)?;
    }
    w.into_inner()?.finish().map_err(|e| Error::io(path, e))
}

/// Reads every batch of an Arrow IPC file written by [`spill`] or a
/// [`Sink`]: the file is read whole into one buffer (around the page cache,
/// see `direct`),
/// and the batches' arrays point into it, which lives as
/// long as any of them.
pub fn read_file(path: &Path) -> Result<Vec<RecordBatch>> {
    let whole = direct::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |what: String| ArrowError::IpcError(format!("{}: {what}", path.display()));
    let n = whole.len();
    if n < 10 {
        return Err(bad(format!("{n} bytes, too short for an Arrow IPC file")).into());
    }
    let trailer: [u8; 10] = whole[n - 10..].try_into().expect("10 bytes");
    let footer_len = read_footer_length(trailer).map_err(|e| bad(e.to_string()))?;
    let footer = n
        .checked_sub(10 + footer_len)
        .ok_or_else(|| bad(format!("a footer of {footer_len} bytes in {n}")))?;
    let footer = root_as_footer(&whole[footer..n - 10]).map_err(|e| bad(e.to_string()))?;
    let schema = footer
        .schema()
        .ok_or_else(|| bad("no schema in the footer".into()))?;
    let mut decoder = FileDecoder::new(Arc::new(fb_to_schema(schema)), footer.version());
    // each block its own buffer over the mapping: a batch's arrays then
    // share one buffer of the batch's own size, which is what memory
    // accounting (per distinct buffer) counts, not the whole file per batch
    let block_data = |block: &Block| -> Result<Buffer> {
        let start = block.offset() as usize;
        let end = start + block.metaDataLength() as usize + block.bodyLength() as usize;
        if end > n {
            return Err(bad(format!("a block at {start}..{end} of {n} bytes")).into());
        }
        Ok(Buffer::from(whole.slice(start..end)))
    };
    for block in footer.dictionaries().iter().flatten() {
        decoder
            .read_dictionary(block, &block_data(block)?)
            .map_err(|e| bad(e.to_string()))?;
    }
    let mut batches = Vec::new();
    for block in footer.recordBatches().iter().flatten() {
        if let Some(batch) = decoder
            .read_record_batch(block, &block_data(block)?)
            .map_err(|e| bad(e.to_string()))?
        {
            batches.push(batch);
        }
    }
    Ok(batches)
}

#[cfg(test)]
mod tests;
