//! The per-customer timeline pass (stages 2 and 4 run it in its modes).
//!
//! Input: `contacts_in` rows (see [`crate::ingest`]) in which every customer's
//! contacts are contiguous and ordered by (ts, contact_id, _row). The
//! [`exec::TimelineExec`] operator guarantees this by requiring hash
//! distribution on `customer_id` and that ordering from DataFusion; the
//! pipeline sorts once ([`sorted`]) and feeds every pass from that order.
//!
//! One pass over each customer's contacts computes, without any join:
//!
//! - [`Mode::Contacts`] — one output row per contact ([`contacts_schema`]):
//!   the previous contact's gap and channel, `is_repeat` (an earlier contact at
//!   most the repeat window before), `is_repeat_same_reason` (an earlier
//!   contact with the same non-null reason at most the window before), the
//!   event (a chain of contacts each within the window of the one before;
//!   `event_id` = first contact's id, `event_seq` = 1, 2, …) and
//!   `followed_within_window` (another contact follows at most the window
//!   later; null while the window is still open at the data's last timestamp);
//!   internal, not written: `_customer_contacts`, `_latest_of_reason` (the
//!   customer's latest contact with that reason at or before as-of) and
//!   `_row`, so that this output can feed the later passes; and, when the
//!   input has them (the pipeline's does, see [`crate::codes::encode_texts`]),
//!   `_channel_code`, `_reason_code`, `_prev_channel_code` and
//!   `_prev_reason_code`. Every mode
//!   reads reason and channel by those codes when the input has them,
//!   instead of hashing the texts row by row.
//! - [`Mode::PairCounts`] — per partition and window W, one row per (reason A
//!   or null, reason B) ([`pair_counts_schema`]): how many A-contacts are
//!   followed by a B-contact of the same customer with 0 < t_B − t_A ≤ W, by
//!   how many distinct customers, at what follow-up cost, and the sorted lags
//!   to each one's first B (A and B non-null, A ≠ B); over each customer's
//!   counted triggers, the sums the significance test needs. See `pairs.rs`.
//! - [`Mode::Exposure`] — per partition, the counted triggers' followers by
//!   reason, window, day and k bin, and each reason's daily contacts: what
//!   chance alone would give each pair. See `exposure.rs`.
//! - [`Mode::Followups`] — for the (A, B) pairs of
//!   [`TimelineParams::pair_filter`] (the reported clusters), one row per
//!   A-contact followed by a B-contact within the cluster window
//!   ([`followups_schema`]), pointing at the first such B-contact: the
//!   evidence behind each reported cluster.
//! - [`Mode::SequenceCounts`] and [`Mode::Sequences`] — patterns of 2–4 steps
//!   by leftmost occurrence, see `sequences.rs`.
//!
//! Customers over [`MAX_PAIR_CONTACTS_PER_CUSTOMER`] contacts are left out of
//! pair counts and follow-ups, over [`MAX_SEQUENCE_CONTACTS_PER_CUSTOMER`] of
//! sequences (the pipeline counts them in the manifest).
//!
//! With the `ballista` feature, `codec::TimelineCodec` serializes the operator in a physical plan
//! (`datafusion-proto`, the form a distributed scheduler such as Apache
//! Ballista ships plans to its executors in); `logical::TimelineNode` is
//! the pass in a logical plan, which `logical::TimelineQueryPlanner` plans
//! as the operator and `logical::TimelineLogicalCodec` serializes.

#[cfg(feature = "ballista")]
pub mod codec;
pub mod exec;
mod exposure;
#[cfg(feature = "ballista")]
pub mod logical;
mod pairs;
mod sequence_sums;
mod sequences;
pub mod sorted;
pub mod triggers;

pub use exposure::exposure_schema;
pub use pairs::pair_counts_schema;
pub use sequences::{
    PatternSums, SEQ_BINS, seq_bin, sequence_counts_schema, sequence_totals_schema,
    sequences_schema, sum_by_pattern,
};

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Offset, TimeZone};
use chrono_tz::Tz;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Float64Array, Int64Array, UInt32Array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{
    DataType, Field, Int64Type, Schema, SchemaRef, TimestampMicrosecondType, UInt32Type,
};
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::Result;

