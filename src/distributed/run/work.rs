//! What a cluster run's executors do: each task of [`super::task::Task`]
//! over its file or bucket, with the stages a run on one machine runs
//! ([`crate::ingest::read_file`], [`crate::stages::first_pass::run`],
//! [`crate::stages::second_pass::bucket`], the contacts table's writer).
//!
//! Input: the [`Spec`] and the task's file or bucket. Output: a one-row
//! batch per task ("done", with a JSON result where the client needs one)
//! and, under the staging folder, per bucket `b{b}/`: the annotated
//! contacts (`part-P.arrow`, one per partition of the pass), the first
//! passes' counts (`TABLE.arrow` and `first.json`), the second passes'
//! rows (`second/`). Files are written whole under another name and
//! renamed, and a task run again starts its folder afresh.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, Int64Array, RecordBatch, StringArray, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::{Int64Type, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use super::Spec;
use super::task::{BUCKET_COLUMN, done_schema};
use crate::buckets::Buckets;
use crate::contacters::Contacters;
use crate::error::{Error, Result};
use crate::ingest::{self, FileRead};
use crate::report::TableInfo;
use crate::session::{NoProgress, RunSession};
use crate::stages::first_pass::{self, ContactsTo, Counted};
use crate::stages::second_pass;
use crate::stages::{Beside, spill};
use crate::timeline::sorted::SortedContactsExec;

/// A one-row result: `what` done, with `result` (JSON).
pub(super) fn done(what: &str, n: usize, result: String) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        done_schema(what),
        vec![
            Arc::new(Int64Array::from(vec![n as i64])),
            Arc::new(StringArray::from(vec![result])),
        ],
    )?)
}

pub(super) fn to_json<T: Serialize>(path: &Path, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// The JSON file at `path`, read.
pub(super) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    from_json(path, &text)
}

/// Reads file `j` of the log into a bucket of its own: its contacts,
/// numbered within the file, and what reading it gave.
async fn read_one(spec: &Spec, j: usize) -> Result<(Vec<RecordBatch>, FileRead)> {
    let cfg = &spec.cfg;
    let contact_id = spec.contacts_in().field_with_name("contact_id")?.clone();
    let prep = ingest::prepare_file(cfg, &spec.files[j], spec.reads_ids, contact_id.data_type())?;
    let sink = Arc::new(crate::buckets::Sink::new(
        prep.schema.clone(),
        Vec::new(),
        cfg.columns.agent.is_some(),
    )?);
    let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ctx = crate::session::session(cfg)?;
    let file = ingest::read_file(&ctx, cfg, &prep, 0, 0, &sink, &read).await?;
    let assigned = ingest::assigned_ids(&prep, 0..1, vec![0])?;
    let sink = Arc::into_inner(sink).expect("every reading task has ended");
    let mut buckets = sink.finish(assigned.as_ref())?;
    let batches = buckets.take(0, 1, true)?.into_iter().flatten().collect();
    Ok((batches, file))
}

/// Job 1's task: file `j`'s counts.
pub(super) async fn read_stats(spec: &Spec, j: usize) -> Result<RecordBatch> {
    let (_, file) = read_one(spec, j).await?;
    done("file", j, to_json(&spec.staging, &file)?)
}

/// Job 2's read: file `j`'s contacts, their row numbers made the log's
/// (the file's index in the high bits: files in order, rows in order
/// within each) and their bucket's key added.
pub(super) async fn read_contacts(
    spec: &Spec,
    j: usize,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    let (batches, _) = read_one(spec, j).await?;
    let offset = (j as i64) << FILE_ROW_BITS;
    batches
        .into_iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| {
            let mut columns = b.columns().to_vec();
            let row_idx = b.schema().index_of("_row")?;
            let rows = b.column(row_idx).as_primitive::<Int64Type>();
            columns[row_idx] = Arc::new(Int64Array::from_iter_values(
                rows.values().iter().map(|r| offset | r),
            ));
            let customer = b
                .column_by_name("customer_id")
                .expect("contacts_in")
                .as_string::<i32>();
            columns.push(Arc::new(Int64Array::from_iter_values(customer.iter().map(
                |c| spec.keys[crate::buckets::bucket_of(&spec.bounds, c.unwrap_or(""))],
            ))));
            Ok(RecordBatch::try_new(schema.clone(), columns)?)
        })
        .collect()
}

