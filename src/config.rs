//! Run parameters: defaults, the optional TOML file, and validation.
//!
//! Input: [`RunOptions`], from the command line and from an optional TOML
//! file with the same keys.
//! Output: a validated [`PipelineConfig`]. Precedence is flag over file over
//! default.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::time::parse_duration_us;

/// Default customer column.
pub const DEFAULT_CUSTOMER_COL: &str = "customer_id";
/// Default time column.
pub const DEFAULT_TIME_COL: &str = "ts";
/// Default channel column.
pub const DEFAULT_CHANNEL_COL: &str = "channel";
/// Default reason column.
pub const DEFAULT_REASON_COL: &str = "reason";
/// Default contact id column (used only when the input has it).
pub const DEFAULT_CONTACT_ID_COL: &str = "contact_id";
/// Default time zone for naive timestamps.
pub const DEFAULT_TIMEZONE: &str = "UTC";
/// Default repeat window: 24 hours.
pub const DEFAULT_REPEAT_WINDOW: &str = "24h";
/// Default cluster windows: a day, a week and a month (a follow-up that comes
/// with the next bill must be found as surely as one the same afternoon).
pub const DEFAULT_CLUSTER_WINDOWS: &str = "1d,7d,30d";
/// Most cluster windows a run tests (each is a test of every pair).
pub const MAX_CLUSTER_WINDOWS: usize = 16;
/// Default false-discovery rate: rows with q-value above it are not written.
pub const DEFAULT_ALPHA: f64 = 0.05;
/// Default share of follow-ups a proactive contact prevents: 16%, the cut in
/// calls per event Bell Canada measured after sending a tutorial at ordering.
pub const DEFAULT_EFFECTIVENESS: f64 = 0.16;
/// Cost of a follow-up on a channel missing from `[channel_cost]`.
pub const DEFAULT_CHANNEL_COST: f64 = 1.0;
/// Default relative cost of a contact per channel (phone = 1). Illustrative:
/// replace them with your own in the config file's `[channel_cost]` table.
pub const DEFAULT_CHANNEL_COSTS: &[(&str, f64)] = &[
    ("app", 0.1),
    ("branch", 2.5),
    ("chat", 0.6),
    ("email", 0.5),
    ("field", 12.0),
    ("phone", 1.0),
    ("social", 0.5),
    ("web", 0.1),
];
/// Default self-service channels (failure demand).
pub const DEFAULT_SELF_SERVICE_CHANNELS: &str = "app,web";
/// Default maximum gap between two steps of a sequence.
pub const DEFAULT_MAX_GAP: &str = "7d";
/// Default maximum span of a whole sequence.
pub const DEFAULT_MAX_SPAN: &str = "30d";
/// Default minimum support of a reported A→B cluster.
pub const DEFAULT_MIN_SUPPORT: u64 = 30;
/// Default minimum lift a cluster or sequence is tested against: the null
/// hypothesis is that chance explains the follow-ups up to a 20% excess, so
/// that on a large log a tiny but "significant" excess is not reported.
pub const DEFAULT_MIN_LIFT: f64 = 1.2;
/// Default minimum of distinct customers behind a reported cluster or
/// sequence: fewer is one household or one heavy contacter, not a pattern to
/// act on with outreach.
pub const DEFAULT_MIN_CUSTOMERS: u64 = 20;
/// Default number of triggers of each reason (and occurrences of each
/// sequence prefix) a customer counts with in the tests, the score and the
/// value: its first three, so that no customer carries a finding alone.
pub const DEFAULT_CUSTOMER_CAP: u32 = 3;
/// Default recent period of the cluster trends, in days: four weeks, so that
/// it holds every weekday four times and a cluster's follow-ups within the
/// default windows.
pub const DEFAULT_RECENT_DAYS: i64 = 28;

/// Default lookback of a run with `--as-of`, in days (at least three of the
/// longest cluster windows).
pub const DEFAULT_LOOKBACK_DAYS: i64 = 90;
/// Default folder-name partition holding a file's day.
pub const DEFAULT_PARTITION_COL: &str = "date";
/// The most permuted logs `--null-check` runs.
pub const MAX_NULL_CHECK: u32 = 100;
/// Default output folder of a run without `--out`.
pub const DEFAULT_OUT_DIR: &str = "recur-out";

