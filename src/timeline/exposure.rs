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

use super::triggers::{K_BINS, RunTriggers, k_bin, utc_day};
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

/// Most cells the dense tables of one partition hold; beyond, hash maps.
const MAX_DENSE_CELLS: usize = 1 << 22;

/// Sums by key: a dense table over a known key range, else a hash map.
enum Sums<K> {
    Dense(
        Vec<(i64, i64)>,
        Box<dyn Fn(&K) -> usize>,
        Box<dyn Fn(usize) -> K>,
    ),
    Hashed(FastMap<K, (i64, i64)>),
}

impl<K: std::hash::Hash + Eq + Copy> Sums<K> {
    fn new(
        cells: usize,
        index: impl Fn(&K) -> usize + 'static,
        key: impl Fn(usize) -> K + 'static,
    ) -> Self {
        if cells <= MAX_DENSE_CELLS {
            Sums::Dense(vec![(0, 0); cells], Box::new(index), Box::new(key))
        } else {
            Sums::Hashed(FastMap::default())
        }
    }

    fn add(&mut self, k: K, n: i64, k_sum: i64) {
        let cell = match self {
            Sums::Dense(v, index, _) => &mut v[index(&k)],
            Sums::Hashed(m) => m.entry(k).or_default(),
        };
        cell.0 += n;
        cell.1 += k_sum;
    }

    fn into_rows(self) -> Vec<(K, (i64, i64))> {
        match self {
            Sums::Dense(v, _, key) => v
                .into_iter()
                .enumerate()
                .filter(|(_, c)| c.0 != 0)
                .map(|(i, c)| (key(i), c))
                .collect(),
            Sums::Hashed(m) => m.into_iter().collect(),
        }
    }
}

/// Exposure rows of one sorted partition (see the module docs).
pub fn exposure(batch: &RecordBatch, p: &TimelineParams) -> Result<RecordBatch> {
    let cols = Columns::new(batch);
    let windows = p.pair_windows_us.as_slice();
    // the partition's reasons, windows, days and bins span the dense tables
    let n_r = cols.n_reasons.max(1);
    let n_w = windows.len().max(1);
    let first_day = cols.ts.iter().map(|t| utc_day(*t)).min().unwrap_or(0);
    let last_day = cols.ts.iter().map(|t| utc_day(*t)).max().unwrap_or(0);
    let days = (i64::from(last_day) - i64::from(first_day) + 1) as usize;
    let nb = K_BINS;
    let mut volume: Sums<(u32, i32)> = Sums::new(
        n_r * days,
        move |(a, d)| *a as usize * days + (d - first_day) as usize,
        move |i| ((i / days) as u32, (i % days) as i32 + first_day),
    );
    let mut cells: Sums<(u32, u8, i32, u8)> = Sums::new(
        n_r * n_w * days * nb,
        move |(a, w, d, b)| {
            ((*a as usize * n_w + *w as usize) * days + (d - first_day) as usize) * nb + *b as usize
        },
        move |i| {
            let (rest, b) = (i / nb, i % nb);
            let (rest, d) = (rest / days, rest % days);
            let (a, w) = (rest / n_w, rest % n_w);
            (a as u32, w as u8, d as i32 + first_day, b as u8)
        },
    );
    let mut pairs: Sums<(u32, u8, u8, u8)> = Sums::new(
        n_r * n_w * nb * nb,
        move |(a, w, b1, b2)| {
            ((*a as usize * n_w + *w as usize) * nb + *b1 as usize) * nb + *b2 as usize
        },
        move |i| {
            let (rest, b2) = (i / nb, i % nb);
            let (rest, b1) = (rest / nb, rest % nb);
            let (a, w) = (rest / n_w, rest % n_w);
            (a as u32, w as u8, b1 as u8, b2 as u8)
        },
    );
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
                volume.add((a, utc_day(cols.ts[i])), 1, 0);
            }
        }
        triggers.fill(&cols, (run, start, end), p);
        let mut from = 0;
        while from < triggers.triggers.len() {
            let a = triggers.triggers[from].0;
            let of_a = triggers.of_reason(a);
            for (w, window) in windows.iter().enumerate() {
                bins.clear();
                for t in of_a.clone() {
                    let at = cols.ts[triggers.triggers[t].1 as usize];
                    if !p.complete(at.saturating_add(*window)) {
                        continue;
                    }
                    let k = triggers.k(t, w);
                    let day = utc_day(at);
                    cells.add((a, w as u8, day, k_bin(k)), 1, i64::from(k));
                    if k > 0 {
                        bins.push(k_bin(k));
                    }
                }
                for b1 in &bins {
                    for b2 in &bins {
                        pairs.add((a, w as u8, *b1, *b2), 1, 0);
                    }
                }
            }
            from = of_a.end;
        }
    }
    let (volume, cells, pairs) = (volume.into_rows(), cells.into_rows(), pairs.into_rows());
    let mut rows: Vec<Row> = Vec::with_capacity(volume.len() + cells.len() + pairs.len());
    rows.extend(volume.into_iter().map(|((a, day), (n, _))| Row {
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
    rows.extend(pairs.into_iter().map(|((a, w, b1, b2), (n, _))| Row {
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