/// Which table the pass produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// One annotated row per contact.
    Contacts,
    /// One row per (contact, follow-up reason) within the cluster window, for
    /// the pairs in [`TimelineParams::pair_filter`] only.
    Followups,
    /// One row per (start contact, pattern) found from it, for the patterns
    /// in [`TimelineParams::sequence_filter`] only.
    Sequences,
    /// Per-partition totals of every pattern of 2–4 items: one row per
    /// pattern.
    SequenceCounts,
    /// Per-partition A → B follow-up counts at each of
    /// [`TimelineParams::pair_windows_us`]: one row per (window, A, B).
    PairCounts,
    /// Per-partition exposure of the counted triggers, for the expected
    /// counts of the significance test: see `exposure.rs`.
    Exposure,
}

/// Parameters of the pass.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TimelineParams {
    /// Repeat window, µs.
    pub repeat_window_us: i64,
    /// The longest cluster window, µs: follow-ups are listed up to it.
    pub cluster_window_us: i64,
    /// The last timestamp in the data, µs; decides which windows are closed.
    pub data_end_us: i64,
    /// The moment outreach is planned for, µs: `_latest_of_reason` marks each
    /// customer's latest contact per reason at or before it.
    pub as_of_us: i64,
    /// Time zone for the local `date` column.
    pub tz: Tz,
    /// Largest gap between two steps of a sequence, µs.
    pub max_gap_us: i64,
    /// Largest span of a sequence, µs.
    pub max_span_us: i64,
    /// Sequence items are `channel:reason` instead of reasons.
    pub channel_items: bool,
    /// The patterns (text form) whose occurrences [`Mode::Sequences`] emits.
    pub sequence_filter: Arc<Vec<String>>,
    /// The windows [`Mode::PairCounts`] counts at, µs, ascending; the last
    /// is at most `cluster_window_us`.
    pub pair_windows_us: Arc<Vec<i64>>,
    /// Cost of a follow-up per channel, in millionths.
    pub channel_cost_micros: Arc<BTreeMap<String, i64>>,
    /// Cost of a follow-up on any other channel (or none), in millionths.
    pub default_cost_micros: i64,
    /// The (antecedent, consequent) pairs whose follow-ups [`Mode::Followups`]
    /// emits.
    pub pair_filter: Arc<Vec<(String, String)>>,
    /// How many triggers of each reason (and occurrences of each sequence
    /// prefix) a customer counts with in the significance tests: its first
    /// ones in time.
    pub customer_cap: u32,
    /// The (reason, reason) steps a sequence may take (None: any). A
    /// sequence is reported only when every step is a reported cluster, so
    /// the pipeline mines only those steps; with them, [`Mode::Sequences`]
    /// and an empty `sequence_filter` lists every pattern of 3–4 items.
    pub sequence_steps: Option<Arc<Vec<(String, String)>>>,
    /// Counts one period's triggers only ([`TriggerPeriod`]); None: all.
    pub trigger_period: Option<TriggerPeriod>,
}

/// The triggers of one period, as the trends of `crate::stages::trends`
/// count them: only contacts at or after `from_us` and before `until_us`
/// are triggers (the antecedents of [`Mode::PairCounts`] and their totals,
/// the counted triggers of [`Mode::Exposure`], the first items of
/// [`Mode::SequenceCounts`]); every contact still follows. And a trigger
/// counts at a window only when the window has ended by `complete_by_us`
/// (the data's end): a recent trigger whose window is still open has not
/// had its chance to be followed, and would read as unfollowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TriggerPeriod {
    /// The first instant of the period, µs.
    pub from_us: i64,
    /// The end of the period, µs (exclusive).
    pub until_us: i64,
    /// The end of the data, µs: a window must end by it to count.
    pub complete_by_us: i64,
}

