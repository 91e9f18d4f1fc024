//! A → B follow-up counting, inside the pass.
//!
//! Input: one partition of the sorted contacts. Output: [`pair_counts_schema`].
//!
//! For every contact A with a reason a and every reason b ≠ a, the first
//! b-contact of the same customer strictly later than A and at most the
//! longest window after it is A's b-follow-up; its lag counts at every window
//! W ≥ lag. Per partition and window, one row per (a, b) carries:
//!
//! - `n_support`: A-contacts with a b-follow-up within W;
//! - `customers`: the distinct customers among them (customers never span
//!   partitions, so a sum over partitions is exact);
//! - `followup_cost_micros`: the follow-ups' channel costs, in millionths (an
//!   exact integer sum, whatever the order of rows);
//! - `lags`: the lags within W in seconds, ascending (the SQL merges the lists
//!   of all partitions for exact percentiles);
//! - for the significance test, over the *counted* triggers only (each
//!   customer's first `customer_cap` a-contacts, see [`super::triggers`]):
//!   `n_counted`, the counted triggers followed by b within W; `sum_sq`,
//!   Σ over customers of the square of their `n_counted`; and `g`, per k bin,
//!   Σ over customers of their `n_counted` times their counted a-triggers in
//!   that bin (the cross term of the test's variance, see
//!   [`crate::significance`]).
//!
//! One more row per reason a carries its totals: `window_s` = 0, `consequent`
//! null, `n_support` = the a-contacts and `customers` = their distinct
//! customers (in a trigger period, one per window, `window_s` = W, of the
//! a-contacts whose window W is complete).
//!
//! With a trigger period ([`TimelineParams::trigger_period`]) only the
//! contacts in it are A-contacts, each counted at the windows complete
//! within the data only; B follow-ups come from any time.
//!
//! Customers with more than [`MAX_PAIR_CONTACTS_PER_CUSTOMER`] contacts are
//! left out of every count here, totals included.
//!
//! The first b after a contact is found without looking at every later
//! contact: the customer's contacts are walked from the last to the first,
//! keeping the reasons in the order of their next occurrence (a list moved to
//! the front as contacts are passed), so each contact reads only the distinct
//! reasons that follow it within the longest window. A customer with
//! thousands of contacts costs at most (reasons × contacts), not
//! (contacts²).
//!
//! Pairs are counted on integer reason codes in a dense (a, b) table (a hash
//! map when there are too many reasons for one), never on strings.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Float64Builder, Int64Array, Int64Builder, ListBuilder,
    UInt32Array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type};
use datafusion::arrow::record_batch::RecordBatch;

use super::triggers::{RunTriggers, k_bin};
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
        Field::new("n_counted", DataType::Int64, false),
        Field::new("sum_sq", DataType::Int64, false),
        Field::new(
            "g",
            DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true))),
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
    /// Per window: counted follow-ups, Σ of their squares per customer.
    n_counted: Vec<i64>,
    sum_sq: Vec<i64>,
    /// Per window, per k bin: the cross term (module docs).
    g: Vec<Vec<i64>>,
    /// Per window: this customer's counted follow-ups so far.
    current: Vec<i64>,
}

/// Finds an (a, b) pair's accumulator.
enum Index {
    Dense(Vec<u32>),
    Sparse(FastMap<u64, u32>),
}

