//! Time-constrained sequential patterns, by leftmost occurrence.
//!
//! From each start contact with a non-null item, an occurrence of the
//! pattern (i₁, …, i_k) is found greedily: each next step is the earliest
//! contact with the next item strictly later than the previous step, at most
//! `max_gap` after it and at most `max_span` after the start. Consecutive items
//! differ (A → A is a repeat, not a step). Enumerating, depth first, the
//! earliest contact of each distinct next item finds exactly the patterns of
//! 2 ≤ k ≤ [`MAX_SEQUENCE_LEN`] whose greedy match succeeds, once per start.
//!
//! Items are coded as integers per partition, so the search never touches
//! strings: [`counts`] keeps its patterns in a trie over item codes,
//! [`occurrences`] packs each into a `u128` key. Two outputs:
//! - [`counts`]: per-partition totals per pattern: n, the distinct customers
//!   (customers never span partitions, so a sum over partitions is exact) and
//!   the channel cost of the last steps in millionths.
//! - [`occurrences`]: one row per (start contact, pattern) for the patterns of
//!   `sequence_filter` only, with the step lags, for lag medians and members.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, StringArray, StringBuilder, UInt32Array,
};
use datafusion::arrow::compute::{cast, concat_batches, take, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;

use super::{
    Columns, FastMap, MAX_SEQUENCE_CONTACTS_PER_CUSTOMER, MAX_SEQUENCE_LEN, NULL_CODE, PATTERN_SEP,
    TimelineParams,
};
use crate::error::Result;

/// Output schema of [`super::Mode::SequenceCounts`].
pub fn sequence_counts_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pattern", DataType::Utf8, false),
        Field::new("prefix", DataType::Utf8, false),
        Field::new("length", DataType::Int64, false),
        Field::new("reason_1", DataType::Utf8, false),
        Field::new("reason_2", DataType::Utf8, false),
        Field::new("reason_3", DataType::Utf8, true),
        Field::new("reason_4", DataType::Utf8, true),
        Field::new("n", DataType::Int64, false),
        Field::new("customers", DataType::Int64, false),
        Field::new("followup_cost_micros", DataType::Int64, false),
    ]))
}

/// The counted columns of [`sequence_counts_schema`]; every other column is
/// a function of `pattern`.
const SUMMED: [&str; 3] = ["n", "customers", "followup_cost_micros"];

/// Rows of [`sequence_counts_schema`] summed by pattern, added a batch at a
/// time: one row per pattern, in the order patterns are first seen, with the
/// counts added up and the other columns of the pattern's first row. A run
/// with several buckets keeps its counts this way between buckets, so that
/// each bucket's rows are looked up once. Before, a SQL `GROUP BY` over the
/// seven key columns summed the rows so far again after every bucket, and
/// took half the sequence stage's time at 100M contacts (9.9 of 19.5 s).
///
/// A pattern is looked up by all seven key columns, as that `GROUP BY` did,
/// written one after another into one key (so no two different rows make
/// the same key): the reasons by number, the length, the prefix by its
/// length (it is the pattern's start), the pattern after its length. The
/// keys are kept one after another in one buffer and found by their hash,
/// with a chain for keys of equal hash. The reasons alone are not enough
/// with channel:reason items, where patterns on different channels share
/// them. Where the items are the reasons, the pass writes the other key
/// columns from them, and the reasons alone are the key, packed into one
/// integer: at 10M contacts in 3 buckets the whole key took 0.80–1.10 s,
/// the packed reasons 0.51–0.63 s.
#[derive(Default)]
pub struct PatternSums {
    /// Whether the items are the reasons (not channel:reason).
    items_are_reasons: bool,
    /// A number for each reason text (from 1; 0 is none).
    items: FastMap<Box<str>, u32>,
    /// Each pattern's place, by its reasons' numbers packed (items that are
    /// reasons).
    by_reasons: FastMap<u128, usize>,
    /// Otherwise, the first pattern with each key hash.
    index: FastMap<u64, u32>,
    /// The next pattern with the same key hash (`u32::MAX`: none).
    same_hash: Vec<u32>,
    /// Every pattern's key, one after another; pattern `k`'s ends at
    /// `key_ends[k]`.
    keys: Vec<u8>,
    key_ends: Vec<usize>,
    hasher: foldhash::fast::FixedState,
    /// Bits of the hash left out (tests make the hashes collide).
    hash_shift: u32,
    /// The first row of each pattern, key columns only, in order.
    firsts: Vec<RecordBatch>,
    sums: Vec<[i64; 3]>,
    schema: Option<SchemaRef>,
}

