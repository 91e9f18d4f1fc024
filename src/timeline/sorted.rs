//! The contacts, hash-partitioned on `customer_id` and sorted once.
//!
//! The pipeline sorts a bucket's contacts once, into the partitioning and
//! order DataFusion's physical optimizer would otherwise establish (a hash
//! repartition and a sort) under every [`super::exec::TimelineExec`], and
//! keeps the result in a [`SortedContactsExec`], a leaf that declares exactly
//! that partitioning and ordering, so the optimizer inserts nothing under the
//! passes that read it. Each partition is kept as one batch, so a pass reads
//! it without copying.
//!
//! In memory the sort is [`partition_and_sort`], specialised to this key: it
//! hashes each customer id once, as DataFusion's `RepartitionExec` does, and
//! with that hash both picks the row's partition and groups the partition's
//! rows by customer (an integer sort); it ranks the distinct customers by
//! text (by a 16-byte integer prefix, then the text where prefixes tie),
//! sorts packed integer keys (customer rank, time, position), breaks the
//! rare remaining ties by contact id and input row, and then gathers each
//! partition's rows from the input batches, once (see `gather`). Before,
//! a `RepartitionExec`, a concatenation and a take copied every row three
//! times. The gather also numbers the channel and reason texts of its
//! partition; [`partition_sort_and_encode`] then makes the numbers the same
//! across partitions ([`encode_texts`] does the same by hashing, after
//! DataFusion's sort). DataFusion's general `SortExec`,
//! which compares row-encoded strings in a many-way merge, took several
//! times longer. Under a memory limit the pipeline uses [`sort_plan`], with
//! `SortExec`, because it spills.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBufferBuilder, DynComparator, Int64Array, StringArray,
    TimestampMicrosecondArray, UInt32Array, make_comparator, new_null_array,
};
use datafusion::arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::{SortOptions, concat_batches, interleave};
use datafusion::arrow::datatypes::{ArrowPrimitiveType, DataType, Field, Schema, SchemaRef};
use datafusion::arrow::datatypes::{Int64Type, TimestampMicrosecondType, UInt32Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::hash_utils::create_hashes;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::expressions::col;
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::repartition::{REPARTITION_RANDOM_STATE, RepartitionExec};
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PhysicalExpr, PlanProperties,
    SendableRecordBatchStream,
};
use rayon::prelude::*;

/// The columns the pass orders each partition by.
pub const ORDER_COLUMNS: [&str; 4] = ["customer_id", "ts", "contact_id", "_row"];

/// Ascending, nulls last: the order the pass requires.
pub const ASC: SortOptions = SortOptions {
    descending: false,
    nulls_first: false,
};

fn ordering(schema: &SchemaRef) -> Result<LexOrdering> {
    let exprs = ORDER_COLUMNS
        .iter()
        .map(|c| Ok(PhysicalSortExpr::new(col(c, schema)?, ASC)))
        .collect::<Result<Vec<_>>>()?;
    LexOrdering::new(exprs).ok_or_else(|| DataFusionError::Internal("empty ordering".into()))
}

fn hash_partitioning(schema: &SchemaRef, partitions: usize) -> Result<Partitioning> {
    Ok(Partitioning::Hash(
        vec![col("customer_id", schema)?],
        partitions,
    ))
}

/// `input` (a `contacts_in` plan) hash-partitioned on `customer_id` into
/// `partitions` and sorted within each partition by [`ORDER_COLUMNS`] by
/// DataFusion's `SortExec`, which spills to disk when the memory pool is
/// short (the pipeline's path under `--memory-limit`; in memory it uses
/// [`partition_and_sort`]).
pub fn sort_plan(
    input: Arc<dyn ExecutionPlan>,
    partitions: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = input.schema();
    let repartitioned = Arc::new(RepartitionExec::try_new(
        input,
        hash_partitioning(&schema, partitions)?,
    )?);
    Ok(Arc::new(
        SortExec::new(ordering(&schema)?, repartitioned).with_preserve_partitioning(true),
    ))
}

/// `batches` (schema `contacts_in`) hash-partitioned on `customer_id` into
/// `partitions` and each partition sorted by [`ORDER_COLUMNS`], gathered
/// from the input batches in one copy (see the module docs). The rows go to
/// the partitions DataFusion's `RepartitionExec` would send them to (the same
/// hash, [`REPARTITION_RANDOM_STATE`], modulo `partitions`), so the
/// partitioning [`SortedContactsExec`] declares holds. Runs on the current
/// rayon pool, a partition per thread.
pub fn partition_and_sort(batches: &[RecordBatch], partitions: usize) -> Result<Vec<RecordBatch>> {
    Ok(partition_and_sort_coded(batches, partitions)?
        .into_iter()
        .map(|(b, _)| b)
        .collect())
}

/// [`partition_and_sort`], with each partition's codes of
/// [`CODED_COLUMNS`] from its gather.
fn partition_and_sort_coded(
    batches: &[RecordBatch],
    partitions: usize,
) -> Result<Vec<(RecordBatch, LocalCodes)>> {
    let partitions = partitions.max(1);
    let batches: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let schema = text_schema(&first.schema());
    if batches.len() > u32::MAX as usize {
        return Err(DataFusionError::ResourcesExhausted(format!(
            "{} batches to sort",
            batches.len()
        )));
    }
    let customers = batches
        .iter()
        .map(|b| Ok(column(b, "customer_id")?.as_string::<i32>()))
        .collect::<Result<Vec<_>>>()?;
    // the hash of every row's customer id, as RepartitionExec computes it
    let hashes = customers
        .par_iter()
        .map(|c| {
            let mut h = vec![0u64; c.len()];
            let arrays: [&dyn Array; 1] = [*c];
            create_hashes(arrays, REPARTITION_RANDOM_STATE.random_state(), &mut h)?;
            Ok(h)
        })
        .collect::<Result<Vec<_>>>()?;
    (0..partitions)
        .into_par_iter()
        .map(|p| {
            let rows: Vec<Row> = hashes
                .iter()
                .enumerate()
                .flat_map(|(b, h)| {
                    h.iter().enumerate().filter_map(move |(i, hash)| {
                        (*hash % partitions as u64 == p as u64).then_some(Row {
                            hash: *hash,
                            batch: b as u32,
                            row: i as u32,
                        })
                    })
                })
                .collect();
            if rows.is_empty() {
                let none = vec![(Vec::new(), Vec::new()); CODED_COLUMNS.len()];
                return Ok((RecordBatch::new_empty(schema.clone()), none));
            }
            sort_rows(&batches, &customers, rows)
        })
        .collect()
}

/// One input row to sort: its customer id's hash and where it is.
#[derive(Clone, Copy)]
struct Row {
    hash: u64,
    batch: u32,
    row: u32,
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| DataFusionError::Internal(format!("no column {name}")))
}

/// The values of primitive column `name` of each batch.
fn values<'a, T: ArrowPrimitiveType>(
    batches: &[&'a RecordBatch],
    name: &str,
) -> Result<Vec<&'a [T::Native]>> {
    batches
        .iter()
        .map(|b| Ok(column(b, name)?.as_primitive::<T>().values().as_ref()))
        .collect()
}

