//! What chance would give (before stage 3, the ranking): expected counts and
//! their variance.
//!
//! Input: the timeline pass's `exposure` rows ([`crate::timeline::exposure_schema`])
//! and `pair_counts` rows ([`crate::timeline::pair_counts_schema`]) of every
//! partition and bucket.
//! Output: the `pair_expectations` table ([`pair_expectations_schema`]), one
//! row per (window, antecedent A, consequent B) seen in the pair counts:
//!
//! - `counted_triggers`: the counted A-triggers (each customer's first
//!   `customer_cap` A-contacts);
//! - `expected`: how many of them chance alone would have followed by a
//!   B-contact within W: Σ over counted triggers of 1 − (1 − π_B)^k, where k
//!   is the trigger's own number of followers within W (contacts with a
//!   reason) and π_B is B's share of the contacts with a reason on the UTC
//!   days from the trigger's day to W later — the chance that a follower
//!   picked at random from those days is a B. A reason whose volume surges
//!   for two weeks raises its own expectation in those weeks, so it is not
//!   taken for a follow-up of everything; a customer who contacts often has a
//!   large k, so its follow-ups are expected, not evidence;
//! - `cross` and `expected_sq`: with e_c a customer's expected count
//!   (computed here at B's share over the whole log) and s_c its observed
//!   one, Σ_c s_c·e_c and Σ_c e_c². With `sum_sq` = Σ_c s_c² from the pass,
//!   Σ_c (s_c − λ·e_c)² = sum_sq − 2λ·cross + λ²·expected_sq is the
//!   customer-level (cluster-robust, or sandwich) variance of the observed
//!   count at the fitted lift λ = observed / expected: customers, not
//!   contacts, are the independent units.
//!
//! The SQL (`queries/cluster_candidates.sql`) turns these into the test
//! with [`excess_p_value`].

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{
    DataType, Field, Float64Type, Int32Type, Int64Type, Schema, SchemaRef,
};
use rayon::prelude::*;

use crate::error::Result;
pub use crate::timeline::triggers::followed_chance;
use crate::timeline::triggers::{DAY_US, K_BINS};

/// Schema of the `pair_expectations` table (see the module docs).
pub fn pair_expectations_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("window_s", DataType::Float64, false),
        Field::new("antecedent", DataType::Utf8, false),
        Field::new("consequent", DataType::Utf8, false),
        Field::new("counted_triggers", DataType::Int64, false),
        Field::new("expected", DataType::Float64, false),
        Field::new("cross", DataType::Float64, false),
        Field::new("expected_sq", DataType::Float64, false),
    ]))
}

/// One exposure cell's sums: triggers and their k.
type Cell = (i64, i64);

/// Per (antecedent, window bits): its exposure cells (day, bin, sums).
type CellsOf = HashMap<(usize, u64), Vec<(i32, u8, Cell)>>;

/// Per (antecedent, window bits): its bin pairs (bin, bin, Σ products).
type PairsOf = HashMap<(usize, u64), Vec<(u8, u8, i64)>>;

/// The exposure rows of every partition, summed (see the module docs).
#[derive(Default)]
pub struct Exposures {
    reasons: HashMap<String, usize>,
    /// (reason, day) -> contacts
    volume: HashMap<(usize, i32), i64>,
    /// (antecedent, window bits, day, bin) -> cell
    cells: HashMap<(usize, u64, i32, u8), Cell>,
    /// (antecedent, window bits, bin, bin) -> Σ products of counts
    pairs: HashMap<(usize, u64, u8, u8), i64>,
}

