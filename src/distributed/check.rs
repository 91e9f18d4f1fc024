//! `recur cluster-check`: is a cluster ready for recur? Runs recur's
//! per-customer passes over a contact log on the cluster's executors and on
//! this machine, and compares what they give.
//!
//! Input: [`CheckOptions`]: the scheduler's URL and a log in the columns
//! `recur generate` writes (`contact_id`, `customer_id`, `ts`, `channel`,
//! `reason`, optional `agent`), at a path every executor reads the same
//! (a shared folder). Output: one [`PassCheck`] per pass: its summary's rows,
//! the seconds it took on the cluster and here, and the first difference.
//!
//! Each pass is one job whose every stage runs on the executors: the scan,
//! the shuffle by customer, the sort by (customer, time), the pass
//! ([`TimelineNode`]) and an aggregate that sums each of its columns per
//! reason (per key for the counting passes). Only that summary returns to
//! the client, so the check also measures what a cluster does with the part
//! of a run that handles contacts. Integer columns are summed exactly
//! (wrapping, so the sum of a column of times is a checksum, not a figure),
//! floats after rounding to millionths.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::Column;
use datafusion::execution::SessionStateBuilder;
use datafusion::functions::expr_fn::round;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{Expr, cast, col, lit};
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionConfig, SessionContext};

use crate::config::{PipelineConfig, RunOptions};
use crate::error::{Error, Result};
use crate::timeline::logical::{TimelineNode, TimelineQueryPlanner};
use crate::timeline::{Mode, TimelineParams};

/// What `recur cluster-check` is asked.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckOptions {
    /// The scheduler: df://HOST:PORT.
    #[arg(long)]
    pub cluster: String,
    /// A Parquet log (file or folder) in `recur generate`'s columns, at a
    /// path every executor can read.
    pub log: PathBuf,
    /// Partitions of the shuffle by customer.
    #[arg(long, default_value_t = 4)]
    pub partitions: usize,
    /// Time the cluster only: do not run the passes here too.
    #[arg(long)]
    pub no_compare: bool,
}

/// One pass as the cluster and this machine ran it.
#[derive(Debug, Clone)]
pub struct PassCheck {
    /// The pass.
    pub pass: &'static str,
    /// Rows of its summary (reasons, or keys of a counting pass).
    pub rows: usize,
    /// Seconds the job took on the cluster, submitted to collected.
    pub cluster_seconds: f64,
    /// Seconds the same plan took on this machine (none under `--no-compare`).
    pub local_seconds: Option<f64>,
    /// The first row that differs, when one does.
    pub difference: Option<String>,
}

/// The passes checked: every pass of a run's first passes.
const PASSES: [(Mode, &str); 4] = [
    (Mode::Contacts, "repeats and events"),
    (Mode::PairCounts, "follow-up counts"),
    (Mode::Exposure, "exposure"),
    (Mode::SequenceCounts, "sequence counts"),
];

/// The columns a log needs (`agent` it may leave out).
const REQUIRED: [&str; 5] = ["contact_id", "customer_id", "ts", "channel", "reason"];

/// Runs every pass of [`PASSES`] on the cluster (and here, unless
/// `--no-compare`).
pub async fn check(opts: &CheckOptions) -> Result<Vec<PassCheck>> {
    let log = std::fs::canonicalize(&opts.log).map_err(|e| Error::read_input(&opts.log, e))?;
    let log = log.to_str().ok_or_else(|| Error::InvalidParameter {
        name: "LOG".into(),
        reason: format!("{} is not a UTF-8 path", log.display()),
    })?;
    // (the log read here first: a log the check cannot use is bad input
    // whether or not the cluster is up)
    let local = local_session(opts.partitions);
    let params = params(&local, log).await?;
    let cluster = super::connect(&opts.cluster, opts.partitions)
        .await
        .map_err(|e| Error::Cluster {
            reason: format!("cannot reach the scheduler at {}: {e}", opts.cluster),
        })?;
    let mut checks = Vec::new();
    for (mode, pass) in PASSES {
        let t = Instant::now();
        let on_cluster =
            summary(&cluster, log, mode, &params)
                .await
                .map_err(|e| Error::Cluster {
                    reason: format!("the {pass} pass failed on the cluster: {e}"),
                })?;
        let cluster_seconds = t.elapsed().as_secs_f64();
        let (local_seconds, difference) = if opts.no_compare {
            (None, None)
        } else {
            let t = Instant::now();
            let here = summary(&local, log, mode, &params).await?;
            (
                Some(t.elapsed().as_secs_f64()),
                first_difference(&on_cluster, &here),
            )
        };
        checks.push(PassCheck {
            pass,
            rows: on_cluster.len(),
            cluster_seconds,
            local_seconds,
            difference,
        });
    }
    Ok(checks)
}

/// A DataFusion session on this machine that plans [`TimelineNode`]s as a
/// scheduler does.
fn local_session(partitions: usize) -> SessionContext {
    let mut config = SessionConfig::new().with_target_partitions(partitions.max(1));
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    SessionContext::new_with_state(
        SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_query_planner(Arc::new(TimelineQueryPlanner))
            .build(),
    )
}