/// The run options: each field is both a `recur run` flag and a key of the
/// TOML config file (the long flag with `-` written as `_`), every one
/// optional. [`RunOptions::or`] layers flags over a file; defaults are
/// applied by [`PipelineConfig::from_raw`]. Only `channel_cost` (a table)
/// is a key without a flag.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct RunOptions {
    /// Parquet files, folders (recursive) or globs.
    #[arg(num_args = 0..)]
    pub inputs: Option<Vec<String>>,
    /// Output folder [default: recur-out].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Customer id column [default: customer_id].
    #[arg(long)]
    pub customer_col: Option<String>,
    /// Timestamp column [default: ts].
    #[arg(long)]
    pub time_col: Option<String>,
    /// Channel column [default: channel; absent = one channel].
    #[arg(long)]
    pub channel_col: Option<String>,
    /// Reason column [default: reason].
    #[arg(long)]
    pub reason_col: Option<String>,
    /// Contact id column [default: contact_id when present; else assigned].
    #[arg(long)]
    pub contact_id_col: Option<String>,
    /// Agent column (optional).
    #[arg(long)]
    pub agent_col: Option<String>,
    /// IANA time zone for naive timestamps [default: UTC].
    #[arg(long)]
    pub timezone: Option<String>,
    /// Repeat window, e.g. 15m, 24h, 7d [default: 24h].
    #[arg(long)]
    pub repeat_window: Option<String>,
    /// Cluster windows, comma separated [default: 1d,7d,30d].
    #[arg(long)]
    pub cluster_window: Option<String>,
    /// False-discovery rate: clusters with a higher q-value are not written [default: 0.05].
    /// Also that of the surge days.
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Fewest first contacts above the expected that make a surge day [default: 10].
    #[arg(long)]
    pub surge_min_contacts: Option<u64>,
    /// Share of follow-ups a proactive contact prevents [default: 0.16].
    #[arg(long)]
    pub effectiveness: Option<f64>,
    /// Relative cost of a contact per channel (config file only: a table).
    #[arg(skip)]
    pub channel_cost: Option<std::collections::BTreeMap<String, f64>>,
    /// Order of clusters: value, score, lift, support or confidence [default: value].
    #[arg(long)]
    pub rank_by: Option<String>,
    /// The run's as-of: a date (its end: the contacts of that day are in) or
    /// a time; contacts after it are left out, and the outreach list is made
    /// for it. `DATE..DATE` runs each day of a range in turn (a backfill)
    /// [default: the last timestamp in the data].
    #[arg(long)]
    pub as_of: Option<String>,
    /// How far back from the as-of a run reads, e.g. 90d [default: with
    /// --as-of, the larger of 90d and three times the longest cluster
    /// window; without, the whole log].
    #[arg(long)]
    pub lookback: Option<String>,
    /// The recent period of the cluster trends: the clusters and sequences
    /// of its last DUR against those of the window before it; 0 or off: no
    /// trends [default: 28d].
    #[arg(long)]
    pub recent: Option<String>,
    /// Folder-name partition holding each file's day, as in `date=2026-11-01/`:
    /// files whose day is outside the window are not opened [default: date].
    #[arg(long)]
    pub partition_col: Option<String>,
    /// Exit with code 4 when no contact falls on the as-of day (the day's
    /// files have not arrived).
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub require_data: Option<bool>,
    /// Accept an input with no rows (otherwise exit code 2).
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub allow_empty: Option<bool>,
    /// Write no report.html.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub no_report: Option<bool>,
    /// Replace every customer id in every output with a keyed hash
    /// (HMAC-SHA-256); the key from --pseudonym-key-file or the
    /// RECUR_PSEUDONYM_KEY environment variable, never written anywhere.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub pseudonymize: Option<bool>,
    /// File holding the pseudonyms' secret key (at least 16 bytes).
    #[arg(long)]
    pub pseudonym_key_file: Option<PathBuf>,
    /// The self-service channels, comma separated: failure demand is their
    /// contacts followed by one on any other channel [default: app,web].
    #[arg(long)]
    pub self_service_channels: Option<String>,
    /// Runs kept in the output folder: the N latest as-ofs [default: all].
    #[arg(long)]
    pub keep: Option<usize>,
    /// Parquet file of outreach already made (customer_id, expected_reason
    /// or cluster_id, contacted_at): those customers leave the list.
    #[arg(long)]
    pub contacted: Option<PathBuf>,
    /// Share of the customers due that are marked `control` (listed, not to
    /// be contacted), chosen by a hash of customer and follow-up [default: 0].
    #[arg(long)]
    pub control_share: Option<f64>,
    /// Log lines: text (on a terminal) or json (one object per line).
    #[arg(long)]
    pub log_format: Option<String>,
    /// Largest gap between two steps of a sequence [default: 7d].
    #[arg(long)]
    pub max_gap: Option<String>,
    /// Largest span of a whole sequence [default: 30d].
    #[arg(long)]
    pub max_span: Option<String>,
    /// Sequence items: reason, or channel_reason for (channel, reason) [default: reason].
    #[arg(long)]
    pub sequence_items: Option<String>,
    /// Minimum support of a reported A→B cluster [default: 30].
    #[arg(long)]
    pub min_support: Option<u64>,
    /// The lift the significance tests' null hypothesis allows: a cluster is
    /// reported when its follow-ups exceed this multiple of chance [default: 1.2].
    #[arg(long)]
    pub min_lift: Option<f64>,
    /// Fewest distinct customers behind a reported cluster or sequence [default: 20].
    #[arg(long)]
    pub min_customers: Option<u64>,
    /// Triggers of each reason a customer counts with in the tests, scores and
    /// values (its first ones) [default: 3].
    #[arg(long)]
    pub customer_cap: Option<u32>,
    /// Also run the tests on N copies of the log with its reasons permuted,
    /// and report how many clusters and sequences each yields: chance's own
    /// count on this log [default: 0, at most 100].
    #[arg(long)]
    pub null_check: Option<u32>,
    /// Placeholder customer id to leave out (repeatable).
    #[arg(long = "exclude-customer")]
    pub exclude_customer: Option<Vec<String>>,
    /// Threads / partitions for the per-customer pass [default: cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Run on an Apache Ballista cluster of `recur scheduler` and `recur
    /// executor` processes: the scheduler's URL, df://HOST:PORT. Inputs and
    /// --out must be at the same path on every machine (a shared file
    /// system). Needs the ballista cargo feature.
    #[arg(long)]
    pub cluster: Option<String>,
    /// On a cluster: the buckets of whole customers the executors pass over,
    /// one task each [default: 4].
    #[arg(long)]
    pub cluster_partitions: Option<usize>,
    /// Memory limit, e.g. 2GiB: DataFusion's memory pool enforces it, the
    /// sort spills to disk under it [default: none].
    #[arg(long)]
    pub memory_limit: Option<String>,
    /// Most contacts sorted and analysed at once; a larger log is split by
    /// customer into buckets on disk (at most 512) and analysed a bucket at
    /// a time [default: from --memory-limit, else 12000000].
    #[arg(long)]
    pub bucket_contacts: Option<u64>,
}