impl PatternSums {
    /// Sums of the counts of a run whose sequence items are the reasons
    /// (`items_are_reasons`) or channel:reason.
    pub fn new(items_are_reasons: bool) -> PatternSums {
        PatternSums {
            items_are_reasons,
            ..Default::default()
        }
    }

    /// Adds a batch of sequence counts.
    pub fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let schema = batch.schema();
        let internal =
            |what: String| -> crate::error::Error { DataFusionError::Internal(what).into() };
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| internal(format!("sequence counts without {name}")))
        };
        let text = |c: &str| {
            let a = column(c)?;
            a.as_string_opt::<i32>()
                .ok_or_else(|| internal(format!("sequence counts' {c} is {}", a.data_type())))
        };
        let (pattern, prefix) = (text("pattern")?, text("prefix")?);
        let reasons = ["reason_1", "reason_2", "reason_3", "reason_4"]
            .iter()
            .map(|c| text(c))
            .collect::<Result<Vec<_>>>()?;
        let length = cast(column("length")?, &DataType::Int64)?;
        let length = length.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let counts = SUMMED
            .iter()
            .map(|c| Ok(cast(column(c)?, &DataType::Int64)?))
            .collect::<Result<Vec<_>>>()?;
        let counts: Vec<&Int64Array> = counts.iter().map(|a| a.as_primitive()).collect();
        let mut new_rows: Vec<u32> = Vec::new();
        let mut key: Vec<u8> = Vec::with_capacity(128);
        // a text, after its length (no text is u64::MAX bytes long: null)
        let put = |key: &mut Vec<u8>, t: &StringArray, i: usize| {
            if t.is_null(i) {
                key.extend_from_slice(&u64::MAX.to_le_bytes());
            } else {
                let v = t.value(i).as_bytes();
                key.extend_from_slice(&(v.len() as u64).to_le_bytes());
                key.extend_from_slice(v);
            }
        };
        // each reason column's last text and its number: rows in a row
        // often share a reason (10M in 3 buckets, summing 0.53 / 0.55 →
        // 0.49 / 0.49 s)
        let mut last: [(&str, u32); 4] = [("", 0); 4];
        for i in 0..batch.num_rows() {
            // the reasons by number (0: null), packed
            let mut numbers = 0u128;
            for (r, last) in reasons.iter().zip(last.iter_mut()) {
                let number = if r.is_null(i) {
                    0
                } else {
                    let t = r.value(i);
                    if last.1 == 0 || last.0 != t {
                        let n = match self.items.get(t) {
                            Some(n) => *n,
                            None => {
                                let n = self.items.len() as u32 + 1;
                                self.items.insert(t.into(), n);
                                n
                            }
                        };
                        *last = (t, n);
                    }
                    last.1
                };
                numbers = (numbers << 32) | number as u128;
            }
            let k = if self.items_are_reasons {
                // (the rest follows from the reasons)
                let next = self.sums.len();
                let k = *self.by_reasons.entry(numbers).or_insert(next);
                if k == next {
                    self.sums.push([0; 3]);
                    new_rows.push(i as u32);
                }
                k
            } else {
                key.clear();
                key.extend_from_slice(&numbers.to_le_bytes());
                key.extend_from_slice(&length.value(i).to_le_bytes());
                key.push(length.is_null(i) as u8);
                // the prefix by its length where it is the pattern's start
                // (as the pass writes it), else whole
                if pattern.is_valid(i)
                    && prefix.is_valid(i)
                    && pattern.value(i).starts_with(prefix.value(i))
                {
                    key.push(0);
                    key.extend_from_slice(&(prefix.value(i).len() as u64).to_le_bytes());
                } else {
                    key.push(1);
                    put(&mut key, prefix, i);
                }
                put(&mut key, pattern, i);
                self.slot(&key).unwrap_or_else(|| {
                    new_rows.push(i as u32);
                    self.insert(&key)
                })
            };
            for (sum, col) in self.sums[k].iter_mut().zip(&counts) {
                *sum += col.value(i);
            }
        }
        let keys: Vec<usize> = (0..schema.fields().len())
            .filter(|i| !SUMMED.contains(&schema.field(*i).name().as_str()))
            .collect();
        if !new_rows.is_empty() {
            let firsts = take_record_batch(&batch.project(&keys)?, &UInt32Array::from(new_rows))?;
            self.firsts.push(firsts);
        }
        self.schema.get_or_insert(schema);
        Ok(())
    }

    fn hash(&self, key: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key) >> self.hash_shift
    }

    /// The pattern with `key`, if any.
    fn slot(&self, key: &[u8]) -> Option<usize> {
        let mut k = *self.index.get(&self.hash(key))?;
        while k != u32::MAX {
            let start = if k == 0 {
                0
            } else {
                self.key_ends[k as usize - 1]
            };
            if &self.keys[start..self.key_ends[k as usize]] == key {
                return Some(k as usize);
            }
            k = self.same_hash[k as usize];
        }
        None
    }

    /// A new pattern with `key` and no counts yet; its place.
    fn insert(&mut self, key: &[u8]) -> usize {
        let k = self.sums.len();
        self.sums.push([0; 3]);
        self.keys.extend_from_slice(key);
        self.key_ends.push(self.keys.len());
        let head = self.index.entry(self.hash(key)).or_insert(u32::MAX);
        self.same_hash.push(*head);
        *head = k as u32;
        k
    }

    /// The sums, as one batch in the added batches' schema (None: no rows).
    pub fn finish(self) -> Result<Option<RecordBatch>> {
        let Some(schema) = self.schema else {
            return Ok(None);
        };
        if self.sums.is_empty() {
            return Ok(None);
        }
        let keys = concat_batches(&self.firsts[0].schema(), &self.firsts)?;
        let columns = schema
            .fields()
            .iter()
            .map(|f| match SUMMED.iter().position(|c| c == f.name()) {
                Some(k) => Ok(cast(
                    &(Arc::new(Int64Array::from_iter_values(self.sums.iter().map(|s| s[k])))
                        as ArrayRef),
                    f.data_type(),
                )?),
                None => Ok(keys
                    .column_by_name(f.name())
                    .expect("every key column kept")
                    .clone()),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(RecordBatch::try_new(schema, columns)?))
    }
}