/// Bits of a row number for the row within its file.
const FILE_ROW_BITS: u32 = 40;

/// The first passes over every bucket in `batches` (one partition of the
/// shuffle by bucket), each in turn.
pub(super) async fn first_passes(spec: &Spec, batches: Vec<RecordBatch>) -> Result<RecordBatch> {
    let bucket_of: std::collections::HashMap<i64, usize> =
        spec.keys.iter().enumerate().map(|(b, k)| (*k, b)).collect();
    let mut by_bucket: BTreeMap<usize, Vec<RecordBatch>> = BTreeMap::new();
    for batch in batches.iter().filter(|b| b.num_rows() > 0) {
        let keys = batch
            .column_by_name(BUCKET_COLUMN)
            .expect("the read's output")
            .as_primitive::<Int64Type>();
        let contacts = batch.project(&(0..batch.num_columns() - 1).collect::<Vec<_>>())?;
        // (rows in order within each bucket)
        let mut rows: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
        for (i, key) in keys.values().iter().enumerate() {
            let b = *bucket_of.get(key).ok_or_else(|| Error::Cluster {
                reason: format!("a contact of no bucket ({key})"),
            })?;
            rows.entry(b).or_default().push(i as u32);
        }
        for (b, idx) in rows {
            let part = take_record_batch(&contacts, &UInt32Array::from(idx))?;
            by_bucket.entry(b).or_default().push(part);
        }
    }
    let mut listed = Vec::new();
    for (b, contacts) in by_bucket {
        listed.push((b, first_bucket(spec, b, contacts).await?));
    }
    done("buckets", listed.len(), to_json(&spec.staging, &listed)?)
}

/// What one bucket's first passes staged besides the tables' rows.
#[derive(Serialize, Deserialize)]
pub(super) struct FirstStaged {
    pub(super) contacts: u64,
    /// Batches per partition of each counted table.
    pub(super) parts: BTreeMap<String, Vec<usize>>,
    pub(super) caps: BTreeMap<String, u64>,
    pub(super) contacters: Contacters,
    pub(super) sort_spills: (u64, u64),
}

/// The counted tables a bucket's first passes give, by their file names.
pub(super) fn counted_tables(
    c: &mut Counted,
) -> [(&'static str, &mut crate::session::Collected); 5] {
    [
        ("repeat_counts", &mut c.repeat_counts),
        ("reason_days", &mut c.reason_days),
        ("reason_precedents", &mut c.reason_precedents),
        ("failure_counts", &mut c.failure_counts),
        ("pair_counts", &mut c.pair_counts),
    ]
}

/// Bucket `b`'s first passes over `contacts`, staged in its folder (also
/// run by the client for a bucket no contact fell in). Returns its
/// contacts.
pub(super) async fn first_bucket(spec: &Spec, b: usize, contacts: Vec<RecordBatch>) -> Result<u64> {
    let cfg = &spec.cfg;
    let attempt = Attempt::new(&spec.staging, &format!("b{b}"))?;
    let dir = attempt.dir.clone();
    let n: u64 = contacts.iter().map(|c| c.num_rows() as u64).sum();
    let mut s = RunSession::new(cfg)?;
    let mut beside = Beside {
        null_check: None,
        trends: spec.trends(),
    };
    let buckets = Buckets::from_batches(spec.contacts_in(), contacts);
    let first = first_pass::run(
        &mut s,
        cfg,
        buckets,
        &spec.params(),
        &mut beside,
        ContactsTo::Staged(dir.clone()),
        &NoProgress,
    )
    .await?;
    let mut counted = first.counted;
    let mut parts = BTreeMap::new();
    for (name, table) in counted_tables(&mut counted) {
        let (schema, p) = std::mem::take(table).into_parts();
        let schema = schema.expect("one bucket passed");
        parts.insert(name.to_string(), p.iter().map(Vec::len).collect());
        let batches: Vec<RecordBatch> = p.into_iter().flatten().collect();
        write_ipc(&dir.join(format!("{name}.arrow")), &schema, &batches)?;
    }
    write_rows(&dir.join("exposure.arrow"), &counted.exposure_rows)?;
    if let Some(trends) = beside.trends.as_mut() {
        for (i, rows) in trends.take_rows().into_iter().enumerate() {
            write_rows(
                &dir.join(format!("trends-{i}-pair_counts.arrow")),
                &rows.pair_counts,
            )?;
            write_rows(
                &dir.join(format!("trends-{i}-exposure.arrow")),
                &rows.exposure,
            )?;
        }
    }
    let staged = FirstStaged {
        contacts: n,
        parts,
        caps: counted.caps,
        contacters: counted.contacters,
        sort_spills: counted.sort_spills,
    };
    let path = dir.join("first.json");
    write_atomic(&path, to_json(&path, &staged)?.as_bytes())?;
    attempt.publish(&spec.bucket_dir(b))?;
    Ok(n)
}

/// A task attempt's own folder, published under its final name once every
/// file is in it. Ballista can run a task again while an attempt it gave
/// up on still runs (an executor whose heartbeats were late): each attempt
/// writes apart, the first to finish publishes, and a later one, which
/// wrote the same files, lets its own go.
pub(super) struct Attempt {
    pub dir: PathBuf,
}

impl Attempt {
    /// A new folder for an attempt at `name`, under `staging`.
    pub fn new(staging: &Path, name: &str) -> Result<Attempt> {
        std::fs::create_dir_all(staging).map_err(|e| Error::io(staging, e))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!(".{name}-attempt-"))
            .tempdir_in(staging)
            .map_err(|e| Error::io(staging, e))?
            .keep();
        Ok(Attempt { dir })
    }

    /// Renames the folder to `to`, unless an earlier attempt did.
    pub fn publish(self, to: &Path) -> Result<()> {
        match std::fs::rename(&self.dir, to) {
            Ok(()) => Ok(()),
            Err(_) if to.is_dir() => {
                std::fs::remove_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))
            }
            Err(e) => Err(Error::io(to, e)),
        }
    }
}

