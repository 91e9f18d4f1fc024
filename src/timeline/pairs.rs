//! A → B follow-up counting, inside the pass.
//!
//! For every contact A (reason a, possibly null) and every reason b, the
//! first b-contact of the same customer strictly later than A and at most the
//! longest window after it is A's b-follow-up; its lag counts at every window
//! W ≥ lag. Per partition and window, one row per (a, b) carries:
//!
//! - `n_support`: A-contacts with a b-follow-up within W;
//! - `customers`: the distinct customers among them (customers never span
//!   partitions, so a sum over partitions is exact);
//! - `followup_cost_micros`: the follow-ups' channel costs, in millionths (an
//!   exact integer sum, whatever the order of rows);
//! - `lags`: the lags within W in seconds, ascending (the SQL merges the lists
//!   of all partitions for exact percentiles).
//!
//! One more row per reason a (and one for contacts without a reason) carries
//! its totals: `window_s` = 0, `consequent` null, `n_support` = the
//! a-contacts and `customers` = their distinct customers (the SQL's
//! n_antecedent, its design effect, and all contacts counted).
//!
//! Customers with more than [`MAX_PAIR_CONTACTS_PER_CUSTOMER`] contacts are
//! left out of every count here, totals included.
//!
//! Pairs are counted on integer reason codes in a dense (a, b) table (a hash
//! map when there are too many reasons for one), never on strings.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Float64Builder, Int64Array, ListBuilder, UInt32Array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type};
use datafusion::arrow::record_batch::RecordBatch;

use super::{Columns, FastMap, MAX_PAIR_CONTACTS_PER_CUSTOMER, NULL_CODE, TimelineParams};
use crate::error::Result;

/// Output schema of [`super::Mode::PairCounts`].
pub fn pair_counts_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("window_s", DataType::Float64, false),
        Field::new("antecedent", DataType::Utf8, true),
        Field::new("consequent", DataType::Utf8, true),
        Field::new("n_support", DataType::Int64, false),
        Field::new("customers", DataType::Int64, false),
        Field::new("followup_cost_micros", DataType::Int64, false),
        Field::new(
            "lags",
            DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true))),
            false,
        ),
    ]))
}

/// Largest dense (a, b) table, in cells.
const MAX_DENSE_PAIRS: usize = 1 << 22;

/// The counts of one (a, b) pair in one partition.
struct Acc {
    a: u32,
    b: u32,
    /// Lags (µs) of every follow-up within the longest window.
    lags: Vec<i64>,
    /// Per window: follow-ups, distinct customers, cost in millionths.
    n: Vec<i64>,
    customers: Vec<i64>,
    cost: Vec<i64>,
    /// Per window: 1 + the customer run that last counted a customer.
    last_run: Vec<usize>,
}

/// Finds an (a, b) pair's accumulator.
enum Index {
    Dense(Vec<u32>),
    Sparse(FastMap<u64, u32>),
}

impl Index {
    fn new(n_reasons: usize) -> Self {
        let cells = (n_reasons + 1) * n_reasons;
        if cells <= MAX_DENSE_PAIRS {
            Index::Dense(vec![u32::MAX; cells])
        } else {
            Index::Sparse(FastMap::default())
        }
    }

    fn get_or_insert(&mut self, cell: usize, next: u32) -> (u32, bool) {
        match self {
            Index::Dense(v) => {
                if v[cell] == u32::MAX {
                    v[cell] = next;
                    (next, true)
                } else {
                    (v[cell], false)
                }
            }
            Index::Sparse(m) => {
                let e = m.entry(cell as u64).or_insert(next);
                (*e, *e == next)
            }
        }
    }
}