/// The passes' parameters: a run's defaults, the log's last contact as its
/// end and as-of.
async fn params(ctx: &SessionContext, log: &str) -> Result<TimelineParams> {
    let last = contacts_in(ctx, log)
        .await?
        .aggregate(
            vec![],
            vec![datafusion::functions_aggregate::expr_fn::max(cast(
                col("ts"),
                DataType::Int64,
            ))],
        )?
        .collect()
        .await?;
    let last = last
        .first()
        .filter(|b| b.num_rows() == 1 && b.column(0).is_valid(0))
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .map(|a| a.value(0))
        })
        .ok_or_else(|| Error::EmptyInput {
            files: log.to_string(),
        })?;
    let mut cfg = PipelineConfig::from_raw(RunOptions {
        inputs: Some(vec![log.to_string()]),
        ..RunOptions::default()
    })?;
    cfg.as_of_us = Some(last);
    Ok(crate::pipeline::timeline_params(&cfg, Some(last)))
}

/// The log as the per-customer pass reads it (`contacts_in`), its contacts
/// without a customer or time left out, the contact id as the row order.
async fn contacts_in(ctx: &SessionContext, log: &str) -> Result<DataFrame> {
    let df = ctx
        .read_parquet(log, ParquetReadOptions::default())
        .await
        .map_err(|e| Error::UnreadableFile {
            path: log.into(),
            reason: e.to_string(),
        })?;
    let has = |name: &str| df.schema().has_column_with_unqualified_name(name);
    if let Some(missing) = REQUIRED.iter().find(|c| !has(c)) {
        return Err(Error::InvalidParameter {
            name: "LOG".into(),
            reason: format!(
                "{log} has no column '{missing}': the check reads the columns recur generate \
                 writes ({})",
                REQUIRED.join(", ")
            ),
        });
    }
    let text = |name: &str| cast(col(name), DataType::Utf8).alias(name);
    let agent = if has("agent") {
        text("agent")
    } else {
        lit(datafusion::common::ScalarValue::Utf8(None)).alias("agent")
    };
    Ok(df
        .filter(
            col("customer_id")
                .is_not_null()
                .and(col("ts").is_not_null()),
        )?
        .select(vec![
            cast(col("contact_id"), DataType::Int64).alias("contact_id"),
            text("customer_id"),
            cast(
                col("ts"),
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            )
            .alias("ts"),
            text("channel"),
            text("reason"),
            agent,
            cast(col("contact_id"), DataType::Int64).alias("_row"),
        ])?)
}

/// The pass in `mode` over the log, summed by reason (the contacts pass)
/// or by key (a counting pass), as sorted lines.
async fn summary(
    ctx: &SessionContext,
    log: &str,
    mode: Mode,
    params: &TimelineParams,
) -> Result<Vec<String>> {
    let input = contacts_in(ctx, log).await?.into_unoptimized_plan();
    let node = TimelineNode::try_new(input, mode, params.clone())?;
    let pass = ctx.execute_logical_plan(node.into_plan()).await?;
    let mut keys = Vec::new();
    let mut sums = vec![count(lit(1)).alias("rows")];
    for field in pass.schema().fields() {
        let name = field.name();
        let column = Expr::Column(Column::new_unqualified(name));
        match field.data_type() {
            DataType::Utf8 | DataType::Dictionary(..)
                if mode != Mode::Contacts || name == "reason" =>
            {
                keys.push(column)
            }
            _ if mode == Mode::SequenceCounts && name == "length" => keys.push(column),
            DataType::Float32 | DataType::Float64 => {
                sums.push(sum(cast(round(vec![column * lit(1e6)]), DataType::Int64)).alias(name))
            }
            t if t.is_integer()
                || matches!(
                    t,
                    DataType::Boolean | DataType::Date32 | DataType::Timestamp(..)
                ) =>
            {
                sums.push(sum(cast(column, DataType::Int64)).alias(name))
            }
            // (lists differ in length between partitions; texts are ids)
            _ => {}
        }
    }
    let batches = pass.aggregate(keys, sums)?.collect().await?;
    lines(&batches)
}

/// Each row of `batches` as one line, sorted.
fn lines(batches: &[RecordBatch]) -> Result<Vec<String>> {
    let options = FormatOptions::default().with_null("null");
    let mut out = Vec::new();
    for b in batches {
        let columns = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for i in 0..b.num_rows() {
            let row: Vec<String> = columns.iter().map(|c| c.value(i).to_string()).collect();
            out.push(row.join(" | "));
        }
    }
    out.sort();
    Ok(out)
}

/// The first line where `cluster` and `here` differ, named.
fn first_difference(cluster: &[String], here: &[String]) -> Option<String> {
    if cluster == here {
        return None;
    }
    let at = cluster
        .iter()
        .zip(here)
        .position(|(a, b)| a != b)
        .unwrap_or(cluster.len().min(here.len()));
    Some(format!(
        "{} rows on the cluster, {} here; row {at}: cluster '{}', here '{}'",
        cluster.len(),
        here.len(),
        cluster.get(at).map_or("(none)", String::as_str),
        here.get(at).map_or("(none)", String::as_str),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_is_named_where_it_is() {
        let a: Vec<String> = ["a | 1", "b | 2", "c | 3"].map(String::from).into();
        assert_eq!(first_difference(&a, &a), None);
        let mut b = a.clone();
        b[1] = "b | 5".into();
        let d = first_difference(&a, &b).unwrap();
        assert!(d.contains("row 1: cluster 'b | 2', here 'b | 5'"), "{d}");
        let d = first_difference(&a, &a[..2]).unwrap();
        assert!(d.contains("3 rows on the cluster, 2 here; row 2"), "{d}");
    }
}
