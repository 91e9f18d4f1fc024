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

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, Float64Array, Int64Array, StringArray,
    StringBuilder, UInt32Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;

use super::{
    Columns, FastMap, MAX_SEQUENCE_CONTACTS_PER_CUSTOMER, MAX_SEQUENCE_LEN, NULL_CODE, PATTERN_SEP,
    TimelineParams,
};
use crate::error::Result;

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

/// Schema of the `sequence_counts` table the SQL reads
/// (`queries/pattern_totals.sql`): one row per pattern with its texts and
/// its totals over every partition and bucket ([`PatternSums::finish`]).
/// The totals are nullable, as were the SQL sums that made them before, so
/// that the output files keep their schemas.
pub fn sequence_totals_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pattern", DataType::Utf8, false),
        Field::new("prefix", DataType::Utf8, false),
        Field::new("length", DataType::Int64, false),
        Field::new("reason_1", DataType::Utf8, false),
        Field::new("reason_2", DataType::Utf8, true),
        Field::new("reason_3", DataType::Utf8, true),
        Field::new("reason_4", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
        Field::new("customers", DataType::Int64, true),
        Field::new("followup_cost_micros", DataType::Int64, true),
        Field::new("n_counted", DataType::Int64, true),
        Field::new("sum_sq", DataType::Int64, true),
        Field::new("prefix_counted", DataType::Int64, true),
        Field::new("expected", DataType::Float64, true),
    ]))
}

/// The counted columns of [`sequence_counts_schema`]: the totals, the
/// counted occurrences and the sum of their squares per customer, and the
/// pattern's exposure as a prefix ([`SEQ_BINS`]).
const SUMMED: [&str; N_SUMMED] = [
    "n",
    "customers",
    "followup_cost_micros",
    "n_counted",
    "sum_sq",
    "exposure_0",
    "exposure_1",
    "exposure_2",
    "exposure_3",
    "exposure_4",
    "exposure_5",
    "exposure_6",
    "exposure_7",
    "exposure_8",
    "k_sum_1",
    "k_sum_2",
    "k_sum_3",
    "k_sum_4",
    "k_sum_5",
    "k_sum_6",
    "k_sum_7",
    "k_sum_8",
];

/// How many columns [`SUMMED`] has.
const N_SUMMED: usize = 22;
/// Where the exposure counts (bins 0..=8) and the k sums (bins 1..=8) start
/// in [`SUMMED`].
const EXPOSURE_AT: usize = 5;
const K_SUM_AT: usize = 14;

/// Bins of the followers k of a prefix occurrence, for its exposure: 0, 1,
/// 2, 3, 4–5, 6–8, 9–15, 16–31, 32 and more (bin 0: no follower). The
/// expectation is taken at each bin's mean k, which overstates it slightly
/// (1 − (1 − π)^k is concave in k): a conservative error.
pub const SEQ_BINS: usize = 9;

/// The exposure bin of a prefix occurrence with `k` followers.
pub fn seq_bin(k: u32) -> usize {
    match k {
        0..=3 => k as usize,
        4..=5 => 4,
        6..=8 => 5,
        9..=15 => 6,
        16..=31 => 7,
        _ => 8,
    }
}

/// Sums of one pattern.
type Sums = [i64; N_SUMMED];

/// Rows of [`sequence_counts_schema`] (from any partitions and buckets)
/// summed by pattern: one row per pattern, in the order of its items'
/// numbers. A pattern is known by its items' texts: each distinct item text
/// is numbered once (a partition's or bucket's codes differ from another's),
/// and a pattern's numbers are packed into one integer. A batch's rows are
/// sorted by that integer and merged into the sums so far, which are kept in
/// the same order: no hash table of every pattern, whose probes missed the
/// cache at 100M contacts (a pattern's texts are written once, by
/// [`PatternSums::finish`]). Before, the pass wrote the texts of every
/// pattern in every partition and a `GROUP BY` over those seven text columns
/// (or a map of them, with several buckets) summed them: at 100M contacts in
/// 9 buckets the summing took 3.8 s; a hash table of the packed numbers took
/// 1.9–2.1 s.
#[derive(Default)]
pub struct PatternSums {
    /// Each item's number (from 1; 0 is no item), by its text.
    numbers: FastMap<Box<str>, u32>,
    /// Each numbered item's text and reason (at its number - 1).
    items: Vec<(Box<str>, Box<str>)>,
    /// Each pattern, its items' numbers packed (the first item in the
    /// highest 32 bits, 0 past the last), with its sums; sorted by pattern.
    sums: Vec<(u128, Sums)>,
}

