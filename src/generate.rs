//! `recur generate`: synthetic interaction logs with planted ground truth.
//!
//! Input: [`GenerateParams`]. Output: a Parquet log with columns contact_id
//! (Int64), customer_id (Utf8, nullable), ts (Timestamp µs UTC, nullable),
//! channel, reason, agent (Utf8), sorted by time, and beside it
//! `<file>.truth.json` ([`Truth`]).
//!
//! What the log has, to look like a real contact-center export:
//! - heavy-tailed activity per customer (log-normal episode counts, capped);
//! - a daily rhythm (busy mid-morning and early afternoon, quiet at night);
//! - eight channels; repeats within hours that often switch channel (chat or
//!   web, then phone) and mostly keep their reason;
//! - planted A→B clusters with log-normal lags from hours to a month, and one
//!   planted A→B→C sequence;
//! - a topic surge after a "policy change";
//! - placeholder customer ids ("UNKNOWN", "0"), null ids and null timestamps.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Normal};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Default number of customers.
pub const DEFAULT_CUSTOMERS: u64 = 20_000;
/// Default number of days.
pub const DEFAULT_DAYS: u32 = 90;
/// Default seed.
pub const DEFAULT_SEED: u64 = 42;
/// First day of every generated log (UTC midnight), µs.
pub const START_US: i64 = 1_785_542_400_000_000; // 2026-08-01T00:00:00Z

const HOUR_US: i64 = 3_600_000_000;
const DAY_US: i64 = 24 * HOUR_US;

/// Parameters of a synthetic log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateParams {
    /// Customers with a usable id.
    pub customers: u64,
    /// Days covered.
    pub days: u32,
    /// Random seed; the same seed gives the same file.
    pub seed: u64,
    /// Spread of the customers' activity: each customer's episodes are
    /// multiplied by a log-normal factor of mean 1 and this sigma (0: none).
    #[serde(default)]
    pub rate_spread: f64,
    /// Share of episodes that become a burst of same-reason contacts on one
    /// channel within hours (a customer chasing one problem), 0 to 1.
    #[serde(default)]
    pub bursts: f64,
    /// Customers with `heavy_contacts` contacts each, at random times and
    /// reasons: shared or test accounts ('H0000001', …).
    #[serde(default)]
    pub heavy_customers: u64,
    /// Contacts of each heavy customer.
    #[serde(default)]
    pub heavy_contacts: u64,
    /// Background reasons beyond the 25 built in ('topic_01', …).
    #[serde(default)]
    pub extra_reasons: u32,
    /// A weekly rhythm in the volume: episodes start on Mondays most, on
    /// Sundays least ([`WEEKDAY_WEIGHT`]).
    #[serde(default)]
    pub weekly_rhythm: bool,
    /// Surges planted on background reasons beyond the policy-change one
    /// ([`Truth::surges`]).
    #[serde(default)]
    pub surges: u32,
    /// Plant a cluster that begins halfway through the log and one that
    /// stops there ([`Truth::changing`]).
    #[serde(default)]
    pub changing_clusters: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            customers: DEFAULT_CUSTOMERS,
            days: DEFAULT_DAYS,
            seed: DEFAULT_SEED,
            rate_spread: 0.0,
            bursts: 0.0,
            heavy_customers: 0,
            heavy_contacts: 0,
            extra_reasons: 0,
            weekly_rhythm: false,
            surges: 0,
            changing_clusters: false,
        }
    }
}

/// A planted A→B cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlantedCluster {
    /// Trigger reason.
    pub antecedent: String,
    /// Follow-up reason.
    pub consequent: String,
    /// Probability that a trigger is followed.
    pub probability: f64,
    /// Median lag of the follow-up, seconds (log-normal).
    pub lag_median_s: f64,
    /// Log-normal sigma of the lag.
    pub lag_sigma: f64,
    /// Triggers generated.
    pub triggers: u64,
    /// Follow-ups generated (inside the log's time range).
    pub followups: u64,
    /// True when the pair is implied by a planted sequence rather than planted alone.
    pub implied_by_sequence: bool,
}

