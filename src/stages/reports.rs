//! Stage 5 — the reports: every table under the output folder but the
//! contacts (written by the first passes) and the manifest (by
//! [`crate::pipeline`]).
//!
//! Input: the session's tables after the ranking (`repeat_counts`,
//! `failure_counts`,
//! `clusters`, `sequences`, `followups`, `sequence_occurrences`), the
//! [`Ranked`] clusters and each bucket's follow-ups and outreach triggers
//! ([`SecondPass`]). Output ([`Reports`]): `repeat_summary`, `clusters`,
//! `sequences`, `failure_demand`, `cluster_members`, `prompts` and `outreach`
//! written (see [`crate::report`] and docs/SCHEMA.md for their columns), with
//! what the terminal summary reads of them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::MemTable;

use super::rank::Ranked;
use super::second_pass::SecondPass;
use crate::config::PipelineConfig;
use crate::error::{Error, Result};
use crate::queries;
use crate::report::{self, TableInfo};
use crate::session::{RunSession, table_schema};

/// Prompts written per reason.
pub const MAX_PROMPTS_PER_REASON: usize = 3;

/// The reports written, and what the terminal summary reads of them.
pub(crate) struct Reports {
    /// The repeat_summary table's rows.
    pub summary: Vec<RecordBatch>,
    /// The sequences table's rows.
    pub sequences: Vec<RecordBatch>,
    /// Today's outreach list's counts.
    pub list: crate::daily_list::ListSummary,
}

/// Writes the reports into `cfg.out`, recording each in `tables`
/// (`sequences`: the sequences table's rows).
/// `contact_id` is the type of the input's contact ids (the outreach list
/// names trigger contacts by them).
pub(crate) async fn write(
    s: &mut RunSession,
    cfg: &PipelineConfig,
    ranked: &Ranked,
    sequences: Vec<RecordBatch>,
    second: SecondPass,
    contact_id: &DataType,
    tables: &mut BTreeMap<String, TableInfo>,
) -> Result<Reports> {
    let t = Instant::now();
    let summary = s
        .register_query("repeat_summary", queries::REPEAT_SUMMARY)
        .await?;
    let as_of_date = crate::time::local_date(
        cfg.tz(),
        cfg.as_of_us.expect("the run's as-of is set after ingest"),
    );
    let clusters = crate::daily_list::with_first_seen(
        &ranked.batches,
        previous_run(cfg)?.as_deref(),
        as_of_date,
    )?;
    let clusters_schema = match clusters.first() {
        Some(b) => b.schema(),
        None => {
            let s = table_schema(&s.ctx, "clusters").await?;
            let mut fields: Vec<_> = s.fields().iter().map(|f| f.as_ref().clone()).collect();
            fields.push(datafusion::arrow::datatypes::Field::new(
                "first_seen",
                DataType::Date32,
                false,
            ));
            Arc::new(datafusion::arrow::datatypes::Schema::new(fields))
        }
    };
    report::write_batches(clusters_schema, &clusters, &cfg.out, "clusters", tables)?;
    for (name, batches) in [("repeat_summary", &summary), ("sequences", &sequences)] {
        report::write_batches(
            table_schema(&s.ctx, name).await?,
            batches,
            &cfg.out,
            name,
            tables,
        )?;
    }
    failure_demand(s, cfg, tables).await?;
    let members = s
        .register_query("cluster_members", queries::CLUSTER_MEMBERS)
        .await?;
    // written on a thread of its own while the outreach list is made (the
    // list needs the members, not their file)
    let members_written = {
        let (schema, batches, out) = (
            table_schema(&s.ctx, "cluster_members").await?,
            members.clone(),
            cfg.out.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let mut written = BTreeMap::new();
            report::write_batches(schema, &batches, &out, "cluster_members", &mut written)?;
            Ok::<_, Error>(written)
        })
    };
    prompts(s, cfg, tables).await?;
    let outreach = outreach(s, ranked, &members, second, contact_id).await?;
    let (outreach, list) = daily_list(cfg, ranked, &outreach)?;
    report::write_batches(
        outreach.schema(),
        std::slice::from_ref(&outreach),
        &cfg.out,
        "outreach",
        tables,
    )?;
    tables.extend(
        members_written
            .await
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))??,
    );
    s.seconds.insert("write".into(), t.elapsed().as_secs_f64());
    Ok(Reports {
        summary,
        sequences,
        list,
    })
}

/// The outreach rows as today's list ([`crate::daily_list`]): continued
/// from the previous run in the output folder, if any.
fn daily_list(
    cfg: &PipelineConfig,
    ranked: &Ranked,
    outreach: &RecordBatch,
) -> Result<(RecordBatch, crate::daily_list::ListSummary)> {
    let as_of_us = cfg.as_of_us.expect("the run's as-of is set after ingest");
    let as_of_date = crate::time::local_date(cfg.tz(), as_of_us);
    let previous = previous_run(cfg)?;
    let inputs = crate::daily_list::ListInputs {
        as_of_us,
        as_of_date,
        cluster_ids: ranked
            .rows
            .iter()
            .map(|r| {
                (
                    r.rank as i64,
                    format!("{} -> {}", r.antecedent, r.consequent),
                )
            })
            .collect(),
        previous_run: previous.as_deref(),
        contacted: cfg.contacted.as_deref(),
        control_share: cfg.control_share,
    };
    crate::daily_list::make(outreach, &inputs)
}

