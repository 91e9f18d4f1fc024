//! Stage 3 — the ranking: the significance tests and the reported findings,
//! in SQL (`queries/`).
//!
//! Input: the session's `pair_counts` and `pair_expectations` (the first
//! passes' counts and what chance gives each pair) for [`rank_clusters`];
//! then `sequence_counts` (the second passes' pattern counts) for
//! [`rank_sequences`]. Output: the tables `cluster_candidates`, `tested`,
//! `fdr`, `clusters` and `sequence_steps`, then `pattern_totals`,
//! `sequence_candidates`, `tested` and `fdr` again with both kinds, and
//! `sequence_chains`, each registered under its name; the clusters
//! ([`Ranked`]) and the steps the second passes mine sequences along.
//! The null check ranks its permuted logs with the same functions.

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;

use crate::config::PipelineConfig;
use crate::error::Result;
use crate::queries;
use crate::report::{self, ClusterRow};
use crate::session::{Seconds, register_query};

/// The clusters reported, and the steps a sequence may take.
pub(crate) struct Ranked {
    /// The `clusters` table's rows, best first.
    pub batches: Vec<RecordBatch>,
    /// The same clusters, read.
    pub rows: Vec<ClusterRow>,
    /// The (antecedent, consequent) pairs of the clusters kept at any window.
    pub steps: Vec<(String, String)>,
}

