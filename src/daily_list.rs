//! Today's outreach list (in stage 5, [`crate::stages::reports`]): the
//! outreach rows as a team works them night after night.
//!
//! Input: the outreach rows ([`crate::outreach`]), the clusters, the run's
//! as-of, the previous run's outreach table (the run with the latest earlier
//! as-of in the output folder), `--contacted` and `--control-share`.
//! Output: the outreach table with five more columns, and its counts for the
//! manifest ([`ListSummary`]):
//!
//! | column       | meaning                                                        |
//! |--------------|----------------------------------------------------------------|
//! | cluster_id   | the cluster behind the row (`A -> B`), as in the clusters table |
//! | run_as_of    | the run's as-of                                                |
//! | first_listed | the as-of date the row (customer, expected reason, trigger) was first listed on |
//! | new_today    | first_listed is this run's date                                |
//! | control      | in the control group: listed, not to be contacted              |
//!
//! A row leaves the list when `--contacted` shows the team reached that
//! customer about that follow-up (same expected_reason or cluster_id) after
//! the trigger and by the as-of. The control group is the customers whose
//! xxHash64 of (customer_id, expected_reason) falls in the lowest
//! `--control-share` of its range: the same customer–follow-up is in the
//! same group on every run, whatever else the log holds.
//!
//! The clusters table gets one more column the same way ([`with_first_seen`]):
//! `first_seen`, the as-of date a cluster (by its cluster_id) was first
//! reported on, carried from the previous run's clusters table.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit, TimestampMicrosecondType};
use serde::Serialize;

use crate::error::{Error, Result};

/// The seed of the control group's hash (fixed: the groups must not move).
const CONTROL_SEED: u64 = 0x00c0_de5e_ed00_0001;

/// The list's counts, for the manifest.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ListSummary {
    /// Rows listed (a customer once per expected follow-up).
    pub listed: u64,
    /// Distinct customers listed.
    pub customers: u64,
    /// Rows first listed on this run.
    pub new_today: u64,
    /// Rows in the control group.
    pub control: u64,
    /// Rows left out because `--contacted` shows the customer reached.
    pub removed_contacted: u64,
    /// The run whose list first_listed continues, if any.
    pub previous_run: Option<String>,
}

/// What the list is made with.
pub struct ListInputs<'a> {
    /// The run's as-of (µs, UTC) and its date.
    pub as_of_us: i64,
    /// The as-of's date in the run's time zone.
    pub as_of_date: NaiveDate,
    /// Cluster rank → cluster id.
    pub cluster_ids: HashMap<i64, String>,
    /// The previous run's folder.
    pub previous_run: Option<&'a Path>,
    /// `--contacted`.
    pub contacted: Option<&'a Path>,
    /// `--control-share`.
    pub control_share: f64,
}

/// Whether customer–follow-up (`customer`, `reason`) is in the control
/// group of `share`.
pub fn is_control(customer: &str, reason: &str, share: f64) -> bool {
    let mut key = Vec::with_capacity(customer.len() + reason.len() + 1);
    key.extend_from_slice(customer.as_bytes());
    key.push(0);
    key.extend_from_slice(reason.as_bytes());
    let h = twox_hash::XxHash64::oneshot(CONTROL_SEED, &key);
    (h as f64) < share * 2f64.powi(64)
}

