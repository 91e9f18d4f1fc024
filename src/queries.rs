//! The SQL stages, compiled in from `queries/`.
//!
//! Each query is stored with `${name}` placeholders that [`render`] fills in
//! with numbers (or, for `${rank_order}`, a fixed ORDER BY key) before the
//! query is planned.

macro_rules! query {
    ($file:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/queries/", $file))
    };
}

/// contacts → repeat_groups (per bucket).
pub const REPEAT_GROUPS: &str = query!("repeat_groups.sql");
/// repeat_groups → repeat_counts (per bucket).
pub const REPEAT_COUNTS: &str = query!("repeat_counts.sql");
/// repeat_groups → reason_days (per bucket), for the surge test.
pub const REASON_DAYS: &str = query!("reason_days.sql");
/// contacts, reason_codes → reason_precedents (per bucket), for the surges.
pub const REASON_PRECEDENTS: &str = query!("reason_precedents.sql");
/// contacts, channel_codes, reason_codes → failure_counts (per bucket).
pub const FAILURE_COUNTS: &str = query!("failure_counts.sql");
/// failure_counts, self_service_channels → failure_demand.
pub const FAILURE_DEMAND: &str = query!("failure_demand.sql");
/// repeat_counts → repeat_summary.
pub const REPEAT_SUMMARY: &str = query!("repeat_summary.sql");
/// pair_counts, pair_expectations → cluster_candidates.
pub const CLUSTER_CANDIDATES: &str = query!("cluster_candidates.sql");
/// sequence_counts → pattern_totals.
pub const PATTERN_TOTALS: &str = query!("pattern_totals.sql");
/// pattern_totals → sequence_candidates.
pub const SEQUENCE_CANDIDATES: &str = query!("sequence_candidates.sql");
/// cluster_candidates, fdr → sequence_steps.
pub const SEQUENCE_STEPS: &str = query!("sequence_steps.sql");
/// sequence_candidates, fdr, sequence_steps → sequence_chains.
pub const SEQUENCE_CHAINS: &str = query!("sequence_chains.sql");
/// sequence_chains, sequence_occurrences → sequences.
pub const SEQUENCES: &str = query!("sequences.sql");
/// cluster_candidates → tested (before the sequences are mined).
pub const TESTED_CLUSTERS: &str = query!("tested_clusters.sql");
/// cluster_candidates, sequence_candidates → tested.
pub const TESTED: &str = query!("tested.sql");
/// contacts → what the per-customer caps leave out (per bucket).
pub const CAPS: &str = query!("caps.sql");
/// tested → fdr (Benjamini–Hochberg q-values).
pub const FDR: &str = query!("fdr.sql");
/// cluster_candidates, fdr, pair_counts → clusters.
pub const CLUSTERS: &str = query!("clusters.sql");
/// clusters, followups, sequences, sequence_occurrences → cluster_members.
pub const CLUSTER_MEMBERS: &str = query!("cluster_members.sql");
/// clusters → prompts.
pub const PROMPTS: &str = query!("prompts.sql");
/// pair_expectations, pair_counts, cluster_candidates, fdr → period_clusters
/// (the trends, per period).
pub const PERIOD_CLUSTERS: &str = query!("period_clusters.sql");
/// sequence_candidates, fdr → period_sequences (the trends, per period).
pub const PERIOD_SEQUENCES: &str = query!("period_sequences.sql");
/// trend_before, trend_recent → trend_changes.
pub const TREND_CHANGES: &str = query!("trend_changes.sql");
/// trend_changes → tested (the trends' changes).
pub const TESTED_TRENDS: &str = query!("tested_trends.sql");
/// trend_changes, fdr → cluster_trends.
pub const CLUSTER_TRENDS: &str = query!("cluster_trends.sql");
/// clusters, contacts → outreach_triggers.
pub const OUTREACH_TRIGGERS: &str = query!("outreach_triggers.sql");
/// clusters, outreach_cutoffs, outreach_triggers, followups → outreach_candidates.
pub const OUTREACH_CANDIDATES: &str = query!("outreach_candidates.sql");

// report.html's queries, over a written run's tables (crate::html)
/// clusters, cluster_members → each shown cluster's members by lag bin.
pub const REPORT_LAGS: &str = query!("report_lags.sql");
/// clusters, sequences, cluster_members → a few members of each shown.
pub const REPORT_EXAMPLES: &str = query!("report_examples.sql");
/// surges, reason_days → the days around each drawn surge.
pub const REPORT_SURGE_DAYS: &str = query!("report_surge_days.sql");
/// outreach → the customers due by expected reason and by day.
pub const REPORT_OUTREACH_DUE: &str = query!("report_outreach_due.sql");