/// A planted sequence A→B→C.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlantedSequence {
    /// The reasons in order.
    pub pattern: Vec<String>,
    /// Probability of each step after the first.
    pub step_probability: Vec<f64>,
    /// Median lag of each step, seconds.
    pub step_lag_median_s: Vec<f64>,
    /// Sequences started.
    pub triggers: u64,
    /// Sequences that reached the last step.
    pub completions: u64,
}

/// The topic surge after a policy change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Surge {
    /// The surging reason.
    pub reason: String,
    /// When the policy changed (RFC 3339).
    pub starts_at: String,
    /// Days the surge lasts.
    pub days: u32,
    /// Contacts generated by the surge.
    pub contacts: u64,
}

/// A surge planted on a background reason: `per_day` more contacts of it,
/// from customers picked at random, on each of `days` days.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlantedSurge {
    /// The reason.
    pub reason: String,
    /// Its first day (UTC), YYYY-MM-DD.
    pub start_date: String,
    /// Days it lasts.
    pub days: u32,
    /// Contacts added each day.
    pub per_day: u64,
    /// The reason's mean contacts a day without it.
    pub usual_per_day: f64,
}

/// A planted A→B cluster that begins or stops partway through the log: a
/// trigger is followed (with `probability`, after a log-normal lag of
/// median `lag_median_s`) only after `at` (begins) or only before it (stops).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangingCluster {
    /// Trigger reason.
    pub antecedent: String,
    /// Follow-up reason.
    pub consequent: String,
    /// "begins" or "stops".
    pub change: String,
    /// The day of the change (UTC), YYYY-MM-DD.
    pub at: String,
    /// Probability that a trigger on the followed side is followed.
    pub probability: f64,
    /// Median lag of the follow-up, seconds.
    pub lag_median_s: f64,
    /// Triggers before and after the change.
    pub triggers: [u64; 2],
    /// Follow-ups of triggers before and after the change.
    pub followups: [u64; 2],
}

/// What was planted in a generated log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Truth {
    /// Generator parameters.
    pub params: GenerateParams,
    /// Rows in the file.
    pub rows: u64,
    /// Planted and sequence-implied clusters.
    pub clusters: Vec<PlantedCluster>,
    /// Planted sequences.
    pub sequences: Vec<PlantedSequence>,
    /// The policy-change surge.
    pub surge: Surge,
    /// The surges planted on background reasons (`--surges`).
    #[serde(default)]
    pub surges: Vec<PlantedSurge>,
    /// The clusters that begin or stop partway (`--changing-clusters`).
    #[serde(default)]
    pub changing: Vec<ChangingCluster>,
    /// Placeholder ids used, to pass as `--exclude-customer`.
    pub placeholder_ids: Vec<String>,
    /// Rows with a placeholder id.
    pub placeholder_rows: u64,
    /// Rows with a null customer id.
    pub null_customer_rows: u64,
    /// Rows with a null timestamp (and a usable customer id).
    pub null_ts_rows: u64,
}

impl Truth {
    /// Reads `<file>.truth.json`.
    pub fn load(path: &Path) -> Result<Truth> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::read_input(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            source: e,
        })
    }
}

/// Where the truth of `log` is written: `<log>.truth.json` beside it.
pub fn truth_path(log: &Path) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(".truth.json");
    PathBuf::from(s)
}

const CHANNELS: &[(&str, f64)] = &[
    ("phone", 0.40),
    ("chat", 0.20),
    ("email", 0.12),
    ("app", 0.10),
    ("web", 0.08),
    ("social", 0.04),
    ("branch", 0.04),
    ("field", 0.02),
];

const BACKGROUND: &[&str] = &[
    "billing_question",
    "payment_arrangement",
    "password_reset",
    "outage_report",
    "plan_change",
    "address_change",
    "roaming_question",
    "device_support",
    "cancel_request",
    "complaint",
    "refund_request",
    "internet_slow",
    "tv_no_signal",
    "sim_activation",
    "contract_question",
    "invoice_copy",
    "direct_debit_setup",
    "late_fee_waiver",
    "coverage_question",
    "store_appointment",
    "technician_visit",
    "equipment_return",
    "port_number",
    "data_usage",
    "account_security",
];