impl Index {
    fn new(n_reasons: usize) -> Self {
        let cells = n_reasons * n_reasons;
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

/// The reasons of the contacts after a point in one customer's timeline,
/// in the order of their next occurrence: a doubly linked list over reason
/// codes, the soonest first.
struct NextOccurrence {
    ts: Vec<i64>,
    row: Vec<u32>,
    prev: Vec<u32>,
    next: Vec<u32>,
    listed: Vec<bool>,
    head: u32,
}

const END: u32 = u32::MAX;

impl NextOccurrence {
    fn new(n_reasons: usize) -> Self {
        NextOccurrence {
            ts: vec![0; n_reasons],
            row: vec![0; n_reasons],
            prev: vec![END; n_reasons],
            next: vec![END; n_reasons],
            listed: vec![false; n_reasons],
            head: END,
        }
    }

    /// Reason `b` next occurs at `ts`, in row `row`: the soonest of all.
    fn move_to_front(&mut self, b: u32, ts: i64, row: u32) {
        let i = b as usize;
        if self.listed[i] {
            if self.head == b {
                self.ts[i] = ts;
                self.row[i] = row;
                return;
            }
            let (p, n) = (self.prev[i], self.next[i]);
            self.next[p as usize] = n;
            if n != END {
                self.prev[n as usize] = p;
            }
        }
        self.listed[i] = true;
        self.ts[i] = ts;
        self.row[i] = row;
        self.prev[i] = END;
        self.next[i] = self.head;
        if self.head != END {
            self.prev[self.head as usize] = b;
        }
        self.head = b;
    }

    /// Empties the list (for the next customer).
    fn clear(&mut self) {
        let mut at = self.head;
        while at != END {
            self.listed[at as usize] = false;
            at = self.next[at as usize];
        }
        self.head = END;
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
    let mut next = NextOccurrence::new(n_r);
    let mut triggers = RunTriggers::default();
    // per row of the run: its index among the counted triggers, if counted
    let mut counted_at: Vec<u32> = Vec::new();
    // the pairs this customer's counted triggers were followed in
    let mut touched: Vec<u32> = Vec::new();
    // per reason (and, counting a trigger period, per window it is complete
    // at: slot a * n_tot + w): contacts, distinct customers, 1 + the run
    // last counted
    let n_tot = if p.trigger_period.is_some() { k } else { 1 };
    let mut totals: Vec<(i64, i64, usize)> = vec![(0, 0, 0); n_r * n_tot];
    let runs = cols.customer_runs();
    for (run, bounds) in runs.windows(2).enumerate() {
        let (start, end) = (bounds[0], bounds[1]);
        if end - start > MAX_PAIR_CONTACTS_PER_CUSTOMER {
            continue;
        }
        triggers.fill(&cols, (run, start, end), p);
        counted_at.clear();
        counted_at.resize(end - start, u32::MAX);
        for (t, (_, row)) in triggers.triggers.iter().enumerate() {
            counted_at[*row as usize - start] = t as u32;
        }
        // from the last contact back: each group of contacts at one instant
        // reads the list before any of them joins it
        let mut hi = end;
        while hi > start {
            let t = cols.ts[hi - 1];
            let mut lo = hi - 1;
            while lo > start && cols.ts[lo - 1] == t {
                lo -= 1;
            }
            for i in lo..hi {
                let a = cols.reason_codes[i];
                if a == NULL_CODE || !p.triggers_at(t) {
                    continue;
                }
                // the windows this trigger counts at (all but in a period)
                let k_t = p.complete_windows(t);
                let slots = if n_tot == 1 { 0..1 } else { 0..k_t };
                for w in slots {
                    let tot = &mut totals[a as usize * n_tot + w];
                    tot.0 += 1;
                    if tot.2 != run + 1 {
                        tot.2 = run + 1;
                        tot.1 += 1;
                    }
                }
                let counted = counted_at[i - start] != u32::MAX;
                let mut b = next.head;
                while b != END && next.ts[b as usize] - t <= w_max {
                    let (bi, lag, j) = (b as usize, next.ts[b as usize] - t, next.row[b as usize]);
                    b = next.next[bi];
                    if bi == a as usize {
                        continue;
                    }
                    let (slot, new) = index.get_or_insert(a as usize * n_r + bi, accs.len() as u32);
                    if new {
                        accs.push(Acc {
                            a,
                            b: bi as u32,
                            lags: Vec::new(),
                            n: vec![0; k],
                            customers: vec![0; k],
                            cost: vec![0; k],
                            last_run: vec![0; k],
                            n_counted: vec![0; k],
                            sum_sq: vec![0; k],
                            g: vec![Vec::new(); k],
                            current: vec![0; k],
                        });
                    }
                    let acc = &mut accs[slot as usize];
                    acc.lags.push(lag);
                    let first = windows.partition_point(|w| *w < lag);
                    if counted && first < k_t && acc.current.iter().all(|c| *c == 0) {
                        touched.push(slot);
                    }
                    for w in first..k_t {
                        acc.n[w] += 1;
                        acc.cost[w] += costs[j as usize];
                        if acc.last_run[w] != run + 1 {
                            acc.last_run[w] = run + 1;
                            acc.customers[w] += 1;
                        }
                        if counted {
                            acc.current[w] += 1;
                        }
                    }
                }
            }
            for j in (lo..hi).rev() {
                let b = cols.reason_codes[j];
                if b != NULL_CODE {
                    next.move_to_front(b, t, j as u32);
                }
            }
            hi = lo;
        }
        next.clear();
        // this customer's counted follow-ups, into the test's sums
        for slot in touched.drain(..) {
            let acc = &mut accs[slot as usize];
            let mine = triggers.of_reason(acc.a);
            for (w, window) in windows.iter().enumerate() {
                let s = std::mem::take(&mut acc.current[w]);
                if s == 0 {
                    continue;
                }
                acc.n_counted[w] += s;
                acc.sum_sq[w] += s * s;
                let g = &mut acc.g[w];
                for t in mine.clone() {
                    let at = cols.ts[triggers.triggers[t].1 as usize];
                    if !p.complete(at.saturating_add(*window)) {
                        continue;
                    }
                    let bin = k_bin(triggers.k(t, w)) as usize;
                    if g.len() <= bin {
                        g.resize(bin + 1, 0);
                    }
                    g[bin] += s;
                }
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
    let mut n_counted = Vec::new();
    let mut sum_sq = Vec::new();
    let mut lags = ListBuilder::new(Float64Builder::new());
    let mut g = ListBuilder::new(Int64Builder::new());
    for acc in accs.iter_mut() {
        acc.lags.sort_unstable();
    }
    for (w, &window_us) in windows.iter().enumerate() {
        for acc in &accs {
            if acc.n[w] == 0 {
                continue;
            }
            window_s.push(window_us as f64 / 1e6);
            ante_rows.push(Some(cols.reason_first_row[acc.a as usize]));
            cons_rows.push(Some(cols.reason_first_row[acc.b as usize]));
            n_support.push(acc.n[w]);
            customers.push(acc.customers[w]);
            cost.push(acc.cost[w]);
            n_counted.push(acc.n_counted[w]);
            sum_sq.push(acc.sum_sq[w]);
            // the lags within W are the n[w] smallest
            for l in &acc.lags[..acc.n[w] as usize] {
                lags.values().append_value(*l as f64 / 1e6);
            }
            lags.append(true);
            g.values().append_slice(&acc.g[w]);
            g.append(true);
        }
    }
    for (slot, (n, c, _)) in totals.iter().enumerate() {
        if *n == 0 {
            continue;
        }
        let (a, w) = (slot / n_tot, slot % n_tot);
        window_s.push(if n_tot == 1 {
            0.0
        } else {
            windows[w] as f64 / 1e6
        });
        ante_rows.push(Some(cols.reason_first_row[a]));
        cons_rows.push(None);
        n_support.push(*n);
        customers.push(*c);
        cost.push(0);
        n_counted.push(0);
        sum_sq.push(0);
        lags.append(true);
        g.append(true);
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
        Arc::new(Int64Array::from(n_counted)),
        Arc::new(Int64Array::from(sum_sq)),
        Arc::new(g.finish()),
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