/// `rows` of `batches`, sorted by [`ORDER_COLUMNS`], as one batch.
fn sort_rows(
    batches: &[&RecordBatch],
    customers: &[&StringArray],
    rows: Vec<Row>,
) -> Result<(RecordBatch, LocalCodes)> {
    let n = rows.len();
    if n > u32::MAX as usize {
        return Err(DataFusionError::ResourcesExhausted(format!(
            "a partition of {n} contacts; use more partitions (--threads)"
        )));
    }
    let text = |r: &Row| customers[r.batch as usize].value(r.row as usize);
    let ts = values::<TimestampMicrosecondType>(batches, "ts")?;
    // 1. group rows by customer
    let (code, firsts, first_ids) = group_customers(&rows, text);
    // 2. the distinct customers (one row each), ranked by text
    //    (by their first 16 bytes as an integer, which orders like the text
    //    wherever it differs; equal prefixes by the whole text)
    let first_text = |c: u32| text(&rows[firsts[c as usize] as usize]);
    // (with the text's length: gather builds the customer column of texts
    // up to 16 bytes from these, without reading the texts again; both
    // come from the grouping, which read each customer's id once)
    let mut by_text: Vec<(u128, u32, u32)> = first_ids
        .into_iter()
        .zip(0..)
        .map(|((prefix, len), c)| (prefix, c, len))
        .collect();
    by_text.sort_unstable();
    let mut start = 0;
    while start < by_text.len() {
        let mut end = start + 1;
        while end < by_text.len() && by_text[end].0 == by_text[start].0 {
            end += 1;
        }
        if end - start > 1 {
            by_text[start..end].sort_unstable_by(|a, b| first_text(a.1).cmp(first_text(b.1)));
        }
        start = end;
    }
    let mut rank = vec![0u32; firsts.len()];
    for (r, (_, c, _)) in by_text.iter().enumerate() {
        rank[*c as usize] = r as u32;
    }
    // 3. (rank, time) in the high 96 bits, position in the low 32
    //    (a bucket per customer, by rank)
    let keys = bucket_sort(
        n,
        firsts.len(),
        |i| rank[code[i] as usize] as usize,
        |i| {
            let r = rows[i];
            let t = (ts[r.batch as usize][r.row as usize] as u64) ^ (1 << 63);
            ((rank[code[i] as usize] as u128) << 96) | ((t as u128) << 32) | i as u128
        },
    );
    drop(code);
    drop(rank);
    let mut perm: Vec<u32> = keys.iter().map(|k| *k as u32).collect();
    // 4. equal (customer, time): by contact id, then input row
    let ids = batches
        .iter()
        .map(|b| column(b, "contact_id"))
        .collect::<Result<Vec<_>>>()?;
    let input_rows = values::<Int64Type>(batches, "_row")?;
    let mut comparators: HashMap<(u32, u32), DynComparator> = HashMap::new();
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && keys[end] >> 32 == keys[start] >> 32 {
            end += 1;
        }
        if end - start > 1 {
            let run = &mut perm[start..end];
            // the comparators between the batches this run's rows are in
            let mut in_run: Vec<u32> = run.iter().map(|i| rows[*i as usize].batch).collect();
            in_run.sort_unstable();
            in_run.dedup();
            for a in &in_run {
                for b in &in_run {
                    if let Entry::Vacant(e) = comparators.entry((*a, *b)) {
                        e.insert(make_comparator(
                            ids[*a as usize].as_ref(),
                            ids[*b as usize].as_ref(),
                            ASC,
                        )?);
                    }
                }
            }
            run.sort_unstable_by(|a, b| {
                let (a, b) = (rows[*a as usize], rows[*b as usize]);
                comparators[&(a.batch, b.batch)](a.row as usize, b.row as usize).then(
                    input_rows[a.batch as usize][a.row as usize]
                        .cmp(&input_rows[b.batch as usize][b.row as usize]),
                )
            });
        }
        start = end;
    }
    gather(batches, &rows, &perm, &keys, &by_text, &firsts, text)
}

/// Each row's customer (a code, 0..), each customer's first row, and its
/// id's first 16 bytes ([`text_prefix`]) and length.
///
/// Rows are grouped by the hash of their id (sorted by (hash, position)),
/// taking a run of equal hashes as one customer, then checked in input order
/// against their customer's first id as (first 16 bytes, length), the whole
/// text only past 16 bytes: no text lookups in hash order, which profiling
/// showed as a fifth of the sort's time. Should two ids share a 64-bit hash
/// (a chance of about 3 in 10^8 for a million customers), the runs are
/// instead split by comparing each row with the run's distinct ids.
fn group_customers<'a>(
    rows: &[Row],
    text: impl Fn(&Row) -> &'a str,
) -> (Vec<u32>, Vec<u32>, Vec<(u128, u32)>) {
    let n = rows.len();
    // buckets by the hash's top bits, about 16 rows each
    let bits = (n / 16).max(1).ilog2().min(24);
    let by_hash = || {
        bucket_sort(
            n,
            1 << bits,
            |i| rows[i].hash.checked_shr(64 - bits).unwrap_or(0) as usize,
            |i| ((rows[i].hash as u128) << 32) | i as u128,
        )
    };
    let same_hash = |a: &u128, b: &u128| a >> 32 == b >> 32;
    let mut firsts: Vec<u32> = Vec::new();
    let mut code = vec![0u32; n];
    {
        let keys = by_hash();
        for run in keys.chunk_by(same_hash) {
            for key in run {
                code[*key as u32 as usize] = firsts.len() as u32;
            }
            firsts.push(run[0] as u32);
        }
        // dropped here: memory for the check below
    }
    let id_of = |f: &u32| {
        let t = text(&rows[*f as usize]);
        (text_prefix(t), t.len() as u32)
    };
    let first_ids: Vec<(u128, u32)> = firsts.iter().map(id_of).collect();
    let collided = rows.iter().zip(&code).any(|(r, c)| {
        let t = text(r);
        let (prefix, len) = first_ids[*c as usize];
        t.len() != len as usize
            || text_prefix(t) != prefix
            || (len > 16 && t != text(&rows[firsts[*c as usize] as usize]))
    });
    if !collided {
        return (code, firsts, first_ids);
    }
    drop(first_ids);
    firsts.clear();
    let keys = by_hash();
    for run in keys.chunk_by(same_hash) {
        // each row joins the first earlier distinct id equal to it
        let base = firsts.len();
        for key in run {
            let i = *key as u32;
            let t = text(&rows[i as usize]);
            let found = firsts[base..]
                .iter()
                .position(|f| text(&rows[*f as usize]) == t);
            code[i as usize] = match found {
                Some(off) => (base + off) as u32,
                None => {
                    firsts.push(i);
                    (firsts.len() - 1) as u32
                }
            };
        }
    }
    let first_ids = firsts.iter().map(id_of).collect();
    (code, firsts, first_ids)
}

