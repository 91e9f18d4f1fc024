//! Beside stages 2–4 — the cluster trends: which clusters and sequences are
//! new, growing, stable, fading or gone.
//!
//! Input: each bucket's annotated contacts (as the timeline pass reads
//! them), the run's configuration and its window.
//! Output: the `cluster_trends` table (`queries/cluster_trends.sql`, one row
//! per pattern significant in either period) and a [`TrendSummary`] for the
//! manifest and the terminal.
//!
//! The run's window is cut at `as_of − --recent` into the period before and
//! the recent period, compared at the cluster windows shorter than the
//! recent period. Each period is analysed as a run of its own whose
//! triggers are its contacts only ([`TimelineParams::trigger_period`]; the
//! follow-ups come from any time, so a trigger late in the period before
//! keeps the follow-ups it had after the cut): the pair and exposure passes
//! and the clusters' ranking SQL ([`Trends::add_bucket`],
//! [`Trends::rank_clusters`]), then the sequences' pass and ranking along
//! the steps of both periods' clusters, so that both count the same
//! patterns ([`Trends::add_sequences`], [`Trends::finish`]). A pattern is
//! significant in a period as a cluster or sequence is in the run: q ≤
//! alpha within the period, with the minimum support and customers.
//! `queries/period_clusters.sql` and `period_sequences.sql` list each
//! period's patterns with their counted follow-ups, expected and variance;
//! expectations are made in both periods for every pair seen in either, so
//! that a pair with no follow-up in one period still has what chance would
//! have given it there. `queries/trend_changes.sql` joins the two and tests
//! the change of lift with [`crate::significance::change_p_value`];
//! `fdr.sql` corrects the tests (clusters and sequences apart) and
//! `cluster_trends.sql` names each pattern's status.
//!
//! A trigger counts at a window only when the window has ended by the
//! as-of (a sequence's prefix only when its reach has): the recent period's
//! last triggers have not had their chance to be followed, and counted
//! would make every pattern look as if it were fading. The change tested is
//! that of lift (follow-ups over what chance gives), which holds however
//! the periods' volumes and customers' contact rates differ.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use datafusion::catalog::MemTable;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};

use crate::config::PipelineConfig;
use crate::error::Result;
use crate::queries;
use crate::session::{register_query, register_sequence_counts};
use crate::significance::Exposures;
use crate::timeline::sorted::SortedContactsExec;
use crate::timeline::{Mode, PatternSums, TimelineParams, TriggerPeriod};

/// The statuses of `cluster_trends`, in the order the table and the
/// summary list them.
pub const STATUSES: [&str; 5] = ["new", "growing", "fading", "gone", "stable"];

/// One period's counts so far.
struct Period {
    /// Its triggers.
    bounds: TriggerPeriod,
    pair_counts: Vec<RecordBatch>,
    exposures: Exposures,
    /// After the clusters' ranking: its session.
    ctx: Option<SessionContext>,
    patterns: PatternSums,
    /// When recording ([`Trends::record`]): the passes' rows, not summed.
    rows: PeriodRows,
}

/// One period's pass rows of some buckets, as the passes gave them: what a
/// cluster's executors send the client, which sums them as its own.
#[derive(Default)]
pub struct PeriodRows {
    /// The pair-count pass's rows.
    pub pair_counts: Vec<RecordBatch>,
    /// The exposure pass's rows.
    pub exposure: Vec<RecordBatch>,
    /// The sequence-count pass's rows.
    pub patterns: Vec<RecordBatch>,
}

/// The two periods' counts, a bucket at a time.
pub struct Trends {
    /// Before the cut, then recent.
    periods: [Period; 2],
    /// The cluster windows shorter than the recent period, µs: the ones
    /// a recent trigger can complete.
    windows: Arc<Vec<i64>>,
    /// The steps both periods mine sequences along (after the ranking).
    steps: Vec<(String, String)>,
    /// Whether the passes' rows are kept as rows instead of summed.
    recording: bool,
}

