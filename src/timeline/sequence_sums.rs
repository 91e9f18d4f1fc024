//! The sequence pass's pattern counts summed over partitions and buckets.
//!
//! Input: rows of [`super::sequences::sequence_counts_schema`], each
//! partition's patterns with its items as that partition's codes. Output:
//! one row per pattern ([`sequence_totals_schema`], the `sequence_counts`
//! table `queries/pattern_totals.sql` reads), its texts written once, with
//! each prefix's counted occurrences and what chance would give it.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, Float64Array, Int64Array, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;

use super::{FastMap, MAX_SEQUENCE_LEN, PATTERN_SEP};
use crate::error::Result;

/// Schema of the `sequence_counts` table the SQL reads
/// (`queries/pattern_totals.sql`): one row per pattern with its texts and
/// its totals over every partition and bucket ([`PatternSums::finish`]).
/// The totals are nullable, as SQL sums are, so that the output files keep
/// the schemas a reader of them knows.
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
pub(super) const SUMMED: [&str; N_SUMMED] = [
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
pub(super) const N_SUMMED: usize = 22;
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
/// the same order: no hash table of every pattern, whose probes would miss
/// the cache on a large log, and no texts per pattern and partition (a
/// pattern's texts are written once, by [`PatternSums::finish`]).
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
                            chance += n as f64 * super::triggers::followed_chance(share, k);
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