impl TimelineParams {
    /// Whether a contact at `ts_us` is a trigger ([`Self::trigger_period`]).
    #[inline]
    pub fn triggers_at(&self, ts_us: i64) -> bool {
        match self.trigger_period {
            None => true,
            Some(p) => p.from_us <= ts_us && ts_us < p.until_us,
        }
    }

    /// Whether a trigger's window (or a sequence's reach) ending at
    /// `end_us` has ended within the data ([`Self::trigger_period`]; always
    /// without one).
    #[inline]
    pub fn complete(&self, end_us: i64) -> bool {
        match self.trigger_period {
            None => true,
            Some(p) => end_us <= p.complete_by_us,
        }
    }

    /// How many of the pair windows (a prefix of them, ascending) a
    /// trigger at `ts_us` counts at.
    #[inline]
    pub fn complete_windows(&self, ts_us: i64) -> usize {
        match self.trigger_period {
            None => self.pair_windows_us.len(),
            Some(_) => self
                .pair_windows_us
                .partition_point(|w| self.complete(ts_us.saturating_add(*w))),
        }
    }
}

/// Longest sequence mined.
pub const MAX_SEQUENCE_LEN: usize = 4;
/// Customers with more contacts than this are not mined for sequences (a
/// placeholder id nobody excluded would otherwise dominate time and memory);
/// how many were skipped is in the manifest.
pub const MAX_SEQUENCE_CONTACTS_PER_CUSTOMER: usize = 500;
/// Customers with more contacts than this are left out of A → B counting
/// (pair counts, their totals, exposure and follow-ups) and of outreach:
/// such an id (a placeholder nobody excluded, a test account) is no customer
/// to learn from, and the follow-ups pass still reads every later contact
/// within the window. How many were left out is in the manifest.
pub const MAX_PAIR_CONTACTS_PER_CUSTOMER: usize = 10_000;

pub(crate) const NULL_CODE: u32 = u32::MAX;

/// A hash map with a fast non-cryptographic hasher, for per-partition
/// dictionaries (nothing here is exposed to untrusted keys that could collide
/// on purpose any more than any log could).
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Output schema of [`Mode::Contacts`] for an input schema.
pub fn contacts_schema(input: &Schema) -> SchemaRef {
    let f = |name: &str| {
        input
            .field_with_name(name)
            .expect("contacts_in column")
            .clone()
    };
    let mut fields = vec![
        f("contact_id"),
        f("customer_id"),
        f("ts"),
        Field::new("date", DataType::Date32, false),
        f("channel"),
        f("reason"),
    ];
    fields.push(f("agent"));
    fields.extend([
        Field::new("prev_channel", DataType::Utf8, true),
        Field::new("prev_gap_s", DataType::Float64, true),
        Field::new("is_repeat", DataType::Boolean, false),
        Field::new("is_repeat_same_reason", DataType::Boolean, false),
        f("contact_id").with_name("event_id"),
        Field::new("event_seq", DataType::Int64, false),
        Field::new("followed_within_window", DataType::Boolean, true),
        // internal, not written: the customer's number of contacts (for the caps)
        Field::new("_customer_contacts", DataType::Int64, false),
        // internal: the customer's latest contact with this reason at or before
        // as-of (for outreach)
        Field::new("_latest_of_reason", DataType::Boolean, false),
        // kept so that this output, in the pass's order, can feed later passes
        f("_row"),
    ]);
    if input.field_with_name("_channel_code").is_ok() {
        // internal: the bucket's codes of channel and reason (see
        // `crate::codes::encode_texts`), and the previous contact's channel
        // and reason codes
        fields.extend([
            f("_channel_code"),
            f("_reason_code"),
            Field::new("_prev_channel_code", DataType::UInt32, true),
            Field::new("_prev_reason_code", DataType::UInt32, true),
        ]);
    }
    Arc::new(Schema::new(fields))
}