/// Relative contact volume per hour of day.
const HOURLY: [f64; 24] = [
    0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.5, 1.2, 2.5, 3.5, 3.8, 3.4, 2.6, 3.0, 3.3, 3.0, 2.6, 2.2, 1.8,
    1.5, 1.2, 0.9, 0.6, 0.4,
];

struct Pick<'a, T> {
    items: &'a [T],
    cumulative: Vec<f64>,
}

impl<'a, T> Pick<'a, T> {
    fn new(items: &'a [T], weights: impl Iterator<Item = f64>) -> Self {
        let mut acc = 0.0;
        let cumulative = weights
            .map(|w| {
                acc += w;
                acc
            })
            .collect();
        Pick { items, cumulative }
    }

    fn sample(&self, rng: &mut StdRng) -> &'a T {
        let total = *self.cumulative.last().expect("non-empty");
        let x = rng.random::<f64>() * total;
        let i = self.cumulative.partition_point(|c| *c <= x);
        &self.items[i.min(self.items.len() - 1)]
    }
}

struct Row {
    customer: Option<String>,
    ts: Option<i64>,
    channel: &'static str,
    reason: &'static str,
    agent: String,
}

struct Planted {
    a: &'static str,
    b: &'static str,
    rate: f64,
    prob: f64,
    median_h: f64,
    sigma: f64,
    a_channels: &'static [&'static str],
    b_channels: &'static [&'static str],
}

const PLANTED: &[Planted] = &[
    Planted {
        a: "voicemail_plus_order",
        b: "voicemail_how_to",
        rate: 0.08,
        prob: 0.45,
        median_h: 48.0,
        sigma: 0.6,
        a_channels: &["web", "app", "phone"],
        b_channels: &["phone", "chat"],
    },
    Planted {
        a: "online_banking_enrolment",
        b: "login_help",
        rate: 0.06,
        prob: 0.6,
        median_h: 6.0,
        sigma: 0.8,
        a_channels: &["app"],
        b_channels: &["phone"],
    },
    Planted {
        a: "payment_plan_setup",
        b: "missed_payment_notice",
        rate: 0.05,
        prob: 0.35,
        median_h: 96.0,
        sigma: 0.4,
        a_channels: &["phone", "web"],
        b_channels: &["email", "phone"],
    },
    Planted {
        a: "plan_upgrade",
        b: "bill_shock",
        rate: 0.06,
        prob: 0.4,
        median_h: 28.0 * 24.0,
        sigma: 0.12,
        a_channels: &["phone", "branch", "web"],
        b_channels: &["phone", "chat"],
    },
];

/// The planted sequence: moving_home → service_transfer → installation_issue.
const SEQUENCE: [&str; 3] = ["moving_home", "service_transfer", "installation_issue"];
const SEQ_RATE: f64 = 0.05;
const SEQ_PROB: [f64; 2] = [0.7, 0.6];
const SEQ_MEDIAN_H: [f64; 2] = [72.0, 96.0];
const SEQ_SIGMA: f64 = 0.5;
const SURGE_REASON: &str = "policy_change_question";
/// Relative volume of episodes by weekday, Monday first, with
/// `--weekly-rhythm`.
pub const WEEKDAY_WEIGHT: [f64; 7] = [1.0, 0.85, 0.8, 0.8, 0.75, 0.45, 0.3];
/// The planted background surges' lengths (days) and heights (times the
/// reason's usual daily volume, at least [`MIN_SURGE_PER_DAY`]), in turn.
const SURGE_SHAPES: [(u32, f64); 5] = [(3, 1.0), (7, 0.6), (1, 1.5), (5, 0.8), (10, 0.5)];
/// Fewest contacts a planted background surge adds a day.
const MIN_SURGE_PER_DAY: u64 = 25;
const SURGE_DAYS: u32 = 14;

/// Generates a log and its truth; writes `out` and `<out>.truth.json`.
pub fn generate(out: &Path, params: &GenerateParams) -> Result<Truth> {
    let (rows, truth) = make(params)?;
    write_log(out, &rows, 1)?;
    crate::report::write_json(&truth_path(out), &truth)?;
    Ok(truth)
}