/// `batches` summed by pattern ([`PatternSums`]).
pub fn sum_by_pattern(
    batches: &[RecordBatch],
    items_are_reasons: bool,
) -> Result<Option<RecordBatch>> {
    let mut sums = PatternSums::new(items_are_reasons);
    for b in batches {
        sums.add(b)?;
    }
    sums.finish()
}

/// Output schema of [`super::Mode::Sequences`] for an input schema.
pub fn sequences_schema(input: &Schema) -> SchemaRef {
    let id = input
        .field_with_name("contact_id")
        .expect("contacts_in column");
    Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Utf8, false),
        id.clone().with_name("start_contact_id"),
        Field::new("pattern", DataType::Utf8, false),
        Field::new("length", DataType::Int64, false),
        Field::new("lag_1_s", DataType::Float64, false),
        Field::new("lag_2_s", DataType::Float64, true),
        Field::new("lag_3_s", DataType::Float64, true),
        id.clone().with_name("last_contact_id"),
        Field::new("last_channel", DataType::Utf8, true),
        Field::new("span_s", DataType::Float64, false),
    ]))
}

/// Per-partition item dictionary.
struct Items {
    /// Item code per row (NULL_CODE: no item).
    code: Vec<u32>,
    /// Item text per code.
    name: Vec<String>,
    /// Code per item text.
    index: FastMap<String, u32>,
    /// Reason per code.
    reason: Vec<String>,
}

