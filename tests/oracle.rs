//! The engine against a brute-force oracle (plain nested loops per customer)
//! on randomized logs with ties, equal timestamps, gaps exactly at the
//! window, single-contact customers, null reasons, null and placeholder ids
//! and null timestamps.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::{LogRow, column_text, config, read_parquet, write_log};

const H: i64 = 3_600_000_000;
const REPEAT_W: i64 = 24 * H;
const CLUSTER_W: i64 = 72 * H;
const BASE: i64 = 1_780_000_000_000_000;

/// A random log built to hit the edges: times on a 6-hour grid (so gaps land
/// exactly on the 24h and 72h windows and many timestamps tie), random
/// contact ids (ties are broken by id, not input order).
fn random_log(seed: u64) -> Vec<LogRow> {
    let mut rng = StdRng::seed_from_u64(seed);
    let customers = rng.random_range(1..40);
    let mut rows = Vec::new();
    let reasons = ["a", "b", "c", "d"];
    let channels = ["phone", "chat", "email"];
    for c in 0..customers {
        let n = if rng.random_bool(0.25) {
            1
        } else {
            rng.random_range(1..30)
        };
        for _ in 0..n {
            let grid = rng.random_range(0..60i64) * 6 * H;
            let jitter = if rng.random_bool(0.1) {
                rng.random_range(-1..=1)
            } else {
                0
            };
            rows.push(LogRow {
                contact_id: 0,
                customer: Some(format!("c{c}")),
                ts: Some(BASE + grid + jitter),
                channel: Some(channels[rng.random_range(0..3)].into()),
                reason: if rng.random_bool(0.1) {
                    None
                } else {
                    Some(reasons[rng.random_range(0..4)].into())
                },
                agent: Some(format!("ag{}", rng.random_range(0..3))),
            });
        }
    }
    // rows nobody can use
    for k in 0..rng.random_range(0..6) {
        let mut r = rows[0].clone();
        match k % 3 {
            0 => r.customer = None,
            1 => r.customer = Some("0".into()),
            _ => r.ts = None,
        }
        rows.push(r);
    }
    let mut ids: Vec<i64> = (1..=rows.len() as i64).collect();
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.random_range(0..=i));
    }
    for (r, id) in rows.iter_mut().zip(ids) {
        r.contact_id = id * 7;
    }
    for i in (1..rows.len()).rev() {
        let j = rng.random_range(0..=i);
        rows.swap(i, j);
    }
    rows
}

#[derive(Debug, Clone, PartialEq)]
struct Expected {
    prev_gap_s: Option<f64>,
    prev_channel: Option<String>,
    is_repeat: bool,
    same_reason: bool,
    event_id: i64,
    event_seq: i64,
    followed: Option<bool>,
}

fn usable(rows: &[LogRow]) -> Vec<LogRow> {
    rows.iter()
        .filter(|r| {
            r.ts.is_some()
                && r.customer
                    .as_deref()
                    .is_some_and(|c| !c.is_empty() && c != "0")
        })
        .cloned()
        .collect()
}