/// Follow-up counts of one sorted partition (see the module docs).
pub fn counts(batch: &RecordBatch, p: &TimelineParams) -> Result<RecordBatch> {
    let cols = Columns::new(batch);
    let windows = p.pair_windows_us.as_slice();
    let k = windows.len();
    let w_max = windows.last().copied().unwrap_or(0);
    let n_r = cols.n_reasons;
    let costs = row_costs(batch, p);
    let mut index = Index::new(n_r);
    let mut accs: Vec<Acc> = Vec::new();
    // seen[b] = 1 + the contact that last recorded a b-follow-up
    let mut seen: Vec<u32> = vec![0; n_r];
    // per reason (the last: none): contacts, distinct customers, 1 + the run
    // last counted
    let mut totals: Vec<(i64, i64, usize)> = vec![(0, 0, 0); n_r + 1];
    let runs = cols.customer_runs();
    for (run, bounds) in runs.windows(2).enumerate() {
        let (start, end) = (bounds[0], bounds[1]);
        if end - start > MAX_PAIR_CONTACTS_PER_CUSTOMER {
            continue;
        }
        for i in start..end {
            let t = cols.ts[i];
            let a = cols.reason_codes[i];
            let a_idx = if a == NULL_CODE { n_r } else { a as usize };
            let tot = &mut totals[a_idx];
            tot.0 += 1;
            if tot.2 != run + 1 {
                tot.2 = run + 1;
                tot.1 += 1;
            }
            let stamp = i as u32 + 1;
            let mut j = i + 1;
            while j < end && cols.ts[j] - t <= w_max {
                let b = cols.reason_codes[j];
                if cols.ts[j] > t && b != NULL_CODE && seen[b as usize] != stamp {
                    seen[b as usize] = stamp;
                    let (slot, new) =
                        index.get_or_insert(a_idx * n_r + b as usize, accs.len() as u32);
                    if new {
                        accs.push(Acc {
                            a,
                            b,
                            lags: Vec::new(),
                            n: vec![0; k],
                            customers: vec![0; k],
                            cost: vec![0; k],
                            last_run: vec![0; k],
                        });
                    }
                    let acc = &mut accs[slot as usize];
                    let lag = cols.ts[j] - t;
                    acc.lags.push(lag);
                    let first = windows.partition_point(|w| *w < lag);
                    for w in first..k {
                        acc.n[w] += 1;
                        acc.cost[w] += costs[j];
                        if acc.last_run[w] != run + 1 {
                            acc.last_run[w] = run + 1;
                            acc.customers[w] += 1;
                        }
                    }
                }
                j += 1;
            }
        }
    }
    accs.sort_unstable_by_key(|acc| (acc.a, acc.b));

    let mut window_s = Vec::new();
    let mut ante_rows: Vec<Option<u32>> = Vec::new();
    let mut cons_rows: Vec<Option<u32>> = Vec::new();
    let mut n_support = Vec::new();
    let mut customers = Vec::new();
    let mut cost = Vec::new();
    let mut lags = ListBuilder::new(Float64Builder::new());
    for acc in accs.iter_mut() {
        acc.lags.sort_unstable();
    }
    for (w, &window_us) in windows.iter().enumerate() {
        for acc in &accs {
            if acc.n[w] == 0 {
                continue;
            }
            window_s.push(window_us as f64 / 1e6);
            ante_rows.push((acc.a != NULL_CODE).then(|| cols.reason_first_row[acc.a as usize]));
            cons_rows.push(Some(cols.reason_first_row[acc.b as usize]));
            n_support.push(acc.n[w]);
            customers.push(acc.customers[w]);
            cost.push(acc.cost[w]);
            // the lags within W are the n[w] smallest
            for l in &acc.lags[..acc.n[w] as usize] {
                lags.values().append_value(*l as f64 / 1e6);
            }
            lags.append(true);
        }
    }
    for (a, (n, c, _)) in totals.iter().enumerate() {
        if *n == 0 {
            continue;
        }
        window_s.push(0.0);
        ante_rows.push((a < n_r).then(|| cols.reason_first_row[a]));
        cons_rows.push(None);
        n_support.push(*n);
        customers.push(*c);
        cost.push(0);
        lags.append(true);
    }
    let reason = batch.column_by_name("reason").expect("reason column");
    let out: Vec<ArrayRef> = vec![
        Arc::new(Float64Array::from(window_s)),
        take(reason.as_ref(), &UInt32Array::from(ante_rows), None)?,
        take(reason.as_ref(), &UInt32Array::from(cons_rows), None)?,
        Arc::new(Int64Array::from(n_support)),
        Arc::new(Int64Array::from(customers)),
        Arc::new(Int64Array::from(cost)),
        Arc::new(lags.finish()),
    ];
    Ok(RecordBatch::try_new(pair_counts_schema(), out)?)
}

/// Each row's follow-up cost, in millionths, by its channel.
pub(crate) fn row_costs(batch: &RecordBatch, p: &TimelineParams) -> Vec<i64> {
    if let Some(codes) = batch.column_by_name("_channel_code") {
        // the bucket's channel codes: a cost per code, looked up by index
        let codes = codes.as_primitive::<UInt32Type>();
        let channel = batch
            .column_by_name("channel")
            .expect("channel column")
            .as_string::<i32>();
        let mut cost: Vec<Option<i64>> = Vec::new();
        return (0..codes.len())
            .map(|i| {
                if codes.is_null(i) {
                    return p.default_cost_micros;
                }
                let c = codes.value(i) as usize;
                if c >= cost.len() {
                    cost.resize(c + 1, None);
                }
                *cost[c].get_or_insert_with(|| {
                    p.channel_cost_micros
                        .get(channel.value(i))
                        .copied()
                        .unwrap_or(p.default_cost_micros)
                })
            })
            .collect();
    }
    let channel = batch
        .column_by_name("channel")
        .expect("channel column")
        .as_string::<i32>();
    let mut cache: FastMap<&str, i64> = FastMap::default();
    (0..channel.len())
        .map(|i| {
            if channel.is_null(i) {
                p.default_cost_micros
            } else {
                let c = channel.value(i);
                *cache.entry(c).or_insert_with(|| {
                    p.channel_cost_micros
                        .get(c)
                        .copied()
                        .unwrap_or(p.default_cost_micros)
                })
            }
        })
        .collect()
}