/// [`generate`] as a hive-partitioned log: `out/date=YYYY-MM-DD/part-0.parquet`,
/// one folder per (UTC) day, the same rows and contact ids as the one
/// file; rows without a time go with the first day. The truth is written
/// beside the folder (`out.truth.json`).
pub fn generate_daily(out: &Path, params: &GenerateParams) -> Result<Truth> {
    let (rows, truth) = make(params)?;
    let day_of = |r: &Row| r.ts.map(|t| t.div_euclid(DAY_US));
    let first_day = rows.iter().find_map(day_of).unwrap_or(0);
    // rows are in time order, the timeless last: cut them by day
    let timeless = rows.partition_point(|r| r.ts.is_some());
    let mut start = 0;
    while start < timeless {
        let day = day_of(&rows[start]).expect("timed");
        let end = start + rows[start..timeless].partition_point(|r| day_of(r) == Some(day));
        let date = chrono::DateTime::from_timestamp(day * 86_400, 0)
            .expect("a day of the log")
            .date_naive();
        let dir = out.join(format!("date={date}"));
        let mut part: Vec<&Row> = rows[start..end].iter().collect();
        if day == first_day {
            part.extend(&rows[timeless..]);
        }
        write_log_rows(
            &dir.join("part-0.parquet"),
            &part,
            start as i64 + 1,
            (day == first_day).then_some(timeless),
        )?;
        start = end;
    }
    crate::report::write_json(&truth_path(out), &truth)?;
    Ok(truth)
}