/// The folder of the previous run in the output folder (the latest earlier
/// as-of), if the run goes into an output folder of many runs and one is
/// there.
fn previous_run(cfg: &PipelineConfig) -> Result<Option<std::path::PathBuf>> {
    let Some(root) = &cfg.history else {
        return Ok(None);
    };
    let as_of_date = crate::time::local_date(
        cfg.tz(),
        cfg.as_of_us.expect("the run's as-of is set after ingest"),
    );
    Ok(crate::runs::previous_run(root, as_of_date)?.map(|(_, p)| p))
}

/// Writes the frequent contacters; returns their figures for the manifest.
pub(crate) fn frequent_contacters(
    cfg: &PipelineConfig,
    contacters: crate::contacters::Contacters,
    tables: &mut BTreeMap<String, TableInfo>,
) -> Result<crate::contacters::ContactersSummary> {
    let (frequent, summary) = contacters.finish()?;
    report::write_batches(
        frequent.schema(),
        std::slice::from_ref(&frequent),
        &cfg.out,
        "frequent_contacters",
        tables,
    )?;
    Ok(summary)
}

/// The schema of the `self_service_channels` table failure_demand.sql reads.
pub(crate) fn self_service_schema() -> datafusion::arrow::datatypes::SchemaRef {
    Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
        datafusion::arrow::datatypes::Field::new("channel", DataType::Utf8, false),
    ]))
}

/// Writes the failure demand (queries/failure_demand.sql over the buckets'
/// failure_counts).
async fn failure_demand(
    s: &mut RunSession,
    cfg: &PipelineConfig,
    tables: &mut BTreeMap<String, TableInfo>,
) -> Result<()> {
    let channels = RecordBatch::try_new(
        self_service_schema(),
        vec![Arc::new(
            datafusion::arrow::array::StringArray::from_iter_values(&cfg.self_service_channels),
        )],
    )?;
    s.register(
        "self_service_channels",
        Arc::new(MemTable::try_new(
            self_service_schema(),
            vec![vec![channels]],
        )?),
    )?;
    let demand = s
        .register_query("failure_demand", queries::FAILURE_DEMAND)
        .await?;
    report::write_batches(
        table_schema(&s.ctx, "failure_demand").await?,
        &demand,
        &cfg.out,
        "failure_demand",
        tables,
    )
}

/// Writes the prompts (queries/prompts.sql).
async fn prompts(
    s: &RunSession,
    cfg: &PipelineConfig,
    tables: &mut BTreeMap<String, TableInfo>,
) -> Result<()> {
    let sql = queries::render(
        queries::PROMPTS,
        &[("max_prompts", MAX_PROMPTS_PER_REASON.to_string())],
    );
    let prompts = s.ctx.sql(&sql).await?;
    let planned = prompts.schema().inner().clone();
    let prompts = prompts.collect().await?;
    let schema = prompts.first().map(|b| b.schema()).unwrap_or(planned);
    report::write_batches(schema, &prompts, &cfg.out, "prompts", tables)
}

/// The outreach list, a bucket at a time: a customer's trigger and its
/// follow-ups are in one bucket, and the lists merge by priority
/// (queries/outreach_candidates.sql, then [`crate::outreach`]).
async fn outreach(
    s: &mut RunSession,
    ranked: &Ranked,
    members: &[RecordBatch],
    second: SecondPass,
    contact_id: &DataType,
) -> Result<RecordBatch> {
    let started = Instant::now();
    let lags = report::member_lags(members);
    s.register(
        "outreach_cutoffs",
        Arc::new(MemTable::try_new(
            crate::outreach::cutoffs_schema(),
            vec![vec![crate::outreach::cutoffs(&ranked.batches, &lags)?]],
        )?),
    )?;
    s.seconds
        .insert("outreach.lags".into(), started.elapsed().as_secs_f64());
    let mut lists = Vec::with_capacity(second.triggers.len());
    let (mut read_s, mut query_s, mut build_s) = (0.0, 0.0, 0.0);
    for (triggers, followups) in second.triggers.into_iter().zip(second.followups) {
        let t = Instant::now();
        let (triggers_schema, batches) = triggers.read()?;
        read_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        s.register(
            "outreach_triggers",
            Arc::new(MemTable::try_new(triggers_schema, vec![batches])?),
        )?;
        s.register(
            "followups",
            Arc::new(MemTable::try_new(
                second.followups_schema.clone(),
                followups,
            )?),
        )?;
        let candidates = s
            .ctx
            .sql(queries::OUTREACH_CANDIDATES)
            .await?
            .collect()
            .await?;
        query_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        lists.push(crate::outreach::build(&candidates, &lags, contact_id)?);
        build_s += t.elapsed().as_secs_f64();
    }
    let t = Instant::now();
    let outreach = crate::outreach::merge(&lists)?;
    let seconds = &mut s.seconds;
    seconds.insert("outreach.merge".into(), t.elapsed().as_secs_f64());
    seconds.insert("outreach.build".into(), build_s);
    seconds.insert("outreach".into(), started.elapsed().as_secs_f64());
    seconds.insert("outreach.read_triggers".into(), read_s);
    seconds.insert("query.outreach_candidates".into(), query_s);
    Ok(outreach)
}