impl RunOptions {
    /// Reads a TOML config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::parse(&text).map_err(|reason| Error::Config {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Reads the TOML text of a config file; an unknown key, a wrong type
    /// or bad syntax is an error saying where.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Fills every option unset in `self` from `lower` (flags over file),
    /// key by key through the options' serde form, so that no list of the
    /// options is written here.
    pub fn or(self, lower: RunOptions) -> RunOptions {
        let as_map = |o: &RunOptions| match serde_json::to_value(o) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => unreachable!("options serialise as a map"),
        };
        let mut merged = as_map(&lower);
        for (key, value) in as_map(&self) {
            if !value.is_null() {
                merged.insert(key, value);
            }
        }
        serde_json::from_value(serde_json::Value::Object(merged))
            .expect("a merge of two option sets is an option set")
    }
}

/// How input columns map to recur's roles.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ColumnMapping {
    /// Customer id column.
    pub customer: String,
    /// Timestamp column.
    pub time: String,
    /// Channel column.
    pub channel: String,
    /// True when the channel column was named explicitly (then it must exist).
    pub channel_explicit: bool,
    /// Reason column.
    pub reason: String,
    /// Contact id column.
    pub contact_id: String,
    /// True when the contact id column was named explicitly (then it must exist).
    pub contact_id_explicit: bool,
    /// Optional agent column.
    pub agent: Option<String>,
}