/// Output schema of [`Mode::Followups`] for an input schema.
pub fn followups_schema(input: &Schema) -> SchemaRef {
    let id = input
        .field_with_name("contact_id")
        .expect("contacts_in column");
    Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Utf8, false),
        id.clone().with_name("trigger_contact_id"),
        Field::new("antecedent", DataType::Utf8, true),
        id.clone().with_name("followup_contact_id"),
        Field::new("consequent", DataType::Utf8, false),
        Field::new("followup_channel", DataType::Utf8, true),
        Field::new("lag_s", DataType::Float64, false),
    ]))
}

/// Separator between the items of a pattern's text form.
pub const PATTERN_SEP: &str = " -> ";

/// Views of the columns the pass needs, over one sorted batch.
pub(crate) struct Columns<'a> {
    customer: &'a datafusion::arrow::array::StringArray,
    pub(crate) ts: &'a [i64],
    /// Each row's reason code (NULL_CODE: null).
    reason_codes: Cow<'a, [u32]>,
    /// Codes are below this.
    n_reasons: usize,
    /// Code per reason text (of the reasons in the batch).
    reason_index: FastMap<&'a str, u32>,
    /// The first row of each reason code (NULL_CODE: none in the batch).
    reason_first_row: Vec<u32>,
    /// Each row's customer's number of contacts, when the batch has it.
    customer_contacts: Option<&'a [i64]>,
}

impl<'a> Columns<'a> {
    pub(crate) fn new(batch: &'a RecordBatch) -> Self {
        let customer = batch
            .column_by_name("customer_id")
            .expect("customer_id")
            .as_string::<i32>();
        let ts = batch
            .column_by_name("ts")
            .expect("ts")
            .as_primitive::<TimestampMicrosecondType>()
            .values();
        let reason = batch
            .column_by_name("reason")
            .expect("reason")
            .as_string::<i32>();
        let customer_contacts = batch
            .column_by_name("_customer_contacts")
            .map(|c| c.as_primitive::<Int64Type>().values().as_ref());
        if let Some(codes) = batch.column_by_name("_reason_code") {
            // the bucket's codes (`crate::codes::encode_texts`): no text is hashed
            let codes = codes.as_primitive::<UInt32Type>();
            let reason_codes: Cow<'a, [u32]> = if codes.null_count() == 0 {
                Cow::Borrowed(codes.values().as_ref())
            } else {
                Cow::Owned(codes.iter().map(|c| c.unwrap_or(NULL_CODE)).collect())
            };
            let n_reasons = reason_codes
                .iter()
                .filter(|c| **c != NULL_CODE)
                .max()
                .map_or(0, |m| *m as usize + 1);
            let mut first_row = vec![NULL_CODE; n_reasons];
            for (i, c) in reason_codes.iter().enumerate() {
                if *c != NULL_CODE && first_row[*c as usize] == NULL_CODE {
                    first_row[*c as usize] = i as u32;
                }
            }
            let reason_index = (0u32..)
                .zip(&first_row)
                .filter(|(_, r)| **r != NULL_CODE)
                .map(|(c, r)| (reason.value(*r as usize), c))
                .collect();
            return Columns {
                customer,
                ts,
                reason_codes,
                n_reasons,
                reason_index,
                reason_first_row: first_row,
                customer_contacts,
            };
        }
        let mut dict: FastMap<&str, u32> = FastMap::default();
        let mut first_row = Vec::new();
        let reason_codes = (0..reason.len())
            .map(|i| {
                if reason.is_null(i) {
                    NULL_CODE
                } else {
                    let next = dict.len() as u32;
                    let code = *dict.entry(reason.value(i)).or_insert(next);
                    if code == next {
                        first_row.push(i as u32);
                    }
                    code
                }
            })
            .collect::<Vec<u32>>();
        Columns {
            customer,
            ts,
            reason_codes: Cow::Owned(reason_codes),
            n_reasons: dict.len(),
            reason_index: dict,
            reason_first_row: first_row,
            customer_contacts,
        }
    }

    /// Start offsets of each customer's run, plus the end.
    /// (Over the annotated contacts, from their `_customer_contacts` column
    /// without comparing ids.)
    pub(crate) fn customer_runs(&self) -> Vec<usize> {
        let n = self.customer.len();
        let mut runs = Vec::new();
        if let Some(lengths) = self.customer_contacts {
            let mut i = 0;
            while i < n {
                runs.push(i);
                i += (lengths[i] as usize).max(1);
            }
        } else {
            for i in 0..n {
                if i == 0 || self.customer.value(i) != self.customer.value(i - 1) {
                    runs.push(i);
                }
            }
        }
        runs.push(n);
        runs
    }
}

