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
//!   the channel cost of the last steps in millionths, the pattern's items as
//!   the partition's codes; [`PatternSums`] sums them over partitions and
//!   buckets and writes each pattern's texts once.
//! - [`occurrences`]: one row per (start contact, pattern) for the patterns of
//!   `sequence_filter` only, with the step lags, for lag medians and members.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, Float64Array, Int64Array, StringArray,
    StringBuilder, UInt32Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type};
use datafusion::arrow::record_batch::RecordBatch;

use super::{
    Columns, FastMap, MAX_SEQUENCE_CONTACTS_PER_CUSTOMER, MAX_SEQUENCE_LEN, NULL_CODE, PATTERN_SEP,
    TimelineParams,
};
use crate::error::Result;

#[cfg(test)]
use super::sequence_sums::N_SUMMED;
use super::sequence_sums::SUMMED;
pub use super::sequence_sums::{
    PatternSums, SEQ_BINS, seq_bin, sequence_totals_schema, sum_by_pattern,
};

/// Output schema of [`super::Mode::SequenceCounts`]: one row per pattern
/// of 2–4 items found in a partition, its items as codes into the
/// partition's item texts (`item_k`, a dictionary, null past the pattern's
/// length) with each item's reason (`reason_k`, a dictionary with the same
/// keys), and its totals. No text is written per pattern: [`PatternSums`]
/// sums the partitions' rows by their items and writes each pattern's texts
/// once ([`sequence_totals_schema`]).
pub fn sequence_counts_schema() -> SchemaRef {
    let dictionary = || DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Utf8));
    let mut fields = vec![Field::new("length", DataType::Int64, false)];
    for what in ["item", "reason"] {
        for k in 1..=MAX_SEQUENCE_LEN {
            fields.push(Field::new(format!("{what}_{k}"), dictionary(), k > 1));
        }
    }
    for c in SUMMED {
        fields.push(Field::new(c, DataType::Int64, false));
    }
    Arc::new(Schema::new(fields))
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

/// Largest dense table of allowed steps, in cells (item pairs).
const MAX_DENSE_STEPS: usize = 1 << 22;

/// The (item, item) steps a pattern may take: a table over the item pairs,
/// or, with many items, a set of the allowed ones.
enum Steps {
    Dense(Vec<bool>, usize),
    Sparse(HashSet<(u32, u32)>),
}

impl Steps {
    fn allow(&mut self, x: u32, y: u32) {
        match self {
            Steps::Dense(m, n) => m[x as usize * *n + y as usize] = true,
            Steps::Sparse(m) => {
                m.insert((x, y));
            }
        }
    }
}

/// Per-partition item dictionary.
struct Items {
    /// The steps a pattern may take, from
    /// `TimelineParams::sequence_steps` (None: any).
    steps: Option<Steps>,
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
            steps: None,
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
    /// (`crate::codes::encode_texts`): items are numbered as they first occur, as
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
            steps: None,
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

    /// Limits the steps to `steps` (reason pairs), if given.
    fn with_steps(mut self, steps: Option<&Vec<(String, String)>>) -> Self {
        if let Some(steps) = steps {
            let mut items_of: HashMap<&str, Vec<u32>> = HashMap::new();
            for (item, reason) in self.reason.iter().enumerate() {
                items_of
                    .entry(reason.as_str())
                    .or_default()
                    .push(item as u32);
            }
            let n = self.reason.len();
            let mut allowed = if n * n <= MAX_DENSE_STEPS {
                Steps::Dense(vec![false; n * n], n)
            } else {
                Steps::Sparse(HashSet::new())
            };
            for (a, b) in steps {
                if let (Some(xs), Some(ys)) = (items_of.get(a.as_str()), items_of.get(b.as_str())) {
                    for &x in xs {
                        for &y in ys {
                            allowed.allow(x, y);
                        }
                    }
                }
            }
            self.steps = Some(allowed);
        }
        self
    }

