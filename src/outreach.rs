//! The outreach list (in stage 5, [`crate::stages::reports`]): customers to
//! contact before they contact you.
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
//! once per expected reason, at its highest priority (of equal ones, the
//! best-ranked cluster's).

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

/// Schema of the `outreach_cutoffs` table.
pub fn cutoffs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("cluster_id", DataType::Utf8, false),
        Field::new("elapsed_below_s", DataType::Float64, false),
    ]))
}

/// How long after its trigger a candidate of each cluster can still be kept
/// by [`build`], for `queries/outreach_candidates.sql` to leave out the rest
/// before the anti-join: one row per cluster id of `clusters` (the clusters
/// query's batches) with member lags, giving `elapsed_below_s`, the time
/// since the trigger below which a candidate can be kept.
///
/// The probability [`build`] keeps a candidate by (above the cluster's
/// baseline) falls as lags pass: `c(1 − F)/(1 − cF)` decreases in F for a
/// confidence c ≤ 1. With `d` the most lags passed at which it is still
/// above the baseline, a candidate can be kept only while fewer than d + 1
/// lags are at or below its elapsed time, that is while the elapsed time is
/// below the (d + 1)-th smallest lag (infinite when d is all of them). A
/// cluster with no such d gets no row. [`build`] still tests every row, so
/// the cut can only leave out rows that it would drop.
pub fn cutoffs(clusters: &[RecordBatch], lags: &HashMap<String, Vec<f64>>) -> Result<RecordBatch> {
    let mut ids = Vec::new();
    let mut below = Vec::new();
    for b in clusters {
        let id = crate::report::utf8(b.column_by_name("cluster_id").expect("cluster_id"));
        let f64c = |n: &str| {
            b.column_by_name(n)
                .expect("clusters column")
                .as_primitive::<Float64Type>()
                .clone()
        };
        let (conf, base) = (f64c("confidence"), f64c("baseline"));
        for i in 0..b.num_rows() {
            let Some(l) = lags.get(id.value(i)) else {
                continue;
            };
            let Some(d) = (0..=l.len())
                .rfind(|d| probability_after(conf.value(i), *d, l.len()) > base.value(i))
            else {
                continue;
            };
            ids.push(id.value(i).to_string());
            below.push(l.get(d).copied().unwrap_or(f64::INFINITY));
        }
    }
    Ok(RecordBatch::try_new(
        cutoffs_schema(),
        vec![
            Arc::new(datafusion::arrow::array::StringArray::from(ids)),
            Arc::new(Float64Array::from(below)),
        ],
    )?)
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
    let cluster_rank = col("cluster_rank");
    let cluster_rank = cluster_rank.as_primitive::<Int64Type>();
    let trigger_ts = col("trigger_ts");
    let trigger_ts = trigger_ts.as_primitive::<TimestampMicrosecondType>();

    // (priority, probability, expected_at) per kept row; best per (customer, reason)
    // (on a large log the candidates run to millions: one binary search per
    // row in its cluster's lags, and hashing without SipHash)
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
        // at equal priority the better-ranked cluster, whatever order the
        // candidates came in (a customer has one trigger per cluster)
        if priority > entry.2
            || (priority == entry.2 && cluster_rank.value(i) < cluster_rank.value(entry.0))
        {
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

    /// Of two candidates with equal priority for one customer and expected
    /// reason, the list keeps the better-ranked cluster's, in either order.
    #[test]
    fn equal_priorities_go_to_the_better_ranked_cluster() {
        use datafusion::arrow::array::{Int64Array, StringArray};
        let schema = Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, false),
            Field::new("trigger_contact_id", DataType::Int64, false),
            Field::new("trigger_reason", DataType::Utf8, false),
            Field::new(
                "trigger_ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("elapsed_s", DataType::Float64, false),
            Field::new("cluster_id", DataType::Utf8, false),
            Field::new("expected_reason", DataType::Utf8, false),
            Field::new("confidence", DataType::Float64, false),
            Field::new("baseline", DataType::Float64, false),
            Field::new("value", DataType::Float64, false),
            Field::new("n_support", DataType::Int64, false),
            Field::new("cluster_rank", DataType::Int64, false),
        ]));
        // the same customer and expected reason from two clusters whose
        // numbers give the same priority; ranks in the given order
        let candidates = |ranks: [i64; 2]| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(vec!["cust", "cust"])),
                    Arc::new(Int64Array::from(vec![1, 2])),
                    Arc::new(StringArray::from(vec!["a", "c"])),
                    Arc::new(TimestampMicrosecondArray::from(vec![0, 0]).with_timezone("UTC")),
                    Arc::new(Float64Array::from(vec![0.0, 0.0])),
                    Arc::new(StringArray::from(vec!["k1", "k2"])),
                    Arc::new(StringArray::from(vec!["b", "b"])),
                    Arc::new(Float64Array::from(vec![0.5, 0.5])),
                    Arc::new(Float64Array::from(vec![0.1, 0.1])),
                    Arc::new(Float64Array::from(vec![10.0, 10.0])),
                    Arc::new(Int64Array::from(vec![5, 5])),
                    Arc::new(Int64Array::from(ranks.to_vec())),
                ],
            )
            .unwrap()
        };
        let lags: HashMap<String, Vec<f64>> = [
            ("k1".to_string(), vec![10.0, 20.0]),
            ("k2".to_string(), vec![10.0, 20.0]),
        ]
        .into();
        for ranks in [[1, 2], [2, 1]] {
            let list = build(&[candidates(ranks)], &lags, &DataType::Int64).unwrap();
            assert_eq!(list.num_rows(), 1);
            let rank = list.column_by_name("cluster_rank").unwrap();
            assert_eq!(
                rank.as_primitive::<Int64Type>().value(0),
                1,
                "ranks {ranks:?}"
            );
        }
    }

    /// The cut of [`cutoffs`] keeps a candidate exactly while [`build`]'s
    /// test would: for random clusters, at every lag, just below and above
    /// it, and at 0 and beyond the last lag.
    #[test]
    fn cutoffs_keep_what_build_keeps() {
        use datafusion::arrow::array::StringArray;
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (mut ids, mut conf, mut base) = (Vec::new(), Vec::new(), Vec::new());
        let mut lags: HashMap<String, Vec<f64>> = HashMap::new();
        for k in 0..300 {
            let id = format!("c{k}");
            let n = rng.random_range(1..40);
            // ties and whole seconds, as lags are
            let mut l: Vec<f64> = (0..n)
                .map(|_| rng.random_range(0..50) as f64 * 3600.0)
                .collect();
            l.sort_by(f64::total_cmp);
            // some clusters without lags: no row
            if k % 10 != 0 {
                lags.insert(id.clone(), l);
            }
            ids.push(id);
            conf.push(rng.random_range(0.01..1.0));
            base.push(rng.random_range(0.0..0.6));
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("cluster_id", DataType::Utf8, false),
            Field::new("confidence", DataType::Float64, false),
            Field::new("baseline", DataType::Float64, false),
        ]));
        let clusters = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(ids.clone())),
                Arc::new(Float64Array::from(conf.clone())),
                Arc::new(Float64Array::from(base.clone())),
            ],
        )
        .unwrap();
        let cut = cutoffs(&[clusters], &lags).unwrap();
        let cut_ids = cut.column(0).as_string::<i32>();
        let below = cut.column(1).as_primitive::<Float64Type>();
        let cut: HashMap<&str, f64> = (0..cut.num_rows())
            .map(|i| (cut_ids.value(i), below.value(i)))
            .collect();
        let mut kept = 0;
        for (k, id) in ids.iter().enumerate() {
            let Some(l) = lags.get(id) else {
                assert!(!cut.contains_key(id.as_str()));
                continue;
            };
            let mut at = vec![0.0, l[l.len() - 1] + 1.0];
            for x in l {
                at.extend([*x - 0.5, *x, *x + 0.5]);
            }
            for e in at {
                let keeps = remaining_probability(conf[k], l, e) > base[k];
                let cut_keeps = cut.get(id.as_str()).is_some_and(|b| e < *b);
                assert_eq!(keeps, cut_keeps, "cluster {id} at {e}");
                kept += keeps as usize;
            }
        }
        assert!(kept > 0);
    }
}