/// What the trends found, for the manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TrendSummary {
    /// The first instant of the recent period (RFC 3339, UTC), or why
    /// there are no trends.
    pub recent_from: String,
    /// Patterns tested for a change (both periods expect follow-ups).
    pub changes_tested: u64,
    /// Patterns in `cluster_trends` by status.
    pub statuses: BTreeMap<String, u64>,
}

impl Trends {
    /// The trends of a run over `cfg`'s window whose earliest contact is at
    /// `min_ts_us`; None (and why) when no contact falls before the recent
    /// period.
    pub fn new(cfg: &PipelineConfig, min_ts_us: Option<i64>) -> std::result::Result<Self, String> {
        if cfg.recent_us == 0 {
            return Err("none: --recent 0".into());
        }
        let as_of = cfg.as_of_us.expect("the run's as-of is set");
        let cut = as_of.saturating_sub(cfg.recent_us);
        let windows: Vec<i64> = cfg
            .cluster_windows_us
            .iter()
            .copied()
            .filter(|w| *w < cfg.recent_us)
            .collect();
        if windows.is_empty() {
            return Err(format!(
                "none: no cluster window is shorter than --recent {}",
                crate::time::format_duration_us(cfg.recent_us)
            ));
        }
        if min_ts_us.is_none_or(|first| first >= cut) {
            return Err(format!(
                "none: no contact before the recent period (from {})",
                crate::time::format_utc(cut)
            ));
        }
        let period = |from_us, until_us| Period {
            bounds: TriggerPeriod {
                from_us,
                until_us,
                complete_by_us: as_of,
            },
            pair_counts: Vec::new(),
            exposures: Exposures::new(),
            ctx: None,
            patterns: PatternSums::new(),
            rows: PeriodRows::default(),
        };
        Ok(Trends {
            periods: [period(i64::MIN, cut), period(cut, i64::MAX)],
            windows: Arc::new(windows),
            steps: Vec::new(),
            recording: false,
        })
    }

    /// From now on, keeps the passes' rows as rows ([`Trends::take_rows`])
    /// instead of summing them.
    pub fn record(&mut self) {
        self.recording = true;
    }

    /// The rows recorded so far, before and recent.
    pub fn take_rows(&mut self) -> [PeriodRows; 2] {
        self.periods.each_mut().map(|p| PeriodRows {
            pair_counts: std::mem::take(&mut p.pair_counts),
            ..std::mem::take(&mut p.rows)
        })
    }

    /// Sums rows recorded elsewhere into each period, as if its own passes
    /// had given them.
    pub fn add_rows(&mut self, rows: [PeriodRows; 2]) -> Result<()> {
        for (period, rows) in self.periods.iter_mut().zip(rows) {
            period.pair_counts.extend(rows.pair_counts);
            for b in &rows.exposure {
                period.exposures.add(b)?;
            }
            for b in &rows.patterns {
                period.patterns.add(b)?;
            }
        }
        Ok(())
    }

    /// The steps both periods mine sequences along.
    pub fn steps(&self) -> &[(String, String)] {
        &self.steps
    }

    /// Sets the steps both periods mine sequences along (those of a
    /// ranking made elsewhere).
    pub fn set_steps(&mut self, steps: Vec<(String, String)>) {
        self.steps = steps;
    }

    /// The first instant of the recent period, µs.
    pub fn cut_us(&self) -> i64 {
        self.periods[1].bounds.from_us
    }