impl Exposures {
    /// Nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn reason(&mut self, text: &str) -> usize {
        if let Some(r) = self.reasons.get(text) {
            return *r;
        }
        let r = self.reasons.len();
        self.reasons.insert(text.to_string(), r);
        r
    }

    /// Adds a batch of [`crate::timeline::exposure_schema`].
    pub fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let col = |name: &str| batch.column_by_name(name).expect("exposure column");
        let kind = col("kind").as_string::<i32>().clone();
        let window = col("window_s").as_primitive::<Float64Type>().clone();
        let reason = col("antecedent").as_string::<i32>().clone();
        let day = col("day").as_primitive::<Int32Type>().clone();
        let bin = col("bin").as_primitive::<Int32Type>().clone();
        let bin2 = col("bin2").as_primitive::<Int32Type>().clone();
        let n = col("n").as_primitive::<Int64Type>().clone();
        let k_sum = col("k_sum").as_primitive::<Int64Type>().clone();
        for i in 0..batch.num_rows() {
            let r = self.reason(reason.value(i));
            let w = window.value(i).to_bits();
            match kind.value(i) {
                "volume" => *self.volume.entry((r, day.value(i))).or_default() += n.value(i),
                "exposure" => {
                    let c = self
                        .cells
                        .entry((r, w, day.value(i), bin.value(i) as u8))
                        .or_default();
                    c.0 += n.value(i);
                    c.1 += k_sum.value(i);
                }
                _ => {
                    *self
                        .pairs
                        .entry((r, w, bin.value(i) as u8, bin2.value(i) as u8))
                        .or_default() += n.value(i)
                }
            }
        }
        Ok(())
    }

    /// The daily contacts of each reason and in all, as running sums over
    /// the days with contacts (only those: a log whose times span centuries
    /// costs no more than one that spans a season).
    fn volumes(&self) -> Volumes {
        let mut days: Vec<i32> = self.volume.keys().map(|k| k.1).collect();
        days.sort_unstable();
        days.dedup();
        let mut per: Vec<Vec<(u32, i64)>> = vec![Vec::new(); self.reasons.len()];
        let mut all = vec![0i64; days.len() + 1];
        for ((r, d), n) in &self.volume {
            let at = days.binary_search(d).expect("a day of the volumes") as u32;
            per[*r].push((at, *n));
            all[at as usize + 1] += n;
        }
        for v in &mut per {
            v.sort_unstable();
            for i in 1..v.len() {
                v[i].1 += v[i - 1].1;
            }
        }
        for d in 1..all.len() {
            all[d] += all[d - 1];
        }
        Volumes { days, per, all }
    }

    /// The `pair_expectations` rows for the pairs of `pair_counts` batches
    /// (see the module docs).
    pub fn pair_expectations<'a>(
        &self,
        pair_counts: impl IntoIterator<Item = &'a RecordBatch>,
    ) -> Result<RecordBatch> {
        self.pair_expectations_with(pair_counts, std::iter::empty())
    }

    /// [`Self::pair_expectations`], with rows for the (window in seconds,
    /// antecedent, consequent) pairs of `also` too, seen or not (a pair
    /// never seen has no cross term); pairs of a reason without contacts
    /// are left out.
    pub fn pair_expectations_with<'a, 'b>(
        &self,
        pair_counts: impl IntoIterator<Item = &'a RecordBatch>,
        also: impl IntoIterator<Item = (f64, &'b str, &'b str)>,
    ) -> Result<RecordBatch> {
        // the pairs' cross-term bins, summed over partitions
        let mut g: HashMap<(u64, usize, usize), Vec<i64>> = HashMap::new();
        for (w, a, c) in also {
            if let (Some(a), Some(c)) = (self.reasons.get(a), self.reasons.get(c)) {
                g.entry((w.to_bits(), *a, *c)).or_default();
            }
        }
        for b in pair_counts {
            let window = b.column_by_name("window_s").expect("window_s");
            let window = window.as_primitive::<Float64Type>();
            let ante = b
                .column_by_name("antecedent")
                .expect("antecedent")
                .as_string::<i32>();
            let cons = b
                .column_by_name("consequent")
                .expect("consequent")
                .as_string::<i32>();
            let lists = b.column_by_name("g").expect("g").as_list::<i32>();
            for i in 0..b.num_rows() {
                if cons.is_null(i) || ante.is_null(i) {
                    continue;
                }
                let (Some(a), Some(c)) = (
                    self.reasons.get(ante.value(i)),
                    self.reasons.get(cons.value(i)),
                ) else {
                    continue;
                };
                let sums = g.entry((window.value(i).to_bits(), *a, *c)).or_default();
                let l = lists.value(i);
                let l = l.as_primitive::<Int64Type>();
                if sums.len() < l.len() {
                    sums.resize(l.len(), 0);
                }
                for (s, v) in sums.iter_mut().zip(l.values().iter()) {
                    *s += v;
                }
            }
        }
        let volumes = self.volumes();
        // each (antecedent, window)'s cells and bin pairs
        let mut cells: CellsOf = HashMap::new();
        for ((a, w, d, b), c) in &self.cells {
            cells.entry((*a, *w)).or_default().push((*d, *b, *c));
        }
        let mut pairs: PairsOf = HashMap::new();
        for ((a, w, b1, b2), n) in &self.pairs {
            pairs.entry((*a, *w)).or_default().push((*b1, *b2, *n));
        }
        // summed in one order, whatever the maps' (a float sum depends on it)
        for v in cells.values_mut() {
            v.sort_unstable_by_key(|c| (c.0, c.1));
        }
        for v in pairs.values_mut() {
            v.sort_unstable();
        }
        let mut keys: Vec<&(u64, usize, usize)> = g.keys().collect();
        keys.sort_unstable();
        let names: Vec<&str> = {
            let mut n = vec![""; self.reasons.len()];
            for (t, r) in &self.reasons {
                n[*r] = t;
            }
            n
        };
        let rows: Vec<(i64, f64, f64, f64)> = keys
            .par_iter()
            .map(|&&(w, a, b)| {
                let no_cells = Vec::new();
                let no_pairs = Vec::new();
                let cells = cells.get(&(a, w)).unwrap_or(&no_cells);
                let pairs = pairs.get(&(a, w)).unwrap_or(&no_pairs);
                let window_us = f64::from_bits(w) * 1e6;
                expectation(&volumes, b, window_us, cells, pairs, &g[&(w, a, b)])
            })
            .collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Float64Array::from_iter_values(
                keys.iter().map(|k| f64::from_bits(k.0)),
            )),
            Arc::new(StringArray::from_iter_values(
                keys.iter().map(|k| names[k.1]),
            )),
            Arc::new(StringArray::from_iter_values(
                keys.iter().map(|k| names[k.2]),
            )),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.3))),
        ];
        Ok(RecordBatch::try_new(pair_expectations_schema(), columns)?)
    }
}

