//! Stage 5 — outreach: customers to contact before they contact you.
//!
//! Input: the `outreach_candidates` query's rows (see
//! `queries/outreach_candidates.sql`) and, per reported cluster, the lags of
//! its members. Output: the **outreach** table — customer_id,
//! trigger_contact_id, trigger_reason, trigger_ts, expected_reason,
//! probability, expected_at, cluster_rank, value, priority — best first.
//!
//! For a trigger A seen `e` seconds ago with no B-contact since, and a cluster
//! with confidence c whose follow-up lags have empirical distribution F, the
//! probability that the follow-up still comes is
//! `c · (1 − F(e)) / (1 − c · F(e))` (Bayes: followed-and-late over
//! not-yet-followed). A row is kept when that probability is above the
//! cluster's baseline (likelier than after any contact). expected_at = trigger
//! time + the median of the lags longer than `e`. priority = probability ×
//! the cluster's value per follow-up (value / n_support); a customer appears
//! once per expected reason, at its highest priority.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, Float64Array, RecordBatch, TimestampMicrosecondArray, UInt32Array,
};
use datafusion::arrow::compute::{
    SortColumn, SortOptions, concat_batches, lexsort_to_indices, take, take_record_batch,
};
use datafusion::arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};

use crate::error::Result;
use crate::timeline::FastMap;

/// Output schema of the outreach table for a contact id type.
pub fn outreach_schema(contact_id: &DataType) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Utf8, false),
        Field::new("trigger_contact_id", contact_id.clone(), false),
        Field::new("trigger_reason", DataType::Utf8, false),
        Field::new(
            "trigger_ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("expected_reason", DataType::Utf8, false),
        Field::new("probability", DataType::Float64, false),
        Field::new(
            "expected_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("cluster_rank", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
        Field::new("priority", DataType::Float64, false),
    ]))
}

/// Probability that a follow-up still comes `elapsed_s` after its trigger,
/// given confidence `c` and the sorted lags of the cluster's members.
pub fn remaining_probability(c: f64, sorted_lags: &[f64], elapsed_s: f64) -> f64 {
    probability_after(
        c,
        sorted_lags.partition_point(|l| *l <= elapsed_s),
        sorted_lags.len(),
    )
}

/// [`remaining_probability`] with `done` of the `total` lags passed.
fn probability_after(c: f64, done: usize, total: usize) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let f = done as f64 / total as f64;
    let denom = 1.0 - c * f;
    if denom <= 0.0 {
        0.0
    } else {
        c * (1.0 - f) / denom
    }
}

/// Builds the outreach table from candidate rows and member lags per
/// cluster id. `contact_id` is the contact id type.
pub fn build(
    candidates: &[RecordBatch],
    lags: &HashMap<String, Vec<f64>>,
    contact_id: &DataType,
) -> Result<RecordBatch> {
    let schema = outreach_schema(contact_id);
    if candidates.iter().all(|b| b.num_rows() == 0) {
        return Ok(RecordBatch::new_empty(schema));
    }
    let all = concat_batches(&candidates[0].schema(), candidates)?;
    let col = |n: &str| {
        all.column_by_name(n)
            .expect("outreach_candidates column")
            .clone()
    };
    let customer = col("customer_id");
    let customer = crate::report::utf8(&customer);
    let expected = col("expected_reason");
    let expected = crate::report::utf8(&expected);
    let cluster_id = col("cluster_id");
    let cluster_id = crate::report::utf8(&cluster_id);
    let f64c = |n: &str| col(n).as_primitive::<Float64Type>().clone();
    let (elapsed, conf, base, value) = (
        f64c("elapsed_s"),
        f64c("confidence"),
        f64c("baseline"),
        f64c("value"),
    );
    let n_support = col("n_support");
    let n_support = n_support.as_primitive::<Int64Type>();
    let trigger_ts = col("trigger_ts");
    let trigger_ts = trigger_ts.as_primitive::<TimestampMicrosecondType>();

    // (priority, probability, expected_at) per kept row; best per (customer, reason)
    // (at 100M the candidates run to millions: one binary search per row in
    // its cluster's lags, and hashing without SipHash)
    let mut best: FastMap<(&str, &str), (usize, f64, f64, i64)> = FastMap::default();
    let mut cluster_lags: FastMap<&str, Option<&Vec<f64>>> = FastMap::default();
    for i in 0..all.num_rows() {
        let id = cluster_id.value(i);
        let Some(l) = *cluster_lags.entry(id).or_insert_with(|| lags.get(id)) else {
            continue;
        };
        let e = elapsed.value(i);
        let done = l.partition_point(|x| *x <= e);
        let p = probability_after(conf.value(i), done, l.len());
        if p <= base.value(i) {
            continue;
        }
        let later = &l[done..];
        let median_later = later[(later.len() - 1) / 2];
        let expected_at = trigger_ts.value(i) + (median_later * 1e6) as i64;
        let priority = p * value.value(i) / n_support.value(i).max(1) as f64;
        let key = (customer.value(i), expected.value(i));
        let entry = best.entry(key).or_insert((i, p, priority, expected_at));
        if priority > entry.2 {
            *entry = (i, p, priority, expected_at);
        }
    }
    let mut rows: Vec<(usize, f64, f64, i64)> = best.into_values().collect();
    rows.sort_by(|a, b| {
        b.2.total_cmp(&a.2)
            .then_with(|| customer.value(a.0).cmp(customer.value(b.0)))
            .then_with(|| expected.value(a.0).cmp(expected.value(b.0)))
    });
    let idx = UInt32Array::from_iter_values(rows.iter().map(|r| r.0 as u32));
    let pick = |n: &str| -> Result<ArrayRef> { Ok(take(col(n).as_ref(), &idx, None)?) };
    let columns: Vec<ArrayRef> = vec![
        pick("customer_id")?,
        pick("trigger_contact_id")?,
        pick("trigger_reason")?,
        pick("trigger_ts")?,
        pick("expected_reason")?,
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.3))
                .with_timezone("UTC"),
        ),
        pick("cluster_rank")?,
        pick("value")?,
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// Merges outreach lists built from disjoint sets of customers (buckets)
/// into one, best first: the order [`build`] gives, which is total (a list
/// has one row per customer and expected reason).
pub fn merge(lists: &[RecordBatch]) -> Result<RecordBatch> {
    let Some(first) = lists.first() else {
        return Ok(RecordBatch::new_empty(outreach_schema(&DataType::Int64)));
    };
    let all = concat_batches(&first.schema(), lists)?;
    let key = |name: &str, descending: bool| SortColumn {
        values: all.column_by_name(name).expect("outreach column").clone(),
        options: Some(SortOptions {
            descending,
            nulls_first: false,
        }),
    };
    let idx = lexsort_to_indices(
        &[
            key("priority", true),
            key("customer_id", false),
            key("expected_reason", false),
        ],
        None,
    )?;
    Ok(take_record_batch(&all, &idx)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probability_falls_as_time_passes() {
        let lags = vec![10.0, 20.0, 30.0, 40.0];
        assert!((remaining_probability(0.5, &lags, 0.0) - 0.5).abs() < 1e-12);
        // half the lags passed: 0.5 * 0.5 / (1 - 0.25) = 1/3
        assert!((remaining_probability(0.5, &lags, 20.0) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(remaining_probability(0.5, &lags, 40.0), 0.0);
    }
}