/// The keys `key(0..n)` sorted, where `bucket(i)` (below `buckets`) never
/// decreases as keys grow: one counting pass puts each key in its bucket's
/// range, then each range is sorted on its own (small, in cache). A
/// comparison sort of all the keys makes a pass over them per level;
/// profiling showed those passes as the sort's largest part after the text
/// comparisons.
fn bucket_sort(
    n: usize,
    buckets: usize,
    bucket: impl Fn(usize) -> usize,
    key: impl Fn(usize) -> u128,
) -> Vec<u128> {
    let mut ends = vec![0usize; buckets + 1];
    for i in 0..n {
        ends[bucket(i) + 1] += 1;
    }
    for b in 1..=buckets {
        ends[b] += ends[b - 1];
    }
    let mut out = vec![0u128; n];
    for i in 0..n {
        let b = bucket(i);
        out[ends[b]] = key(i);
        ends[b] += 1;
    }
    // ends[b] is now where bucket b ends
    let mut start = 0;
    for end in &ends[..buckets] {
        out[start..*end].sort_unstable();
        start = *end;
    }
    out
}

/// The sorted batch: row `j` is input row `rows[perm[j]]`.
///
/// Gathering row by row from the input batches is bound by cache misses
/// (several per row and column: the input is in no useful order), so only
/// what needs it is gathered that way: the fixed-width columns and the codes
/// of channel and reason are first packed into one 24-byte record per row,
/// reading the input in order, and the records are gathered (one miss per
/// row); time and customer come from the sort keys. Other columns (text
/// contact ids, agents) are gathered by Arrow's `interleave`.
fn gather<'a>(
    batches: &[&'a RecordBatch],
    rows: &[Row],
    perm: &[u32],
    keys: &[u128],
    by_text: &[(u128, u32, u32)],
    firsts: &[u32],
    text: impl Fn(&Row) -> &'a str,
) -> Result<(RecordBatch, LocalCodes)> {
    let schema = text_schema(&batches[0].schema());
    let n = perm.len();
    let int64s = |name: &str| -> Result<Option<Vec<&'a [i64]>>> {
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let c = column(b, name)?;
            if c.data_type() != &DataType::Int64 || c.null_count() > 0 {
                return Ok(None);
            }
            out.push(c.as_primitive::<Int64Type>().values().as_ref());
        }
        Ok(Some(out))
    };
    let ids = int64s("contact_id")?;
    let input_rows = int64s("_row")?;
    let mut channel_dict = ColumnCodes::new(batches, "channel")?;
    let mut reason_dict = ColumnCodes::new(batches, "reason")?;
    let packed: Vec<Packed> = rows
        .iter()
        .map(|r| {
            let (b, i) = (r.batch as usize, r.row as usize);
            Packed {
                id: ids.as_ref().map_or(0, |v| v[b][i]),
                row: input_rows.as_ref().map_or(0, |v| v[b][i]),
                channel: channel_dict.code(b, i),
                reason: reason_dict.code(b, i),
            }
        })
        .collect();
    let sorted: Vec<Packed> = perm.iter().map(|i| packed[*i as usize]).collect();
    drop(packed);
    // (row of which input batch) for each output row, for the columns
    // gathered by `interleave`: built once, when the first such column needs it
    let mut indices: Option<Vec<(usize, usize)>> = None;
    let make_indices = || -> Vec<(usize, usize)> {
        perm.iter()
            .map(|i| {
                let r = rows[*i as usize];
                (r.batch as usize, r.row as usize)
            })
            .collect()
    };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (k, field) in schema.fields().iter().enumerate() {
        let array: ArrayRef = match field.name().as_str() {
            "contact_id" if ids.is_some() => {
                Arc::new(Int64Array::from_iter_values(sorted.iter().map(|p| p.id)))
            }
            "_row" if input_rows.is_some() => {
                Arc::new(Int64Array::from_iter_values(sorted.iter().map(|p| p.row)))
            }
            "ts" => Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    keys.iter().map(|k| (((k >> 32) as u64) ^ (1 << 63)) as i64),
                )
                .with_data_type(field.data_type().clone()),
            ),
            "customer_id" => {
                // a customer's rows are one run of keys, in the order of
                // `by_text`, which has the padded first 16 bytes of its id
                // and the id's length: an id up to 16 bytes long is not
                // read again (a cache miss per customer, twice: profiling
                // showed three quarters of the gather's time there); a
                // longer one is looked up once per run
                let runs = keys.chunk_by(|a, b| a >> 96 == b >> 96).map(|run| {
                    let (prefix, c, len) = by_text[(run[0] >> 96) as usize];
                    let t = if len <= 16 {
                        Text::Short(prefix, len as usize)
                    } else {
                        Text::Long(text(&rows[firsts[c as usize] as usize]))
                    };
                    (Some(t), run.len())
                });
                text_column(runs, n)?
            }
            "channel" => channel_dict
                .codes
                .column(sorted.iter().map(|p| p.channel), n)?,
            "reason" => reason_dict
                .codes
                .column(sorted.iter().map(|p| p.reason), n)?,
            _ if batches
                .iter()
                .all(|b| b.column(k).null_count() == b.num_rows()) =>
            {
                new_null_array(field.data_type(), n)
            }
            _ => {
                let arrays: Vec<&dyn Array> =
                    batches.iter().map(|b| b.column(k).as_ref()).collect();
                interleave(&arrays, indices.get_or_insert_with(make_indices))?
            }
        };
        columns.push(array);
    }
    // the codes of channel and reason, in CODED_COLUMNS' order
    let codes = vec![
        (
            sorted.iter().map(|p| p.channel).collect(),
            channel_dict
                .codes
                .values
                .iter()
                .map(|v| v.to_string())
                .collect(),
        ),
        (
            sorted.iter().map(|p| p.reason).collect(),
            reason_dict
                .codes
                .values
                .iter()
                .map(|v| v.to_string())
                .collect(),
        ),
    ];
    Ok((RecordBatch::try_new(schema, columns)?, codes))
}

/// The codes [`gather`] gives a text column's rows, read from each input
/// batch as text or as a dictionary (as the bucket files give it back, see
/// [`crate::buckets`]): a dictionary's keys are looked up once per distinct
/// key and batch, not hashed row by row.
struct ColumnCodes<'a> {
    inputs: Vec<TextInput<'a>>,
    codes: TextCodes<'a>,
}

enum TextInput<'a> {
    Plain(&'a StringArray),
    Dictionary {
        keys: &'a UInt32Array,
        values: &'a StringArray,
        /// per key, its code once seen ([`UNSEEN`] before)
        codes: Vec<u32>,
    },
}

/// A dictionary key whose text has no code yet.
const UNSEEN: u32 = u32::MAX - 1;