/// Running sums of daily contacts with a reason (see [`Exposures::volumes`]).
struct Volumes {
    /// The days with contacts, ascending.
    days: Vec<i32>,
    /// Per reason: (index of a day with its contacts, its contacts up to and
    /// including that day), ascending.
    per: Vec<Vec<(u32, i64)>>,
    /// All contacts before each day of `days` (and in all, last).
    all: Vec<i64>,
}

impl Volumes {
    /// Reason b's contacts before day index `at`.
    fn before(&self, b: usize, at: usize) -> i64 {
        let per = &self.per[b];
        match per.partition_point(|(d, _)| (*d as usize) < at) {
            0 => 0,
            p => per[p - 1].1,
        }
    }

    /// B's share of the contacts from `day` to `span` days later.
    fn share(&self, b: usize, day: i32, span: usize) -> f64 {
        let lo = self.days.partition_point(|d| *d < day);
        let until = i64::from(day).saturating_add(span as i64);
        let hi = self.days.partition_point(|d| i64::from(*d) <= until);
        let all = self.all[hi] - self.all[lo];
        if all <= 0 {
            return 0.0;
        }
        (self.before(b, hi) - self.before(b, lo)) as f64 / all as f64
    }

    /// B's share of all contacts.
    fn overall(&self, b: usize) -> f64 {
        let all = self.all[self.days.len()];
        match self.per[b].last() {
            Some((_, n)) if all > 0 => *n as f64 / all as f64,
            _ => 0.0,
        }
    }
}

/// (counted triggers, expected, cross, expected_sq) of one pair.
fn expectation(
    volumes: &Volumes,
    b: usize,
    window_us: f64,
    cells: &[(i32, u8, Cell)],
    pairs: &[(u8, u8, i64)],
    g: &[i64],
) -> (i64, f64, f64, f64) {
    let span = (window_us / DAY_US as f64).ceil() as usize;
    let mut triggers = 0;
    let mut expected = 0.0;
    // per bin: triggers and their k, over all days (for the mean k of a bin)
    let mut bins = [(0i64, 0i64); K_BINS];
    for (day, bin, (n, k_sum)) in cells {
        triggers += n;
        let bin = *bin as usize;
        bins[bin].0 += n;
        bins[bin].1 += k_sum;
        if *k_sum > 0 {
            let k = *k_sum as f64 / *n as f64;
            expected += *n as f64 * followed_chance(volumes.share(b, *day, span), k);
        }
    }
    let overall = volumes.overall(b);
    let f: Vec<f64> = bins
        .iter()
        .map(|(n, k)| {
            if *n == 0 {
                0.0
            } else {
                followed_chance(overall, *k as f64 / *n as f64)
            }
        })
        .collect();
    let cross = g
        .iter()
        .enumerate()
        .map(|(bin, s)| *s as f64 * f.get(bin).copied().unwrap_or(0.0))
        .sum();
    let expected_sq = pairs
        .iter()
        .map(|(b1, b2, n)| *n as f64 * f[*b1 as usize] * f[*b2 as usize])
        .sum();
    (triggers, expected, cross, expected_sq)
}