/// Runs the pass over one batch sorted by (customer_id, ts, contact_id, _row).
pub fn process(batch: &RecordBatch, mode: Mode, params: &TimelineParams) -> Result<RecordBatch> {
    match mode {
        Mode::Contacts => annotate_contacts(batch, params),
        Mode::Followups => followups(batch, params),
        Mode::Sequences => sequences::occurrences(batch, params),
        Mode::SequenceCounts => sequences::counts(batch, params),
        Mode::PairCounts => pairs::counts(batch, params),
        Mode::Exposure => exposure::exposure(batch, params),
    }
}

fn annotate_contacts(batch: &RecordBatch, p: &TimelineParams) -> Result<RecordBatch> {
    let cols = Columns::new(batch);
    let n = batch.num_rows();
    let w = p.repeat_window_us;
    let mut prev_idx: Vec<Option<u32>> = Vec::with_capacity(n);
    let mut prev_gap = Vec::with_capacity(n);
    let mut is_repeat = Vec::with_capacity(n);
    let mut same_reason = Vec::with_capacity(n);
    let mut event_start: Vec<u32> = Vec::with_capacity(n);
    let mut event_seq = Vec::with_capacity(n);
    let mut followed = Vec::with_capacity(n);
    let mut customer_contacts: Vec<i64> = Vec::with_capacity(n);
    let mut latest_of_reason = vec![false; n];
    // latest_mark[reason] = 1 + the customer run that last marked it
    let mut latest_mark: Vec<usize> = vec![0; cols.n_reasons];
    // last_seen[reason] = (customer run index, timestamp of its latest contact)
    let mut last_seen: Vec<(usize, i64)> = vec![(usize::MAX, 0); cols.n_reasons];
    let runs = cols.customer_runs();
    for (run, bounds) in runs.windows(2).enumerate() {
        let (start, end) = (bounds[0], bounds[1]);
        customer_contacts.extend(std::iter::repeat_n((end - start) as i64, end - start));
        for i in (start..end).rev() {
            let code = cols.reason_codes[i];
            if code != NULL_CODE
                && cols.ts[i] <= p.as_of_us
                && latest_mark[code as usize] != run + 1
            {
                latest_mark[code as usize] = run + 1;
                latest_of_reason[i] = true;
            }
        }
        let mut ev_start = start;
        let mut seq = 0i64;
        for i in start..end {
            let t = cols.ts[i];
            if i > start {
                let gap = t - cols.ts[i - 1];
                prev_idx.push(Some((i - 1) as u32));
                prev_gap.push(Some(gap as f64 / 1e6));
                let rep = gap <= w;
                is_repeat.push(rep);
                if rep {
                    seq += 1;
                } else {
                    ev_start = i;
                    seq = 1;
                }
            } else {
                prev_idx.push(None);
                prev_gap.push(None);
                is_repeat.push(false);
                ev_start = i;
                seq = 1;
            }
            event_start.push(ev_start as u32);
            event_seq.push(seq);
            let code = cols.reason_codes[i];
            if code == NULL_CODE {
                same_reason.push(false);
            } else {
                let (r, last) = last_seen[code as usize];
                same_reason.push(r == run && t - last <= w);
                last_seen[code as usize] = (run, t);
            }
            followed.push(if i + 1 < end && cols.ts[i + 1] - t <= w {
                Some(true)
            } else if t.saturating_add(w) <= p.data_end_us {
                Some(false)
            } else {
                None
            });
        }
    }
    let schema = contacts_schema(batch.schema().as_ref());
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .expect("contacts_in column")
            .clone()
    };
    let dates: Date32Array = cols
        .ts
        .iter()
        .map(|t| local_date(*t, p.tz))
        .collect::<Vec<i32>>()
        .into();
    let prev_idx = UInt32Array::from(prev_idx);
    let mut out: Vec<ArrayRef> = vec![
        col("contact_id"),
        col("customer_id"),
        col("ts"),
        Arc::new(dates),
        col("channel"),
        col("reason"),
    ];
    out.push(col("agent"));
    out.push(take(col("channel").as_ref(), &prev_idx, None)?);
    out.push(Arc::new(Float64Array::from(prev_gap)));
    out.push(Arc::new(BooleanArray::from(is_repeat)));
    out.push(Arc::new(BooleanArray::from(same_reason)));
    out.push(take(
        col("contact_id").as_ref(),
        &UInt32Array::from(event_start),
        None,
    )?);
    out.push(Arc::new(Int64Array::from(event_seq)));
    out.push(Arc::new(BooleanArray::from(followed)));
    out.push(Arc::new(Int64Array::from(customer_contacts)));
    out.push(Arc::new(BooleanArray::from(latest_of_reason)));
    out.push(col("_row"));
    if let Some(codes) = batch.column_by_name("_channel_code") {
        out.push(codes.clone());
        out.push(col("_reason_code"));
        out.push(take(codes.as_ref(), &prev_idx, None)?);
        out.push(take(col("_reason_code").as_ref(), &prev_idx, None)?);
    }
    Ok(RecordBatch::try_new(schema, out)?)
}