impl Items {
    fn new(batch: &RecordBatch, channel_items: bool) -> Result<Items> {
        if let (Some(ch), Some(rc)) = (
            batch.column_by_name("_channel_code"),
            batch.column_by_name("_reason_code"),
        ) {
            return Ok(Items::from_codes(
                batch,
                ch.as_primitive::<UInt32Type>(),
                rc.as_primitive::<UInt32Type>(),
                channel_items,
            ));
        }
        let reason = batch
            .column_by_name("reason")
            .expect("reason")
            .as_string::<i32>();
        let channel = cast(
            batch.column_by_name("channel").expect("channel"),
            &DataType::Utf8,
        )?;
        let channel = channel.as_string::<i32>();
        let mut items = Items {
            code: Vec::with_capacity(batch.num_rows()),
            name: Vec::new(),
            index: FastMap::default(),
            reason: Vec::new(),
        };
        for i in 0..batch.num_rows() {
            if reason.is_null(i) {
                items.code.push(NULL_CODE);
                continue;
            }
            let r = reason.value(i);
            let text: std::borrow::Cow<str> = if channel_items {
                let c = if channel.is_null(i) {
                    "(null)"
                } else {
                    channel.value(i)
                };
                format!("{c}:{r}").into()
            } else {
                r.into()
            };
            // Look up before allocating: most rows repeat a known item.
            let code = match items.index.get(text.as_ref()) {
                Some(code) => *code,
                None => {
                    let code = items.name.len() as u32;
                    items.index.insert(text.to_string(), code);
                    items.name.push(text.into_owned());
                    items.reason.push(r.to_string());
                    code
                }
            };
            items.code.push(code);
        }
        Ok(items)
    }

    /// [`Items::new`] over the bucket's channel and reason codes
    /// (`sorted::encode_texts`): items are numbered as they first occur, as
    /// there, but found in a dense table by code instead of by text.
    fn from_codes(
        batch: &RecordBatch,
        ch: &UInt32Array,
        rc: &UInt32Array,
        channel_items: bool,
    ) -> Items {
        let reason = batch
            .column_by_name("reason")
            .expect("reason")
            .as_string::<i32>();
        let channel = batch
            .column_by_name("channel")
            .expect("channel")
            .as_string::<i32>();
        let n = batch.num_rows();
        let bound = |a: &UInt32Array| a.iter().flatten().max().map_or(0, |m| m as usize + 1);
        let (n_ch, n_r) = (bound(ch), bound(rc));
        let mut items = Items {
            code: Vec::with_capacity(n),
            name: Vec::new(),
            index: FastMap::default(),
            reason: Vec::new(),
        };
        // item per (channel code, or n_ch for none; reason code)
        let width = if channel_items { n_ch + 1 } else { 1 };
        let mut item_of = vec![NULL_CODE; width * n_r];
        for i in 0..n {
            let c = if ch.is_null(i) {
                NULL_CODE
            } else {
                ch.value(i)
            };
            if rc.is_null(i) {
                items.code.push(NULL_CODE);
                continue;
            }
            let slot = if channel_items {
                (if c == NULL_CODE { n_ch } else { c as usize }) * n_r + rc.value(i) as usize
            } else {
                rc.value(i) as usize
            };
            if item_of[slot] == NULL_CODE {
                let r = reason.value(i);
                let text = if channel_items {
                    let c = if c == NULL_CODE {
                        "(null)"
                    } else {
                        channel.value(i)
                    };
                    format!("{c}:{r}")
                } else {
                    r.to_string()
                };
                item_of[slot] = items.name.len() as u32;
                items.index.insert(text.clone(), item_of[slot]);
                items.name.push(text);
                items.reason.push(r.to_string());
            }
            items.code.push(item_of[slot]);
        }
        items
    }

    /// The keys of a pattern given as text and of each of its prefixes
    /// (shortest first), if all its items occur here.
    fn prefix_keys_of_text(&self, pattern: &str) -> Option<Vec<u128>> {
        let mut key = 0u128;
        let mut keys = Vec::new();
        for (k, item) in pattern.split(PATTERN_SEP).enumerate() {
            key += (*self.index.get(item)? as u128 + 1) << (32 * k);
            keys.push(key);
        }
        Some(keys)
    }
}