/// The one-sided p-value of observing `observed` follow-ups where chance
/// gives `expected`, against the null hypothesis that the true lift is at
/// most `min_lift`, with the customer-level `variance` of the observed count
/// (see the module docs).
///
/// The count is taken as over-dispersed Poisson (quasi-Poisson): its
/// dispersion φ = max(1, variance / observed) is how much more the count
/// varies between customers than a Poisson count of that mean would (the
/// fitted mean is the observed count itself). Under the null its mean is at
/// most μ = min_lift · expected, and the p-value is P(X ≥ observed/φ) for
/// X ~ Poisson(μ/φ), in the continuous form of the regularized lower
/// incomplete gamma function P(observed/φ, μ/φ). The Poisson keeps the right
/// skew of a count (a normal approximation understates the tail of rare
/// follow-ups); φ widens it as much as the customers' own counts vary, so
/// that a few customers with many follow-ups each cannot make a pair look
/// significant. 1 when nothing was observed; null inputs give null.
pub fn excess_p_value(observed: f64, expected: f64, variance: f64, min_lift: f64) -> f64 {
    if observed.is_nan() || observed <= 0.0 {
        return 1.0;
    }
    let mu = min_lift.max(0.0) * expected;
    if mu.is_nan() || mu <= 0.0 {
        return 0.0;
    }
    let phi = if variance.is_finite() {
        (variance / observed).max(1.0)
    } else {
        1.0
    };
    statrs::function::gamma::checked_gamma_lr(observed / phi, mu / phi)
        .unwrap_or(1.0)
        .clamp(0.0, 1.0)
}

