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
//! partition's rows from the input batches, once (see `gather`), where a
//! `RepartitionExec`, a concatenation and a take would copy every row three
//! times. The gather also numbers the channel and reason texts of its
//! partition; [`partition_sort_and_encode`] then makes the numbers the same
//! across partitions ([`encode_texts`] does the same by hashing, after
//! DataFusion's sort). DataFusion's general `SortExec`,
//! which compares row-encoded strings in a many-way merge, is several times
//! slower on this key. Under a memory limit the pipeline uses [`sort_plan`], with
//! `SortExec`, because it spills.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, DynComparator, Int64Array, StringArray, TimestampMicrosecondArray,
    UInt32Array, make_comparator, new_null_array,
};
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

use crate::codes::{
    CODED_COLUMNS, LocalCodes, Text, TextCodes, TextDictionaries, text_column, text_prefix,
    with_codes,
};

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
/// text only past 16 bytes: no text lookups in hash order, each of which
/// would be a cache miss. Should two ids share a 64-bit hash
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
/// comparison sort of all the keys would make a pass over all of them per
/// level.
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
                // read again (that would be a cache miss per customer,
                // twice); a longer one is looked up once per run
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
                .values()
                .iter()
                .map(|v| v.to_string())
                .collect(),
        ),
        (
            sorted.iter().map(|p| p.reason).collect(),
            reason_dict
                .codes
                .values()
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
mod tests;