impl<'a> ColumnCodes<'a> {
    fn new(batches: &[&'a RecordBatch], name: &str) -> Result<Self> {
        let inputs =
            batches
                .iter()
                .map(|b| {
                    let c = column(b, name)?;
                    Ok(match c.as_dictionary_opt::<UInt32Type>() {
                        Some(d) => TextInput::Dictionary {
                            keys: d.keys(),
                            values: d.values().as_string_opt::<i32>().ok_or_else(|| {
                                DataFusionError::Internal(format!("{name}: not a text dictionary"))
                            })?,
                            codes: vec![UNSEEN; d.values().len()],
                        },
                        None => TextInput::Plain(c.as_string_opt::<i32>().ok_or_else(|| {
                            DataFusionError::Internal(format!("{name}: not text"))
                        })?),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
        Ok(ColumnCodes {
            inputs,
            codes: TextCodes::default(),
        })
    }

    /// The code of row `i` of batch `b` (`u32::MAX`: null).
    fn code(&mut self, b: usize, i: usize) -> u32 {
        match &mut self.inputs[b] {
            TextInput::Plain(a) => self.codes.code(a, i),
            TextInput::Dictionary {
                keys,
                values,
                codes,
            } => {
                if keys.is_null(i) {
                    return u32::MAX;
                }
                let k = keys.value(i) as usize;
                if codes[k] == UNSEEN {
                    codes[k] = if values.is_null(k) {
                        u32::MAX
                    } else {
                        self.codes.code_of(values.value(k))
                    };
                }
                codes[k]
            }
        }
    }
}

/// `schema` with text dictionary columns as plain text: the sort's output
/// schema for input read from bucket files.
fn text_schema(schema: &SchemaRef) -> SchemaRef {
    if !schema
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Dictionary(..)))
    {
        return schema.clone();
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, v) if v.as_ref() == &DataType::Utf8 => {
                f.as_ref().clone().with_data_type(DataType::Utf8)
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// What [`gather`] packs of a row before gathering it.
#[derive(Clone, Copy)]
struct Packed {
    id: i64,
    row: i64,
    channel: u32,
    reason: u32,
}

/// Codes for the values of a text column (`u32::MAX`: null), in the order
/// the values are first seen.
///
/// A small open-addressing table keyed by each text's 16-byte prefix and
/// length ([`text_prefix`], which are the whole text up to 16 bytes; a
/// longer text is compared in full where they match), hashed with its last
/// 8 bytes: a text column has few distinct values, and this codes a row with
/// whole-word loads and integer compares where a `HashMap<&str, _>` hashed
/// and compared the bytes (a tenth of the sort's bench time).
#[derive(Default)]
pub(crate) struct TextCodes<'a> {
    /// Per slot: a code + 1, or 0 (empty); a power of two long, at most
    /// half full.
    slots: Vec<u32>,
    /// Per code: its text's prefix and length.
    keys: Vec<(u128, usize)>,
    values: Vec<&'a str>,
}

impl<'a> TextCodes<'a> {
    /// The code of row `i` of `array`.
    pub(crate) fn code(&mut self, array: &'a StringArray, i: usize) -> u32 {
        if array.is_null(i) {
            return u32::MAX;
        }
        self.code_of(array.value(i))
    }

    /// The code of text `v`.
    pub(crate) fn code_of(&mut self, v: &'a str) -> u32 {
        let key = (text_prefix(v), v.len());
        if self.slots.is_empty() {
            self.slots = vec![0; 64];
        }
        let mask = self.slots.len() - 1;
        let mut at = Self::hash(v, key) as usize & mask;
        loop {
            match self.slots[at] {
                0 => break,
                s => {
                    let c = (s - 1) as usize;
                    if self.keys[c] == key && (key.1 <= 16 || self.values[c] == v) {
                        return c as u32;
                    }
                }
            }
            at = (at + 1) & mask;
        }
        let code = self.values.len() as u32;
        self.values.push(v);
        self.keys.push(key);
        self.slots[at] = code + 1;
        if self.values.len() * 2 > self.slots.len() {
            self.grow();
        }
        code
    }

    /// A slot hash of `v`, whose key is `key`: its prefix, length and (past
    /// 16 bytes) last 8 bytes, mixed.
    fn hash(v: &str, key: (u128, usize)) -> u64 {
        let b = v.as_bytes();
        let tail = if b.len() > 16 {
            u64::from_le_bytes(b[b.len() - 8..].try_into().expect("8 bytes"))
        } else {
            0
        };
        let x = (key.0 as u64) ^ ((key.0 >> 64) as u64).rotate_left(23) ^ tail.rotate_left(47);
        let h = (x ^ key.1 as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 29)
    }

    fn grow(&mut self) {
        let mut slots = vec![0u32; self.slots.len() * 2];
        let mask = slots.len() - 1;
        for (c, (v, key)) in self.values.iter().zip(&self.keys).enumerate() {
            let mut at = Self::hash(v, *key) as usize & mask;
            while slots[at] != 0 {
                at = (at + 1) & mask;
            }
            slots[at] = c as u32 + 1;
        }
        self.slots = slots;
    }

    /// The texts, by code.
    pub(crate) fn values(&self) -> &[&'a str] {
        &self.values
    }

    fn column(&self, codes: impl Iterator<Item = u32> + Clone, n: usize) -> Result<ArrayRef> {
        // (each code's text made once, not once per row and pass)
        let by_code: Vec<Text> = self.values.iter().map(|t| Text::of(t)).collect();
        text_column(codes.map(|c| (by_code.get(c as usize).copied(), 1)), n)
    }
}

/// A text for [`text_column`]: up to 16 bytes long, its first 16 bytes
/// zero-padded as [`text_prefix`] gives them, with its length (so that the
/// text need not be read where those are known); else the text.
#[derive(Clone, Copy)]
enum Text<'a> {
    Short(u128, usize),
    Long(&'a str),
}

impl<'a> Text<'a> {
    fn of(t: &'a str) -> Text<'a> {
        if t.len() <= 16 {
            Text::Short(text_prefix(t), t.len())
        } else {
            Text::Long(t)
        }
    }

    fn len(&self) -> usize {
        match self {
            Text::Short(_, len) => *len,
            Text::Long(t) => t.len(),
        }
    }
}

/// A text column of `n` rows from runs of equal values (`None`: null),
/// written straight into buffers of the exact size: collecting through
/// Arrow's builder grew and copied them, which with the page faults of the
/// fresh memory made building the three text columns most of the sort's
/// gather (a fifth of the whole sort at 10M).
fn text_column<'a, I>(runs: I, n: usize) -> Result<ArrayRef>
where
    I: Iterator<Item = (Option<Text<'a>>, usize)> + Clone,
{
    let bytes: usize = runs
        .clone()
        .map(|(t, len)| t.map_or(0, |t| t.len() * len))
        .sum();
    if bytes > i32::MAX as usize {
        return Err(DataFusionError::ResourcesExhausted(format!(
            "a text column of {bytes} bytes in one partition; use more partitions (--threads)"
        )));
    }
    // (16 bytes of slack: see below)
    let mut values: Vec<u8> = Vec::with_capacity(bytes + 16);
    let mut offsets: Vec<i32> = Vec::with_capacity(n + 1);
    let mut valid: Option<BooleanBufferBuilder> = None;
    offsets.push(0);
    for (t, len) in runs {
        match t {
            Some(Text::Short(prefix, text_len)) => {
                // a short text as 16 bytes of a fixed-size copy, the excess
                // cut off again: no call to `memcpy` per row, which was most
                // of the time spent building these columns
                let padded = prefix.to_be_bytes();
                for _ in 0..len {
                    let end = values.len() + text_len;
                    values.extend_from_slice(&padded);
                    values.truncate(end);
                    offsets.push(end as i32);
                }
                if let Some(v) = valid.as_mut() {
                    v.append_n(len, true);
                }
            }
            Some(Text::Long(t)) => {
                for _ in 0..len {
                    values.extend_from_slice(t.as_bytes());
                    offsets.push(values.len() as i32);
                }
                if let Some(v) = valid.as_mut() {
                    v.append_n(len, true);
                }
            }
            None => {
                // validity bits only once a null is seen: the rows before
                // it were all valid
                let v = valid.get_or_insert_with(|| {
                    let mut v = BooleanBufferBuilder::new(n);
                    v.append_n(offsets.len() - 1, true);
                    v
                });
                v.append_n(len, false);
                offsets.extend(std::iter::repeat_n(values.len() as i32, len));
            }
        }
    }
    debug_assert_eq!(offsets.len(), n + 1);
    let nulls = valid.map(|mut v| NullBuffer::new(v.finish()));
    // the offsets grow from 0 and the values are whole UTF-8 texts
    Ok(Arc::new(StringArray::try_new(
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        Buffer::from_vec(values),
        nulls,
    )?))
}

/// A text column of `texts[r]` repeated `lengths[r]` times, in order (no
/// nulls): a column kept once per run of equal values, back row by row.
pub fn repeat_texts(texts: &StringArray, lengths: &[u32]) -> Result<ArrayRef> {
    if texts.len() != lengths.len() || texts.null_count() > 0 {
        return Err(DataFusionError::Internal(format!(
            "{} texts ({} null) for {} runs",
            texts.len(),
            texts.null_count(),
            lengths.len()
        )));
    }
    let n = lengths.iter().map(|l| *l as usize).sum();
    text_column(
        (0..texts.len()).map(|r| (Some(Text::of(texts.value(r))), lengths[r] as usize)),
        n,
    )
}

/// The texts behind `codes` (code `i` is `texts[i]`; a null code, or one
/// past the texts, is a null text): the text column [`encode_texts`] coded.
pub fn decode_texts(codes: &UInt32Array, texts: &[String]) -> Result<ArrayRef> {
    let n = codes.len();
    let runs = codes.values().chunk_by(|a, b| a == b).scan(0, |at, run| {
        let start = *at;
        *at += run.len();
        Some((start, run))
    });
    // (each code's text made once, not once per row and pass)
    let by_code: Vec<Text> = texts.iter().map(|t| Text::of(t)).collect();
    let text = |start: usize, code: u32| {
        if codes.is_null(start) {
            None
        } else {
            by_code.get(code as usize).copied()
        }
    };
    if codes.null_count() == 0 {
        text_column(runs.map(|(start, run)| (text(start, run[0]), run.len())), n)
    } else {
        // (a run of equal codes can mix null and valid rows: row by row)
        text_column((0..n).map(|i| (text(i, codes.value(i)), 1)), n)
    }
}

/// The first 16 bytes of `text` as a big-endian integer, zero-padded: where
/// two texts' prefixes differ, they compare as the texts do.
///
/// Built from whole-word loads (the last word of a short text overlapping
/// the first): copying a text of unknown length into a zeroed buffer is a
/// call to `memcpy` per text, which profiling showed at a few percent of a
/// run, as this is called for every row.
fn text_prefix(text: &str) -> u128 {
    let b = text.as_bytes();
    let n = b.len();
    // the word of `w` bytes at `at`, big-endian
    let be = |at: usize, w: usize| -> u64 {
        match w {
            8 => u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes")),
            4 => u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes")) as u64,
            _ => u16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes")) as u64,
        }
    };
    // bytes 0..n (2w >= n >= w) left-aligned in the top 2w bytes of a u128:
    // the first word, and over it the last, shifted to where its bytes are
    // (its leading 2w - n bytes are the first word's last, so they land on
    // themselves)
    let two_words = |w: usize| -> u128 {
        let (first, last) = (be(0, w) as u128, be(n - w, w) as u128);
        ((first << (8 * w)) | (last << (8 * (2 * w - n)))) << (8 * (16 - 2 * w))
    };
    match n {
        16.. => u128::from_be_bytes(b[..16].try_into().expect("16 bytes")),
        8..=15 => two_words(8),
        4..=7 => two_words(4),
        2..=3 => two_words(2),
        1 => (b[0] as u128) << 120,
        0 => 0,
    }
}

/// The text columns [`encode_texts`] gives codes, and the code columns.
pub const CODED_COLUMNS: [(&str, &str); 2] =
    [("channel", "_channel_code"), ("reason", "_reason_code")];

/// The texts behind the codes of [`encode_texts`]: code `i` of a column is
/// its `i`-th text, in text order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextDictionaries {
    /// Channel per `_channel_code`.
    pub channel: Vec<String>,
    /// Reason per `_reason_code`.
    pub reason: Vec<String>,
}

/// `schema` with the code columns [`encode_texts`] adds (nullable UInt32,
/// null where the text is).
pub fn with_code_fields(schema: &SchemaRef) -> SchemaRef {
    if schema.field_with_name(CODED_COLUMNS[0].1).is_ok() {
        return schema.clone();
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for (_, code) in CODED_COLUMNS {
        fields.push(Field::new(code, DataType::UInt32, true));
    }
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The partitions of a bucket with a code column beside `channel` and
/// `reason` ([`CODED_COLUMNS`]): the same code for the same text in every
/// partition, codes in text order (so they do not depend on how the rows are
/// partitioned). The passes and the repeat counts work on these integers
/// instead of hashing or comparing the texts row by row. Each partition is
/// coded on its own thread (the current rayon pool), then its few distinct
/// texts are mapped to the bucket's codes.
pub fn encode_texts(batches: Vec<RecordBatch>) -> Result<(Vec<RecordBatch>, TextDictionaries)> {
    // per partition and column: each row's local code, the local texts
    let local = batches
        .par_iter()
        .map(|b| {
            CODED_COLUMNS
                .iter()
                .map(|(name, _)| {
                    let texts = column(b, name)?.as_string::<i32>();
                    let mut dict = TextCodes::default();
                    let codes: Vec<u32> = (0..texts.len()).map(|i| dict.code(texts, i)).collect();
                    Ok((codes, dict.values.iter().map(|v| v.to_string()).collect()))
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    with_codes(batches, local)
}

/// Each row's code in its partition (`u32::MAX`: null) and the partition's
/// texts per code, for each of [`CODED_COLUMNS`].
type LocalCodes = Vec<(Vec<u32>, Vec<String>)>;

/// The batches with the bucket's codes appended, from each partition's own
/// codes of [`CODED_COLUMNS`]: its few texts are looked up among the
/// bucket's, and its rows' codes translated.
fn with_codes(
    batches: Vec<RecordBatch>,
    local: Vec<LocalCodes>,
) -> Result<(Vec<RecordBatch>, TextDictionaries)> {
    // the bucket's texts per column, in order
    let global: Vec<Vec<&str>> = (0..CODED_COLUMNS.len())
        .map(|c| {
            let mut all: Vec<&str> = local
                .iter()
                .flat_map(|cols| cols[c].1.iter().map(|s| s.as_str()))
                .collect();
            all.sort_unstable();
            all.dedup();
            all
        })
        .collect();
    let dictionaries = TextDictionaries {
        channel: global[0].iter().map(|s| s.to_string()).collect(),
        reason: global[1].iter().map(|s| s.to_string()).collect(),
    };
    let out = batches
        .par_iter()
        .zip(local.par_iter())
        .map(|(b, cols)| {
            let schema = with_code_fields(&b.schema());
            let mut columns = b.columns().to_vec();
            for (c, (codes, values)) in cols.iter().enumerate() {
                let to_global: Vec<u32> = values
                    .iter()
                    .map(|v| {
                        global[c]
                            .binary_search(&v.as_str())
                            .expect("a text of the bucket") as u32
                    })
                    .collect();
                let texts = column(b, CODED_COLUMNS[c].0)?;
                let coded: Vec<u32> = codes
                    .iter()
                    .map(|&k| to_global.get(k as usize).copied().unwrap_or(0))
                    .collect();
                columns.push(Arc::new(UInt32Array::new(
                    ScalarBuffer::from(coded),
                    texts.nulls().cloned(),
                )));
            }
            Ok(RecordBatch::try_new(schema, columns)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((out, dictionaries))
}

/// [`partition_and_sort`] followed by [`encode_texts`], without hashing the
/// texts again: the sort's gather already coded them per partition.
pub fn partition_sort_and_encode(
    batches: &[RecordBatch],
    partitions: usize,
) -> Result<(Vec<RecordBatch>, TextDictionaries)> {
    let (sorted, local): (Vec<RecordBatch>, Vec<LocalCodes>) =
        partition_and_sort_coded(batches, partitions)?
            .into_iter()
            .unzip();
    with_codes(sorted, local)
}

/// One batch sorted by [`ORDER_COLUMNS`] (a single partition).
pub fn sort_partition(batch: &RecordBatch) -> Result<RecordBatch> {
    Ok(partition_and_sort(std::slice::from_ref(batch), 1)?
        .pop()
        .unwrap_or_else(|| batch.clone()))
}

/// A leaf holding the output of [`sort_plan`], one batch per partition.
#[derive(Debug, Clone)]
pub struct SortedContactsExec {
    partitions: Arc<Vec<RecordBatch>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl SortedContactsExec {
    /// Takes the partitions [`sort_plan`] produced (each a list of batches).
    pub fn try_new(schema: SchemaRef, parts: Vec<Vec<RecordBatch>>) -> Result<Self> {
        let partitions = parts
            .into_iter()
            .map(|p| Ok(concat_batches(&schema, &p)?))
            .collect::<Result<Vec<_>>>()?;
        let eq = EquivalenceProperties::new_with_orderings(schema.clone(), [ordering(&schema)?]);
        let properties = Arc::new(PlanProperties::new(
            eq,
            hash_partitioning(&schema, partitions.len())?,
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(SortedContactsExec {
            partitions: Arc::new(partitions),
            schema,
            properties,
        })
    }

    /// Rows held.
    pub fn num_rows(&self) -> usize {
        self.partitions.iter().map(|b| b.num_rows()).sum()
    }

    /// The partitions, one batch each (shared, not copied).
    pub fn partitions(&self) -> Vec<Vec<RecordBatch>> {
        self.partitions.iter().map(|b| vec![b.clone()]).collect()
    }

    /// Bytes held by the batches.
    pub fn memory_size(&self) -> usize {
        self.partitions
            .iter()
            .map(datafusion::common::utils::memory::get_record_batch_memory_size)
            .sum()
    }
}

impl DisplayAs for SortedContactsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "SortedContactsExec: partitions={}, rows={}",
            self.partitions.len(),
            self.num_rows()
        )
    }
}

impl ExecutionPlan for SortedContactsExec {
    fn name(&self) -> &'static str {
        "SortedContactsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "SortedContactsExec is a leaf".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let batch = self
            .partitions
            .get(partition)
            .cloned()
            .ok_or_else(|| DataFusionError::Internal(format!("no partition {partition}")))?;
        Ok(Box::pin(MemoryStream::try_new(
            vec![batch],
            self.schema.clone(),
            None,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::contacts_in_schema;
    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::arrow::datatypes::UInt32Type;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// The same text gets the same code in every partition, codes follow
    /// the texts' order, nulls stay null, and cutting the same rows into other
    /// partitions gives every row the same code.
    #[test]
    fn text_codes_are_the_same_across_partitions_and_in_text_order() {
        let mut rng = StdRng::seed_from_u64(11);
        let names = ["phone", "chat", "email", "app", "web", "branch"];
        let rows: Vec<(Option<&str>, Option<&str>)> = (0..2_000)
            .map(|_| {
                let mut pick = || {
                    (rng.random_range(0..8) > 0).then(|| names[rng.random_range(0..names.len())])
                };
                (pick(), pick())
            })
            .collect();
        let batch = |rows: &[(Option<&str>, Option<&str>)]| {
            let channel: StringArray = rows.iter().map(|r| r.0).collect();
            let reason: StringArray = rows.iter().map(|r| r.1).collect();
            RecordBatch::try_from_iter([
                ("channel", Arc::new(channel) as ArrayRef),
                ("reason", Arc::new(reason) as ArrayRef),
            ])
            .unwrap()
        };
        // each row's (channel code, reason code), partitions read in order
        let codes = |rows: &[(Option<&str>, Option<&str>)], cuts: &[usize]| {
            let mut parts = Vec::new();
            let mut start = 0;
            for &end in cuts.iter().chain([rows.len()].iter()) {
                parts.push(batch(&rows[start..end]));
                start = end;
            }
            let (coded, dict) = encode_texts(parts).unwrap();
            let mut out = Vec::new();
            for b in &coded {
                let [ch, re] = ["_channel_code", "_reason_code"].map(|c| {
                    b.column_by_name(c)
                        .unwrap()
                        .as_primitive::<UInt32Type>()
                        .clone()
                });
                for i in 0..b.num_rows() {
                    out.push((
                        ch.is_valid(i).then(|| ch.value(i)),
                        re.is_valid(i).then(|| re.value(i)),
                    ));
                }
            }
            (out, dict)
        };
        let (one, dict) = codes(&rows, &[]);
        let mut sorted = names.to_vec();
        sorted.sort_unstable();
        assert_eq!(dict.channel, sorted);
        assert_eq!(dict.reason, sorted);
        for ((ch, re), (ch_code, re_code)) in rows.iter().zip(&one) {
            assert_eq!(*ch, ch_code.map(|c| dict.channel[c as usize].as_str()));
            assert_eq!(*re, re_code.map(|c| dict.reason[c as usize].as_str()));
        }
        // partitions that each see only some of the texts, one of them none
        let mut by_channel = rows.clone();
        by_channel.sort_by_key(|r| r.0);
        let (split, _) = codes(&by_channel, &[0, 300, 301, 1_200]);
        let (whole, _) = codes(&by_channel, &[]);
        assert_eq!(split, whole);
    }

    #[test]
    fn text_columns_from_runs_match_arrows_own() {
        // runs of values and nulls, nulls first, between and last, and a
        // column with no nulls; against the array Arrow collects itself
        let mut rng = StdRng::seed_from_u64(7);
        // (odd trials draw from all but the last word: no nulls)
        // (lengths about the 16 bytes short texts are copied as)
        let words = [
            Some("phone"),
            Some(""),
            Some("a longer reason text"),
            Some("x"),
            Some("C0000001"),
            Some("fifteen bytes.."),
            Some("sixteen bytes..."),
            Some("seventeen bytes.."),
            Some("h\u{e9}llo w\u{f6}rld"),
            None,
        ];
        for trial in 0..200 {
            let runs: Vec<(Option<&str>, usize)> = (0..rng.random_range(0..12))
                .map(|_| {
                    let w = words[rng.random_range(0..words.len() - (trial % 2))];
                    (w, rng.random_range(0..4))
                })
                .collect();
            let n = runs.iter().map(|(_, len)| len).sum();
            let got = text_column(runs.iter().map(|(w, len)| (w.map(Text::of), *len)), n).unwrap();
            let want: StringArray = runs
                .iter()
                .flat_map(|(w, len)| std::iter::repeat_n(*w, *len))
                .collect();
            assert_eq!(got.as_string::<i32>(), &want, "{runs:?}");
        }
    }

    /// The prefix is the text's first 16 bytes, zero-padded, big-endian, at
    /// every length (each load width, the overlap of its two words).
    #[test]
    fn text_prefixes_are_the_padded_first_bytes() {
        let mut rng = StdRng::seed_from_u64(11);
        for n in 0..40 {
            for _ in 0..50 {
                let text: String = (0..n)
                    .map(|_| char::from(rng.random_range(1u8..128)))
                    .collect();
                let mut buf = [0u8; 16];
                let k = n.min(16);
                buf[..k].copy_from_slice(&text.as_bytes()[..k]);
                assert_eq!(text_prefix(&text), u128::from_be_bytes(buf), "{text:?}");
            }
        }
    }

    /// Text codes against a plain map: many values (the table grows),
    /// texts that share their prefix, length and last bytes (one slot hash,
    /// told apart by the whole text), empty texts and nulls.
    #[test]
    fn text_codes_match_a_plain_map() {
        let mut rng = StdRng::seed_from_u64(13);
        let mut pool: Vec<String> = vec![String::new(), "x".into(), "sixteen bytes...".into()];
        for k in 0..300 {
            pool.push(format!("reason_{k}"));
            // same 16-byte prefix, length and last 8 bytes: differ in byte 16
            pool.push(format!(
                "a shared prefix {}_the same tail",
                (b'a' + (k % 26) as u8) as char
            ));
        }
        pool.sort_unstable();
        pool.dedup();
        for _ in 0..20 {
            let rows: Vec<Option<&str>> = (0..2000)
                .map(|_| {
                    (rng.random_range(0..10) > 0)
                        .then(|| pool[rng.random_range(0..pool.len())].as_str())
                })
                .collect();
            let array: StringArray = rows.iter().copied().collect();
            let mut codes = TextCodes::default();
            let mut want: HashMap<&str, u32> = HashMap::new();
            for (i, row) in rows.iter().enumerate() {
                let got = codes.code(&array, i);
                match row {
                    None => assert_eq!(got, u32::MAX),
                    Some(t) => {
                        let next = want.len() as u32;
                        assert_eq!(got, *want.entry(t).or_insert(next), "{t:?}");
                        assert_eq!(codes.values[got as usize], *t);
                    }
                }
            }
            assert_eq!(codes.values.len(), want.len());
        }
    }

    /// Codes give back the texts they were made from: runs of equal codes,
    /// nulls (alone, in runs, and under a code that is also used by valid
    /// rows), and codes past the texts read as null.
    #[test]
    fn decoded_texts_are_the_coded_ones() {
        let mut rng = StdRng::seed_from_u64(5);
        let names = ["app", "billing", "", "a longer reason text"];
        for trial in 0..200 {
            let n = rng.random_range(0..40);
            let mut texts: Vec<Option<&str>> = Vec::new();
            while texts.len() < n {
                let t = (trial % 3 == 0 || rng.random_range(0..5) > 0)
                    .then(|| names[rng.random_range(0..names.len())]);
                texts.extend(std::iter::repeat_n(t, rng.random_range(1..5)));
            }
            texts.truncate(n);
            let batch = RecordBatch::try_from_iter([
                (
                    "channel",
                    Arc::new(StringArray::from(texts.clone())) as ArrayRef,
                ),
                (
                    "reason",
                    Arc::new(StringArray::from(texts.clone())) as ArrayRef,
                ),
            ])
            .unwrap();
            let (coded, dict) = encode_texts(vec![batch]).unwrap();
            let codes = coded[0]
                .column_by_name("_reason_code")
                .unwrap()
                .as_primitive::<UInt32Type>();
            // (a null row's code is 0, the first text's)
            let got = decode_texts(codes, &dict.reason).unwrap();
            assert_eq!(got.as_string::<i32>(), &StringArray::from(texts), "{trial}");
        }
        let past = UInt32Array::from(vec![Some(0), Some(1), None, Some(7)]);
        let got = decode_texts(&past, &["a".to_string(), "b".to_string()]).unwrap();
        let want = StringArray::from(vec![Some("a"), Some("b"), None, None]);
        assert_eq!(got.as_string::<i32>(), &want);
    }

    /// The codes the sort's gather hands on are those [`encode_texts`]
    /// gives the sorted partitions by hashing their texts.
    #[test]
    fn the_sorts_codes_are_those_of_encode_texts() {
        for seed in 0..8 {
            let input = full_rows(seed, 50 + seed as usize * 113, seed % 2 == 0);
            let whole = full_batch(&input, seed % 3 == 0);
            // several input batches, as ingest gives them
            let batches: Vec<RecordBatch> = (0..whole.num_rows())
                .step_by(97)
                .map(|o| whole.slice(o, 97.min(whole.num_rows() - o)))
                .collect();
            for partitions in [1, 3] {
                let (coded, dict) = partition_sort_and_encode(&batches, partitions).unwrap();
                let (want, want_dict) =
                    encode_texts(partition_and_sort(&batches, partitions).unwrap()).unwrap();
                assert_eq!(dict, want_dict);
                assert_eq!(coded, want, "seed {seed}, {partitions} partitions");
            }
        }
    }

    #[test]
    fn sorts_like_a_plain_sort_with_ties() {
        for seed in 0..20 {
            for text_ids in [false, true] {
                let input = full_rows(seed, 1 + seed as usize * 37, seed % 2 == 0);
                let mut expected = input.clone();
                plain_sort(&mut expected, text_ids);
                let sorted = sort_partition(&full_batch(&input, text_ids)).unwrap();
                let rows: Vec<i64> = sorted
                    .column_by_name("_row")
                    .unwrap()
                    .as_primitive::<Int64Type>()
                    .values()
                    .to_vec();
                let want: Vec<i64> = expected.iter().map(|r| r.3).collect();
                assert_eq!(rows, want, "seed {seed}, text ids {text_ids}");
            }
        }
    }

    #[test]
    fn colliding_hashes_keep_customers_apart() {
        for seed in 0..10 {
            let input = full_rows(seed, 50 + seed as usize * 29, false);
            let mut expected = input.clone();
            plain_sort(&mut expected, false);
            let batch = full_batch(&input, false);
            let customers = [batch
                .column_by_name("customer_id")
                .unwrap()
                .as_string::<i32>()];
            // three hash values for all the ids: every run of equal hashes
            // holds many customers
            let rows = (0..batch.num_rows())
                .map(|i| Row {
                    hash: (customers[0].value(i).len() % 3) as u64,
                    batch: 0,
                    row: i as u32,
                })
                .collect();
            let (sorted, _) = sort_rows(&[&batch], &customers, rows).unwrap();
            let got: Vec<i64> = sorted
                .column_by_name("_row")
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec();
            let want: Vec<i64> = expected.iter().map(|r| r.3).collect();
            assert_eq!(got, want, "seed {seed}");
        }
    }

    /// `rows` sorted by (customer, ts, contact id, _row), contact ids compared
    /// as the column holds them (text, or numbers).
    fn plain_sort(rows: &mut [Full], text_ids: bool) {
        let id = |r: &Full| {
            if text_ids {
                format!("id{}", r.2)
            } else {
                format!("{:020}", r.2)
            }
        };
        rows.sort_by(|a, b| (&a.0, a.1, id(a), a.3).cmp(&(&b.0, b.1, id(b), b.3)));
    }

    /// A full input row: (customer, ts, contact id, _row, channel, reason, agent).
    type Full = (
        String,
        i64,
        i64,
        i64,
        Option<String>,
        Option<String>,
        Option<String>,
    );

    fn full_rows(seed: u64, n: usize, agents: bool) -> Vec<Full> {
        let mut rng = StdRng::seed_from_u64(seed);
        let pick = |rng: &mut StdRng, names: &[&str]| {
            let k = rng.random_range(0..=names.len());
            names.get(k).map(|s| s.to_string())
        };
        (0..n)
            .map(|r| {
                (
                    // ids of different lengths, some sharing 16-byte prefixes
                    match rng.random_range(0..3) {
                        0 => format!("c{}", rng.random_range(0..n / 4 + 1)),
                        1 => format!("customer-with-a-long-id-{}", rng.random_range(0..20)),
                        _ => format!("customer-with-a-long-id-{}\0", rng.random_range(0..3)),
                    },
                    rng.random_range(-3..4) * 1_000_000,
                    rng.random_range(0..5),
                    r as i64,
                    pick(&mut rng, &["phone", "chat", "email"]),
                    pick(&mut rng, &["billing", "outage"]),
                    if agents {
                        pick(&mut rng, &["a1", "a2", "a3", "a4"])
                    } else {
                        None
                    },
                )
            })
            .collect()
    }

    fn full_batch(rows: &[Full], text_ids: bool) -> RecordBatch {
        let id_type = if text_ids {
            DataType::Utf8
        } else {
            DataType::Int64
        };
        let ids: ArrayRef = if text_ids {
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| format!("id{}", r.2)),
            ))
        } else {
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2)))
        };
        let text = |f: fn(&Full) -> &Option<String>| -> ArrayRef {
            Arc::new(
                rows.iter()
                    .map(|r| f(r).as_deref())
                    .collect::<StringArray>(),
            )
        };
        RecordBatch::try_new(
            contacts_in_schema(&id_type),
            vec![
                ids,
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                        .with_timezone("UTC"),
                ),
                text(|r| &r.4),
                text(|r| &r.5),
                text(|r| &r.6),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3))),
            ],
        )
        .unwrap()
    }

    /// The rows of a sorted batch, read back column by column.
    fn read_back(batch: &RecordBatch, text_ids: bool) -> Vec<Full> {
        let s = |name: &str| batch.column_by_name(name).unwrap().as_string::<i32>();
        let opt = |a: &StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_string());
        let ids = batch.column_by_name("contact_id").unwrap();
        let ts = batch
            .column_by_name("ts")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        let row = batch
            .column_by_name("_row")
            .unwrap()
            .as_primitive::<Int64Type>();
        (0..batch.num_rows())
            .map(|i| {
                let id = if text_ids {
                    ids.as_string::<i32>().value(i)[2..].parse().unwrap()
                } else {
                    ids.as_primitive::<Int64Type>().value(i)
                };
                (
                    s("customer_id").value(i).to_string(),
                    ts.value(i),
                    id,
                    row.value(i),
                    opt(s("channel"), i),
                    opt(s("reason"), i),
                    opt(s("agent"), i),
                )
            })
            .collect()
    }

    /// Over many input batches: every partition holds the rows DataFusion's
    /// RepartitionExec sends it (the partitioning SortedContactsExec
    /// declares), each sorted like a plain sort, with every column's values
    /// (nulls included) carried along.
    #[tokio::test]
    async fn partitions_like_repartition_exec_and_sorts_every_column() {
        use datafusion::datasource::memory::MemorySourceConfig;
        use datafusion::physical_plan::collect_partitioned;
        use datafusion::prelude::SessionContext;
        let ctx = SessionContext::new();
        for seed in 0..12u64 {
            let text_ids = seed % 2 == 1;
            let partitions = 1 + seed as usize % 4;
            let input = full_rows(seed, 50 + 97 * seed as usize, seed % 3 != 0);
            // cut into batches of uneven sizes
            let mut batches = Vec::new();
            let mut at = 0;
            while at < input.len() {
                let len = (1 + (at * 7 + seed as usize) % 61).min(input.len() - at);
                batches.push(full_batch(&input[at..at + len], text_ids));
                at += len;
            }
            let sorted = partition_and_sort(&batches, partitions).unwrap();
            assert_eq!(sorted.len(), partitions, "seed {seed}");
            let schema = batches[0].schema();
            let source =
                MemorySourceConfig::try_new_exec(&[batches], schema.clone(), None).unwrap();
            let repartitioned =
                RepartitionExec::try_new(source, hash_partitioning(&schema, partitions).unwrap())
                    .unwrap();
            let by_datafusion = collect_partitioned(Arc::new(repartitioned), ctx.task_ctx())
                .await
                .unwrap();
            for (p, batch) in sorted.iter().enumerate() {
                let mut expected: Vec<Full> = by_datafusion[p]
                    .iter()
                    .flat_map(|b| read_back(b, text_ids))
                    .collect();
                plain_sort(&mut expected, text_ids);
                assert_eq!(
                    read_back(batch, text_ids),
                    expected,
                    "seed {seed}, partition {p}"
                );
            }
        }
    }
}