    /// Whether item `y` may follow item `x` in a pattern.
    fn step(&self, x: u32, y: u32) -> bool {
        match &self.steps {
            None => true,
            Some(Steps::Dense(m, n)) => m[x as usize * n + y as usize],
            Some(Steps::Sparse(m)) => m.contains(&(x, y)),
        }
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
/// `step(state, path, run, None)` gets the state of the pattern without its
/// last item (`root` for a first item) and returns the state of the new
/// pattern, or `None` not to go further down this path. Once a pattern's
/// extensions have all been walked, `step(its state, path, run, Some(k))`
/// tells how many later contacts with an item (k) were within reach of its
/// last step (the prefix's followers of the significance test); its return
/// value is not read.
fn mine<S: Copy>(
    cols: &Columns,
    items: &Items,
    p: &TimelineParams,
    root: S,
    mut step: impl FnMut(S, &[usize], usize, Option<u32>) -> Option<S>,
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
            if items.code[i] == NULL_CODE || !p.triggers_at(cols.ts[i]) {
                continue;
            }
            path.clear();
            path.push(i);
            if let Some(state) = step(root, &path, run, None) {
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
    step: &mut impl FnMut(S, &[usize], usize, Option<u32>) -> Option<S>,
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
    let mut followers = 0u32;
    let mut k = prev + 1;
    while k < end && cols.ts[k] - tp <= p.max_gap_us && cols.ts[k] - t0 <= p.max_span_us {
        let item = items.code[k];
        if cols.ts[k] > tp && item != NULL_CODE {
            followers += 1;
            if item != prev_item && !seen[depth].contains(&item) && items.step(prev_item, item) {
                seen[depth].push(item);
                path.push(k);
                if let Some(next) = step(state, path, run, None) {
                    extend(cols, items, p, end, run, path, seen, next, step);
                }
                path.pop();
            }
        }
        k += 1;
    }
    step(state, path, run, Some(followers));
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
    /// Occurrences whose prefix occurrence was counted (its customer's
    /// first `customer_cap` of the prefix), and Σ over customers of their
    /// square.
    n_counted: u32,
    sum_sq: u64,
    /// The customer of `last_run`: its occurrences, and its counted ones.
    mine: u32,
    mine_counted: u32,
    /// Index of its exposure in [`Trie::exposure`] (NONE: none yet).
    exposure: u32,
}

impl Node {
    /// Makes `run` this node's current customer, the previous one's counted
    /// occurrences added to the sum of squares.
    fn enter(&mut self, run: usize) {
        if self.last_run != run as u32 + 1 {
            self.flush();
            self.last_run = run as u32 + 1;
            self.customers += 1;
            self.mine = 0;
        }
    }

    fn flush(&mut self) {
        let c = u64::from(std::mem::take(&mut self.mine_counted));
        self.sum_sq += c * c;
    }
}

/// A prefix's exposure: counted occurrences per k bin ([`SEQ_BINS`]), then
/// the sum of their k per bin from bin 1.
type Exposure = [u32; 2 * SEQ_BINS - 1];

/// The patterns of one partition as a trie over item codes: a pattern one
/// item longer is found by indexing its parent's dense child table (or, once
/// [`DENSE_CHILD_SLOTS`] are used, one hash probe), never by hashing the
/// whole pattern: a map of packed keys would spend the search's time on
/// cache misses.
struct Trie {
    nodes: Vec<Node>,
    /// Exposures of the prefixes (patterns of 2 and 3 items).
    exposure: Vec<Exposure>,
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
            exposure: Vec::new(),
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
            n_counted: 0,
            sum_sq: 0,
            mine: 0,
            mine_counted: 0,
            exposure: NONE,
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
    let items = Items::new(batch, p.channel_items)?.with_steps(p.sequence_steps.as_deref());
    let costs = super::pairs::row_costs(batch, p);
    let mut trie = Trie::new(items.name.len(), dense_slots);
    let cap = p.customer_cap;
    // the state of a pattern: its node, and whether this occurrence is among
    // its customer's first `cap` (then its extensions count in the test)
    mine(
        &cols,
        &items,
        p,
        (NONE, true),
        |(parent, parent_counted), path, run, followers| {
            let last = *path.last().expect("non-empty path");
            if let Some(k) = followers {
                // leaving a counted prefix occurrence: its exposure
                if parent_counted && (2..MAX_SEQUENCE_LEN).contains(&path.len()) {
                    let t = &mut trie.nodes[parent as usize];
                    if t.exposure == NONE {
                        t.exposure = trie.exposure.len() as u32;
                        trie.exposure.push([0; 2 * SEQ_BINS - 1]);
                    }
                    let e = &mut trie.exposure[t.exposure as usize];
                    let bin = seq_bin(k);
                    e[bin] += 1;
                    if bin > 0 {
                        e[SEQ_BINS + bin - 1] += k;
                    }
                }
                return None;
            }
            let node = trie.child(parent, items.code[last]);
            let t = &mut trie.nodes[node as usize];
            t.enter(run);
            t.n += 1;
            t.mine += 1;
            if path.len() >= 2 {
                t.cost += costs[last];
                if parent_counted {
                    t.n_counted += 1;
                    t.mine_counted += 1;
                }
            }
            // (in a trigger period, an occurrence whose reach has not ended
            // within the data is not counted as a prefix)
            let reach = cols.ts[last]
                .saturating_add(p.max_gap_us)
                .min(cols.ts[path[0]].saturating_add(p.max_span_us));
            Some((node, t.mine <= cap && p.complete(reach)))
        },
    );
    for t in &mut trie.nodes {
        t.flush();
    }
    let totals: Vec<(u32, &Node)> = (0..).zip(&trie.nodes).collect();
    // each pattern's item codes, by step (null past its length)
    let mut codes: [Vec<Option<u32>>; MAX_SEQUENCE_LEN] =
        std::array::from_fn(|_| Vec::with_capacity(totals.len()));
    for (node, _) in &totals {
        let path = trie.codes(*node);
        for (k, c) in codes.iter_mut().enumerate() {
            c.push(path.get(k).copied());
        }
    }
    let names: ArrayRef = Arc::new(StringArray::from_iter_values(&items.name));
    let reasons: ArrayRef = Arc::new(StringArray::from_iter_values(&items.reason));
    let keys: Vec<UInt32Array> = codes.into_iter().map(UInt32Array::from).collect();
    let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(
        totals.iter().map(|(_, t)| i64::from(t.len)),
    ))];
    for values in [&names, &reasons] {
        for k in &keys {
            columns.push(Arc::new(DictionaryArray::<UInt32Type>::try_new(
                k.clone(),
                values.clone(),
            )?));
        }
    }
    columns.push(Arc::new(Int64Array::from_iter_values(
        totals.iter().map(|(_, t)| i64::from(t.n)),
    )));
    columns.push(Arc::new(Int64Array::from_iter_values(
        totals.iter().map(|(_, t)| i64::from(t.customers)),
    )));
    columns.push(Arc::new(Int64Array::from_iter_values(
        totals.iter().map(|(_, t)| t.cost),
    )));
    columns.push(Arc::new(Int64Array::from_iter_values(
        totals.iter().map(|(_, t)| i64::from(t.n_counted)),
    )));
    columns.push(Arc::new(Int64Array::from_iter_values(
        totals.iter().map(|(_, t)| t.sum_sq as i64),
    )));
    for e in 0..2 * SEQ_BINS - 1 {
        columns.push(Arc::new(Int64Array::from_iter_values(totals.iter().map(
            |(_, t)| match t.exposure {
                NONE => 0,
                at => i64::from(trie.exposure[at as usize][e]),
            },
        ))));
    }
    Ok(RecordBatch::try_new(sequence_counts_schema(), columns)?)
}

/// Occurrences of the filtered patterns ([`super::Mode::Sequences`]).
pub fn occurrences(batch: &RecordBatch, p: &TimelineParams) -> Result<RecordBatch> {
    let cols = Columns::new(batch);
    let items = Items::new(batch, p.channel_items)?.with_steps(p.sequence_steps.as_deref());
    // every pattern of 3 or more items along the allowed steps, or the
    // filter's patterns
    let every = p.sequence_filter.is_empty() && p.sequence_steps.is_some();
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
    let mut pattern = StringBuilder::new();
    let mut length = Vec::new();
    let mut lags: [Vec<Option<f64>>; 3] = Default::default();
    let mut span = Vec::new();
    if every || !wanted.is_empty() {
        mine(&cols, &items, p, 0u128, |prefix, path, _, followers| {
            if followers.is_some() {
                return None;
            }
            let depth = path.len() - 1;
            let key = prefix + ((items.code[path[depth]] as u128 + 1) << (32 * depth));
            let which = if every {
                if path.len() < 3 {
                    return Some(key);
                }
                None
            } else {
                if !prefixes.contains_key(&key) {
                    return None;
                }
                let Some(which) = wanted.get(&key) else {
                    return Some(key);
                };
                Some(*which)
            };
            let end = *path.last().expect("non-empty path");
            start.push(path[0] as u32);
            last.push(end as u32);
            match which {
                Some(w) => pattern.append_value(&p.sequence_filter[w]),
                None => pattern.append_value(
                    path.iter()
                        .map(|r| items.name[items.code[*r] as usize].as_str())
                        .collect::<Vec<_>>()
                        .join(PATTERN_SEP),
                ),
            }
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
        Arc::new(pattern.finish()),
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
mod tests;
