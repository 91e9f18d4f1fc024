//! What chance alone would give each A → B pair: the triggers' exposure.
//!
//! Input: one partition of the sorted contacts. Output:
//! [`exposure_schema`], rows of three kinds (`kind`):
//!
//! - `volume`: per reason and UTC day, the contacts with that reason
//!   (`window_s` = 0, `bin` null). Their shares around a trigger's day are
//!   the π_B of the test.
//! - `exposure`: per window W, antecedent reason a, UTC day of the trigger
//!   and k bin ([`super::triggers::k_bin`]): `n` counted a-triggers with k
//!   followers in that bin within W, `k_sum` the sum of their k.
//! - `pairs`: per window W, antecedent a and two k bins (b1, b2): `n` = Σ over
//!   customers of (their counted a-triggers in b1) × (those in b2), bins ≥ 1.
//!   With the chance f(b) that a trigger in bin b is followed by B, Σ over
//!   customers of their expected count squared is Σ n · f(b1) · f(b2): the
//!   last term of the test's variance ([`crate::significance`]).
//!
//! Counted triggers are each customer's first `customer_cap` contacts per
//! reason ([`super::triggers`]); customers over
//! [`MAX_PAIR_CONTACTS_PER_CUSTOMER`] contacts are left out, as in the pair
//! counts.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, StringArray, UInt32Array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::triggers::{RunTriggers, k_bin, utc_day};
use super::{Columns, FastMap, MAX_PAIR_CONTACTS_PER_CUSTOMER, NULL_CODE, TimelineParams};
use crate::error::Result;

/// Output schema of [`super::Mode::Exposure`].
pub fn exposure_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("kind", DataType::Utf8, false),
        Field::new("window_s", DataType::Float64, false),
        Field::new("antecedent", DataType::Utf8, false),
        Field::new("day", DataType::Int32, true),
        Field::new("bin", DataType::Int32, true),
        Field::new("bin2", DataType::Int32, true),
        Field::new("n", DataType::Int64, false),
        Field::new("k_sum", DataType::Int64, false),
    ]))
}

/// Exposure rows of one sorted partition (see the module docs).
pub fn exposure(batch: &RecordBatch, p: &TimelineParams) -> Result<RecordBatch> {
    let cols = Columns::new(batch);
    let windows = p.pair_windows_us.as_slice();
    let mut volume: FastMap<(u32, i32), i64> = FastMap::default();
    let mut cells: FastMap<(u32, u8, i32, u8), (i64, i64)> = FastMap::default();
    let mut pairs: FastMap<(u32, u8, u8, u8), i64> = FastMap::default();
    let mut triggers = RunTriggers::default();
    let mut bins: Vec<u8> = Vec::new();
    let runs = cols.customer_runs();
    for (run, bounds) in runs.windows(2).enumerate() {
        let (start, end) = (bounds[0], bounds[1]);
        if end - start > MAX_PAIR_CONTACTS_PER_CUSTOMER {
            continue;
        }
        for i in start..end {
            let a = cols.reason_codes[i];
            if a != NULL_CODE {
                *volume.entry((a, utc_day(cols.ts[i]))).or_default() += 1;
            }
        }
        triggers.fill(&cols, (run, start, end), windows, p.customer_cap);
        let mut from = 0;
        while from < triggers.triggers.len() {
            let a = triggers.triggers[from].0;
            let of_a = triggers.of_reason(a);
            for w in 0..windows.len() {
                bins.clear();
                for t in of_a.clone() {
                    let k = triggers.k(t, w);
                    let day = utc_day(cols.ts[triggers.triggers[t].1 as usize]);
                    let cell = cells.entry((a, w as u8, day, k_bin(k))).or_default();
                    cell.0 += 1;
                    cell.1 += i64::from(k);
                    if k > 0 {
                        bins.push(k_bin(k));
                    }
                }
                for b1 in &bins {
                    for b2 in &bins {
                        *pairs.entry((a, w as u8, *b1, *b2)).or_default() += 1;
                    }
                }
            }
            from = of_a.end;
        }
    }
    let mut rows: Vec<Row> = Vec::with_capacity(volume.len() + cells.len() + pairs.len());
    rows.extend(volume.into_iter().map(|((a, day), n)| Row {
        kind: "volume",
        window: None,
        a,
        day: Some(day),
        bins: (None, None),
        n,
        k_sum: 0,
    }));
    rows.extend(cells.into_iter().map(|((a, w, day, b), (n, k_sum))| Row {
        kind: "exposure",
        window: Some(w),
        a,
        day: Some(day),
        bins: (Some(b), None),
        n,
        k_sum,
    }));
    rows.extend(pairs.into_iter().map(|((a, w, b1, b2), n)| Row {
        kind: "pairs",
        window: Some(w),
        a,
        day: None,
        bins: (Some(b1), Some(b2)),
        n,
        k_sum: 0,
    }));
    // a stable order, whatever the maps' (outputs do not depend on it, tests
    // read it more easily)
    rows.sort_unstable_by_key(|r| (r.kind, r.window, r.a, r.day, r.bins));
    let reason = batch.column_by_name("reason").expect("reason column");
    let firsts =
        UInt32Array::from_iter_values(rows.iter().map(|r| cols.reason_first_row[r.a as usize]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.kind))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| {
            r.window.map_or(0.0, |w| windows[w as usize] as f64 / 1e6)
        }))),
        take(reason.as_ref(), &firsts, None)?,
        Arc::new(Int32Array::from_iter(rows.iter().map(|r| r.day))),
        Arc::new(Int32Array::from_iter(
            rows.iter().map(|r| r.bins.0.map(i32::from)),
        )),
        Arc::new(Int32Array::from_iter(
            rows.iter().map(|r| r.bins.1.map(i32::from)),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.n))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.k_sum))),
    ];
    Ok(RecordBatch::try_new(exposure_schema(), columns)?)
}

struct Row {
    kind: &'static str,
    window: Option<u8>,
    a: u32,
    day: Option<i32>,
    bins: (Option<u8>, Option<u8>),
    n: i64,
    k_sum: i64,
}