/// The log's rows and its truth.
fn make(params: &GenerateParams) -> Result<(Vec<Row>, Truth)> {
    if params.customers == 0 || params.days == 0 {
        return Err(Error::param(
            "generate",
            "--customers and --days must be positive",
        ));
    }
    let spread_ok = params.rate_spread >= 0.0 && params.rate_spread.is_finite();
    if !spread_ok || !(0.0..=1.0).contains(&params.bursts) {
        return Err(Error::param(
            "generate",
            "--rate-spread must be at least 0 and --bursts in [0, 1]",
        ));
    }
    let mut rng = StdRng::seed_from_u64(params.seed);
    let end_us = START_US + params.days as i64 * DAY_US;
    let channels = Pick::new(CHANNELS, CHANNELS.iter().map(|c| c.1));
    // (the extra reasons' names live as long as the process: a handful of
    // short strings, so that every row can point at a &'static str)
    let background: Vec<&'static str> = BACKGROUND
        .iter()
        .copied()
        .chain(
            (1..=params.extra_reasons)
                .map(|k| &*Box::leak(format!("topic_{k:02}").into_boxed_str())),
        )
        .collect();
    let reasons = Pick::new(
        &background,
        (0..background.len()).map(|k| 1.0 / (k as f64 + 1.0).powf(0.8)),
    );
    let spread = (params.rate_spread > 0.0).then(|| {
        let s = params.rate_spread;
        LogNormal::new(-s * s / 2.0, s).expect("checked above")
    });
    let hours: Vec<usize> = (0..24).collect();
    let hour_pick = Pick::new(&hours, HOURLY.iter().copied());
    let episodes = LogNormal::new(0.4, 0.9).expect("valid");
    let n_agents = (params.customers / 150).clamp(5, 400);
    let mut rows: Vec<Row> = Vec::new();
    let agent = |rng: &mut StdRng| format!("A{:03}", rng.random_range(1..=n_agents));

    // A time on a random day following the daily rhythm.
    let random_time = |rng: &mut StdRng| -> i64 {
        let day = loop {
            let day = rng.random_range(0..params.days as i64);
            // (START_US is a Saturday: weekday 5 counted from Monday)
            if !params.weekly_rhythm || rng.random::<f64>() < WEEKDAY_WEIGHT[(day as usize + 5) % 7]
            {
                break day;
            }
        };
        let hour = *hour_pick.sample(rng) as i64;
        START_US + day * DAY_US + hour * HOUR_US + rng.random_range(0..3600) * 1_000_000
    };
    // Shifts a lag to a time, keeping the follow-up in waking hours roughly.
    let lag_to = |rng: &mut StdRng, median_h: f64, sigma: f64| -> i64 {
        let d = LogNormal::new((median_h * 3600.0).ln(), sigma).expect("valid");
        (d.sample(rng) * 1e6) as i64
    };

    let mut planted: Vec<PlantedCluster> = PLANTED
        .iter()
        .map(|p| PlantedCluster {
            antecedent: p.a.into(),
            consequent: p.b.into(),
            probability: p.prob,
            lag_median_s: p.median_h * 3600.0,
            lag_sigma: p.sigma,
            triggers: 0,
            followups: 0,
            implied_by_sequence: false,
        })
        .collect();
    let mut seq = PlantedSequence {
        pattern: SEQUENCE.iter().map(|s| s.to_string()).collect(),
        step_probability: SEQ_PROB.to_vec(),
        step_lag_median_s: SEQ_MEDIAN_H.iter().map(|h| h * 3600.0).collect(),
        triggers: 0,
        completions: 0,
    };
    let mut seq_pairs = [0u64; 3]; // a→b, b→c, a→c follow-ups generated
    let surge_start = START_US + (params.days as i64 * 6 / 10) * DAY_US;
    let mut surge_contacts = 0u64;
    let switch_to = |rng: &mut StdRng, from: &'static str| -> &'static str {
        match from {
            "chat" | "web" | "app" | "social" if rng.random::<f64>() < 0.7 => "phone",
            _ => channels.sample(rng).0,
        }
    };

    for c in 0..params.customers {
        let cid = format!("C{:07}", c + 1);
        let n_ep = match &spread {
            None => (episodes.sample(&mut rng) as u64).clamp(1, 300),
            Some(spread) => {
                ((episodes.sample(&mut rng) * spread.sample(&mut rng)) as u64).clamp(1, 3000)
            }
        };
        let home_agent = agent(&mut rng);
        let push =
            |rows: &mut Vec<Row>, rng: &mut StdRng, ts: i64, ch: &'static str, r: &'static str| {
                let ag = if rng.random::<f64>() < 0.3 {
                    home_agent.clone()
                } else {
                    agent(rng)
                };
                rows.push(Row {
                    customer: Some(cid.clone()),
                    ts: Some(ts),
                    channel: ch,
                    reason: r,
                    agent: ag,
                });
            };
        for _ in 0..n_ep {
            let mut t = random_time(&mut rng);
            let mut ch = channels.sample(&mut rng).0;
            let r = *reasons.sample(&mut rng);
            push(&mut rows, &mut rng, t, ch, r);
            if params.bursts > 0.0 && rng.random::<f64>() < params.bursts {
                // a burst: same reason, same channel, about an hour apart
                let mut tb = t;
                while rng.random::<f64>() < 0.8 {
                    tb += (rng.random::<f64>().max(1e-9).ln() * -3600.0 * 1e6) as i64;
                    if tb < end_us {
                        push(&mut rows, &mut rng, tb, ch, r);
                    }
                }
            }
            // repeats within hours
            if rng.random::<f64>() < 0.35 {
                loop {
                    t += (rng.random::<f64>().max(1e-9).ln() * -3.0 * 3600.0 * 1e6) as i64;
                    let r2 = if rng.random::<f64>() < 0.8 {
                        r
                    } else {
                        *reasons.sample(&mut rng)
                    };
                    ch = if rng.random::<f64>() < 0.5 {
                        switch_to(&mut rng, ch)
                    } else {
                        ch
                    };
                    if t < end_us {
                        push(&mut rows, &mut rng, t, ch, r2);
                    }
                    if rng.random::<f64>() >= 0.3 {
                        break;
                    }
                }
            }
        }
        for (k, p) in PLANTED.iter().enumerate() {
            if rng.random::<f64>() < p.rate {
                let t = random_time(&mut rng);
                let ch = p.a_channels[rng.random_range(0..p.a_channels.len())];
                push(&mut rows, &mut rng, t, ch, p.a);
                planted[k].triggers += 1;
                if rng.random::<f64>() < p.prob {
                    let tb = t + lag_to(&mut rng, p.median_h, p.sigma);
                    if tb < end_us {
                        let chb = p.b_channels[rng.random_range(0..p.b_channels.len())];
                        push(&mut rows, &mut rng, tb, chb, p.b);
                        planted[k].followups += 1;
                    }
                }
            }
        }
        if rng.random::<f64>() < SEQ_RATE {
            let t0 = random_time(&mut rng);
            push(&mut rows, &mut rng, t0, "phone", SEQUENCE[0]);
            seq.triggers += 1;
            if rng.random::<f64>() < SEQ_PROB[0] {
                let t1 = t0 + lag_to(&mut rng, SEQ_MEDIAN_H[0], SEQ_SIGMA);
                if t1 < end_us {
                    push(&mut rows, &mut rng, t1, "web", SEQUENCE[1]);
                    seq_pairs[0] += 1;
                    if rng.random::<f64>() < SEQ_PROB[1] {
                        let t2 = t1 + lag_to(&mut rng, SEQ_MEDIAN_H[1], SEQ_SIGMA);
                        if t2 < end_us {
                            let ch = if rng.random::<f64>() < 0.5 {
                                "field"
                            } else {
                                "phone"
                            };
                            push(&mut rows, &mut rng, t2, ch, SEQUENCE[2]);
                            seq_pairs[1] += 1;
                            seq_pairs[2] += 1;
                            seq.completions += 1;
                        }
                    }
                }
            }
        }
        if surge_start < end_us && rng.random::<f64>() < 0.12 {
            let d: Normal<f64> = Normal::new(0.0, 1.0).expect("valid");
            let days_after = d.sample(&mut rng).abs() * SURGE_DAYS as f64 / 2.5;
            let t = surge_start
                + (days_after.min(SURGE_DAYS as f64) * DAY_US as f64) as i64
                + rng.random_range(8..18) * HOUR_US;
            if t < end_us {
                let ch = channels.sample(&mut rng).0;
                push(&mut rows, &mut rng, t, ch, SURGE_REASON);
                surge_contacts += 1;
            }
        }
    }
    for h in 0..params.heavy_customers {
        let cid = format!("H{:07}", h + 1);
        for _ in 0..params.heavy_contacts {
            let ts = random_time(&mut rng);
            rows.push(Row {
                customer: Some(cid.clone()),
                ts: Some(ts),
                channel: channels.sample(&mut rng).0,
                reason: reasons.sample(&mut rng),
                agent: agent(&mut rng),
            });
        }
    }
    let real_rows = rows.len() as u64;
    // Placeholder and null ids: extra contacts nobody can be linked to.
    let mut placeholder_rows = 0;
    let mut null_customer_rows = 0;
    for _ in 0..(real_rows / 50) {
        let x = rng.random::<f64>();
        let customer = if x < 0.7 {
            placeholder_rows += 1;
            Some("UNKNOWN".to_string())
        } else if x < 0.9 {
            placeholder_rows += 1;
            Some("0".to_string())
        } else {
            null_customer_rows += 1;
            None
        };
        rows.push(Row {
            customer,
            ts: Some(random_time(&mut rng)),
            channel: channels.sample(&mut rng).0,
            reason: reasons.sample(&mut rng),
            agent: agent(&mut rng),
        });
    }
    // A few rows lose their timestamp, as exports do.
    let mut null_ts_rows = 0;
    for _ in 0..(real_rows / 2000).max(1) {
        let i = rng.random_range(0..rows.len());
        if rows[i]
            .customer
            .as_deref()
            .is_some_and(|c| c.starts_with('C'))
            && rows[i].ts.is_some()
        {
            rows[i].ts = None;
            null_ts_rows += 1;
        }
    }
    let surges = plant_surges(&mut rows, &mut rng, params, &background, |rng| {
        (
            channels.sample(rng).0,
            *hour_pick.sample(rng) as i64 * HOUR_US + rng.random_range(0..3600) * 1_000_000,
        )
    });
    let changing = if params.changing_clusters {
        plant_changing_clusters(&mut rows, &mut rng, params, |rng| {
            (
                channels.sample(rng).0,
                *hour_pick.sample(rng) as i64 * HOUR_US + rng.random_range(0..3600) * 1_000_000,
            )
        })
    } else {
        Vec::new()
    };
    rows.sort_by_key(|r| r.ts.unwrap_or(i64::MAX));
    for (k, (a, b)) in [(0, (0, 1)), (1, (1, 2)), (2, (0, 2))] {
        planted.push(PlantedCluster {
            antecedent: SEQUENCE[a].into(),
            consequent: SEQUENCE[b].into(),
            probability: if k == 2 {
                SEQ_PROB[0] * SEQ_PROB[1]
            } else {
                SEQ_PROB[k]
            },
            lag_median_s: if k == 2 {
                (SEQ_MEDIAN_H[0] + SEQ_MEDIAN_H[1]) * 3600.0
            } else {
                SEQ_MEDIAN_H[k] * 3600.0
            },
            lag_sigma: SEQ_SIGMA,
            triggers: if k == 1 { seq_pairs[0] } else { seq.triggers },
            followups: seq_pairs[k],
            implied_by_sequence: true,
        });
    }
    let truth = Truth {
        params: params.clone(),
        rows: rows.len() as u64,
        clusters: planted,
        sequences: vec![seq],
        surge: Surge {
            reason: SURGE_REASON.into(),
            starts_at: chrono::DateTime::from_timestamp_micros(surge_start)
                .map(|d| d.to_rfc3339())
                .unwrap_or_default(),
            days: SURGE_DAYS,
            contacts: surge_contacts,
        },
        surges,
        changing,
        placeholder_ids: vec!["UNKNOWN".into(), "0".into()],
        placeholder_rows,
        null_customer_rows,
        null_ts_rows,
    };
    Ok((rows, truth))
}