impl PatternSums {
    /// No patterns yet.
    pub fn new() -> PatternSums {
        PatternSums::default()
    }

    /// The number of `item` (whose reason is `reason`), numbered if new.
    fn number(&mut self, item: &str, reason: &str) -> u32 {
        if let Some(n) = self.numbers.get(item) {
            return *n;
        }
        self.items.push((item.into(), reason.into()));
        let n = self.items.len() as u32;
        self.numbers.insert(item.into(), n);
        n
    }

    /// Merges `rows` (sorted by pattern, a pattern at most once) into the
    /// sums.
    fn merge_sorted(&mut self, rows: Vec<(u128, Sums)>) {
        if self.sums.is_empty() {
            self.sums = rows;
            return;
        }
        let old = std::mem::take(&mut self.sums);
        let mut merged = Vec::with_capacity(old.len() + rows.len());
        let (mut a, mut b) = (old.into_iter().peekable(), rows.into_iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.0 == y.0 => {
                    let (k, mut s) = a.next().expect("peeked");
                    let (_, t) = b.next().expect("peeked");
                    for (s, t) in s.iter_mut().zip(t) {
                        *s += t;
                    }
                    (k, s)
                }
                (Some(x), Some(y)) if x.0 < y.0 => a.next().expect("peeked"),
                (Some(_), Some(_)) | (None, Some(_)) => b.next().expect("peeked"),
                (Some(_), None) => a.next().expect("peeked"),
                (None, None) => break,
            };
            merged.push(next);
        }
        self.sums = merged;
    }

    /// `rows` sorted by pattern, the counts of a pattern's rows added up.
    fn sorted(mut rows: Vec<(u128, Sums)>) -> Vec<(u128, Sums)> {
        rows.sort_unstable_by_key(|r| r.0);
        let mut out: Vec<(u128, Sums)> = Vec::with_capacity(rows.len());
        for (k, c) in rows {
            match out.last_mut() {
                Some((last, s)) if *last == k => {
                    for (s, c) in s.iter_mut().zip(c) {
                        *s += c;
                    }
                }
                _ => out.push((k, c)),
            }
        }
        out
    }

    /// Adds a batch of [`sequence_counts_schema`].
    pub fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let internal =
            |what: String| -> crate::error::Error { DataFusionError::Internal(what).into() };
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| internal(format!("sequence counts without {name}")))
        };
        // per item column: its keys, and each key's number
        let mut items = Vec::with_capacity(MAX_SEQUENCE_LEN);
        for k in 1..=MAX_SEQUENCE_LEN {
            let dictionary = |what: &str| {
                let name = format!("{what}_{k}");
                let a = column(&name)?;
                a.as_dictionary_opt::<UInt32Type>().ok_or_else(|| {
                    internal(format!("sequence counts' {name} is {}", a.data_type()))
                })
            };
            let (item, reason) = (dictionary("item")?, dictionary("reason")?);
            if item.keys() != reason.keys() {
                return Err(internal(format!(
                    "item_{k} and reason_{k} differ in their keys"
                )));
            }
            let texts = |d: &DictionaryArray<UInt32Type>| {
                d.values()
                    .as_string_opt::<i32>()
                    .cloned()
                    .ok_or_else(|| internal(format!("sequence counts' values of item_{k}")))
            };
            let (item_texts, reason_texts) = (texts(item)?, texts(reason)?);
            let numbers: Vec<u32> = (0..item_texts.len())
                .map(|v| self.number(item_texts.value(v), reason_texts.value(v)))
                .collect();
            items.push((item.keys().clone(), numbers));
        }
        let counts = SUMMED
            .iter()
            .map(|c| Ok(cast(column(c)?, &DataType::Int64)?))
            .collect::<Result<Vec<_>>>()?;
        let counts: Vec<&Int64Array> = counts.iter().map(|a| a.as_primitive()).collect();
        let rows = (0..batch.num_rows())
            .map(|i| {
                let mut packed = 0u128;
                for (keys, numbers) in &items {
                    packed <<= 32;
                    if keys.is_valid(i) {
                        packed |= u128::from(numbers[keys.value(i) as usize]);
                    }
                }
                (packed, std::array::from_fn(|c| counts[c].value(i)))
            })
            .collect();
        self.merge_sorted(Self::sorted(rows));
        Ok(())
    }

    /// Adds the sums of `other`.
    pub fn merge(&mut self, other: PatternSums) {
        let numbers: Vec<u32> = other
            .items
            .iter()
            .map(|(item, reason)| self.number(item, reason))
            .collect();
        if numbers.iter().zip(1..).all(|(n, k)| *n == k) {
            // numbered alike: already in this order
            self.merge_sorted(other.sums);
            return;
        }
        let renumbered = other
            .sums
            .into_iter()
            .map(|(packed, counts)| {
                let mut renumbered = 0u128;
                for k in (0..MAX_SEQUENCE_LEN).rev() {
                    let n = (packed >> (32 * k)) as u32;
                    renumbered = (renumbered << 32)
                        | match n {
                            0 => 0,
                            n => u128::from(numbers[n as usize - 1]),
                        };
                }
                (renumbered, counts)
            })
            .collect();
        self.merge_sorted(Self::sorted(renumbered));
    }

    /// The sums, one row per pattern whose `n` is at least `min_n`, in
    /// [`sequence_totals_schema`] (None: no such pattern). A pattern's prefix
    /// has an `n` at least its own (wherever the pattern occurs, so does its
    /// prefix), so a cut at the minimum support keeps every prefix that a
    /// kept pattern's confidence divides by, and spares the texts of the
    /// many rare patterns.
    ///
    /// For patterns of three or more items, `prefix_counted` is the counted
    /// occurrences of the prefix and `expected` how many of them chance alone
    /// would have followed by the last item: Σ over the prefix's exposure
    /// bins of their occurrences × (1 − (1 − π)^k̄), with k̄ the bin's mean
    /// number of followers and π the last item's share of all items (from
    /// the one-item patterns: the contacts with that item).
    pub fn finish(self, min_n: i64) -> Result<Option<RecordBatch>> {
        let kept: Vec<usize> = (0..self.sums.len())
            .filter(|k| self.sums[*k].1[0] >= min_n)
            .collect();
        if kept.is_empty() {
            return Ok(None);
        }
        // each item's contacts (one-item patterns: only the first 32 bits set)
        let mut item_n = vec![0i64; self.items.len() + 1];
        for (packed, sums) in &self.sums {
            if *packed << 32 == 0 {
                item_n[(*packed >> 96) as usize] += sums[0];
            }
        }
        let all_items: i64 = item_n.iter().sum();
        let rows = kept.len();
        let mut pattern = StringBuilder::with_capacity(rows, rows * 48);
        let mut prefix = StringBuilder::with_capacity(rows, rows * 32);
        let mut reasons: [StringBuilder; MAX_SEQUENCE_LEN] =
            std::array::from_fn(|_| StringBuilder::with_capacity(rows, rows * 12));
        let mut lengths = Vec::with_capacity(rows);
        let mut prefix_counted: Vec<Option<i64>> = Vec::with_capacity(rows);
        let mut expected: Vec<Option<f64>> = Vec::with_capacity(rows);
        let mut text = String::new();
        for packed in kept.iter().map(|k| self.sums[*k].0) {
            let numbers: Vec<u32> = (0..MAX_SEQUENCE_LEN)
                .rev()
                .map(|k| (packed >> (32 * k)) as u32)
                .take_while(|n| *n != 0)
                .collect();
            let items: Vec<&(Box<str>, Box<str>)> = numbers
                .iter()
                .map(|n| &self.items[*n as usize - 1])
                .collect();
            text.clear();
            for (k, (item, _)) in items.iter().enumerate() {
                if k + 1 == items.len() {
                    prefix.append_value(&text);
                }
                if k > 0 {
                    text.push_str(PATTERN_SEP);
                }
                text.push_str(item);
            }
            pattern.append_value(&text);
            for (k, r) in reasons.iter_mut().enumerate() {
                match items.get(k) {
                    Some((_, reason)) => r.append_value(reason),
                    None => r.append_null(),
                }
            }
            lengths.push(items.len() as i64);
            let parent = (items.len() >= 3)
                .then(|| {
                    let shift = 32 * (MAX_SEQUENCE_LEN - items.len());
                    let parent = packed & !(u128::from(u32::MAX) << shift);
                    self.sums
                        .binary_search_by_key(&parent, |s| s.0)
                        .ok()
                        .map(|at| &self.sums[at].1)
                })
                .flatten();
            match parent {
                Some(parent) => {
                    let last = *numbers.last().expect("a pattern has items") as usize;
                    let share = if all_items > 0 {
                        item_n[last] as f64 / all_items as f64
                    } else {
                        0.0
                    };
                    let mut occurrences = 0;
                    let mut chance = 0.0;
                    for bin in 0..SEQ_BINS {
                        let n = parent[EXPOSURE_AT + bin];
                        occurrences += n;
                        if bin > 0 && n > 0 {
                            let k = parent[K_SUM_AT + bin - 1] as f64 / n as f64;
                            chance += n as f64 * crate::significance::followed_chance(share, k);
                        }
                    }
                    prefix_counted.push(Some(occurrences));
                    expected.push(Some(chance));
                }
                None => {
                    prefix_counted.push(None);
                    expected.push(None);
                }
            }
        }
        let [r1, r2, r3, r4] = reasons.map(|mut r| Arc::new(r.finish()) as ArrayRef);
        let sums = |c: usize| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(
                kept.iter().map(|k| self.sums[*k].1[c]),
            ))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(pattern.finish()),
            Arc::new(prefix.finish()),
            Arc::new(Int64Array::from(lengths)),
            r1,
            r2,
            r3,
            r4,
            sums(0),
            sums(1),
            sums(2),
            sums(3),
            sums(4),
            Arc::new(Int64Array::from(prefix_counted)),
            Arc::new(Float64Array::from(expected)),
        ];
        Ok(Some(RecordBatch::try_new(
            sequence_totals_schema(),
            columns,
        )?))
    }
}