impl ColumnMapping {
    /// Each role its own column: one column in two roles (`--reason-col
    /// channel`, with the channel column's default `channel`) is bad input.
    fn check_distinct(&self) -> Result<()> {
        let mut roles = vec![
            ("--customer-col", &self.customer),
            ("--time-col", &self.time),
            ("--channel-col", &self.channel),
            ("--reason-col", &self.reason),
            ("--contact-id-col", &self.contact_id),
        ];
        if let Some(agent) = &self.agent {
            roles.push(("--agent-col", agent));
        }
        for (i, (flag, column)) in roles.iter().enumerate() {
            if let Some((other, _)) = roles[..i].iter().find(|(_, c)| c == column) {
                return Err(Error::param(
                    flag,
                    format!(
                        "column '{column}' is also the {other} column: give each role its \
                         own column (set {other} too when its default is taken)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Buckets of a cluster run without `--cluster-partitions`.
pub const DEFAULT_CLUSTER_PARTITIONS: usize = 4;

/// A validated run configuration. It deserialises as it serialises, but
/// for the pseudonyms' key, which is never written (a cluster run, which
/// sends the configuration to its executors, refuses `--pseudonymize`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineConfig {
    /// Input paths, folders or globs.
    pub inputs: Vec<String>,
    /// Output folder.
    pub out: PathBuf,
    /// Column mapping.
    pub columns: ColumnMapping,
    /// Time zone used to read naive timestamps and to name local dates.
    pub timezone: String,
    /// Repeat window in microseconds.
    pub repeat_window_us: i64,
    /// Cluster windows in microseconds, ascending, distinct.
    pub cluster_windows_us: Vec<i64>,
    /// False-discovery rate.
    pub alpha: f64,
    /// Fewest first contacts above the expected for a surge day.
    pub surge_min_contacts: u64,
    /// The trends' recent period, µs; 0: no trends.
    pub recent_us: i64,
    /// Share of follow-ups a proactive contact prevents.
    pub effectiveness: f64,
    /// Relative cost of a contact per channel.
    pub channel_cost: std::collections::BTreeMap<String, f64>,
    /// Ranking order.
    pub rank_by: RankBy,
    /// Outreach as-of instant (µs, UTC, inclusive); None = the data's last
    /// timestamp.
    pub as_of_us: Option<i64>,
    /// How far back from the as-of the run reads, µs; None = the whole log.
    pub lookback_us: Option<i64>,
    /// Folder-name partition that holds each input file's day.
    pub partition_col: String,
    /// Exit code 4 when the as-of day has no contact.
    pub require_data: bool,
    /// An input with no rows is not an error.
    pub allow_empty: bool,
    /// Write report.html.
    pub report: bool,
    /// The self-service channels (failure demand), sorted, distinct.
    pub self_service_channels: Vec<String>,
    /// Customer ids replaced by pseudonyms (`--pseudonymize`); serialised
    /// as its method and key id only.
    #[serde(skip_deserializing)]
    pub pseudonym: Option<crate::pseudonym::Pseudonymizer>,
    /// Runs kept in the output folder (None: all).
    pub keep: Option<usize>,
    /// Outreach already made, to leave out of the list.
    pub contacted: Option<PathBuf>,
    /// Share of due customers marked as control.
    pub control_share: f64,
    /// Log lines as JSON objects instead of text.
    pub log_json: bool,
    /// The output folder of many runs this run's folder goes into
    /// ([`crate::runs`]), where the previous run's list is found; None for a
    /// run written straight into `out`.
    pub history: Option<PathBuf>,
    /// Maximum gap between sequence steps, µs.
    pub max_gap_us: i64,
    /// Maximum span of a sequence, µs.
    pub max_span_us: i64,
    /// Whether sequence items are (channel, reason) pairs instead of reasons.
    pub sequence_channel_items: bool,
    /// Minimum support of a reported cluster.
    pub min_support: u64,
    /// The lift the tests' null hypothesis allows.
    pub min_lift: f64,
    /// Minimum distinct customers of a reported cluster or sequence.
    pub min_customers: u64,
    /// Triggers of each reason a customer counts with in the tests.
    pub customer_cap: u32,
    /// Logs with permuted reasons the tests are also run on.
    pub null_check: u32,
    /// Placeholder customer ids to leave out.
    pub exclude_customers: Vec<String>,
    /// Number of partitions (threads) for the per-customer pass; 0 = cores.
    pub target_partitions: usize,
    /// The cluster the run is made on (`--cluster`), and its buckets.
    pub cluster: Option<(String, usize)>,
    /// Memory limit in bytes, enforced by DataFusion's memory pool.
    pub memory_limit_bytes: Option<u64>,
    /// Most contacts per bucket (None: from the memory limit, else
    /// [`crate::buckets::DEFAULT_BUCKET_CONTACTS`]).
    pub bucket_contacts: Option<u64>,
}

/// Parses a memory size such as `2GiB`, `500MB` or `800000000`; at least
/// 1 MiB.
pub fn parse_memory_limit(text: &str) -> Result<u64> {
    let bytes = text
        .trim()
        .parse::<bytesize::ByteSize>()
        .map_err(|e| {
            Error::param(
                "--memory-limit",
                format!("'{text}' is not a size like 2GiB or 500MB: {e}"),
            )
        })?
        .as_u64();
    if bytes < 1 << 20 {
        return Err(Error::param(
            "--memory-limit",
            format!("'{text}' is below the 1 MiB minimum"),
        ));
    }
    Ok(bytes)
}

/// The pseudonymizer `--pseudonymize` asks for, its key loaded; a key file
/// without `--pseudonymize` is an error rather than a run with raw ids.
fn pseudonymizer(
    on: Option<bool>,
    key_file: Option<&Path>,
) -> Result<Option<crate::pseudonym::Pseudonymizer>> {
    match (on.unwrap_or(false), key_file) {
        (true, file) => crate::pseudonym::Pseudonymizer::load(file).map(Some),
        (false, Some(_)) => Err(Error::param(
            "--pseudonym-key-file",
            "is given without --pseudonymize; add --pseudonymize to replace the customer ids",
        )),
        (false, None) => Ok(None),
    }
}

/// Parses `--self-service-channels`: channel names, comma separated.
fn self_service_channels(text: Option<&str>) -> Result<Vec<String>> {
    let text = text.unwrap_or(DEFAULT_SELF_SERVICE_CHANNELS);
    let mut channels: Vec<String> = text
        .split(',')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    if channels.is_empty() {
        return Err(Error::param(
            "--self-service-channels",
            format!("'{text}' names no channel (give them comma separated, e.g. app,web)"),
        ));
    }
    channels.sort();
    channels.dedup();
    Ok(channels)
}

impl PipelineConfig {
    /// Validates merged raw values into a config, applying defaults.
    pub fn from_raw(raw: RunOptions) -> Result<Self> {
        let timezone = raw.timezone.unwrap_or_else(|| DEFAULT_TIMEZONE.into());
        let memory_limit_bytes = raw
            .memory_limit
            .as_deref()
            .map(parse_memory_limit)
            .transpose()?;
        if raw.bucket_contacts == Some(0) {
            return Err(Error::param(
                "--bucket-contacts",
                "must be at least 1 contact per bucket",
            ));
        }
        timezone.parse::<chrono_tz::Tz>().map_err(|_| {
            Error::param("--timezone", format!("unknown IANA time zone '{timezone}'"))
        })?;
        let repeat_window_us = parse_duration_us(
            raw.repeat_window
                .as_deref()
                .unwrap_or(DEFAULT_REPEAT_WINDOW),
        )
        .map_err(|e| Error::param("--repeat-window", e))?;
        let mut cluster_windows_us = raw
            .cluster_window
            .as_deref()
            .unwrap_or(DEFAULT_CLUSTER_WINDOWS)
            .split(',')
            .map(|w| parse_duration_us(w).map_err(|e| Error::param("--cluster-window", e)))
            .collect::<Result<Vec<_>>>()?;
        cluster_windows_us.sort_unstable();
        cluster_windows_us.dedup();
        if cluster_windows_us.len() > MAX_CLUSTER_WINDOWS {
            return Err(Error::param(
                "--cluster-window",
                format!(
                    "{} windows; at most {MAX_CLUSTER_WINDOWS} are tested",
                    cluster_windows_us.len()
                ),
            ));
        }
        let alpha = raw.alpha.unwrap_or(DEFAULT_ALPHA);
        if !(alpha > 0.0 && alpha <= 1.0) {
            return Err(Error::param("--alpha", format!("{alpha} is not in (0, 1]")));
        }
        let min_lift = raw.min_lift.unwrap_or(DEFAULT_MIN_LIFT);
        if !(min_lift.is_finite() && min_lift >= 1.0) {
            return Err(Error::param(
                "--min-lift",
                format!("{min_lift} is not a lift of at least 1"),
            ));
        }
        let customer_cap = raw.customer_cap.unwrap_or(DEFAULT_CUSTOMER_CAP);
        if customer_cap == 0 {
            return Err(Error::param(
                "--customer-cap",
                "must be at least 1 trigger per customer",
            ));
        }
        let effectiveness = raw.effectiveness.unwrap_or(DEFAULT_EFFECTIVENESS);
        if !(0.0..=1.0).contains(&effectiveness) {
            return Err(Error::param(
                "--effectiveness",
                format!("{effectiveness} is not in [0, 1]"),
            ));
        }
        let mut channel_cost: std::collections::BTreeMap<String, f64> = DEFAULT_CHANNEL_COSTS
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        for (k, v) in raw.channel_cost.unwrap_or_default() {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::param(
                    "channel_cost",
                    format!("{k} = {v} is not a cost"),
                ));
            }
            channel_cost.insert(k, v);
        }
        let rank_by = match raw.rank_by.as_deref().unwrap_or("value") {
            "value" => RankBy::Value,
            "score" => RankBy::Score,
            "lift" => RankBy::Lift,
            "support" => RankBy::Support,
            "confidence" => RankBy::Confidence,
            other => {
                return Err(Error::param(
                    "--rank-by",
                    format!("'{other}' is not one of value, score, lift, support, confidence"),
                ));
            }
        };
        let as_of_us = match &raw.as_of {
            None => None,
            Some(s) => Some(
                crate::time::parse_as_of(s, timezone.parse().expect("checked above")).ok_or_else(
                    || Error::param("--as-of", format!("'{s}' is not a date or a time")),
                )?,
            ),
        };
        let recent_us = match raw.recent.as_deref().map(str::trim) {
            // no trends
            Some("0" | "off") => 0,
            Some(r) => parse_duration_us(r).map_err(|e| Error::param("--recent", e))?,
            None => DEFAULT_RECENT_DAYS * 86_400_000_000,
        };
        let lookback_us = match (&raw.lookback, as_of_us) {
            (Some(l), Some(_)) => {
                Some(parse_duration_us(l).map_err(|e| Error::param("--lookback", e))?)
            }
            (Some(_), None) => {
                return Err(Error::param(
                    "--lookback",
                    "needs --as-of: the window it opens ends at the as-of",
                ));
            }
            (None, Some(_)) => Some(
                (DEFAULT_LOOKBACK_DAYS * 86_400_000_000)
                    .max(3 * cluster_windows_us.last().copied().unwrap_or(0)),
            ),
            (None, None) => None,
        };
        let control_share = raw.control_share.unwrap_or(0.0);
        if !(0.0..1.0).contains(&control_share) {
            return Err(Error::param(
                "--control-share",
                format!("{control_share} is not in [0, 1)"),
            ));
        }
        let log_json = match raw.log_format.as_deref().unwrap_or("text") {
            "text" => false,
            "json" => true,
            other => {
                return Err(Error::param(
                    "--log-format",
                    format!("'{other}' is not text or json"),
                ));
            }
        };
        if raw.keep == Some(0) {
            return Err(Error::param("--keep", "must keep at least the run itself"));
        }
        let max_gap_us = parse_duration_us(raw.max_gap.as_deref().unwrap_or(DEFAULT_MAX_GAP))
            .map_err(|e| Error::param("--max-gap", e))?;
        let max_span_us = parse_duration_us(raw.max_span.as_deref().unwrap_or(DEFAULT_MAX_SPAN))
            .map_err(|e| Error::param("--max-span", e))?;
        if max_span_us < max_gap_us {
            return Err(Error::param(
                "--max-span",
                format!(
                    "{} is shorter than --max-gap {}: a sequence spans at least one gap",
                    crate::time::format_duration_us(max_span_us),
                    crate::time::format_duration_us(max_gap_us)
                ),
            ));
        }
        if raw.null_check.is_some_and(|n| n > MAX_NULL_CHECK) {
            return Err(Error::param(
                "--null-check",
                format!(
                    "{} permuted logs is more than the {MAX_NULL_CHECK} recur runs (each costs a run's passes)",
                    raw.null_check.unwrap_or(0)
                ),
            ));
        }
        let cluster = match raw.cluster.as_deref().map(str::trim) {
            None => None,
            Some(url) if !url.starts_with("df://") => {
                return Err(Error::param(
                    "--cluster",
                    format!("'{url}' is not a scheduler URL such as df://localhost:50050"),
                ));
            }
            Some(_) if raw.pseudonymize == Some(true) => {
                return Err(Error::param(
                    "--cluster",
                    "--pseudonymize is not available on a cluster: the executors would need \
                     the key (pseudonymise the log before, or run on one machine)",
                ));
            }
            Some(_) if raw.null_check.is_some_and(|n| n > 0) => {
                return Err(Error::param(
                    "--cluster",
                    "--null-check is not available on a cluster yet: run it on one machine",
                ));
            }
            Some(url) => {
                let partitions = raw.cluster_partitions.unwrap_or(DEFAULT_CLUSTER_PARTITIONS);
                if partitions == 0 || partitions > crate::buckets::MAX_BUCKETS as usize {
                    return Err(Error::param(
                        "--cluster-partitions",
                        format!(
                            "{partitions} is not between 1 and {}",
                            crate::buckets::MAX_BUCKETS
                        ),
                    ));
                }
                Some((url.to_string(), partitions))
            }
        };
        let sequence_channel_items = match raw.sequence_items.as_deref().unwrap_or("reason") {
            "reason" => false,
            "channel_reason" => true,
            other => {
                return Err(Error::param(
                    "--sequence-items",
                    format!("'{other}' is not reason or channel_reason"),
                ));
            }
        };
        let columns = ColumnMapping {
            customer: raw
                .customer_col
                .unwrap_or_else(|| DEFAULT_CUSTOMER_COL.into()),
            time: raw.time_col.unwrap_or_else(|| DEFAULT_TIME_COL.into()),
            channel_explicit: raw.channel_col.is_some(),
            channel: raw
                .channel_col
                .unwrap_or_else(|| DEFAULT_CHANNEL_COL.into()),
            reason: raw.reason_col.unwrap_or_else(|| DEFAULT_REASON_COL.into()),
            contact_id_explicit: raw.contact_id_col.is_some(),
            contact_id: raw
                .contact_id_col
                .unwrap_or_else(|| DEFAULT_CONTACT_ID_COL.into()),
            agent: raw.agent_col,
        };
        columns.check_distinct()?;
        Ok(PipelineConfig {
            inputs: raw.inputs.unwrap_or_default(),
            out: raw.out.unwrap_or_else(|| PathBuf::from(DEFAULT_OUT_DIR)),
            columns,
            timezone,
            repeat_window_us,
            cluster_windows_us,
            alpha,
            effectiveness,
            channel_cost,
            rank_by,
            as_of_us,
            lookback_us,
            partition_col: raw
                .partition_col
                .unwrap_or_else(|| DEFAULT_PARTITION_COL.into()),
            require_data: raw.require_data.unwrap_or(false),
            allow_empty: raw.allow_empty.unwrap_or(false),
            report: !raw.no_report.unwrap_or(false),
            self_service_channels: self_service_channels(raw.self_service_channels.as_deref())?,
            pseudonym: pseudonymizer(raw.pseudonymize, raw.pseudonym_key_file.as_deref())?,
            keep: raw.keep,
            recent_us,
            surge_min_contacts: raw
                .surge_min_contacts
                .unwrap_or(crate::surges::DEFAULT_MIN_CONTACTS),
            contacted: raw.contacted,
            control_share,
            log_json,
            history: None,
            max_gap_us,
            max_span_us,
            sequence_channel_items,
            min_support: raw.min_support.unwrap_or(DEFAULT_MIN_SUPPORT),
            min_lift,
            min_customers: raw.min_customers.unwrap_or(DEFAULT_MIN_CUSTOMERS),
            customer_cap,
            null_check: raw.null_check.unwrap_or(0),
            exclude_customers: raw.exclude_customer.unwrap_or_default(),
            target_partitions: raw.threads.unwrap_or(0),
            cluster,
            memory_limit_bytes,
            bucket_contacts: raw.bucket_contacts,
        })
    }

    /// The longest cluster window, µs.
    pub fn max_cluster_window_us(&self) -> i64 {
        *self.cluster_windows_us.last().expect("at least one window")
    }

    /// The parsed time zone.
    pub fn tz(&self) -> chrono_tz::Tz {
        self.timezone.parse().expect("validated in from_raw")
    }
}

/// How clusters and sequences are ordered.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RankBy {
    /// Expected avoidable contacts weighted by channel cost (default).
    Value,
    /// Excess follow-ups over chance.
    Score,
    /// Lift.
    Lift,
    /// Support.
    Support,
    /// Confidence.
    Confidence,
}

impl RankBy {
    /// The SQL ORDER BY key of this order.
    pub fn sql(self) -> &'static str {
        match self {
            RankBy::Value => "value DESC, score DESC",
            RankBy::Score => "score DESC, value DESC",
            RankBy::Lift => "lift DESC, score DESC",
            RankBy::Support => "n_support DESC, score DESC",
            RankBy::Confidence => "confidence DESC, score DESC",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file() {
        let flags = RunOptions {
            min_support: Some(5),
            ..Default::default()
        };
        let file: RunOptions =
            toml::from_str("min_support = 9\ntimezone = 'Europe/Paris'").unwrap();
        let cfg = PipelineConfig::from_raw(flags.or(file)).unwrap();
        assert_eq!(cfg.min_support, 5);
        assert_eq!(cfg.timezone, "Europe/Paris");
        assert_eq!(cfg.columns.customer, DEFAULT_CUSTOMER_COL);
        let file: RunOptions = toml::from_str("threads = 3").unwrap();
        let cfg = PipelineConfig::from_raw(RunOptions::default().or(file)).unwrap();
        assert_eq!(cfg.target_partitions, 3);
    }

    /// Every flag of `recur run` is a key of the config file, by the same
    /// name, and every key but the channel costs is a flag.
    #[test]
    fn every_flag_is_a_key() {
        use clap::Args;
        let cmd = RunOptions::augment_args(clap::Command::new("run"));
        let serde_json::Value::Object(keys) = serde_json::to_value(RunOptions::default()).unwrap()
        else {
            panic!("options serialise as a map");
        };
        let flags: Vec<String> = cmd
            .get_arguments()
            .map(|a| a.get_id().as_str().to_string())
            .collect();
        for flag in &flags {
            assert!(keys.contains_key(flag), "flag {flag} is no key");
        }
        for key in keys.keys() {
            assert!(
                key == "channel_cost" || flags.contains(key),
                "key {key} is no flag"
            );
        }
    }
}