/// Plants `params.surges` surges on background reasons into `rows`: the
/// first on the rarest, the others spread over the common ones; starting
/// between 35% and 85% of the log (after two weeks at least, so that a
/// baseline exists), with the lengths and heights of [`SURGE_SHAPES`] in
/// turn. `at(rng)` gives a contact's channel and time of day.
fn plant_surges(
    rows: &mut Vec<Row>,
    rng: &mut StdRng,
    params: &GenerateParams,
    background: &[&'static str],
    at: impl Fn(&mut StdRng) -> (&'static str, i64),
) -> Vec<PlantedSurge> {
    let n = params.surges as usize;
    if n == 0 || params.days < 21 {
        return Vec::new();
    }
    let mut planted = Vec::with_capacity(n);
    for k in 0..n {
        let reason = if k == 0 {
            background[background.len() - 1]
        } else {
            background[(1 + 3 * (k - 1)) % (background.len() - 1)]
        };
        let usual = rows.iter().filter(|r| r.reason == reason).count() as f64 / params.days as f64;
        let (days, height) = SURGE_SHAPES[k % SURGE_SHAPES.len()];
        let per_day = ((usual * height).round() as u64).max(MIN_SURGE_PER_DAY);
        let span = params.days as f64 * 0.5;
        let start_day = ((params.days as f64 * 0.35 + span * k as f64 / n as f64) as i64)
            .clamp(15, params.days as i64 - 1);
        let days = days.min((params.days as i64 - start_day) as u32);
        for d in 0..days as i64 {
            for _ in 0..per_day {
                let (channel, time) = at(rng);
                let c = rng.random_range(1..=params.customers);
                rows.push(Row {
                    customer: Some(format!("C{c:07}")),
                    ts: Some(START_US + (start_day + d) * DAY_US + time),
                    channel,
                    reason,
                    agent: format!("A{:03}", rng.random_range(1..=5)),
                });
            }
        }
        planted.push(PlantedSurge {
            reason: reason.into(),
            start_date: chrono::DateTime::from_timestamp_micros(START_US + start_day * DAY_US)
                .expect("a day of the log")
                .date_naive()
                .to_string(),
            days,
            per_day,
            usual_per_day: usual,
        });
    }
    planted
}

/// The clusters that change: (antecedent, consequent, begins).
const CHANGING: [(&str, &str, bool); 2] = [
    ("app_release_update", "app_login_error", true),
    ("paper_bill_request", "paper_bill_missing", false),
];
/// Share of customers with a trigger of each changing cluster.
const CHANGING_RATE: f64 = 0.05;
/// Probability that a trigger on the followed side is followed.
const CHANGING_PROB: f64 = 0.5;
/// Median lag of their follow-ups, hours (log-normal, sigma 0.5).
const CHANGING_MEDIAN_H: f64 = 24.0;

/// Plants [`CHANGING`] into `rows`: each customer has a trigger with chance
/// [`CHANGING_RATE`], at a random time; it is followed only after the
/// log's middle day (a cluster that begins) or only before it (one that
/// stops). `at(rng)` gives a contact's channel and time of day.
fn plant_changing_clusters(
    rows: &mut Vec<Row>,
    rng: &mut StdRng,
    params: &GenerateParams,
    at: impl Fn(&mut StdRng) -> (&'static str, i64),
) -> Vec<ChangingCluster> {
    let end_us = START_US + params.days as i64 * DAY_US;
    let change_us = START_US + (params.days as i64 / 2) * DAY_US;
    let lag = LogNormal::new((CHANGING_MEDIAN_H * 3600.0).ln(), 0.5).expect("valid");
    CHANGING
        .iter()
        .map(|&(a, b, begins)| {
            let mut planted = ChangingCluster {
                antecedent: a.into(),
                consequent: b.into(),
                change: if begins { "begins" } else { "stops" }.into(),
                at: chrono::DateTime::from_timestamp_micros(change_us)
                    .expect("a day of the log")
                    .date_naive()
                    .to_string(),
                probability: CHANGING_PROB,
                lag_median_s: CHANGING_MEDIAN_H * 3600.0,
                triggers: [0, 0],
                followups: [0, 0],
            };
            for c in 1..=params.customers {
                if rng.random::<f64>() >= CHANGING_RATE {
                    continue;
                }
                let (channel, time) = at(rng);
                let t = START_US + rng.random_range(0..params.days as i64) * DAY_US + time;
                let customer = format!("C{c:07}");
                let agent = format!("A{:03}", rng.random_range(1..=5));
                rows.push(Row {
                    customer: Some(customer.clone()),
                    ts: Some(t),
                    channel,
                    reason: a,
                    agent: agent.clone(),
                });
                let side = usize::from(t >= change_us);
                planted.triggers[side] += 1;
                if side == usize::from(begins) && rng.random::<f64>() < CHANGING_PROB {
                    let tb = t + (lag.sample(rng) * 1e6) as i64;
                    if tb < end_us {
                        rows.push(Row {
                            customer: Some(customer),
                            ts: Some(tb),
                            channel: "phone",
                            reason: b,
                            agent,
                        });
                        planted.followups[side] += 1;
                    }
                }
            }
            planted
        })
        .collect()
}

fn write_log(out: &Path, rows: &[Row], first_id: i64) -> Result<()> {
    let rows: Vec<&Row> = rows.iter().collect();
    write_log_rows(out, &rows, first_id, None)
}

/// Writes `rows` with contact ids from `first_id` on; with
/// `timeless_from = Some(k)`, the rows past the timed ones (appended
/// last) keep their ids as rows k.. of the whole log.
fn write_log_rows(
    out: &Path,
    rows: &[&Row],
    first_id: i64,
    timeless_from: Option<usize>,
) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("contact_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Utf8, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("channel", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("agent", DataType::Utf8, false),
    ]));
    let file = std::fs::File::create(out).map_err(|e| Error::io(out, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(6)?))
        .set_max_row_group_row_count(Some(1 << 20))
        .build();
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
    let timed = rows.iter().filter(|r| r.ts.is_some()).count();
    let id = |i: usize| match timeless_from {
        Some(k) if i >= timed => (k + i - timed) as i64 + 1,
        _ => first_id + i as i64,
    };
    for (k, chunk) in rows.chunks(1 << 16).enumerate() {
        let base = k << 16;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(
                (0..chunk.len()).map(|i| id(base + i)),
            )),
            Arc::new(StringArray::from(
                chunk
                    .iter()
                    .map(|r| r.customer.as_deref())
                    .collect::<Vec<_>>(),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(chunk.iter().map(|r| r.ts).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|r| r.channel),
            )),
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|r| r.reason),
            )),
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|r| r.agent.as_str()),
            )),
        ];
        writer.write(&RecordBatch::try_new(schema.clone(), cols)?)?;
    }
    writer.close()?;
    Ok(())
}
