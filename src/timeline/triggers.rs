//! The counted triggers of one customer, and how many contacts follow each.
//!
//! Input: one customer's run of the sorted contacts (see `Columns` in the
//! timeline module), the pair windows and the customer cap `m`.
//! Output: `RunTriggers` — the customer's *counted* triggers, i.e. the first
//! `m` contacts (in time order) of each non-null reason (among the contacts
//! of the pass's trigger period, when it has one), and for each of them
//! and each window W the number k of the customer's later contacts with a
//! non-null reason at most W after it (strictly later: a contact at the same
//! instant does not follow).
//!
//! Why: the significance tests ([`crate::significance`]) ask, for each
//! counted A-trigger, how likely it is that at least one of its k followers
//! has reason B when reasons are unrelated to order: 1 − (1 − π_B)^k, where
//! π_B is B's share of the contacts with a reason around that time. Only the
//! first `m` triggers of each customer count, so that no customer (a heavy
//! contacter, a shared id) can carry a finding alone.
//!
//! The tests keep k in a histogram of [`K_BINS`] bins ([`k_bin`]): exact up
//! to 15, then half-octaves, each bin with the sum of its k so that the
//! expectation can be taken at the bin's mean k. As 1 − (1 − π)^k is concave
//! in k, taking it at a mean overstates the expectation slightly (Jensen):
//! the test errs to the conservative side, and only for k ≥ 16.

use super::{Columns, NULL_CODE, TimelineParams};

/// Number of k bins ([`k_bin`]); bin 0 is k = 0.
pub const K_BINS: usize = 72;

/// The bin of a follower count: k itself up to 15, then two bins per
/// doubling (16–23, 24–31, 32–47, …).
pub fn k_bin(k: u32) -> u8 {
    if k < 16 {
        return k as u8;
    }
    let e = 31 - k.leading_zeros(); // floor(log2 k) >= 4
    let upper_half = (k >> (e - 1)) & 1; // k >= 1.5 * 2^e
    (16 + 2 * (e - 4) + upper_half) as u8
}

/// One day in microseconds.
pub const DAY_US: i64 = 86_400_000_000;

/// The UTC day of a timestamp (days since 1970-01-01).
pub fn utc_day(ts_us: i64) -> i32 {
    ts_us.div_euclid(DAY_US) as i32
}

/// The counted triggers of one customer run (see the module docs), reused
/// from run to run.
#[derive(Default)]
pub(crate) struct RunTriggers {
    /// Counted triggers as (reason code, row), sorted by reason then row.
    pub(crate) triggers: Vec<(u32, u32)>,
    /// k per counted trigger and window: `k[t * windows + w]`.
    pub(crate) k: Vec<u32>,
    /// Per reason code: 1 + the run its count below belongs to.
    stamp: Vec<usize>,
    /// Per reason code: counted triggers so far in that run.
    seen: Vec<u32>,
    /// Contacts with a reason before each row of the run (and at its end).
    with_reason: Vec<u32>,
    windows: usize,
}

impl RunTriggers {
    /// Fills in the counted triggers of the run `start..end` (its index in
    /// the partition: `run`).
    pub(crate) fn fill(
        &mut self,
        cols: &Columns,
        (run, start, end): (usize, usize, usize),
        p: &TimelineParams,
    ) {
        let (windows_us, cap) = (p.pair_windows_us.as_slice(), p.customer_cap);
        self.triggers.clear();
        self.k.clear();
        self.windows = windows_us.len();
        if self.stamp.len() < cols.n_reasons {
            self.stamp.resize(cols.n_reasons, 0);
            self.seen.resize(cols.n_reasons, 0);
        }
        self.with_reason.clear();
        let mut before = 0u32;
        for i in start..end {
            self.with_reason.push(before);
            let a = cols.reason_codes[i];
            if a == NULL_CODE {
                continue;
            }
            before += 1;
            if !p.triggers_at(cols.ts[i]) {
                continue;
            }
            let a_idx = a as usize;
            if self.stamp[a_idx] != run + 1 {
                self.stamp[a_idx] = run + 1;
                self.seen[a_idx] = 0;
            }
            if self.seen[a_idx] < cap {
                self.seen[a_idx] += 1;
                self.triggers.push((a, i as u32));
            }
        }
        self.with_reason.push(before);
        self.triggers.sort_unstable();
        let ts = &cols.ts[start..end];
        for &(_, row) in &self.triggers {
            let t = cols.ts[row as usize];
            // the first contact strictly later than t
            let after = ts.partition_point(|x| *x <= t);
            for w in windows_us {
                let until = ts.partition_point(|x| *x <= t.saturating_add(*w));
                self.k
                    .push(self.with_reason[until] - self.with_reason[after]);
            }
        }
    }

    /// The k of counted trigger `t` at window `w`.
    pub(crate) fn k(&self, t: usize, w: usize) -> u32 {
        self.k[t * self.windows + w]
    }

    /// The counted triggers with reason `a`: their indexes in
    /// [`RunTriggers::triggers`].
    pub(crate) fn of_reason(&self, a: u32) -> std::ops::Range<usize> {
        let lo = self.triggers.partition_point(|(r, _)| *r < a);
        let hi = self.triggers.partition_point(|(r, _)| *r <= a);
        lo..hi
    }
}

/// The chance that at least one of `k` followers is a B when each is one
/// with chance `share`.
pub fn followed_chance(share: f64, k: f64) -> f64 {
    if k <= 0.0 || share <= 0.0 {
        return 0.0;
    }
    if share >= 1.0 {
        return 1.0;
    }
    -f64::exp_m1(k * f64::ln_1p(-share))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins() {
        for k in 0..16 {
            assert_eq!(k_bin(k), k as u8);
        }
        assert_eq!(k_bin(16), 16);
        assert_eq!(k_bin(23), 16);
        assert_eq!(k_bin(24), 17);
        assert_eq!(k_bin(31), 17);
        assert_eq!(k_bin(32), 18);
        assert_eq!(k_bin(47), 18);
        assert_eq!(k_bin(48), 19);
        assert!((k_bin(u32::MAX) as usize) < K_BINS);
        // monotone
        let mut last = 0;
        for k in 0..100_000u32 {
            let b = k_bin(k);
            assert!(b >= last);
            last = b;
        }
    }

    #[test]
    fn days() {
        assert_eq!(utc_day(0), 0);
        assert_eq!(utc_day(-1), -1);
        assert_eq!(utc_day(DAY_US), 1);
    }
}