/// The two-sided p-value that a pattern's rate differs between two periods:
/// in each, `observed` followed triggers out of an `exposure` (its counted
/// triggers), with the customer-level `variance` of the observed count,
/// `(o1, e1, v1)` before and `(o2, e2, v2)` after.
///
/// If the rate per unit of exposure were the same in both, then given the
/// o1 + o2 observed, the number in the second period would be binomial with
/// the second period's share of the exposure, e2 / (e1 + e2): the
/// two-proportion test in its conditional form, which needs no estimate of
/// the common rate. As in [`excess_p_value`], the counts are divided by the
/// dispersion φ = max(1, (v1 + v2) / (o1 + o2)), so that customers, not
/// contacts, are the units; the binomial tails are taken in their continuous
/// form (regularized incomplete beta). 1 when either period has no exposure
/// (nothing to compare) or nothing was observed.
pub fn change_p_value(before: (f64, f64, f64), after: (f64, f64, f64)) -> f64 {
    let ((o1, e1, v1), (o2, e2, v2)) = (before, after);
    let n = o1 + o2;
    if !(n > 0.0 && e1 > 0.0 && e2 > 0.0 && o1 >= 0.0 && o2 >= 0.0) {
        return 1.0;
    }
    let share = e2 / (e1 + e2);
    let variance = v1.max(0.0) + v2.max(0.0);
    let phi = if variance.is_finite() {
        (variance / n).max(1.0)
    } else {
        1.0
    };
    let (x, n) = (o2 / phi, n / phi);
    let beta = |a: f64, b: f64| {
        statrs::function::beta::checked_beta_reg(a, b, share)
            .unwrap_or(1.0)
            .clamp(0.0, 1.0)
    };
    // P(X ≥ x) = I_share(x, n − x + 1); P(X ≤ x) = 1 − I_share(x + 1, n − x)
    let upper = if x <= 0.0 { 1.0 } else { beta(x, n - x + 1.0) };
    let lower = if x >= n {
        1.0
    } else {
        1.0 - beta(x + 1.0, n - x)
    };
    (2.0 * upper.min(lower)).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shares over the days with contacts: days centuries apart cost two
    /// entries, and a window counts the days it reaches.
    #[test]
    fn shares_over_days_with_contacts() {
        let mut e = Exposures::new();
        let (a, b) = (e.reason("a"), e.reason("b"));
        e.volume.insert((a, -100_000_000), 3);
        e.volume.insert((b, -100_000_000), 1);
        e.volume.insert((a, 100_000_000), 1);
        e.volume.insert((b, 100_000_001), 3);
        let v = e.volumes();
        assert_eq!(v.days.len(), 3);
        assert_eq!(v.share(b, -100_000_000, 0), 0.25);
        assert_eq!(v.share(b, 100_000_000, 0), 0.0);
        assert_eq!(v.share(b, 100_000_000, 1), 0.75);
        assert_eq!(v.share(a, i32::MAX, 30), 0.0);
        assert_eq!(v.overall(b), 0.5);
    }

    #[test]
    fn chance_of_a_follow_up() {
        assert_eq!(followed_chance(0.1, 0.0), 0.0);
        assert!((followed_chance(0.1, 1.0) - 0.1).abs() < 1e-15);
        assert!((followed_chance(0.1, 2.0) - 0.19).abs() < 1e-15);
        assert_eq!(followed_chance(1.0, 3.0), 1.0);
    }

    #[test]
    fn change_p_values() {
        // the same rate in both periods, however many triggers each had
        assert!(change_p_value((20.0, 10.0, 20.0), (60.0, 30.0, 60.0)) > 0.5);
        // the rate doubled: 4 per trigger where it was 2
        let doubled = change_p_value((40.0, 20.0, 40.0), (160.0, 40.0, 160.0));
        assert!(doubled < 1e-3, "{doubled}");
        // and halved: symmetric in the periods
        let halved = change_p_value((160.0, 40.0, 160.0), (40.0, 20.0, 40.0));
        assert!((halved - doubled).abs() < 1e-12, "{halved} {doubled}");
        // a few customers with many follow-ups each: less evidence
        assert!(change_p_value((40.0, 20.0, 1600.0), (160.0, 40.0, 6400.0)) > 0.1);
        // nothing expected in a period: nothing to compare
        assert_eq!(change_p_value((0.0, 0.0, 0.0), (30.0, 10.0, 30.0)), 1.0);
        assert_eq!(change_p_value((0.0, 5.0, 0.0), (0.0, 10.0, 0.0)), 1.0);
        // gone: 40 follow-ups before, none after where 10 were expected
        assert!(change_p_value((40.0, 10.0, 40.0), (0.0, 10.0, 0.0)) < 1e-6);
    }

    /// Under the null (one lift in both periods), the change p-value is
    /// uniform enough: at most its level of rejections.
    #[test]
    fn change_p_value_is_calibrated() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (mut at_5, mut at_1, trials) = (0, 0, 4000);
        for _ in 0..trials {
            let (e1, e2) = (rng.random_range(2.0..40.0), rng.random_range(2.0..40.0));
            let lift = rng.random_range(1.0..3.0);
            let draw = |rng: &mut rand::rngs::StdRng, mean: f64| -> f64 {
                use rand_distr::Distribution;
                rand_distr::Poisson::new(mean).expect("a mean").sample(rng)
            };
            let (o1, o2) = (draw(&mut rng, lift * e1), draw(&mut rng, lift * e2));
            let p = change_p_value((o1, e1, o1), (o2, e2, o2));
            at_5 += (p <= 0.05) as u32;
            at_1 += (p <= 0.01) as u32;
        }
        assert!(at_5 as f64 <= 0.05 * trials as f64 * 1.15, "{at_5}");
        assert!(at_1 as f64 <= 0.01 * trials as f64 * 1.3, "{at_1}");
    }

    #[test]
    fn p_values() {
        // Poisson(10): P(X >= 10) = 1 - P(X <= 9) = 0.5420702855
        assert!((excess_p_value(10.0, 10.0, 0.0, 1.0) - 0.542_070_285_5).abs() < 1e-9);
        // the same count at a minimum lift of 1.2 is less surprising
        assert!(excess_p_value(20.0, 10.0, 0.0, 1.2) > excess_p_value(20.0, 10.0, 0.0, 1.0));
        // over-dispersion makes it less surprising too
        assert!(excess_p_value(20.0, 10.0, 100.0, 1.0) > excess_p_value(20.0, 10.0, 10.0, 1.0));
        assert_eq!(excess_p_value(0.0, 10.0, 0.0, 1.0), 1.0);
        assert!(excess_p_value(200.0, 10.0, 10.0, 1.0) < 1e-100);
    }
}