/// The outreach rows as today's list (see the module's columns).
pub fn make(outreach: &RecordBatch, inputs: &ListInputs) -> Result<(RecordBatch, ListSummary)> {
    let mut summary = ListSummary {
        previous_run: inputs
            .previous_run
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned()),
        ..Default::default()
    };
    let text = |name: &str| -> Result<StringArray> {
        let c = outreach.column_by_name(name).expect("an outreach column");
        Ok(cast(c, &DataType::Utf8)?.as_string::<i32>().clone())
    };
    let customer = text("customer_id")?;
    let reason = text("expected_reason")?;
    let trigger = text("trigger_contact_id")?;
    let trigger_ts = outreach
        .column_by_name("trigger_ts")
        .expect("an outreach column")
        .as_primitive::<TimestampMicrosecondType>()
        .clone();
    let rank = outreach
        .column_by_name("cluster_rank")
        .expect("an outreach column")
        .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
        .clone();
    let cluster_id: Vec<&str> = (0..outreach.num_rows())
        .map(|i| {
            inputs
                .cluster_ids
                .get(&rank.value(i))
                .map(String::as_str)
                .unwrap_or("")
        })
        .collect();

    let reached = match inputs.contacted {
        Some(path) => read_contacted(path)?,
        None => Vec::new(),
    };
    let mut by_customer: HashMap<&str, Vec<&Contacted>> = HashMap::new();
    for c in &reached {
        by_customer.entry(c.customer.as_str()).or_default().push(c);
    }
    let keep: BooleanArray = (0..outreach.num_rows())
        .map(|i| {
            let done = by_customer.get(customer.value(i)).is_some_and(|cs| {
                cs.iter().any(|c| {
                    (c.follow_up == reason.value(i) || c.follow_up == cluster_id[i])
                        && c.at_us >= trigger_ts.value(i)
                        && c.at_us <= inputs.as_of_us
                })
            });
            Some(!done)
        })
        .collect();
    summary.removed_contacted = keep.false_count() as u64;

    let earlier = match inputs.previous_run {
        Some(run) => read_first_listed(&run.join("outreach.parquet"))?,
        None => HashMap::new(),
    };
    let today = crate::time::epoch_day(inputs.as_of_date);
    let mut first = Vec::with_capacity(outreach.num_rows());
    let mut control = Vec::with_capacity(outreach.num_rows());
    for i in 0..outreach.num_rows() {
        let key = (
            customer.value(i).to_string(),
            reason.value(i).to_string(),
            trigger.value(i).to_string(),
        );
        first.push(earlier.get(&key).copied().unwrap_or(today).min(today));
        control.push(is_control(
            customer.value(i),
            reason.value(i),
            inputs.control_share,
        ));
    }
    let first = Date32Array::from(first);
    let new_today: BooleanArray = first.iter().map(|d| d.map(|d| d == today)).collect();
    let mut fields: Vec<Field> = outreach
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.extend([
        Field::new("cluster_id", DataType::Utf8, false),
        Field::new(
            "run_as_of",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("first_listed", DataType::Date32, false),
        Field::new("new_today", DataType::Boolean, false),
        Field::new("control", DataType::Boolean, false),
    ]);
    let mut columns: Vec<ArrayRef> = outreach.columns().to_vec();
    columns.extend([
        Arc::new(StringArray::from(cluster_id)) as ArrayRef,
        Arc::new(
            TimestampMicrosecondArray::from(vec![inputs.as_of_us; outreach.num_rows()])
                .with_timezone("UTC"),
        ),
        Arc::new(first),
        Arc::new(new_today),
        Arc::new(BooleanArray::from(control)),
    ]);
    let all = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    let list = filter_record_batch(&all, &keep)?;
    summary.listed = list.num_rows() as u64;
    summary.customers = {
        let ids = crate::report::utf8(list.column_by_name("customer_id").expect("customer_id"));
        ids.iter().flatten().collect::<HashSet<_>>().len() as u64
    };
    let count_true = |name: &str| {
        list.column_by_name(name)
            .expect("a list column")
            .as_boolean()
            .true_count() as u64
    };
    summary.new_today = count_true("new_today");
    summary.control = count_true("control");
    Ok((list, summary))
}

/// One outreach the team made.
struct Contacted {
    customer: String,
    /// Its expected_reason or cluster_id.
    follow_up: String,
    at_us: i64,
}

/// Reads `--contacted`: customer_id, expected_reason or cluster_id, and
/// contacted_at (a timestamp, or text that casts to one).
fn read_contacted(path: &Path) -> Result<Vec<Contacted>> {
    let unreadable = |e: &dyn std::fmt::Display| Error::UnreadableFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let builder = crate::report::open_parquet(path)?;
    let schema = builder.schema().clone();
    let available = || {
        schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let missing = |column: &str, role: &'static str| Error::MissingColumn {
        path: path.to_path_buf(),
        column: column.to_string(),
        role,
        available: available(),
    };
    let follow_col = ["expected_reason", "cluster_id"]
        .into_iter()
        .find(|c| schema.index_of(c).is_ok())
        .ok_or_else(|| missing("expected_reason or cluster_id", "follow-up reached"))?;
    for (c, role) in [
        ("customer_id", "customer reached"),
        ("contacted_at", "time reached"),
    ] {
        if schema.index_of(c).is_err() {
            return Err(missing(c, role));
        }
    }
    let mut out = Vec::new();
    for batch in builder.build().map_err(|e| unreadable(&e))? {
        let batch = batch.map_err(|e| unreadable(&e))?;
        let as_type = |name: &str, t: &DataType, role: &'static str, expected: &'static str| {
            let c = batch.column_by_name(name).expect("checked above");
            cast(c, t).map_err(|_| Error::BadColumnType {
                path: path.to_path_buf(),
                column: name.to_string(),
                role,
                data_type: c.data_type().to_string(),
                expected,
                example: (0..c.len())
                    .find(|i| c.is_valid(*i))
                    .and_then(|i| {
                        datafusion::arrow::util::display::array_value_to_string(c, i).ok()
                    })
                    .unwrap_or_default(),
            })
        };
        let customer = as_type("customer_id", &DataType::Utf8, "customer reached", "text")?;
        let follow = as_type(follow_col, &DataType::Utf8, "follow-up reached", "text")?;
        let at = as_type(
            "contacted_at",
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            "time reached",
            "a time",
        )?;
        let (customer, follow) = (customer.as_string::<i32>(), follow.as_string::<i32>());
        let at = at.as_primitive::<TimestampMicrosecondType>();
        for i in 0..batch.num_rows() {
            if customer.is_valid(i) && follow.is_valid(i) && at.is_valid(i) {
                out.push(Contacted {
                    customer: customer.value(i).to_string(),
                    follow_up: follow.value(i).to_string(),
                    at_us: at.value(i),
                });
            }
        }
    }
    Ok(out)
}