/// The second passes' task `b`: bucket `b`'s second passes.
pub(super) async fn second_passes(spec: &Spec, b: usize) -> Result<RecordBatch> {
    let cfg = &spec.cfg;
    let second = spec.second.as_ref().ok_or_else(|| Error::Cluster {
        reason: "the second passes were sent no ranking".into(),
    })?;
    let dir = spec.bucket_dir(b);
    let (schema, parts) = read_annotated(&dir)?;
    let (narrow_schema, narrow_parts) = spill::later_columns(&schema, &parts)?;
    drop(parts);
    let annotated = Arc::new(SortedContactsExec::try_new(
        narrow_schema.clone(),
        narrow_parts,
    )?);
    let params = spec.params();
    let plan = second_pass::Plan::of(
        second.steps.clone(),
        second.pairs.clone(),
        second.horizon_s,
        &params,
    );
    let mut contacters: Contacters = read_json(&spec.staging.join("contacters.json"))?;
    let before = contacters.listed_len();
    let mut beside = Beside {
        null_check: None,
        trends: spec.trends(),
    };
    let mut s = RunSession::new(cfg)?;
    // (the outreach triggers' SQL reads the clusters)
    let path = spec.staging.join("clusters.arrow");
    let (clusters_schema, clusters) = read_ipc(&path)?;
    s.register(
        "clusters",
        Arc::new(datafusion::catalog::MemTable::try_new(
            clusters_schema,
            vec![clusters],
        )?),
    )?;
    let (found, _) = second_pass::bucket(
        &mut s,
        &plan,
        b,
        &annotated,
        &narrow_schema,
        &None,
        &mut beside,
        &mut contacters,
    )
    .await?;
    let attempt = Attempt::new(&dir, "second")?;
    let out = attempt.dir.clone();
    let (occ_schema, occ) = found.occurrences;
    write_ipc(
        &out.join("occurrences.arrow"),
        &occ_schema,
        &occ.into_iter().flatten().collect::<Vec<_>>(),
    )?;
    let (f_schema, f) = found.followups;
    write_ipc(
        &out.join("followups.arrow"),
        &f_schema,
        &f.into_iter().flatten().collect::<Vec<_>>(),
    )?;
    let (t_schema, t) = found.triggers.read()?;
    write_ipc(&out.join("triggers.arrow"), &t_schema, &t)?;
    write_rows(&out.join("patterns.arrow"), &found.patterns)?;
    if let Some(trends) = beside.trends.as_mut() {
        for (i, rows) in trends.take_rows().into_iter().enumerate() {
            write_rows(
                &out.join(format!("trends-{i}-patterns.arrow")),
                &rows.patterns,
            )?;
        }
    }
    let path = out.join("second.json");
    let part = contacters.fill_part(b, before);
    write_atomic(&path, to_json(&path, &part)?.as_bytes())?;
    attempt.publish(&dir.join("second"))?;
    done("bucket", b, String::from("{}"))
}