    /// Counts the pairs of one bucket in both periods.
    pub async fn add_bucket(
        &mut self,
        ctx: &SessionContext,
        annotated: &Arc<SortedContactsExec>,
        params: &TimelineParams,
    ) -> Result<()> {
        for period in &mut self.periods {
            let params = TimelineParams {
                trigger_period: Some(period.bounds),
                pair_windows_us: self.windows.clone(),
                ..params.clone()
            };
            let (_, counts) =
                crate::session::run_timeline(ctx, annotated, Mode::PairCounts, params.clone())
                    .await?;
            period.pair_counts.extend(counts.into_iter().flatten());
            let (_, exposed) =
                crate::session::run_timeline(ctx, annotated, Mode::Exposure, params).await?;
            if self.recording {
                period.rows.exposure.extend(exposed.into_iter().flatten());
            } else {
                for b in exposed.iter().flatten() {
                    period.exposures.add(b)?;
                }
            }
        }
        Ok(())
    }

    /// Ranks each period's clusters, as the run ranks its own, with the
    /// expectations of every pair seen in either period.
    pub async fn rank_clusters(&mut self, cfg: &PipelineConfig) -> Result<()> {
        let mut seen: BTreeSet<(u64, String, String)> = BTreeSet::new();
        for period in &self.periods {
            for b in &period.pair_counts {
                let w = b.column_by_name("window_s").expect("window_s");
                let w = w.as_primitive::<Float64Type>();
                let a = crate::report::utf8(b.column_by_name("antecedent").expect("antecedent"));
                let c = crate::report::utf8(b.column_by_name("consequent").expect("consequent"));
                for i in 0..b.num_rows() {
                    if a.is_valid(i) && c.is_valid(i) {
                        seen.insert((w.value(i).to_bits(), a.value(i).into(), c.value(i).into()));
                    }
                }
            }
        }
        let mut steps = BTreeSet::new();
        for period in &mut self.periods {
            let pair_counts = std::mem::take(&mut period.pair_counts);
            let expectations = std::mem::take(&mut period.exposures).pair_expectations_with(
                &pair_counts,
                seen.iter()
                    .map(|(w, a, c)| (f64::from_bits(*w), a.as_str(), c.as_str())),
            )?;
            let (ctx, _, period_steps) =
                crate::stages::rank::rank_apart(cfg, pair_counts, expectations).await?;
            steps.extend(period_steps);
            period.ctx = Some(ctx);
        }
        self.steps = steps.into_iter().collect();
        Ok(())
    }

    /// Mines one bucket for sequences in both periods, along the steps of
    /// both periods' clusters (nothing when they leave no chain of two).
    pub async fn add_sequences(
        &mut self,
        ctx: &SessionContext,
        annotated: &Arc<SortedContactsExec>,
        params: &TimelineParams,
    ) -> Result<()> {
        if self.steps.len() < 2 {
            return Ok(());
        }
        for period in &mut self.periods {
            let params = TimelineParams {
                sequence_steps: Some(Arc::new(self.steps.clone())),
                trigger_period: Some(period.bounds),
                ..params.clone()
            };
            let (_, patterns) =
                crate::session::run_timeline(ctx, annotated, Mode::SequenceCounts, params).await?;
            if self.recording {
                period.rows.patterns.extend(patterns.into_iter().flatten());
            } else {
                for b in patterns.iter().flatten() {
                    period.patterns.add(b)?;
                }
            }
        }
        Ok(())
    }

    /// Ranks each period's sequences, then compares the periods (in a
    /// session of its own): the `cluster_trends` rows and the summary.
    pub async fn finish(self, cfg: &PipelineConfig) -> Result<(Vec<RecordBatch>, TrendSummary)> {
        let cut = self.cut_us();
        let evidence = crate::stages::rank::evidence(cfg).to_vec();
        let mut listed = Vec::new();
        for period in self.periods {
            let pctx = period.ctx.expect("ranked before");
            let mut seconds = BTreeMap::new();
            let mut rows = register_query(
                &pctx,
                "period_clusters",
                &queries::render(queries::PERIOD_CLUSTERS, &evidence),
                &mut seconds,
            )
            .await?;
            if self.steps.len() >= 2 {
                // every pattern seen, whatever its support: a pattern rare
                // in one period is compared with what it was
                register_sequence_counts(&pctx, period.patterns.finish(1)?)?;
                crate::stages::rank::rank_sequences(&pctx, cfg, &mut seconds).await?;
                let mut params = evidence.clone();
                params.push(("max_gap_s", format!("{:?}", cfg.max_gap_us as f64 / 1e6)));
                rows.extend(
                    register_query(
                        &pctx,
                        "period_sequences",
                        &queries::render(queries::PERIOD_SEQUENCES, &params),
                        &mut seconds,
                    )
                    .await?,
                );
            }
            listed.push(rows);
        }
        let [before, recent]: [Vec<RecordBatch>; 2] = listed.try_into().expect("two periods");
        compare(cfg, before, recent, Some(cut)).await
    }
}