/// (customer, expected reason, trigger) → first_listed of an earlier run's
/// outreach table (none when it has no such table or column).
fn read_first_listed(path: &Path) -> Result<HashMap<(String, String, String), i32>> {
    let mut out = HashMap::new();
    if !path.is_file() {
        return Ok(out);
    }
    let unreadable = |e: &dyn std::fmt::Display| Error::UnreadableFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let builder = crate::report::open_parquet(path)?;
    let wanted: HashSet<&str> = [
        "customer_id",
        "expected_reason",
        "trigger_contact_id",
        "first_listed",
    ]
    .into();
    if builder
        .schema()
        .fields()
        .iter()
        .filter(|f| wanted.contains(f.name().as_str()))
        .count()
        < wanted.len()
    {
        return Ok(out);
    }
    for batch in builder.build().map_err(|e| unreadable(&e))? {
        let batch = batch.map_err(|e| unreadable(&e))?;
        let text = |name: &str| -> Result<StringArray> {
            let c = batch.column_by_name(name).expect("checked above");
            Ok(cast(c, &DataType::Utf8)?.as_string::<i32>().clone())
        };
        let (c, r, t) = (
            text("customer_id")?,
            text("expected_reason")?,
            text("trigger_contact_id")?,
        );
        let first = cast(
            batch.column_by_name("first_listed").expect("checked above"),
            &DataType::Date32,
        )?;
        let first = first.as_primitive::<datafusion::arrow::datatypes::Date32Type>();
        for i in 0..batch.num_rows() {
            out.insert(
                (
                    c.value(i).to_string(),
                    r.value(i).to_string(),
                    t.value(i).to_string(),
                ),
                first.value(i),
            );
        }
    }
    Ok(out)
}

/// The clusters table's rows with `first_seen` (Date32) added: from the
/// clusters table of `previous_run` for the cluster ids it holds (and has
/// the column), else `today`.
pub fn with_first_seen(
    clusters: &[RecordBatch],
    previous_run: Option<&Path>,
    today: NaiveDate,
) -> Result<Vec<RecordBatch>> {
    let earlier = match previous_run {
        Some(run) => read_first_seen(&run.join("clusters.parquet"))?,
        None => HashMap::new(),
    };
    let today = crate::time::epoch_day(today);
    clusters
        .iter()
        .map(|b| {
            let ids = cast(
                b.column_by_name("cluster_id")
                    .expect("the clusters table has cluster_id"),
                &DataType::Utf8,
            )?;
            let ids = ids.as_string::<i32>();
            let first: Date32Array = (0..b.num_rows())
                .map(|i| {
                    Some(
                        earlier
                            .get(ids.value(i))
                            .copied()
                            .unwrap_or(today)
                            .min(today),
                    )
                })
                .collect();
            let mut fields: Vec<Field> = b
                .schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.push(Field::new("first_seen", DataType::Date32, false));
            let mut columns = b.columns().to_vec();
            columns.push(Arc::new(first));
            Ok(RecordBatch::try_new(
                Arc::new(Schema::new(fields)),
                columns,
            )?)
        })
        .collect()
}

/// cluster_id → first_seen (days since the epoch) of a clusters table;
/// empty when there is none or it has no first_seen.
fn read_first_seen(path: &Path) -> Result<HashMap<String, i32>> {
    let mut out = HashMap::new();
    if !path.is_file() {
        return Ok(out);
    }
    let unreadable = |e: &dyn std::fmt::Display| Error::UnreadableFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let builder = crate::report::open_parquet(path)?;
    let has = |name: &str| builder.schema().field_with_name(name).is_ok();
    if !has("cluster_id") || !has("first_seen") {
        return Ok(out);
    }
    for batch in builder.build().map_err(|e| unreadable(&e))? {
        let batch = batch.map_err(|e| unreadable(&e))?;
        let ids = cast(
            batch.column_by_name("cluster_id").expect("checked above"),
            &DataType::Utf8,
        )?;
        let first = cast(
            batch.column_by_name("first_seen").expect("checked above"),
            &DataType::Date32,
        )?;
        let first = first.as_primitive::<datafusion::arrow::datatypes::Date32Type>();
        for (i, id) in ids.as_string::<i32>().iter().enumerate() {
            if let Some(id) = id {
                out.insert(id.to_string(), first.value(i));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_share_is_stable_and_about_its_size() {
        let n = 20_000;
        let chosen = (0..n)
            .filter(|i| is_control(&format!("c{i}"), "Billing", 0.1))
            .count();
        assert!((1_700..2_300).contains(&chosen), "{chosen} of {n}");
        assert_eq!(
            is_control("c7", "Billing", 0.1),
            is_control("c7", "Billing", 0.1)
        );
        assert_eq!(
            (0..n)
                .filter(|i| is_control(&format!("c{i}"), "x", 0.0))
                .count(),
            0
        );
    }
}