fn followups(batch: &RecordBatch, p: &TimelineParams) -> Result<RecordBatch> {
    let cols = Columns::new(batch);
    let w = p.cluster_window_us;
    // wanted[a]: the consequents of antecedent a in the filter, sorted (a
    // few reported clusters among any number of reasons)
    let mut wanted: Vec<Vec<u32>> = vec![Vec::new(); cols.n_reasons];
    for (a, b) in p.pair_filter.iter() {
        if let (Some(&a), Some(&b)) = (
            cols.reason_index.get(a.as_str()),
            cols.reason_index.get(b.as_str()),
        ) {
            wanted[a as usize].push(b);
        }
    }
    for w in &mut wanted {
        w.sort_unstable();
        w.dedup();
    }
    let mut trig: Vec<u32> = Vec::new();
    let mut foll: Vec<u32> = Vec::new();
    let mut lag: Vec<f64> = Vec::new();
    // seen[reason] = 1 + index of the trigger that last recorded this reason
    let mut seen: Vec<u32> = vec![0; cols.n_reasons];
    let runs = cols.customer_runs();
    for bounds in runs.windows(2) {
        let (start, end) = (bounds[0], bounds[1]);
        if end - start > MAX_PAIR_CONTACTS_PER_CUSTOMER {
            continue;
        }
        for i in start..end {
            let a = cols.reason_codes[i];
            if a == NULL_CODE || wanted[a as usize].is_empty() {
                continue;
            }
            let wanted_b = &wanted[a as usize];
            let t = cols.ts[i];
            let stamp = i as u32 + 1;
            let mut j = i + 1;
            while j < end && cols.ts[j] - t <= w {
                let code = cols.reason_codes[j];
                if cols.ts[j] > t && code != NULL_CODE && seen[code as usize] != stamp {
                    seen[code as usize] = stamp;
                    if wanted_b.binary_search(&code).is_err() {
                        j += 1;
                        continue;
                    }
                    trig.push(i as u32);
                    foll.push(j as u32);
                    lag.push((cols.ts[j] - t) as f64 / 1e6);
                }
                j += 1;
            }
        }
    }
    let schema = followups_schema(batch.schema().as_ref());
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .expect("contacts_in column")
            .clone()
    };
    let trig = UInt32Array::from(trig);
    let foll = UInt32Array::from(foll);
    let out: Vec<ArrayRef> = vec![
        take(col("customer_id").as_ref(), &trig, None)?,
        take(col("contact_id").as_ref(), &trig, None)?,
        take(col("reason").as_ref(), &trig, None)?,
        take(col("contact_id").as_ref(), &foll, None)?,
        take(col("reason").as_ref(), &foll, None)?,
        take(col("channel").as_ref(), &foll, None)?,
        Arc::new(Float64Array::from(lag)),
    ];
    Ok(RecordBatch::try_new(schema, out)?)
}