/// Every query by name, for listing and for the planning test.
pub const ALL: &[(&str, &str)] = &[
    ("repeat_groups", REPEAT_GROUPS),
    ("repeat_counts", REPEAT_COUNTS),
    ("reason_days", REASON_DAYS),
    ("reason_precedents", REASON_PRECEDENTS),
    ("repeat_summary", REPEAT_SUMMARY),
    ("failure_counts", FAILURE_COUNTS),
    ("failure_demand", FAILURE_DEMAND),
    ("caps", CAPS),
    ("cluster_candidates", CLUSTER_CANDIDATES),
    ("tested_clusters", TESTED_CLUSTERS),
    ("pattern_totals", PATTERN_TOTALS),
    ("sequence_candidates", SEQUENCE_CANDIDATES),
    ("fdr", FDR),
    ("clusters", CLUSTERS),
    ("sequence_steps", SEQUENCE_STEPS),
    ("sequence_chains", SEQUENCE_CHAINS),
    ("sequences", SEQUENCES),
    ("cluster_members", CLUSTER_MEMBERS),
    ("prompts", PROMPTS),
    ("outreach_triggers", OUTREACH_TRIGGERS),
    ("outreach_candidates", OUTREACH_CANDIDATES),
    ("period_clusters", PERIOD_CLUSTERS),
    ("period_sequences", PERIOD_SEQUENCES),
    ("trend_changes", TREND_CHANGES),
    ("tested_trends", TESTED_TRENDS),
    ("cluster_trends", CLUSTER_TRENDS),
];

/// Replaces each `${key}` in `sql` with its value.
pub fn render(sql: &str, params: &[(&str, String)]) -> String {
    let mut out = sql.to_string();
    for (k, v) in params {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, SchemaRef};
    use datafusion::catalog::MemTable;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::ingest::contacts_in_schema;
    use crate::timeline::{
        contacts_schema, followups_schema, pair_counts_schema, sequence_totals_schema,
        sequences_schema,
    };

    fn empty(ctx: &SessionContext, name: &str, schema: SchemaRef) {
        ctx.register_table(
            name,
            Arc::new(MemTable::try_new(schema, vec![vec![]]).unwrap()),
        )
        .unwrap();
    }

    /// Every query plans against the schemas the pipeline registers, in the
    /// order the pipeline runs them.
    #[tokio::test]
    async fn every_query_plans() {
        let ctx = SessionContext::new();
        crate::udf::register_all(&ctx);
        // the sorted contacts, with the channel and reason codes
        let input = crate::codes::with_code_fields(&contacts_in_schema(&DataType::Int64));
        empty(&ctx, "contacts", contacts_schema(&input));
        crate::session::register_dictionaries(&ctx, &Default::default()).unwrap();
        empty(&ctx, "followups", followups_schema(&input));
        empty(&ctx, "pair_counts", pair_counts_schema());
        empty(
            &ctx,
            "pair_expectations",
            crate::significance::pair_expectations_schema(),
        );
        empty(&ctx, "sequence_occurrences", sequences_schema(&input));
        empty(&ctx, "sequence_counts", sequence_totals_schema());
        empty(&ctx, "outreach_cutoffs", crate::outreach::cutoffs_schema());
        empty(
            &ctx,
            "self_service_channels",
            crate::stages::reports::self_service_schema(),
        );
        let params = [
            ("windows", "(86400.0), (604800.0)".to_string()),
            ("min_support", "30".into()),
            ("min_lift", "1.2".into()),
            ("min_customers", "20".into()),
            ("effectiveness", "0.16".into()),
            ("alpha", "0.05".into()),
            ("rank_order", crate::config::RankBy::Value.sql().into()),
            ("max_prompts", "3".into()),
            ("as_of_us", "0".into()),
            ("horizon_us", "0".into()),
            ("max_customer_contacts", "10000".into()),
            ("max_gap_s", "604800.0".into()),
            ("pair_cap", "10000".into()),
            ("sequence_cap", "1000".into()),
        ];
        let tested = TESTED;
        for (name, sql) in ALL {
            let sql = render(sql, &params);
            assert!(!sql.contains("${"), "{name}: unfilled placeholder");
            let df = ctx
                .sql(&sql)
                .await
                .unwrap_or_else(|e| panic!("{name} does not plan: {e}"));
            empty(&ctx, name, df.schema().inner().clone());
            if *name == "sequence_candidates" {
                let df = ctx.sql(tested).await.unwrap();
                empty(&ctx, "tested", df.schema().inner().clone());
            }
            // the trends read both periods' lists, and test their changes
            if *name == "period_sequences" {
                for period in ["trend_before", "trend_recent"] {
                    empty(&ctx, period, crate::stages::trends::period_schema());
                }
            }
            if *name == "tested_trends" {
                ctx.deregister_table("tested").unwrap();
                empty(&ctx, "tested", df.schema().inner().clone());
                ctx.deregister_table("fdr").unwrap();
                let df = ctx.sql(FDR).await.unwrap();
                empty(&ctx, "fdr", df.schema().inner().clone());
            }
        }
    }
}