impl Ranked {
    /// The reported (antecedent, consequent) pairs, distinct and in order:
    /// the follow-up pass lists the follow-ups of these.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.rows
            .iter()
            .map(|c| (c.antecedent.clone(), c.consequent.clone()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// The longest p90 lag of a reported cluster, seconds: how far back a
    /// trigger can still be acted on.
    pub fn horizon_s(&self) -> f64 {
        self.rows
            .iter()
            .map(|c| c.p90_lag_s)
            .fold(0.0_f64, f64::max)
    }
}

/// Ranks the clusters of the run's session: [`rank_clusters`], read.
pub(crate) async fn clusters(
    ctx: &SessionContext,
    cfg: &PipelineConfig,
    seconds: &mut Seconds,
) -> Result<Ranked> {
    crate::udf::register_all(ctx);
    let (batches, steps) = rank_clusters(ctx, cfg, seconds).await?;
    Ok(Ranked {
        rows: report::cluster_rows(&batches),
        batches,
        steps,
    })
}

/// The clusters' ranking queries over the `pair_counts` and
/// `pair_expectations` tables of `ctx` (recur's functions registered), each
/// registered under its name (`tested` and `fdr` with the clusters only).
/// Returns the clusters and the steps sequences may take: the (antecedent,
/// consequent) pairs of the clusters kept at any window
/// (`queries/sequence_steps.sql`).
pub(crate) async fn rank_clusters(
    ctx: &SessionContext,
    cfg: &PipelineConfig,
    stage_seconds: &mut Seconds,
) -> Result<(Vec<RecordBatch>, Vec<(String, String)>)> {
    let windows = cfg
        .cluster_windows_us
        .iter()
        .map(|w| format!("({})", *w as f64 / 1e6))
        .collect::<Vec<_>>()
        .join(", ");
    let candidates = queries::render(
        queries::CLUSTER_CANDIDATES,
        &[
            ("windows", windows),
            ("min_lift", format!("{:?}", cfg.min_lift)),
            ("effectiveness", format!("{:?}", cfg.effectiveness)),
        ],
    );
    register_query(ctx, "cluster_candidates", &candidates, stage_seconds).await?;
    register_query(ctx, "tested", queries::TESTED_CLUSTERS, stage_seconds).await?;
    register_query(ctx, "fdr", queries::FDR, stage_seconds).await?;
    let evidence = evidence(cfg);
    let clusters = queries::render(queries::CLUSTERS, &evidence);
    let clusters = register_query(ctx, "clusters", &clusters, stage_seconds).await?;
    let steps = queries::render(queries::SEQUENCE_STEPS, &evidence);
    let steps = register_query(ctx, "sequence_steps", &steps, stage_seconds).await?;
    let steps = steps
        .iter()
        .flat_map(|b| {
            let (a, c) = (report::utf8(b.column(0)), report::utf8(b.column(1)));
            (0..b.num_rows())
                .map(|i| (a.value(i).to_string(), c.value(i).to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    Ok((clusters, steps))
}

/// Ranks clusters counted beside the run's own (a permuted log, a trends
/// period) in a session of their own, with `pair_counts` and their
/// `expectations` as its tables: the session (for the sequences' ranking
/// after), the clusters and the steps sequences may take.
pub(crate) async fn rank_apart(
    cfg: &PipelineConfig,
    pair_counts: Vec<RecordBatch>,
    expectations: RecordBatch,
) -> Result<(SessionContext, Vec<RecordBatch>, Vec<(String, String)>)> {
    let ctx = crate::session::session(cfg)?;
    crate::udf::register_all(&ctx);
    let schema = pair_counts
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(crate::timeline::pair_counts_schema);
    crate::session::register_pair_tables(
        &ctx,
        std::sync::Arc::new(datafusion::catalog::MemTable::try_new(
            schema,
            vec![pair_counts],
        )?),
        expectations,
    )?;
    let mut seconds = std::collections::BTreeMap::new();
    let (clusters, steps) = rank_clusters(&ctx, cfg, &mut seconds).await?;
    Ok((ctx, clusters, steps))
}

/// The sequences' ranking queries, over `sequence_counts` and the tables of
/// [`rank_clusters`]: `pattern_totals`, `sequence_candidates`, then `tested`
/// and `fdr` again with both kinds (Benjamini–Hochberg runs per kind, so the
/// clusters' q-values do not change) and `sequence_chains`, which it
/// returns.
pub(crate) async fn rank_sequences(
    ctx: &SessionContext,
    cfg: &PipelineConfig,
    stage_seconds: &mut Seconds,
) -> Result<Vec<RecordBatch>> {
    let candidates = queries::render(
        queries::SEQUENCE_CANDIDATES,
        &[
            ("min_lift", format!("{:?}", cfg.min_lift)),
            ("effectiveness", format!("{:?}", cfg.effectiveness)),
            ("max_gap_s", format!("{:?}", cfg.max_gap_us as f64 / 1e6)),
        ],
    );
    register_query(
        ctx,
        "pattern_totals",
        queries::PATTERN_TOTALS,
        stage_seconds,
    )
    .await?;
    register_query(ctx, "sequence_candidates", &candidates, stage_seconds).await?;
    register_query(ctx, "tested", queries::TESTED, stage_seconds).await?;
    register_query(ctx, "fdr", queries::FDR, stage_seconds).await?;
    let chains = queries::render(queries::SEQUENCE_CHAINS, &evidence(cfg));
    register_query(ctx, "sequence_chains", &chains, stage_seconds).await
}

/// The parameters of what a reported cluster or sequence needs.
pub(crate) fn evidence(cfg: &PipelineConfig) -> [(&'static str, String); 4] {
    [
        ("alpha", format!("{:?}", cfg.alpha)),
        ("min_support", cfg.min_support.to_string()),
        ("min_customers", cfg.min_customers.to_string()),
        ("rank_order", cfg.rank_by.sql().to_string()),
    ]
}

/// Ranks the sequences (over `sequence_counts`, registered) and registers
/// the `sequences` table with their step lags (over
/// `sequence_occurrences`); returns its rows.
pub(crate) async fn sequences(
    ctx: &SessionContext,
    cfg: &PipelineConfig,
    seconds: &mut Seconds,
) -> Result<Vec<RecordBatch>> {
    rank_sequences(ctx, cfg, seconds).await?;
    let sql = queries::render(
        queries::SEQUENCES,
        &[
            ("alpha", format!("{:?}", cfg.alpha)),
            ("rank_order", cfg.rank_by.sql().to_string()),
        ],
    );
    register_query(ctx, "sequences", &sql, seconds).await
}