/// Walks every (start, pattern) of every customer run, depth first. At each
/// step, with `path` the rows of the pattern so far (the new row last),
/// `step(state, path, run)` gets the state of the pattern without its last
/// item (`root` for a first item) and returns the state of the new pattern,
/// or `None` not to go further down this path.
fn mine<S: Copy>(
    cols: &Columns,
    items: &Items,
    p: &TimelineParams,
    root: S,
    mut step: impl FnMut(S, &[usize], usize) -> Option<S>,
) {
    let runs = cols.customer_runs();
    let mut path = Vec::with_capacity(MAX_SEQUENCE_LEN);
    // the items already extended from, one list per depth (reused)
    let mut seen: Vec<Vec<u32>> = vec![Vec::new(); MAX_SEQUENCE_LEN];
    for (run, bounds) in runs.windows(2).enumerate() {
        let (start, end) = (bounds[0], bounds[1]);
        if end - start > MAX_SEQUENCE_CONTACTS_PER_CUSTOMER {
            continue;
        }
        for i in start..end {
            if items.code[i] == NULL_CODE {
                continue;
            }
            path.clear();
            path.push(i);
            if let Some(state) = step(root, &path, run) {
                extend(
                    cols, items, p, end, run, &mut path, &mut seen, state, &mut step,
                );
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn extend<S: Copy>(
    cols: &Columns,
    items: &Items,
    p: &TimelineParams,
    end: usize,
    run: usize,
    path: &mut Vec<usize>,
    seen: &mut [Vec<u32>],
    state: S,
    step: &mut impl FnMut(S, &[usize], usize) -> Option<S>,
) {
    let depth = path.len();
    if depth == MAX_SEQUENCE_LEN {
        return;
    }
    let first = path[0];
    let prev = *path.last().expect("non-empty path");
    let (t0, tp) = (cols.ts[first], cols.ts[prev]);
    let prev_item = items.code[prev];
    seen[depth].clear();
    let mut k = prev + 1;
    while k < end && cols.ts[k] - tp <= p.max_gap_us && cols.ts[k] - t0 <= p.max_span_us {
        let item = items.code[k];
        if cols.ts[k] > tp && item != NULL_CODE && item != prev_item && !seen[depth].contains(&item)
        {
            seen[depth].push(item);
            path.push(k);
            if let Some(next) = step(state, path, run) {
                extend(cols, items, p, end, run, path, seen, next, step);
            }
            path.pop();
        }
        k += 1;
    }
}

/// Hashes the packed pattern keys (already well spread in their low bits by
/// the item codes) with one multiply, instead of SipHash.
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(5) ^ *b as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_u64(&mut self, k: u64) {
        self.0 = (self.0 ^ k)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(26);
    }

    fn write_u128(&mut self, k: u128) {
        self.write_u64((k as u64) ^ ((k >> 64) as u64).rotate_left(32));
    }
}

type KeyMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// No node / no child table.
const NONE: u32 = u32::MAX;

/// Most child slots the dense tables of one partition's [`Trie`] hold
/// (4 bytes each); the children of nodes beyond are found in a hash map.
const DENSE_CHILD_SLOTS: usize = 4 << 20;

/// One pattern (a node of the [`Trie`]) and its totals in one partition.
struct Node {
    /// The pattern without its last item (NONE: a first item).
    parent: u32,
    /// Last item.
    item: u32,
    /// Items in the pattern.
    len: u32,
    /// Offset of its dense child table (NONE: its children are hashed).
    children: u32,
    /// Start contacts (at most the partition's rows, under 2^32).
    n: u32,
    customers: u32,
    /// 1 + the customer run that last counted a customer.
    last_run: u32,
    /// Follow-up cost of the last steps, millionths.
    cost: i64,
}

/// The patterns of one partition as a trie over item codes: a pattern one
/// item longer is found by indexing its parent's dense child table (or, once
/// [`DENSE_CHILD_SLOTS`] are used, one hash probe), never by hashing the
/// whole pattern. Profiling the hash of packed keys showed most of the
/// search's time waiting on cache misses in that map.
struct Trie {
    nodes: Vec<Node>,
    /// Child tables of `width` slots each (node index or NONE).
    dense: Vec<u32>,
    /// (parent << 32 | item) -> node, for parents without a dense table.
    hashed: KeyMap<u64, u32>,
    /// Items of the partition.
    width: usize,
    /// Most slots `dense` may hold.
    dense_slots: usize,
}

impl Trie {
    fn new(width: usize, dense_slots: usize) -> Trie {
        // the root's table (the first items) is always dense
        Trie {
            nodes: Vec::new(),
            dense: vec![NONE; width],
            hashed: KeyMap::default(),
            width,
            dense_slots,
        }
    }

    /// The node of `parent`'s pattern extended by `item` (the root, for
    /// parent NONE), created if new.
    fn child(&mut self, parent: u32, item: u32) -> u32 {
        let table = match parent {
            NONE => 0,
            p => self.nodes[p as usize].children,
        };
        if table != NONE {
            let slot = table as usize + item as usize;
            let node = self.dense[slot];
            if node != NONE {
                return node;
            }
            let node = self.push(parent, item);
            self.dense[slot] = node;
            return node;
        }
        let key = (u64::from(parent) << 32) | u64::from(item);
        if let Some(node) = self.hashed.get(&key) {
            return *node;
        }
        let node = self.push(parent, item);
        self.hashed.insert(key, node);
        node
    }

    fn push(&mut self, parent: u32, item: u32) -> u32 {
        let len = match parent {
            NONE => 1,
            p => self.nodes[p as usize].len + 1,
        };
        // a dense table for a node that can have children, while room is left
        let children = if (len as usize) < MAX_SEQUENCE_LEN
            && self.dense.len() + self.width <= self.dense_slots
        {
            let at = self.dense.len() as u32;
            self.dense.resize(self.dense.len() + self.width, NONE);
            at
        } else {
            NONE
        };
        self.nodes.push(Node {
            parent,
            item,
            len,
            children,
            n: 0,
            customers: 0,
            last_run: 0,
            cost: 0,
        });
        (self.nodes.len() - 1) as u32
    }

    /// The item codes of a node's pattern, first to last.
    fn codes(&self, node: u32) -> Vec<u32> {
        let mut codes = Vec::with_capacity(MAX_SEQUENCE_LEN);
        let mut at = node;
        while at != NONE {
            let n = &self.nodes[at as usize];
            codes.push(n.item);
            at = n.parent;
        }
        codes.reverse();
        codes
    }
}

/// Per-partition pattern totals ([`super::Mode::SequenceCounts`]).
pub fn counts(batch: &RecordBatch, p: &TimelineParams) -> Result<RecordBatch> {
    counts_with(batch, p, DENSE_CHILD_SLOTS)
}

/// [`counts`] with at most `dense_slots` dense child slots (tests try the
/// hashed children with a small number).
pub(super) fn counts_with(
    batch: &RecordBatch,
    p: &TimelineParams,
    dense_slots: usize,
) -> Result<RecordBatch> {
    let cols = Columns::new(batch);
    let items = Items::new(batch, p.channel_items)?;
    let costs = super::pairs::row_costs(batch, p);
    let mut trie = Trie::new(items.name.len(), dense_slots);
    mine(&cols, &items, p, NONE, |parent, path, run| {
        let last = *path.last().expect("non-empty path");
        let node = trie.child(parent, items.code[last]);
        if path.len() >= 2 {
            let t = &mut trie.nodes[node as usize];
            t.n += 1;
            t.cost += costs[last];
            if t.last_run != run as u32 + 1 {
                t.last_run = run as u32 + 1;
                t.customers += 1;
            }
        }
        Some(node)
    });
    let totals: Vec<(u32, &Node)> = (0..).zip(&trie.nodes).filter(|(_, t)| t.len >= 2).collect();
    let rows = totals.len();
    let mut pattern = StringBuilder::with_capacity(rows, rows * 48);
    let mut prefix = StringBuilder::with_capacity(rows, rows * 32);
    let mut reasons: [StringBuilder; MAX_SEQUENCE_LEN] =
        std::array::from_fn(|_| StringBuilder::with_capacity(rows, rows * 12));
    let mut text = String::new();
    for (node, _) in &totals {
        let codes = trie.codes(*node);
        text.clear();
        for (k, c) in codes.iter().enumerate() {
            if k + 1 == codes.len() {
                prefix.append_value(&text);
            }
            if k > 0 {
                text.push_str(PATTERN_SEP);
            }
            text.push_str(&items.name[*c as usize]);
        }
        pattern.append_value(&text);
        for (k, r) in reasons.iter_mut().enumerate() {
            match codes.get(k) {
                Some(c) => r.append_value(&items.reason[*c as usize]),
                None => r.append_null(),
            }
        }
    }
    let [r1, r2, r3, r4] = reasons.map(|mut r| Arc::new(r.finish()) as ArrayRef);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(pattern.finish()),
        Arc::new(prefix.finish()),
        Arc::new(Int64Array::from_iter_values(
            totals.iter().map(|(_, t)| i64::from(t.len)),
        )),
        r1,
        r2,
        r3,
        r4,
        Arc::new(Int64Array::from_iter_values(
            totals.iter().map(|(_, t)| i64::from(t.n)),
        )),
        Arc::new(Int64Array::from_iter_values(
            totals.iter().map(|(_, t)| i64::from(t.customers)),
        )),
        Arc::new(Int64Array::from_iter_values(
            totals.iter().map(|(_, t)| t.cost),
        )),
    ];
    Ok(RecordBatch::try_new(sequence_counts_schema(), columns)?)
}

/// Occurrences of the filtered patterns ([`super::Mode::Sequences`]).
pub fn occurrences(batch: &RecordBatch, p: &TimelineParams) -> Result<RecordBatch> {
    let cols = Columns::new(batch);
    let items = Items::new(batch, p.channel_items)?;
    let mut wanted: KeyMap<u128, usize> = KeyMap::default();
    let mut prefixes: KeyMap<u128, ()> = KeyMap::default();
    for (i, text) in p.sequence_filter.iter().enumerate() {
        if let Some(keys) = items.prefix_keys_of_text(text) {
            wanted.insert(*keys.last().expect("a pattern has items"), i);
            prefixes.extend(keys.into_iter().map(|k| (k, ())));
        }
    }
    let mut start = Vec::new();
    let mut last = Vec::new();
    let mut pattern = Vec::new();
    let mut length = Vec::new();
    let mut lags: [Vec<Option<f64>>; 3] = Default::default();
    let mut span = Vec::new();
    if !wanted.is_empty() {
        mine(&cols, &items, p, 0u128, |prefix, path, _| {
            let depth = path.len() - 1;
            let key = prefix + ((items.code[path[depth]] as u128 + 1) << (32 * depth));
            if !prefixes.contains_key(&key) {
                return None;
            }
            let Some(which) = wanted.get(&key) else {
                return Some(key);
            };
            let end = *path.last().expect("non-empty path");
            start.push(path[0] as u32);
            last.push(end as u32);
            pattern.push(p.sequence_filter[*which].as_str());
            length.push(path.len() as i64);
            for (s, l) in lags.iter_mut().enumerate() {
                l.push(
                    (s + 1 < path.len())
                        .then(|| (cols.ts[path[s + 1]] - cols.ts[path[s]]) as f64 / 1e6),
                );
            }
            span.push((cols.ts[end] - cols.ts[path[0]]) as f64 / 1e6);
            Some(key)
        });
    }
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .expect("contacts_in column")
            .clone()
    };
    let start = UInt32Array::from(start);
    let last = UInt32Array::from(last);
    let [l1, l2, l3] = lags;
    let columns: Vec<ArrayRef> = vec![
        take(col("customer_id").as_ref(), &start, None)?,
        take(col("contact_id").as_ref(), &start, None)?,
        Arc::new(StringArray::from(pattern)),
        Arc::new(Int64Array::from(length)),
        Arc::new(Float64Array::from(l1)),
        Arc::new(Float64Array::from(l2)),
        Arc::new(Float64Array::from(l3)),
        take(col("contact_id").as_ref(), &last, None)?,
        take(col("channel").as_ref(), &last, None)?,
        Arc::new(Float64Array::from(span)),
    ];
    Ok(RecordBatch::try_new(
        sequences_schema(batch.schema().as_ref()),
        columns,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    /// One row of sequence counts for `items` (2 to 4 reasons, or
    /// channel:reason items) with counts.
    type Row = (Vec<&'static str>, [i64; 3]);

    fn batch(rows: &[Row]) -> RecordBatch {
        let text = |f: &dyn Fn(&Row) -> Option<String>| -> ArrayRef {
            Arc::new(rows.iter().map(f).collect::<StringArray>())
        };
        let int = |f: &dyn Fn(&Row) -> i64| -> ArrayRef {
            Arc::new(rows.iter().map(f).collect::<Int64Array>())
        };
        // (an item's reason: after the channel, if any)
        let item = |k: usize| {
            move |r: &Row| {
                r.0.get(k)
                    .map(|s| s.rsplit(':').next().expect("a part").to_string())
            }
        };
        RecordBatch::try_new(
            sequence_counts_schema(),
            vec![
                text(&|r| Some(r.0.join(PATTERN_SEP))),
                text(&|r| Some(r.0[..r.0.len() - 1].join(PATTERN_SEP))),
                int(&|r| r.0.len() as i64),
                text(&item(0)),
                text(&item(1)),
                text(&item(2)),
                text(&item(3)),
                int(&|r| r.1[0]),
                int(&|r| r.1[1]),
                int(&|r| r.1[2]),
            ],
        )
        .unwrap()
    }

    /// Against a plain map from pattern to summed counts: every pattern once,
    /// its counts summed over batches, its other columns its own, first-seen
    /// order; batches without rows and no batches at all.
    #[test]
    fn sums_by_pattern_like_a_map() {
        // reason items, and channel:reason items, where different patterns
        // share reasons (every other trial)
        let reasons = ["billing", "outage", "login", "moving"];
        let channel_reasons = ["billing", "phone:billing", "chat:billing", "chat:outage"];
        let mut rng = StdRng::seed_from_u64(3);
        for items_are_reasons in [true, false] {
            assert!(sum_by_pattern(&[], items_are_reasons).unwrap().is_none());
            assert!(
                sum_by_pattern(&[batch(&[])], items_are_reasons)
                    .unwrap()
                    .is_none()
            );
        }
        for trial in 0..200 {
            let items_are_reasons = trial % 2 == 0;
            let items = if items_are_reasons {
                reasons
            } else {
                channel_reasons
            };
            let batches: Vec<RecordBatch> = (0..rng.random_range(1..5))
                .map(|_| {
                    let rows: Vec<Row> = (0..rng.random_range(0..30))
                        .map(|_| {
                            let len = rng.random_range(2..=4);
                            let pattern = (0..len)
                                .map(|_| items[rng.random_range(0..items.len())])
                                .collect();
                            let counts = [0; 3].map(|_| rng.random_range(0..1_000_000_000_000));
                            (pattern, counts)
                        })
                        .collect();
                    batch(&rows)
                })
                .collect();
            let mut want: BTreeMap<String, [i64; 3]> = BTreeMap::new();
            let mut order: Vec<String> = Vec::new();
            for b in &batches {
                let p = b.column(0).as_string::<i32>();
                for i in 0..b.num_rows() {
                    let key = p.value(i).to_string();
                    let sums = want.entry(key.clone()).or_insert_with(|| {
                        order.push(key);
                        [0; 3]
                    });
                    for (k, sum) in sums.iter_mut().enumerate() {
                        *sum += b
                            .column(7 + k)
                            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                            .value(i);
                    }
                }
            }
            let Some(got) = sum_by_pattern(&batches, items_are_reasons).unwrap() else {
                assert!(want.is_empty(), "trial {trial}");
                continue;
            };
            // the same with hashes that mostly collide (4 of them)
            let mut colliding = PatternSums {
                hash_shift: 62,
                ..PatternSums::new(items_are_reasons)
            };
            for b in &batches {
                colliding.add(b).unwrap();
            }
            let colliding = colliding.finish().unwrap();
            assert_eq!(
                colliding.as_ref(),
                Some(&got),
                "trial {trial}, hashes colliding"
            );
            // the expected batch: each pattern's own row with the sums
            let rows: Vec<Row> = order
                .iter()
                .map(|p| {
                    let items: Vec<&'static str> = p
                        .split(PATTERN_SEP)
                        .map(|s| *items.iter().find(|i| **i == s).unwrap())
                        .collect();
                    (items, want[p])
                })
                .collect();
            assert_eq!(got, batch(&rows), "trial {trial}");
        }
    }
}