/// Finishes the trends of a run (`None` when there are none, and `why_none`
/// why) and writes the `cluster_trends` table (empty without trends): its
/// rows and the manifest's summary.
pub(crate) async fn write(
    trends: Option<Trends>,
    why_none: Option<String>,
    cfg: &PipelineConfig,
    tables: &mut BTreeMap<String, crate::report::TableInfo>,
) -> Result<(Vec<RecordBatch>, TrendSummary)> {
    let (rows, mut summary) = match trends {
        Some(trends) => trends.finish(cfg).await?,
        None => compare(cfg, Vec::new(), Vec::new(), None).await?,
    };
    if let Some(why) = why_none {
        summary.recent_from = why;
    }
    crate::report::write_batches(
        cluster_trends_schema(),
        &rows,
        &cfg.out,
        "cluster_trends",
        tables,
    )?;
    Ok((rows, summary))
}

/// The `cluster_trends` rows of the two periods' lists (in a session of its
/// own), and the summary; with no lists (no trends), an empty table.
pub async fn compare(
    cfg: &PipelineConfig,
    before: Vec<RecordBatch>,
    recent: Vec<RecordBatch>,
    cut: Option<i64>,
) -> Result<(Vec<RecordBatch>, TrendSummary)> {
    let evidence = crate::stages::rank::evidence(cfg);
    let ctx = &crate::session::session(cfg)?;
    crate::udf::register_all(ctx);
    for (name, rows) in [("trend_before", before), ("trend_recent", recent)] {
        crate::session::replace_table(
            ctx,
            name,
            Arc::new(MemTable::try_new(
                period_schema(),
                vec![conform(period_schema(), rows)?],
            )?),
        )?;
    }
    let mut seconds = BTreeMap::new();
    let changes =
        register_query(ctx, "trend_changes", queries::TREND_CHANGES, &mut seconds).await?;
    let changes_tested = changes
        .iter()
        .map(|b| b.column_by_name("p_value").expect("p_value"))
        .map(|p| (p.len() - p.null_count()) as u64)
        .sum();
    register_query(ctx, "tested", queries::TESTED_TRENDS, &mut seconds).await?;
    register_query(ctx, "fdr", queries::FDR, &mut seconds).await?;
    let trends = register_query(
        ctx,
        "cluster_trends",
        &queries::render(queries::CLUSTER_TRENDS, &evidence),
        &mut seconds,
    )
    .await?;
    let mut statuses = BTreeMap::new();
    for b in &trends {
        let status = crate::report::utf8(b.column_by_name("status").expect("status"));
        for i in 0..b.num_rows() {
            *statuses.entry(status.value(i).to_string()).or_insert(0) += 1;
        }
    }
    let summary = TrendSummary {
        recent_from: cut.map(crate::time::format_utc).unwrap_or_default(),
        changes_tested,
        statuses,
    };
    Ok((conform(cluster_trends_schema(), trends)?, summary))
}