/// Brute force per contact, straight from the definitions.
fn oracle_contacts(rows: &[LogRow]) -> BTreeMap<i64, Expected> {
    let max_ts = rows.iter().filter_map(|r| r.ts).max().unwrap();
    let key = |r: &LogRow| (r.ts.unwrap(), r.contact_id);
    let mut out = BTreeMap::new();
    for i in rows {
        let same: Vec<&LogRow> = rows.iter().filter(|j| j.customer == i.customer).collect();
        let earlier: Vec<&&LogRow> = same.iter().filter(|j| key(j) < key(i)).collect();
        let later: Vec<&&LogRow> = same.iter().filter(|j| key(j) > key(i)).collect();
        let ti = i.ts.unwrap();
        let prev = earlier.iter().max_by_key(|j| key(j));
        let is_repeat = earlier.iter().any(|j| ti - j.ts.unwrap() <= REPEAT_W);
        let same_reason = i.reason.is_some()
            && earlier
                .iter()
                .any(|j| j.reason == i.reason && ti - j.ts.unwrap() <= REPEAT_W);
        let followed = if later.iter().any(|j| j.ts.unwrap() - ti <= REPEAT_W) {
            Some(true)
        } else if ti + REPEAT_W <= max_ts {
            Some(false)
        } else {
            None
        };
        // event: walk back while the gap to the previous contact is within the window
        let mut ordered: Vec<&LogRow> = same.clone();
        ordered.sort_by_key(|r| key(r));
        let pos = ordered
            .iter()
            .position(|r| r.contact_id == i.contact_id)
            .unwrap();
        let mut start = pos;
        while start > 0 && ordered[start].ts.unwrap() - ordered[start - 1].ts.unwrap() <= REPEAT_W {
            start -= 1;
        }
        out.insert(
            i.contact_id,
            Expected {
                prev_gap_s: prev.map(|p| (ti - p.ts.unwrap()) as f64 / 1e6),
                prev_channel: prev.and_then(|p| p.channel.clone()),
                is_repeat,
                same_reason,
                event_id: ordered[start].contact_id,
                event_seq: (pos - start + 1) as i64,
                followed,
            },
        );
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
struct ExpectedCluster {
    window_s: i64,
    n_antecedent: i64,
    n_support: i64,
    confidence: f64,
    baseline: f64,
    lift: f64,
    median_lag_s: f64,
    p90_lag_s: f64,
    customers: i64,
    n_counted: i64,
    expected: f64,
    score: f64,
    avoidable: f64,
    value: f64,
    p_value: f64,
    q_value: f64,
}

fn nearest_rank(sorted: &[f64], num: usize, den: usize) -> f64 {
    let k = (num * sorted.len()).div_ceil(den);
    sorted[k - 1]
}

const EFFECTIVENESS: f64 = 0.16;

fn channel_cost(ch: &str) -> f64 {
    recur::config::DEFAULT_CHANNEL_COSTS
        .iter()
        .find(|(c, _)| *c == ch)
        .map(|(_, v)| *v)
        .unwrap_or(recur::config::DEFAULT_CHANNEL_COST)
}

type ClusterCand = ((String, String), ExpectedCluster);

const MIN_LIFT: f64 = recur::config::DEFAULT_MIN_LIFT;
const CAP: usize = recur::config::DEFAULT_CUSTOMER_CAP as usize;
const DAY: i64 = 24 * H;

/// Each customer's contacts in time order (then by id).
fn by_customer(rows: &[LogRow]) -> BTreeMap<String, Vec<&LogRow>> {
    let mut out: BTreeMap<String, Vec<&LogRow>> = BTreeMap::new();
    for r in rows {
        out.entry(r.customer.clone().unwrap()).or_default().push(r);
    }
    for v in out.values_mut() {
        v.sort_by_key(|r| (r.ts.unwrap(), r.contact_id));
    }
    out
}

/// The chance that one of k followers is a B when each is one with chance pi.
fn chance(pi: f64, k: f64) -> f64 {
    if k <= 0.0 {
        0.0
    } else {
        1.0 - (1.0 - pi).powf(k)
    }
}

/// Every cluster candidate for every window, straight from the definitions
/// (README, "Definitions"): all pairs seen are tested.
fn cluster_candidates(rows: &[LogRow], windows: &[i64]) -> Vec<ClusterCand> {
    let reasons: BTreeSet<String> = rows.iter().filter_map(|r| r.reason.clone()).collect();
    let customers = by_customer(rows);
    // contacts with a reason, per reason and UTC day, and in all
    let mut volume: BTreeMap<(String, i64), f64> = BTreeMap::new();
    let mut all_days: BTreeMap<i64, f64> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.reason.is_some()) {
        let d = r.ts.unwrap().div_euclid(DAY);
        *volume.entry((r.reason.clone().unwrap(), d)).or_default() += 1.0;
        *all_days.entry(d).or_default() += 1.0;
    }
    let last_day = *all_days.keys().max().unwrap();
    // B's share of the contacts from day d to `span` days later
    let share = |b: &str, d: i64, w: i64| -> f64 {
        let span = (w + DAY - 1) / DAY;
        let (mut nb, mut n) = (0.0, 0.0);
        for day in d..=(d + span).min(last_day) {
            nb += volume.get(&(b.to_string(), day)).copied().unwrap_or(0.0);
            n += all_days.get(&day).copied().unwrap_or(0.0);
        }
        nb / n
    };
    let total: f64 = all_days.values().sum();
    let overall = |b: &str| -> f64 {
        volume
            .iter()
            .filter(|((r, _), _)| r == b)
            .map(|(_, n)| n)
            .sum::<f64>()
            / total
    };
    // the first B-contact strictly after i, within w: (lag, channel)
    let first = |i: &LogRow, b: &str, w: i64| -> Option<(i64, String)> {
        rows.iter()
            .filter(|j| j.customer == i.customer && j.reason.as_deref() == Some(b))
            .filter(|j| j.ts.unwrap() > i.ts.unwrap() && j.ts.unwrap() - i.ts.unwrap() <= w)
            .min_by_key(|j| (j.ts.unwrap(), j.contact_id))
            .map(|j| (j.ts.unwrap() - i.ts.unwrap(), j.channel.clone().unwrap()))
    };
    // followers of i within w: later contacts of the customer with a reason
    let followers = |i: &LogRow, w: i64| -> u32 {
        customers[i.customer.as_ref().unwrap()]
            .iter()
            .filter(|j| j.reason.is_some())
            .filter(|j| j.ts.unwrap() > i.ts.unwrap() && j.ts.unwrap() - i.ts.unwrap() <= w)
            .count() as u32
    };
    let bin = |k: u32| recur::timeline::triggers::k_bin(k);
    let mut cands: Vec<((String, String), ExpectedCluster)> = Vec::new();
    for &w in windows {
        for a in &reasons {
            let ante: Vec<&LogRow> = rows
                .iter()
                .filter(|r| r.reason.as_ref() == Some(a))
                .collect();
            // the counted triggers, per customer: the first CAP a-contacts
            let counted: Vec<Vec<(&LogRow, u32)>> = customers
                .values()
                .map(|v| {
                    v.iter()
                        .filter(|r| r.reason.as_ref() == Some(a))
                        .take(CAP)
                        .map(|r| (*r, followers(r, w)))
                        .collect()
                })
                .collect();
            // mean k per (day, bin) and per bin, as the engine keeps them
            let mut cell: BTreeMap<(i64, u8), (f64, f64)> = BTreeMap::new();
            let mut per_bin: BTreeMap<u8, (f64, f64)> = BTreeMap::new();
            for (r, k) in counted.iter().flatten() {
                let c = cell
                    .entry((r.ts.unwrap().div_euclid(DAY), bin(*k)))
                    .or_default();
                c.0 += 1.0;
                c.1 += *k as f64;
                let c = per_bin.entry(bin(*k)).or_default();
                c.0 += 1.0;
                c.1 += *k as f64;
            }
            let mean = |c: &(f64, f64)| c.1 / c.0;
            let counted_triggers: f64 = cell.values().map(|c| c.0).sum();
            for b in &reasons {
                if a == b {
                    continue;
                }
                let mut lags = Vec::new();
                let mut custs = BTreeSet::new();
                let mut cost = 0.0;
                for i in &ante {
                    if let Some((l, ch)) = first(i, b, w) {
                        lags.push(l as f64 / 1e6);
                        custs.insert(i.customer.clone());
                        cost += channel_cost(&ch);
                    }
                }
                if lags.is_empty() {
                    continue;
                }
                lags.sort_by(|x, y| x.partial_cmp(y).unwrap());
                let expected: f64 = cell
                    .iter()
                    .map(|((d, _), c)| c.0 * chance(share(b, *d, w), mean(c)))
                    .sum();
                let f0 = |k: u32| chance(overall(b), mean(&per_bin[&bin(k)]));
                let (mut n_counted, mut sum_sq, mut cross, mut expected_sq) = (0.0, 0.0, 0.0, 0.0);
                for mine in &counted {
                    let s = mine
                        .iter()
                        .filter(|(r, _)| first(r, b, w).is_some())
                        .count() as f64;
                    let e0: f64 = mine.iter().map(|(_, k)| f0(*k)).sum();
                    n_counted += s;
                    sum_sq += s * s;
                    cross += s * e0;
                    expected_sq += e0 * e0;
                }
                let fitted = if expected > 0.0 {
                    n_counted / expected
                } else {
                    0.0
                };
                let variance = sum_sq - 2.0 * fitted * cross + fitted * fitted * expected_sq;
                let n_support = lags.len() as f64;
                let score = n_counted - expected;
                cands.push((
                    (a.clone(), b.clone()),
                    ExpectedCluster {
                        window_s: w / 1_000_000,
                        n_antecedent: ante.len() as i64,
                        n_support: lags.len() as i64,
                        confidence: n_support / ante.len() as f64,
                        baseline: expected / counted_triggers,
                        lift: n_counted / expected,
                        median_lag_s: nearest_rank(&lags, 1, 2),
                        p90_lag_s: nearest_rank(&lags, 9, 10),
                        customers: custs.len() as i64,
                        n_counted: n_counted as i64,
                        expected,
                        score,
                        avoidable: EFFECTIVENESS * score.max(0.0),
                        value: EFFECTIVENESS * score.max(0.0) * cost / n_support,
                        p_value: recur::significance::excess_p_value(
                            n_counted, expected, variance, MIN_LIFT,
                        ),
                        q_value: f64::NAN,
                    },
                ));
            }
        }
    }
    cands
}

/// Benjamini-Hochberg by brute force: q_i = min over p_j >= p_i of m p_j / (largest rank of p_j).
fn bh(ps: &[f64]) -> Vec<f64> {
    let m = ps.len() as f64;
    let mut sorted = ps.to_vec();
    sorted.sort_by(|x, y| x.partial_cmp(y).unwrap());
    ps.iter()
        .map(|p| {
            let first = sorted.iter().position(|x| x == p).unwrap();
            (first..sorted.len())
                .map(|j| {
                    let last = sorted.iter().rposition(|x| *x == sorted[j]).unwrap();
                    (m * sorted[j] / (last + 1) as f64).min(1.0)
                })
                .fold(f64::INFINITY, f64::min)
        })
        .collect()
}

/// Significance, the echo rule and the best window, as the README states them.
fn select_clusters(
    cands: Vec<ClusterCand>,
    alpha: f64,
    min_support: i64,
    min_customers: i64,
) -> BTreeMap<(String, String), ExpectedCluster> {
    let sig: Vec<_> = cands
        .into_iter()
        .filter(|c| {
            c.1.q_value <= alpha && c.1.n_support >= min_support && c.1.customers >= min_customers
        })
        .collect();
    let kept: Vec<_> = sig
        .iter()
        .filter(|c| {
            !sig.iter().any(|r| {
                r.1.window_s == c.1.window_s
                    && r.0.0 == c.0.1
                    && r.0.1 == c.0.0
                    && c.1.score < 0.5 * r.1.score
            })
        })
        .cloned()
        .collect();
    let mut out: BTreeMap<(String, String), ExpectedCluster> = BTreeMap::new();
    for (k, c) in kept {
        let better = match out.get(&k) {
            None => true,
            Some(o) => c.score > o.score || (c.score == o.score && c.window_s < o.window_s),
        };
        if better {
            out.insert(k, c);
        }
    }
    out
}

const MAX_GAP: i64 = 48 * H;
const MAX_SPAN: i64 = 96 * H;

#[derive(Debug, Clone)]
struct ExpectedSeq {
    reasons: Vec<String>,
    n_support: i64,
    customers: i64,
    confidence: f64,
    baseline: f64,
    median_lags: Vec<f64>,
    p_value: f64,
    q_value: f64,
}

/// Greedy leftmost occurrence of `pattern` from contact `start` in one
/// customer's ordered contacts: the step lags, if it occurs.
fn leftmost(
    contacts: &[&LogRow],
    start: usize,
    pattern: &[&str],
    gap: i64,
    span: i64,
) -> Option<Vec<i64>> {
    if contacts[start].reason.as_deref() != Some(pattern[0]) {
        return None;
    }
    let t0 = contacts[start].ts.unwrap();
    let mut prev = start;
    let mut lags = Vec::new();
    for item in &pattern[1..] {
        let tp = contacts[prev].ts.unwrap();
        let next = (prev + 1..contacts.len()).find(|&k| {
            let t = contacts[k].ts.unwrap();
            t > tp && t - tp <= gap && t - t0 <= span && contacts[k].reason.as_deref() == Some(item)
        })?;
        lags.push(contacts[next].ts.unwrap() - tp);
        prev = next;
    }
    Some(lags)
}

/// Every sequence candidate (3-4 steps, consecutive items distinct), by
/// trying every pattern from every start contact.
fn sequence_candidates(
    rows: &[LogRow],
    min_support: i64,
    gap: i64,
    span: i64,
) -> Vec<(String, ExpectedSeq)> {
    let reasons: Vec<String> = rows
        .iter()
        .filter_map(|r| r.reason.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let by_customer = by_customer(rows);
    let mut patterns: Vec<Vec<&str>> = reasons.iter().map(|r| vec![r.as_str()]).collect();
    let mut all = Vec::new();
    for _ in 1..4 {
        patterns = patterns
            .iter()
            .flat_map(|p| {
                reasons
                    .iter()
                    .filter(|r| r.as_str() != *p.last().unwrap())
                    .map(|r| {
                        let mut q = p.clone();
                        q.push(r.as_str());
                        q
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        all.extend(patterns.clone());
    }
    // (customer, start index, lags) of every occurrence
    let occurrences = |p: &[&str]| -> Vec<(String, usize, Vec<i64>)> {
        let mut out = Vec::new();
        for (c, contacts) in &by_customer {
            for i in 0..contacts.len() {
                if let Some(l) = leftmost(contacts, i, p, gap, span) {
                    out.push((c.clone(), i, l));
                }
            }
        }
        out
    };
    let with_reason = rows.iter().filter(|r| r.reason.is_some()).count() as f64;
    let mut out = Vec::new();
    for p in all.iter().filter(|p| p.len() >= 3) {
        let occ = occurrences(p);
        if (occ.len() as i64) < min_support || occ.is_empty() {
            continue;
        }
        let prefix = occurrences(&p[..p.len() - 1]);
        let last = p[p.len() - 1];
        let pi = rows
            .iter()
            .filter(|r| r.reason.as_deref() == Some(last))
            .count() as f64
            / with_reason;
        // the counted prefix occurrences: each customer's first CAP (by start)
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut per_bin: BTreeMap<usize, (f64, f64)> = BTreeMap::new();
        let mut completed: BTreeMap<&str, f64> = BTreeMap::new();
        for (c, start, lags) in &prefix {
            let n = seen.entry(c.as_str()).or_default();
            *n += 1;
            if *n > CAP {
                continue;
            }
            let contacts = &by_customer[c];
            let t0 = contacts[*start].ts.unwrap();
            let t_last = t0 + lags.iter().sum::<i64>();
            let k = contacts
                .iter()
                .filter(|j| j.reason.is_some())
                .filter(|j| {
                    let t = j.ts.unwrap();
                    t > t_last && t - t_last <= gap && t - t0 <= span
                })
                .count() as u32;
            let b = per_bin.entry(recur::timeline::seq_bin(k)).or_default();
            b.0 += 1.0;
            b.1 += k as f64;
            if leftmost(contacts, *start, p, gap, span).is_some() {
                *completed.entry(c.as_str()).or_default() += 1.0;
            }
        }
        let expected: f64 = per_bin.values().map(|(n, k)| n * chance(pi, k / n)).sum();
        let prefix_counted: f64 = per_bin.values().map(|(n, _)| n).sum();
        let n_counted: f64 = completed.values().sum();
        let sum_sq: f64 = completed.values().map(|s| s * s).sum();
        let median_lags = (0..p.len() - 1)
            .map(|s| {
                let mut l: Vec<f64> = occ.iter().map(|o| o.2[s] as f64 / 1e6).collect();
                l.sort_by(|x, y| x.partial_cmp(y).unwrap());
                nearest_rank(&l, 1, 2)
            })
            .collect();
        out.push((
            p.join(" -> "),
            ExpectedSeq {
                reasons: p.iter().map(|s| s.to_string()).collect(),
                n_support: occ.len() as i64,
                customers: occ.iter().map(|o| &o.0).collect::<BTreeSet<_>>().len() as i64,
                confidence: occ.len() as f64 / prefix.len() as f64,
                baseline: expected / prefix_counted,
                median_lags,
                p_value: recur::significance::excess_p_value(n_counted, expected, sum_sq, MIN_LIFT),
                q_value: f64::NAN,
            },
        ));
    }
    out
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn opt_f64(s: &str) -> Option<f64> {
    (s != "null").then(|| s.parse().unwrap())
}

fn opt_bool(s: &str) -> Option<bool> {
    (s != "null").then(|| s == "true")
}

/// (dimension, key) of a repeat_summary row.
type SummaryKey = (String, String);

/// Checks one random log; returns how many sequences were compared.
async fn check_seed(seed: u64, threads: usize) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.parquet");
    let rows = random_log(seed);
    write_log(&log, &rows);
    let out = dir.path().join("out");
    let mut cfg = config(&[&log], &out, |c| {
        c.cluster_window = Some("72h,24h".into());
        c.min_support = Some(1);
        c.min_customers = Some(1);
        c.alpha = Some(1.0);
        c.max_gap = Some("48h".into());
        c.max_span = Some("96h".into());
        c.exclude_customer = Some(vec!["0".into()]);
        c.agent_col = Some("agent".into());
        c.recent = Some(format!("{RECENT_H}h"));
        c.self_service_channels = Some(SELF_SERVICE.into());
    });
    cfg.target_partitions = threads;
    let summary = recur::pipeline::run(&cfg, &recur::pipeline::NoProgress)
        .await
        .unwrap();
    let used = usable(&rows);
    assert_eq!(summary.manifest.rows.read, rows.len() as u64, "seed {seed}");
    assert_eq!(summary.manifest.rows.used, used.len() as u64, "seed {seed}");
    let excluded: u64 = summary
        .manifest
        .rows
        .excluded
        .values()
        .map(|e| e.rows)
        .sum();
    assert_eq!(
        excluded + summary.manifest.rows.used,
        summary.manifest.rows.read
    );

    // contacts
    let expected = oracle_contacts(&used);
    let b = read_parquet(&out.join("contacts.parquet"));
    let ids = column_text(&b, "contact_id");
    let gaps = column_text(&b, "prev_gap_s");
    let prev_ch = column_text(&b, "prev_channel");
    let rep = column_text(&b, "is_repeat");
    let same = column_text(&b, "is_repeat_same_reason");
    let ev = column_text(&b, "event_id");
    let seq = column_text(&b, "event_seq");
    let fol = column_text(&b, "followed_within_window");
    assert_eq!(
        ids.len(),
        expected.len(),
        "seed {seed}: one row per usable contact"
    );
    for k in 0..ids.len() {
        let id: i64 = ids[k].parse().unwrap();
        let e = &expected[&id];
        let got = Expected {
            prev_gap_s: opt_f64(&gaps[k]),
            prev_channel: (prev_ch[k] != "null").then(|| prev_ch[k].clone()),
            is_repeat: rep[k] == "true",
            same_reason: same[k] == "true",
            event_id: ev[k].parse().unwrap(),
            event_seq: seq[k].parse().unwrap(),
            followed: opt_bool(&fol[k]),
        };
        assert_eq!(&got, e, "seed {seed} contact {id}");
    }

    // repeat_summary, every dimension: 'all', 'channel', 'reason', 'agent',
    // 'date' (the UTC date: the log's times are UTC) and 'channel_transition'
    let s = read_parquet(&out.join("repeat_summary.parquet"));
    let dims = column_text(&s, "dimension");
    let keys = column_text(&s, "key");
    let contacts = column_text(&s, "contacts");
    let repeats = column_text(&s, "repeats");
    let same_r = column_text(&s, "same_reason_repeats");
    let events = column_text(&s, "events");
    let fcr = column_text(&s, "fcr_rate");
    let mut got: HashMap<SummaryKey, (i64, i64, i64, i64, Option<f64>)> = HashMap::new();
    for k in 0..dims.len() {
        got.insert(
            (dims[k].clone(), keys[k].clone()),
            (
                contacts[k].parse().unwrap(),
                repeats[k].parse().unwrap(),
                same_r[k].parse().unwrap(),
                events[k].parse().unwrap(),
                opt_f64(&fcr[k]),
            ),
        );
    }
    let mut want: HashMap<SummaryKey, [i64; 6]> = HashMap::new();
    for r in &used {
        let e = &expected[&r.contact_id];
        let mut keys = vec![
            ("all".to_string(), "all".to_string()),
            (
                "channel".into(),
                r.channel.clone().unwrap_or("(null)".into()),
            ),
            ("reason".into(), r.reason.clone().unwrap_or("(null)".into())),
            ("agent".into(), r.agent.clone().unwrap()),
            (
                "date".into(),
                chrono::DateTime::from_timestamp_micros(r.ts.unwrap())
                    .unwrap()
                    .date_naive()
                    .to_string(),
            ),
        ];
        if let Some(p) = &e.prev_channel {
            keys.push((
                "channel_transition".into(),
                format!("{p} -> {}", r.channel.clone().unwrap()),
            ));
        }
        for k in keys {
            let w = want.entry(k).or_default();
            w[0] += 1;
            w[1] += e.is_repeat as i64;
            w[2] += e.same_reason as i64;
            w[3] += (e.event_seq == 1) as i64;
            w[4] += (e.followed == Some(false)) as i64;
            w[5] += e.followed.is_some() as i64;
        }
    }
    for (k, w) in &want {
        let g = got
            .get(k)
            .unwrap_or_else(|| panic!("seed {seed}: no summary row {k:?}"));
        assert_eq!([g.0, g.1, g.2, g.3], w[..4], "seed {seed} summary {k:?}");
        let fcr = (w[5] > 0).then(|| w[4] as f64 / w[5] as f64);
        assert_eq!(
            g.4.map(|x| (x * 1e9).round()),
            fcr.map(|x| (x * 1e9).round()),
            "seed {seed} fcr {k:?}"
        );
    }
    assert_eq!(
        got.len(),
        want.len(),
        "seed {seed}: summary has exactly the oracle's keys"
    );

    // clusters: every figure, the windows, significance, echoes and the order
    let mut cands = cluster_candidates(&used, &[REPEAT_W, CLUSTER_W]);
    // one family per kind; the sequences tested are those whose every step
    // is a cluster kept (here, at alpha 1 and minimum 1, every pair seen)
    let qs = bh(&cands.iter().map(|c| c.1.p_value).collect::<Vec<_>>());
    for (c, q) in cands.iter_mut().zip(&qs) {
        c.1.q_value = *q;
    }
    let pairs: BTreeSet<(String, String)> = cands.iter().map(|c| c.0.clone()).collect();
    let mut seqs: Vec<(String, ExpectedSeq)> = sequence_candidates(&used, 1, MAX_GAP, MAX_SPAN)
        .into_iter()
        .filter(|(_, e)| {
            e.reasons
                .windows(2)
                .all(|w| pairs.contains(&(w[0].clone(), w[1].clone())))
        })
        .collect();
    let qs = bh(&seqs.iter().map(|s| s.1.p_value).collect::<Vec<_>>());
    for (s, q) in seqs.iter_mut().zip(&qs) {
        s.1.q_value = *q;
    }
    let want_seqs: BTreeMap<String, ExpectedSeq> = seqs.into_iter().collect();
    let want = select_clusters(cands, 1.0, 1, 1);
    let c = read_parquet(&out.join("clusters.parquet"));
    let a = column_text(&c, "antecedent");
    let bb = column_text(&c, "consequent");
    let f = |n: &str| column_text(&c, n);
    let num = |v: &Vec<String>, k: usize| v[k].parse::<f64>().unwrap();
    let cols: Vec<Vec<String>> = [
        "n_antecedent",
        "n_support",
        "confidence",
        "baseline",
        "lift",
        "median_lag_s",
        "p90_lag_s",
        "customers",
        "window_s",
        "score",
        "avoidable_contacts",
        "value",
        "p_value",
        "q_value",
        "rank",
        "n_counted",
        "expected",
    ]
    .iter()
    .map(|n| f(n))
    .collect();
    assert_eq!(a.len(), want.len(), "seed {seed}: cluster count");
    for k in 0..a.len() {
        let e = &want[&(a[k].clone(), bb[k].clone())];
        let ctx = format!("seed {seed} cluster {}->{}", a[k], bb[k]);
        assert_eq!(num(&cols[8], k) as i64, e.window_s, "{ctx} window");
        assert_eq!(num(&cols[0], k) as i64, e.n_antecedent, "{ctx}");
        assert_eq!(num(&cols[1], k) as i64, e.n_support, "{ctx}");
        assert_eq!(num(&cols[7], k) as i64, e.customers, "{ctx}");
        assert_eq!(num(&cols[15], k) as i64, e.n_counted, "{ctx} n_counted");
        for (i, (name, want)) in [
            (2, ("confidence", e.confidence)),
            (3, ("baseline", e.baseline)),
            (4, ("lift", e.lift)),
            (9, ("score", e.score)),
            (10, ("avoidable", e.avoidable)),
            (11, ("value", e.value)),
            (12, ("p_value", e.p_value)),
            (13, ("q_value", e.q_value)),
            (16, ("expected", e.expected)),
        ] {
            if want.is_nan() {
                // (a lift without any expectation: null)
                assert_eq!(cols[i][k], "null", "{ctx} {name}");
                continue;
            }
            assert!(
                close(num(&cols[i], k), want),
                "{ctx} {name}: {} vs {want}",
                cols[i][k]
            );
        }
        // (lags are written in whole seconds)
        assert_eq!(num(&cols[5], k), e.median_lag_s.round(), "{ctx} median");
        assert_eq!(num(&cols[6], k), e.p90_lag_s.round(), "{ctx} p90");
        assert_eq!(
            num(&cols[14], k) as usize,
            k + 1,
            "{ctx}: rows are in rank order"
        );
    }
    // rank follows value, then score, then names (on the written figures)
    for k in 1..a.len() {
        let key = |i: usize| {
            (
                -num(&cols[11], i),
                -num(&cols[9], i),
                a[i].clone(),
                bb[i].clone(),
            )
        };
        assert!(
            key(k - 1).partial_cmp(&key(k)).unwrap().is_le(),
            "seed {seed}: rank {k} before {}",
            k + 1
        );
    }

    // sequences: every figure of every chained candidate
    let q = read_parquet(&out.join("sequences.parquet"));
    let pats = crate::common::list_text(&q, "pattern");
    let lags = crate::common::list_text(&q, "median_lag_s");
    let f = |n: &str| column_text(&q, n);
    let (ns, cu, conf, base, pv, qv) = (
        f("n_support"),
        f("customers"),
        f("confidence"),
        f("baseline"),
        f("p_value"),
        f("q_value"),
    );
    assert_eq!(
        pats.len(),
        want_seqs.len(),
        "seed {seed}: sequences {pats:?}"
    );
    for k in 0..pats.len() {
        let key = pats[k].join(" -> ");
        let e = &want_seqs[&key];
        let ctx = format!("seed {seed} sequence {key}");
        assert_eq!(ns[k].parse::<i64>().unwrap(), e.n_support, "{ctx}");
        assert_eq!(cu[k].parse::<i64>().unwrap(), e.customers, "{ctx}");
        assert!(
            close(conf[k].parse().unwrap(), e.confidence),
            "{ctx} confidence"
        );
        assert!(
            close(base[k].parse().unwrap(), e.baseline),
            "{ctx} baseline"
        );
        assert!(close(pv[k].parse().unwrap(), e.p_value), "{ctx} p");
        assert!(close(qv[k].parse().unwrap(), e.q_value), "{ctx} q");
        let got: Vec<f64> = lags[k].iter().map(|x| x.parse().unwrap()).collect();
        let want: Vec<f64> = e.median_lags.iter().map(|l| l.round()).collect();
        assert_eq!(got, want, "{ctx} lags");
    }

    // members: exactly the A-contacts behind each cluster's n_support
    let m = read_parquet(&out.join("cluster_members.parquet"));
    let ids = column_text(&m, "cluster_id");
    let kinds = column_text(&m, "kind");
    let ids: Vec<String> = ids
        .into_iter()
        .zip(kinds)
        .filter(|(_, k)| k == "cluster")
        .map(|(i, _)| i)
        .collect();
    for (k, e) in &want {
        let id = format!("{} -> {}", k.0, k.1);
        assert_eq!(
            ids.iter().filter(|i| **i == id).count() as i64,
            e.n_support,
            "seed {seed}: members of {id}"
        );
    }
    assert_eq!(
        ids.len() as i64,
        want.values().map(|e| e.n_support).sum::<i64>()
    );
    check_trends(seed, &used, &out);
    check_failure_demand(seed, &used, &out);
    want_seqs.len()
}

/// The trends' recent period in the oracle's runs, hours: it cuts the
/// 15-day random logs at 5 days before their end, and both windows (24h,
/// 72h) are shorter.
const RECENT_H: i64 = 120;

/// One period's counts of one pair at one window, by brute force.
#[derive(Debug, Default, PartialEq)]
struct PeriodCounts {
    /// A-contacts in the period whose window has ended by the as-of.
    n_antecedent: i64,
    /// Those followed by a B within the window, and their customers.
    n_support: i64,
    customers: i64,
    /// Counted triggers (each customer's first CAP A-contacts in the
    /// period) whose window has ended, those followed, Σ per customer of
    /// the followed squared.
    triggers: f64,
    observed: f64,
    sum_sq: f64,
}

/// A failure_demand row: reason, self-service contacts, then assisted, then
/// self-service again, and the assisted channel most went to with its count.
type DemandRow = (String, i64, i64, i64, Option<(String, i64)>);

/// The channel the random logs' failure demand takes for self-service.
const SELF_SERVICE: &str = "chat";

/// failure_demand against its definition: per reason, the self-service
/// contacts, and those whose customer's next contact (in time, then id
/// order) came within the repeat window on an assisted channel (any other)
/// or on self-service again; the assisted channel most went to (ties by
/// name); a row for every reason with a self-service contact, in the
/// table's order.
fn check_failure_demand(seed: u64, used: &[LogRow], out: &std::path::Path) {
    #[derive(Default)]
    struct Row {
        contacts: i64,
        assisted: BTreeMap<String, i64>,
        self_service: i64,
    }
    let mut want: BTreeMap<String, Row> = BTreeMap::new();
    for contacts in by_customer(used).values() {
        for (i, c) in contacts.iter().enumerate() {
            let (Some(reason), Some(SELF_SERVICE)) = (&c.reason, c.channel.as_deref()) else {
                continue;
            };
            let row = want.entry(reason.clone()).or_default();
            row.contacts += 1;
            let Some(next) = contacts.get(i + 1) else {
                continue;
            };
            if next.ts.unwrap() - c.ts.unwrap() > REPEAT_W {
                continue;
            }
            match next.channel.as_deref() {
                Some(SELF_SERVICE) => row.self_service += 1,
                Some(other) => *row.assisted.entry(other.into()).or_default() += 1,
                None => {}
            }
        }
    }
    let mut want: Vec<DemandRow> = want
        .into_iter()
        .map(|(reason, r)| {
            let assisted: i64 = r.assisted.values().sum();
            let top = r
                .assisted
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                .map(|(ch, n)| (ch.clone(), *n));
            (reason, r.contacts, assisted, r.self_service, top)
        })
        .collect();
    // the table's order: most sent to an agent, then the higher share, then reason
    want.sort_by(|a, b| {
        b.2.cmp(&a.2)
            .then((b.2 as f64 / b.1 as f64).total_cmp(&(a.2 as f64 / a.1 as f64)))
            .then(a.0.cmp(&b.0))
    });
    let b = read_parquet(&out.join("failure_demand.parquet"));
    let got: Vec<DemandRow> = (0..column_text(&b, "reason").len())
        .map(|i| {
            let col = |name: &str| column_text(&b, name)[i].clone();
            let int = |name: &str| col(name).parse::<i64>().unwrap();
            let top = match col("top_assisted_channel").as_str() {
                "" | "null" => None,
                ch => Some((ch.to_string(), int("top_assisted_contacts"))),
            };
            assert!(
                close(
                    col("share_then_assisted").parse().unwrap(),
                    int("then_assisted") as f64 / int("self_service_contacts") as f64
                ),
                "seed {seed}: share"
            );
            (
                col("reason"),
                int("self_service_contacts"),
                int("then_assisted"),
                int("then_self_service"),
                top,
            )
        })
        .collect();
    assert_eq!(got, want, "seed {seed}: failure_demand");
}

/// The cluster rows of cluster_trends against a brute-force count of each
/// period: a trigger belongs to the period it falls in, counts at a window
/// only when the window has ended by the as-of (the last timestamp), and is
/// followed by a B from any time; every pair followed in either period is
/// listed (alpha 1, minimum support 1), at one of its windows, whose counts
/// and change p-value match.
fn check_trends(seed: u64, used: &[LogRow], out: &std::path::Path) {
    let as_of = used.iter().map(|r| r.ts.unwrap()).max().unwrap();
    let cut = as_of - RECENT_H * H;
    let customers = by_customer(used);
    let reasons: BTreeSet<String> = used.iter().filter_map(|r| r.reason.clone()).collect();
    let count = |a: &str, b: &str, w: i64, recent: bool| -> PeriodCounts {
        let in_period = |r: &LogRow| (r.ts.unwrap() >= cut) == recent;
        let mut c = PeriodCounts::default();
        for v in customers.values() {
            let mine: Vec<&LogRow> = v
                .iter()
                .copied()
                .filter(|r| r.reason.as_deref() == Some(a) && in_period(r))
                .collect();
            let (mut followed_here, mut s) = (false, 0.0);
            for (k, r) in mine.iter().enumerate() {
                let t = r.ts.unwrap();
                if t + w > as_of {
                    continue;
                }
                c.n_antecedent += 1;
                let followed = v.iter().any(|j| {
                    j.reason.as_deref() == Some(b) && j.ts.unwrap() > t && j.ts.unwrap() - t <= w
                });
                if followed {
                    c.n_support += 1;
                    followed_here = true;
                }
                if k < CAP {
                    c.triggers += 1.0;
                    s += f64::from(u8::from(followed));
                }
            }
            c.customers += i64::from(followed_here);
            c.observed += s;
            c.sum_sq += s * s;
        }
        c
    };
    let b = read_parquet(&out.join("cluster_trends.parquet"));
    let col = |name: &str| column_text(&b, name);
    let (kind, id, window) = (col("kind"), col("pattern_id"), col("window_s"));
    let mut listed = BTreeSet::new();
    for i in 0..kind.len() {
        if kind[i] != "cluster" {
            continue;
        }
        let (a, bb) = id[i].split_once(" -> ").unwrap();
        let w: i64 = window[i].parse::<i64>().unwrap() * 1_000_000;
        let ctx = format!("seed {seed}: trend {} @{w}", id[i]);
        listed.insert(id[i].clone());
        let periods = [
            ("before", count(a, bb, w, false)),
            ("recent", count(a, bb, w, true)),
        ];
        for (name, want) in &periods {
            let get = |c: &str| col(&format!("{name}_{c}"))[i].clone();
            // (a period without any A-trigger has no row: nulls)
            let n_ante = opt_f64(&get("n_antecedent")).unwrap_or(0.0) as i64;
            assert_eq!(n_ante, want.n_antecedent, "{ctx} {name} n_antecedent");
            let n_support = opt_f64(&get("n_support")).unwrap_or(0.0) as i64;
            assert_eq!(n_support, want.n_support, "{ctx} {name} n_support");
            let custs = opt_f64(&get("customers")).unwrap_or(0.0) as i64;
            assert_eq!(custs, want.customers, "{ctx} {name} customers");
            match opt_f64(&get("rate")) {
                Some(rate) => assert!(
                    close(rate, want.observed / want.triggers),
                    "{ctx} {name} rate"
                ),
                None => assert_eq!(want.triggers, 0.0, "{ctx} {name} rate"),
            }
        }
        let [(_, before), (_, recent)] = &periods;
        let want_p = (before.triggers > 0.0 && recent.triggers > 0.0).then(|| {
            recur::significance::change_p_value(
                (before.observed, before.triggers, before.sum_sq),
                (recent.observed, recent.triggers, recent.sum_sq),
            )
        });
        match (opt_f64(&col("change_p_value")[i]), want_p) {
            (Some(got), Some(want)) => assert!(close(got, want), "{ctx} p {got} {want}"),
            (got, want) => assert_eq!(got, want, "{ctx} p"),
        }
    }
    // every pair followed in a period at a window is listed
    for a in &reasons {
        for bb in &reasons {
            if a == bb {
                continue;
            }
            let seen = [24 * H, 72 * H].iter().any(|w| {
                count(a, bb, *w, false).n_support > 0 || count(a, bb, *w, true).n_support > 0
            });
            assert_eq!(
                listed.contains(&format!("{a} -> {bb}")),
                seen,
                "seed {seed}: {a} -> {bb} listed"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_matches_oracle_on_random_logs() {
    let mut sequences = 0;
    for seed in 0..25 {
        sequences += check_seed(seed, 1 + (seed as usize % 3)).await;
    }
    assert!(sequences > 50, "the logs exercise sequences: {sequences}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_support_filters_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.parquet");
    let rows: Vec<LogRow> = (0..6)
        .flat_map(random_log)
        .enumerate()
        .map(|(i, mut r)| {
            r.contact_id = i as i64 + 1;
            r.customer = r.customer.map(|c| format!("{c}-{}", i % 5));
            r
        })
        .collect();
    write_log(&log, &rows);
    let out = dir.path().join("out");
    let cfg = config(&[&log], &out, |c| {
        c.cluster_window = Some("72h".into());
        c.min_support = Some(5);
        c.min_customers = Some(3);
        c.alpha = Some(0.2);
        c.exclude_customer = Some(vec!["0".into()]);
    });
    recur::pipeline::run(&cfg, &recur::pipeline::NoProgress)
        .await
        .unwrap();
    let mut cands = cluster_candidates(&usable(&rows), &[CLUSTER_W]);
    let ps: Vec<f64> = cands.iter().map(|c| c.1.p_value).collect();
    for (c, q) in cands.iter_mut().zip(bh(&ps)) {
        c.1.q_value = q;
    }
    let want = select_clusters(cands, 0.2, 5, 3);
    let c = read_parquet(&out.join("clusters.parquet"));
    let got: BTreeSet<(String, String)> = column_text(&c, "antecedent")
        .into_iter()
        .zip(column_text(&c, "consequent"))
        .collect();
    assert_eq!(got, want.keys().cloned().collect::<BTreeSet<_>>());
    assert!(!got.is_empty() || want.is_empty());
}

/// P(X ≥ x) for X binomial(n, p), summed term by term in logs.
fn binomial_tail(x: u64, n: u64, p: f64) -> f64 {
    let ln_fact = |k: u64| (1..=k).map(|i| (i as f64).ln()).sum::<f64>();
    (x..=n)
        .map(|k| {
            (ln_fact(n) - ln_fact(k) - ln_fact(n - k)
                + k as f64 * p.ln()
                + (n - k) as f64 * (1.0 - p).ln())
            .exp()
        })
        .sum::<f64>()
        .min(1.0)
}

/// The surge test's daily counts, baselines, p- and q-values against a
/// plain computation from the definitions (README, "Surges"), on random
/// logs of seven weeks with ties, null reasons and repeats, over all
/// channels and over each channel (phone and chat) on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reason_days_match_a_plain_computation() {
    for seed in 0..4u64 {
        let mut rng = StdRng::seed_from_u64(1000 + seed);
        let mut rows = Vec::new();
        for c in 0..300 {
            for _ in 0..rng.random_range(1..12) {
                let reason = match rng.random_range(0..10) {
                    0 => None,
                    1..=5 => Some("a"),
                    6..=8 => Some("b"),
                    _ => Some("c"),
                };
                rows.push(LogRow {
                    contact_id: rows.len() as i64 + 1,
                    customer: Some(format!("c{c}")),
                    ts: Some(BASE + rng.random_range(0..49 * 4i64) * 6 * H),
                    channel: Some("phone".into()),
                    reason: reason.map(String::from),
                    agent: None,
                });
            }
        }
        // a surge of reason c in week six
        for k in 0..40 {
            rows.push(LogRow {
                contact_id: rows.len() as i64 + 1,
                customer: Some(format!("s{k}")),
                ts: Some(BASE + (37 * 4 + k % 4) * 6 * H),
                channel: Some("chat".into()),
                reason: Some("c".into()),
                agent: None,
            });
        }
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.parquet");
        write_log(&log, &rows);
        let out = dir.path().join("out");
        let cfg = config(&[&log], &out, |_| {});
        recur::pipeline::run(&cfg, &recur::pipeline::NoProgress)
            .await
            .unwrap();

        // plain: per date and reason, contacts and first contacts
        let expected = oracle_contacts(&rows);
        let date = |ts: i64| {
            chrono::DateTime::from_timestamp_micros(ts)
                .unwrap()
                .date_naive()
        };
        let first_day = rows.iter().map(|r| date(r.ts.unwrap())).min().unwrap();
        let last_day = rows.iter().map(|r| date(r.ts.unwrap())).max().unwrap();
        // every reason-day of one scope: all channels (None), or one
        let scope = |channel: Option<&str>| {
            let mut day_first: BTreeMap<chrono::NaiveDate, u64> = BTreeMap::new();
            let mut cells: BTreeMap<(String, chrono::NaiveDate), (u64, u64)> = BTreeMap::new();
            for r in rows
                .iter()
                .filter(|r| channel.is_none() || r.channel.as_deref() == channel)
            {
                let first = !expected[&r.contact_id].same_reason as u64;
                let d = date(r.ts.unwrap());
                *day_first.entry(d).or_default() += first;
                if let Some(reason) = &r.reason {
                    let cell = cells.entry((reason.clone(), d)).or_default();
                    cell.0 += 1;
                    cell.1 += first;
                }
            }
            let n_of = |d: &chrono::NaiveDate| day_first.get(d).copied().unwrap_or(0);
            let reasons: BTreeSet<String> = cells.keys().map(|k| k.0.clone()).collect();
            type Day = chrono::NaiveDate;
            // day by day, oldest first; each day tested twice: against its
            // plain total, then against its total less the other reasons'
            // surplus of the first test (their unusual days' excess, rounded
            // down); the second test's surplus is the day's, left out of the
            // later baselines' totals. Rows: (reason, date, contacts, x, N,
            // baseline days, S, M, p, expected)
            let mut surplus: BTreeMap<(String, Day), u64> = BTreeMap::new();
            let mut unusual: BTreeMap<String, Vec<Day>> = BTreeMap::new();
            let mut want = Vec::new();
            let mut d = first_day;
            while d <= last_day {
                if n_of(&d) == 0 {
                    d = d.succ_opt().unwrap();
                    continue;
                }
                for test in 0..2 {
                    let total = |reason: &String, day: &Day| {
                        let others: u64 = surplus
                            .iter()
                            .filter(|((r, sd), _)| sd == day && r != reason)
                            .map(|(_, n)| n)
                            .sum();
                        n_of(day) - others
                    };
                    let mut today = Vec::new();
                    for reason in &reasons {
                        let cands: Vec<Day> = (1..=4)
                            .map(|k| d - chrono::Duration::days(7 * k))
                            .filter(|b| *b >= first_day && n_of(b) > 0)
                            .collect();
                        let mine = unusual.get(reason).cloned().unwrap_or_default();
                        let usual: Vec<Day> = cands
                            .iter()
                            .copied()
                            .filter(|b| !mine.contains(b))
                            .collect();
                        let base = if usual.len() >= 2 { usual } else { cands };
                        if base.len() < 2 {
                            continue;
                        }
                        let cell =
                            |d: &Day| cells.get(&(reason.clone(), *d)).copied().unwrap_or((0, 0));
                        let (contacts, x) = cell(&d);
                        let s: u64 = base.iter().map(|b| cell(b).1).sum();
                        let m: u64 = base.iter().map(|b| total(reason, b)).sum();
                        let n = total(reason, &d);
                        let p = if x == 0 {
                            1.0
                        } else {
                            binomial_tail(x, x + s, n as f64 / (n + m) as f64)
                        };
                        let e = n as f64 * s as f64 / m as f64;
                        today.push((
                            reason.clone(),
                            d,
                            contacts,
                            x,
                            n,
                            base.len() as u64,
                            s,
                            m,
                            p,
                            e,
                        ));
                    }
                    // (the first test's surplus of this day is replaced by the
                    // second's)
                    surplus.retain(|(_, sd), _| *sd != d);
                    for w in today.iter().filter(|w| w.8 < 1e-3) {
                        surplus
                            .insert((w.0.clone(), d), (w.3 as f64 - w.9).floor().max(0.0) as u64);
                        if test == 1 {
                            unusual.entry(w.0.clone()).or_default().push(d);
                        }
                    }
                    if test == 1 {
                        want.extend(today);
                    }
                }
                d = d.succ_opt().unwrap();
            }
            want.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
            want
        };
        // the scopes in the engine's order: all channels, then each channel
        let scopes = [None, Some("chat"), Some("phone")];
        let want: Vec<_> = scopes
            .iter()
            .flat_map(|c| scope(*c).into_iter().map(move |w| (c.unwrap_or(""), w)))
            .collect();
        let scope_of: Vec<&str> = want.iter().map(|w| w.0).collect();
        let want: Vec<_> = want.into_iter().map(|w| w.1).collect();
        let qs = bh(&want.iter().map(|w| w.8).collect::<Vec<_>>());

        let b = read_parquet(&out.join("reason_days.parquet"));
        let col = |name: &str| column_text(&b, name);
        let ints =
            |name: &str| -> Vec<u64> { col(name).iter().map(|v| v.parse().unwrap()).collect() };
        let floats =
            |name: &str| -> Vec<f64> { col(name).iter().map(|v| v.parse().unwrap()).collect() };
        let (reason, dates, channels) = (col("reason"), col("date"), col("channel"));
        let (contacts, first, n) = (
            ints("contacts"),
            ints("first_contacts"),
            ints("day_first_contacts"),
        );
        let (days, s, m) = (
            ints("baseline_days"),
            ints("baseline_first_contacts"),
            ints("baseline_day_first_contacts"),
        );
        let (p, q) = (floats("p_value"), floats("q_value"));
        assert_eq!(reason.len(), want.len(), "seed {seed}: reason-days tested");
        for (i, w) in want.iter().enumerate() {
            let channel = if channels[i] == "null" {
                ""
            } else {
                channels[i].as_str()
            };
            assert_eq!(channel, scope_of[i], "seed {seed}: scope of row {i}");
            let got = (
                reason[i].clone(),
                dates[i].clone(),
                contacts[i],
                first[i],
                n[i],
                days[i],
                s[i],
                m[i],
            );
            assert_eq!(
                got,
                (w.0.clone(), w.1.to_string(), w.2, w.3, w.4, w.5, w.6, w.7),
                "seed {seed}"
            );
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.max(1e-300) + 1e-12;
            assert!(
                close(p[i], w.8),
                "seed {seed} {:?}: p {} vs {}",
                got,
                p[i],
                w.8
            );
            assert!(
                close(q[i], qs[i]),
                "seed {seed} {:?}: q {} vs {}",
                got,
                q[i],
                qs[i]
            );
        }
        // the planted surge of c is one of the surges found
        let surges = read_parquet(&out.join("surges.parquet"));
        assert!(
            column_text(&surges, "reason").contains(&"c".to_string()),
            "seed {seed}"
        );
    }
}