/// What the contacts table's task wrote: the table, and the contact days.
#[derive(Serialize, Deserialize)]
pub(super) struct ContactsWritten {
    pub(super) tables: BTreeMap<String, TableInfo>,
    /// The days written, YYYY-MM-DD.
    pub(super) days: Vec<String>,
}

/// The contacts table (and, in an output folder of many runs, the contact
/// days) from every bucket's annotated contacts, in bucket order; returns
/// what was written, as JSON.
pub(super) async fn write_contacts(spec: &Spec) -> Result<String> {
    // (written in an attempt's folder, then moved into the run's)
    let attempt = Attempt::new(&spec.staging, "contacts")?;
    let cfg = &crate::config::PipelineConfig {
        out: attempt.dir.clone(),
        ..spec.cfg.clone()
    };
    let mut s = RunSession::new(cfg)?;
    let mut days = match &cfg.history {
        Some(root) => Some(crate::report::contact_days::ContactDays::load(root, cfg)?),
        None => None,
    };
    let mut writer = None;
    for b in 0..spec.keys.len() {
        let (schema, parts) = read_annotated(&spec.bucket_dir(b))?;
        first_pass::write_contacts(&mut s, cfg, &mut writer, &mut days, &schema, &parts).await?;
    }
    let mut tables = BTreeMap::new();
    let days = match writer {
        Some(w) => w.finish(&mut tables).await?,
        None => Vec::new(),
    };
    let written = ContactsWritten {
        tables,
        days: days.iter().map(|d| d.to_string()).collect(),
    };
    for entry in std::fs::read_dir(&attempt.dir).map_err(|e| Error::io(&attempt.dir, e))? {
        let from = entry.map_err(|e| Error::io(&attempt.dir, e))?.path();
        let to = spec.cfg.out.join(from.file_name().expect("an entry"));
        if !to.exists() {
            std::fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
        }
    }
    std::fs::remove_dir_all(&attempt.dir).map_err(|e| Error::io(&attempt.dir, e))?;
    to_json(&spec.staging, &written)
}

/// A bucket's annotated contacts as its first passes staged them: its
/// partitions in order.
pub(super) fn read_annotated(dir: &Path) -> Result<(SchemaRef, Vec<Vec<RecordBatch>>)> {
    let mut parts = Vec::new();
    let mut schema = None;
    for p in 0.. {
        let path = dir.join(format!("part-{p}.arrow"));
        if !path.exists() {
            break;
        }
        // (written by the first passes as Arrow IPC files, see ContactsTo)
        let io = |e: std::io::Error| Error::io(&path, e);
        let reader = datafusion::arrow::ipc::reader::FileReader::try_new(
            std::io::BufReader::new(std::fs::File::open(&path).map_err(io)?),
            None,
        )?;
        schema.get_or_insert(reader.schema());
        let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
        parts.push(batches);
    }
    let schema = schema.ok_or_else(|| Error::Cluster {
        reason: format!("no annotated contacts in {}", dir.display()),
    })?;
    Ok((schema, parts))
}

pub(super) fn write_ipc(path: &Path, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    let io = |e: std::io::Error| Error::io(path, e);
    let partial = path.with_extension("partial");
    let file = std::fs::File::create(&partial).map_err(io)?;
    // (the stream format: batches of one file may carry other dictionaries)
    let mut w = datafusion::arrow::ipc::writer::StreamWriter::try_new(
        std::io::BufWriter::new(file),
        schema,
    )?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    drop(w);
    std::fs::rename(&partial, path).map_err(io)
}

/// `rows` of one schema (none: an empty file without columns).
pub(super) fn write_rows(path: &Path, rows: &[RecordBatch]) -> Result<()> {
    let schema = rows
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(|| Arc::new(Schema::empty()));
    write_ipc(path, &schema, rows)
}

pub(super) fn read_ipc(path: &Path) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader =
        datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::BufReader::new(file), None)?;
    let schema = reader.schema();
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}

pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes).map_err(|e| Error::io(&partial, e))?;
    std::fs::rename(&partial, path).map_err(|e| Error::io(path, e))
}