/// The local calendar day of a UTC instant, as days since 1970-01-01.
pub fn local_date(ts_us: i64, tz: Tz) -> i32 {
    const DAY_US: i64 = 86_400_000_000;
    let offset_us = if tz == chrono_tz::UTC {
        0
    } else {
        match DateTime::from_timestamp_micros(ts_us) {
            Some(dt) => {
                tz.offset_from_utc_datetime(&dt.naive_utc())
                    .fix()
                    .local_minus_utc() as i64
                    * 1_000_000
            }
            None => 0,
        }
    };
    (ts_us + offset_us).div_euclid(DAY_US) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::contacts_in_schema;
    use datafusion::arrow::array::{StringArray, TimestampMicrosecondArray};

    const H: i64 = 3_600_000_000;

    fn batch(rows: &[(&str, i64, Option<&str>)]) -> RecordBatch {
        let schema = contacts_in_schema(&DataType::Int64);
        let n = rows.len() as i64;
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(1..=n)),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                        .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from(vec![Some("phone"); rows.len()])),
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(vec![None::<&str>; rows.len()])),
                Arc::new(Int64Array::from_iter_values(0..n)),
            ],
        )
        .unwrap()
    }

    fn params() -> TimelineParams {
        TimelineParams {
            repeat_window_us: 24 * H,
            cluster_window_us: 7 * 24 * H,
            data_end_us: 100 * 24 * H,
            as_of_us: 100 * 24 * H,
            tz: chrono_tz::UTC,
            max_gap_us: 7 * 24 * H,
            max_span_us: 30 * 24 * H,
            channel_items: false,
            sequence_filter: Arc::new(vec!["x -> y".into(), "z -> w".into(), "x -> z".into()]),
            pair_windows_us: Arc::new(vec![24 * H, 7 * 24 * H]),
            channel_cost_micros: Arc::new(Default::default()),
            default_cost_micros: 1_000_000,
            pair_filter: Arc::new(vec![("x".into(), "y".into()), ("y".into(), "y".into())]),
            customer_cap: 3,
            sequence_steps: None,
            trigger_period: None,
        }
    }

    #[test]
    fn sequence_counts_same_with_dense_or_hashed_children() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let customers = ["a", "b", "c", "d", "e", "f"];
        let reasons = ["p", "q", "r", "s", "t", "u", "v"];
        let mut rows: Vec<(&str, i64, Option<&str>)> = Vec::new();
        for c in customers {
            let mut t = 0;
            for _ in 0..rng.random_range(1..40) {
                // ties, steps exactly at the gap, and longer gaps
                t += [0, H, 24 * H, 7 * 24 * H, 7 * 24 * H + 1][rng.random_range(0..5)];
                let r = (rng.random_range(0..9) > 0).then(|| reasons[rng.random_range(0..7)]);
                rows.push((c, t, r));
            }
        }
        let b = batch(&rows);
        let p = params();
        let dense = sequences::counts(&b, &p).unwrap();
        assert!(
            dense.num_rows() > 50,
            "patterns found: {}",
            dense.num_rows()
        );
        // none dense but the first items; the first few nodes dense
        for slots in [0, 7 * 4] {
            assert_eq!(sequences::counts_with(&b, &p, slots).unwrap(), dense);
        }
    }

    #[test]
    fn repeats_events_and_gap_exactly_at_window() {
        let b = batch(&[
            ("a", 0, Some("x")),
            ("a", 24 * H, Some("y")),     // exactly at the window: repeat
            ("a", 48 * H + 1, Some("x")), // just past: new event
            ("b", 5 * H, None),
        ]);
        let out = process(&b, Mode::Contacts, &params()).unwrap();
        let rep = out.column_by_name("is_repeat").unwrap().as_boolean();
        assert_eq!(
            rep.iter().collect::<Vec<_>>(),
            vec![Some(false), Some(true), Some(false), Some(false)]
        );
        let seq = out
            .column_by_name("event_seq")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(seq.values().to_vec(), vec![1, 2, 1, 1]);
        let ev = out
            .column_by_name("event_id")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(ev.values().to_vec(), vec![1, 1, 3, 4]);
        let same = out
            .column_by_name("is_repeat_same_reason")
            .unwrap()
            .as_boolean();
        assert_eq!(
            same.iter().collect::<Vec<_>>(),
            vec![Some(false), Some(false), Some(false), Some(false)]
        );
    }

    #[test]
    fn sequences_by_leftmost_occurrence() {
        let b = batch(&[
            ("a", 0, Some("x")),
            ("a", H, Some("y")),
            ("a", H, Some("x")),          // same instant as y: never after it
            ("a", 9 * 24 * H, Some("z")), // 9 days after y: beyond the 7-day gap
            ("a", 10 * 24 * H, Some("w")),
        ]);
        let out = process(&b, Mode::Sequences, &params()).unwrap();
        let pat = out.column_by_name("pattern").unwrap().as_string::<i32>();
        let mut got: Vec<&str> = (0..out.num_rows()).map(|i| pat.value(i)).collect();
        got.sort();
        // from x@0: x->y; from y@1h: none within 7 days except nothing (z is 9 days on);
        // x@1h: none; z: z->w
        assert_eq!(got, vec!["x -> y", "z -> w"]);
    }

    #[test]
    fn pair_lags_within_a_middle_window_are_the_smallest() {
        const D: i64 = 24 * H;
        // no x -> y within 1d; within 7d only the 3-day lag (listed second)
        let b = batch(&[
            ("a", 0, Some("x")),
            ("a", 20 * D, Some("y")),
            ("b", 0, Some("x")),
            ("b", 3 * D, Some("y")),
        ]);
        let p = TimelineParams {
            cluster_window_us: 30 * D,
            pair_windows_us: Arc::new(vec![D, 7 * D, 30 * D]),
            ..params()
        };
        let out = process(&b, Mode::PairCounts, &p).unwrap();
        let window = out
            .column_by_name("window_s")
            .unwrap()
            .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        let cons = out.column_by_name("consequent").unwrap().as_string::<i32>();
        let lags = out.column_by_name("lags").unwrap().as_list::<i32>();
        let lags_at = |w: i64| -> Vec<f64> {
            let i = (0..out.num_rows())
                .find(|i| window.value(*i) == (w / 1_000_000) as f64 && cons.value(*i) == "y")
                .expect("an x -> y row");
            let l = lags.value(i);
            l.as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                .values()
                .to_vec()
        };
        assert_eq!(lags_at(7 * D), vec![3.0 * 86_400.0]);
        assert_eq!(lags_at(30 * D), vec![3.0 * 86_400.0, 20.0 * 86_400.0]);
    }

    #[test]
    fn followups_first_b_only_and_strictly_later() {
        let b = batch(&[
            ("a", 0, Some("x")),
            ("a", 0, Some("y")), // same instant: not a follow-up
            ("a", H, Some("y")),
            ("a", 2 * H, Some("y")),
        ]);
        let out = process(&b, Mode::Followups, &params()).unwrap();
        // x→y once (first y at +1h), y(0)→y once, y(1h)→y once
        assert_eq!(out.num_rows(), 3);
        let lag = out
            .column_by_name("lag_s")
            .unwrap()
            .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        assert_eq!(lag.values().to_vec(), vec![3600.0, 3600.0, 3600.0]);
    }
}