/// `batches` (of [`sequence_counts_schema`]) summed by pattern
/// ([`PatternSums`]), the patterns with an `n` of at least `min_n`.
pub fn sum_by_pattern(batches: &[RecordBatch], min_n: i64) -> Result<Option<RecordBatch>> {
    let mut sums = PatternSums::new();
    for b in batches {
        sums.add(b)?;
    }
    sums.finish(min_n)
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
    /// Whether item y may follow item x (`x * n + y`), from
    /// `TimelineParams::sequence_steps` (None: any).
    steps: Option<Vec<bool>>,
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
            let allowed: std::collections::HashSet<(&str, &str)> = steps
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect();
            let n = self.reason.len();
            let mut m = vec![false; n * n];
            for x in 0..n {
                for y in 0..n {
                    m[x * n + y] =
                        allowed.contains(&(self.reason[x].as_str(), self.reason[y].as_str()));
                }
            }
            self.steps = Some(m);
        }
        self
    }

    /// Whether item `y` may follow item `x` in a pattern.
    fn step(&self, x: u32, y: u32) -> bool {
        match &self.steps {
            None => true,
            Some(m) => m[x as usize * self.reason.len() + y as usize],
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
            if items.code[i] == NULL_CODE {
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
/// whole pattern. Profiling the hash of packed keys showed most of the
/// search's time waiting on cache misses in that map.
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
            Some((node, t.mine <= cap))
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
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    /// One row of sequence counts: its items (2 to 4 reasons, or
    /// channel:reason items) and counts.
    type Row = (Vec<&'static str>, [i64; 3]);

    /// The reason of an item: after the channel, if any.
    fn reason_of(item: &str) -> &str {
        item.rsplit(':').next().expect("a part")
    }

    /// `rows` as the pass writes them, coded into `dictionary` (item texts;
    /// every item of `rows` among them, in any order).
    fn coded_batch(rows: &[Row], dictionary: &[&'static str]) -> RecordBatch {
        let names: ArrayRef = Arc::new(StringArray::from_iter_values(dictionary));
        let reasons: ArrayRef = Arc::new(StringArray::from_iter_values(
            dictionary.iter().map(|d| reason_of(d)),
        ));
        let keys: Vec<UInt32Array> = (0..MAX_SEQUENCE_LEN)
            .map(|k| {
                rows.iter()
                    .map(|r| {
                        r.0.get(k)
                            .map(|i| dictionary.iter().position(|d| d == i).unwrap() as u32)
                    })
                    .collect()
            })
            .collect();
        let int = |f: &dyn Fn(&Row) -> i64| -> ArrayRef {
            Arc::new(rows.iter().map(f).collect::<Int64Array>())
        };
        let mut columns = vec![int(&|r| r.0.len() as i64)];
        for values in [&names, &reasons] {
            for k in &keys {
                columns.push(Arc::new(
                    DictionaryArray::<UInt32Type>::try_new(k.clone(), values.clone()).unwrap(),
                ));
            }
        }
        for c in 0..N_SUMMED {
            columns.push(int(&move |r: &Row| if c < 3 { r.1[c] } else { 0 }));
        }
        RecordBatch::try_new(sequence_counts_schema(), columns).unwrap()
    }

    /// `rows` as [`PatternSums::finish`] writes them (its first ten
    /// columns: the texts and totals).
    fn text_batch(rows: &[Row]) -> RecordBatch {
        let text = |f: &dyn Fn(&Row) -> Option<String>| -> ArrayRef {
            Arc::new(rows.iter().map(f).collect::<StringArray>())
        };
        let int = |f: &dyn Fn(&Row) -> i64| -> ArrayRef {
            Arc::new(rows.iter().map(f).collect::<Int64Array>())
        };
        let reason = |k: usize| move |r: &Row| r.0.get(k).map(|s| reason_of(s).to_string());
        let schema = Arc::new(sequence_totals_schema().project(&TOTALS).unwrap());
        RecordBatch::try_new(
            schema,
            vec![
                text(&|r| Some(r.0.join(PATTERN_SEP))),
                text(&|r| Some(r.0[..r.0.len() - 1].join(PATTERN_SEP))),
                int(&|r| r.0.len() as i64),
                text(&reason(0)),
                text(&reason(1)),
                text(&reason(2)),
                text(&reason(3)),
                int(&|r| r.1[0]),
                int(&|r| r.1[1]),
                int(&|r| r.1[2]),
            ],
        )
        .unwrap()
    }

    /// The texts and totals of [`sequence_totals_schema`].
    const TOTALS: [usize; 10] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];

    /// `batch`'s texts and totals with its rows in the order of their
    /// pattern texts.
    fn by_pattern(batch: &RecordBatch) -> RecordBatch {
        let batch = batch.project(&TOTALS).unwrap();
        let order =
            datafusion::arrow::compute::sort_to_indices(batch.column(0), None, None).unwrap();
        datafusion::arrow::compute::take_record_batch(&batch, &order).unwrap()
    }

    /// Against a plain map from pattern text to summed counts: every pattern
    /// once, its counts summed over batches whose codes differ (each its own
    /// dictionary, in its own order), its texts and reasons its own (the
    /// rows compared in the order of their patterns); with reason items and with channel:reason items
    /// that share reasons; batches without rows and no batches at all; and
    /// the batches summed in two halves and merged.
    #[test]
    fn sums_by_pattern_like_a_map() {
        let reasons = ["billing", "outage", "login", "moving"];
        let channel_reasons = ["billing", "phone:billing", "chat:billing", "chat:outage"];
        assert!(sum_by_pattern(&[], 0).unwrap().is_none());
        assert!(
            sum_by_pattern(&[coded_batch(&[], &reasons)], 0)
                .unwrap()
                .is_none()
        );
        let mut rng = StdRng::seed_from_u64(3);
        for trial in 0..200 {
            let items = if trial % 2 == 0 {
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
                    let mut dictionary = items.to_vec();
                    dictionary.shuffle(&mut rng);
                    coded_batch(&rows, &dictionary)
                })
                .collect();
            let mut want: BTreeMap<Vec<&'static str>, [i64; 3]> = BTreeMap::new();
            let mut order: Vec<Vec<&'static str>> = Vec::new();
            for b in &batches {
                for i in 0..b.num_rows() {
                    let key: Vec<&'static str> = (1..=MAX_SEQUENCE_LEN)
                        .filter_map(|k| {
                            let d = b
                                .column_by_name(&format!("item_{k}"))
                                .unwrap()
                                .as_dictionary::<UInt32Type>();
                            let v = d.values().as_string::<i32>();
                            d.keys()
                                .is_valid(i)
                                .then(|| v.value(d.keys().value(i) as usize))
                                .map(|t| *items.iter().find(|x| **x == t).unwrap())
                        })
                        .collect();
                    let sums = want.entry(key.clone()).or_insert_with(|| {
                        order.push(key);
                        [0; 3]
                    });
                    for (k, sum) in sums.iter_mut().enumerate() {
                        *sum += b
                            .column_by_name(SUMMED[k])
                            .unwrap()
                            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                            .value(i);
                    }
                }
            }
            // a cut at a random support (none, or about half the patterns)
            let min_n = [i64::MIN, 500_000_000_000][rng.random_range(0..2)];
            let got = sum_by_pattern(&batches, min_n).unwrap();
            let rows: Vec<Row> = order
                .iter()
                .map(|p| (p.clone(), want[p]))
                .filter(|r| r.1[0] >= min_n)
                .collect();
            let Some(got) = got else {
                assert!(rows.is_empty(), "trial {trial}");
                continue;
            };
            assert_eq!(
                by_pattern(&got),
                by_pattern(&text_batch(&rows)),
                "trial {trial}"
            );
            // the same from two halves merged
            let half = rng.random_range(0..=batches.len());
            let mut first = PatternSums::new();
            let mut second = PatternSums::new();
            for b in &batches[..half] {
                first.add(b).unwrap();
            }
            for b in &batches[half..] {
                second.add(b).unwrap();
            }
            first.merge(second);
            assert_eq!(
                first.finish(min_n).unwrap().map(|b| by_pattern(&b)),
                Some(by_pattern(&got)),
                "trial {trial}, merged"
            );
        }
    }

    /// A batch whose reasons are not keyed like its items is refused.
    #[test]
    fn items_and_reasons_keyed_alike() {
        let b = coded_batch(&[(vec!["a", "b"], [1, 1, 1])], &["a", "b"]);
        let mut columns = b.columns().to_vec();
        let swapped = DictionaryArray::<UInt32Type>::try_new(
            UInt32Array::from(vec![1]),
            Arc::new(StringArray::from(vec!["a", "b"])),
        )
        .unwrap();
        columns[1 + MAX_SEQUENCE_LEN] = Arc::new(swapped);
        let b = RecordBatch::try_new(b.schema(), columns).unwrap();
        assert!(PatternSums::new().add(&b).is_err());
    }
}