/// Schema of the `cluster_trends` table (`queries/cluster_trends.sql`).
pub fn cluster_trends_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("rank", DataType::Int64, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("pattern_id", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("window_s", DataType::Int64, false),
    ];
    for period in ["before", "recent"] {
        for (name, t) in [
            ("n_antecedent", DataType::Int64),
            ("n_support", DataType::Int64),
            ("customers", DataType::Int64),
            ("confidence", DataType::Float64),
            ("rate", DataType::Float64),
            ("lift", DataType::Float64),
            ("q_value", DataType::Float64),
            ("significant", DataType::Boolean),
        ] {
            fields.push(Field::new(format!("{period}_{name}"), t, true));
        }
    }
    for name in [
        "rate_change",
        "confidence_change",
        "change_p_value",
        "change_q_value",
    ] {
        fields.push(Field::new(name, DataType::Float64, true));
    }
    Arc::new(Schema::new(fields))
}

/// One line in plain words per pattern that changed (every status but
/// stable), in the table's order: new and growing first. The share followed
/// is the rate (of the counted triggers), the figure the change was tested
/// on.
pub fn lines(batches: &[RecordBatch]) -> Vec<String> {
    let mut lines = Vec::new();
    for b in batches {
        let text = |name: &str| crate::report::utf8(b.column_by_name(name).expect("a column"));
        let float = |name: &str| {
            b.column_by_name(name)
                .expect("a column")
                .as_primitive::<Float64Type>()
                .clone()
        };
        let (kind, id, status) = (text("kind"), text("pattern_id"), text("status"));
        let window = b
            .column_by_name("window_s")
            .expect("window_s")
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .clone();
        let (cb, cr) = (float("before_rate"), float("recent_rate"));
        let (lb, lr) = (float("before_lift"), float("recent_lift"));
        let share = |c: &datafusion::arrow::array::Float64Array,
                     l: &datafusion::arrow::array::Float64Array,
                     i: usize| {
            match (c.is_valid(i), l.is_valid(i)) {
                (true, true) => format!("{:.0}% (lift {:.1})", 100.0 * c.value(i), l.value(i)),
                (true, false) => format!("{:.0}%", 100.0 * c.value(i)),
                _ => "none".to_string(),
            }
        };
        for i in 0..b.num_rows() {
            if status.value(i) == "stable" {
                continue;
            }
            let within = if kind.value(i) == "cluster" {
                format!(
                    " within {}",
                    crate::time::format_duration_us(window.value(i).saturating_mul(1_000_000))
                )
            } else {
                String::new()
            };
            lines.push(format!(
                "{} {} {}: followed{within} {} recently, {} before",
                status.value(i),
                kind.value(i),
                id.value(i),
                share(&cr, &lr, i),
                share(&cb, &lb, i),
            ));
        }
    }
    lines
}

/// `batches` of a query in `schema`, the same columns in order (a planned
/// query's nullability and the batches' can differ).
fn conform(schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    batches
        .into_iter()
        .map(|b| {
            let columns = schema
                .fields()
                .iter()
                .zip(b.columns())
                .map(|(f, c)| cast(c, f.data_type()))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(RecordBatch::try_new(schema.clone(), columns)?)
        })
        .collect()
}

/// Schema of `period_clusters.sql` and `period_sequences.sql`.
pub(crate) fn period_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("kind", DataType::Utf8, false),
        Field::new("pattern_id", DataType::Utf8, true),
        Field::new("window_s", DataType::Int64, true),
        Field::new("n_antecedent", DataType::Int64, true),
        Field::new("n_support", DataType::Int64, true),
        Field::new("customers", DataType::Int64, true),
        Field::new("confidence", DataType::Float64, true),
        Field::new("observed", DataType::Float64, true),
        Field::new("triggers", DataType::Float64, true),
        Field::new("variance", DataType::Float64, true),
        Field::new("expected", DataType::Float64, true),
        Field::new("lift", DataType::Float64, true),
        Field::new("q_value", DataType::Float64, true),
        Field::new("significant", DataType::Boolean, true),
    ]))
}
