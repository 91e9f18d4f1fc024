-- period_clusters: one period's A -> B pairs for the cluster trends, each
-- with what the period counted, what chance gave it, and whether it is a
-- cluster in that period. Run in a session of the period's own (see
-- src/stages/trends.rs), whose triggers are the period's contacts only.
--
-- Input:  pair_expectations (every pair seen in either period, at every
--                            window: expected, with nothing observed when
--                            the pair was not seen in this period),
--         pair_counts       (the per-reason totals: n_antecedent, the
--                            A-contacts of the period whose window W has
--                            ended within the data),
--         cluster_candidates, fdr (the period's tests, as the run's)
-- Output: kind ('cluster'), pattern_id (A -> B, the clusters' cluster_id),
--         window_s, n_antecedent, n_support, customers, confidence,
--         observed (counted triggers followed), triggers (counted triggers),
--         variance (Σ over customers of their observed squared), expected,
--         lift, q_value, significant
--
-- Parameters: ${alpha}, ${min_support}, ${min_customers} (as clusters.sql).
--
-- significant: a cluster in this period as clusters.sql keeps one (q_value
-- <= alpha, at least min_support follow-ups and min_customers customers),
-- before clusters.sql's choice of one window per pair.
WITH antecedents AS (
    SELECT window_s, antecedent, SUM(n_support) AS n_antecedent
    FROM pair_counts
    WHERE consequent IS NULL
    GROUP BY window_s, antecedent
),
tested AS (
    SELECT c.*, f.q_value
    FROM cluster_candidates c
    JOIN fdr f ON f.kind = 'cluster' AND f.key = c.key
)
SELECT
    'cluster' AS kind,
    e.antecedent || ' -> ' || e.consequent AS pattern_id,
    CAST(e.window_s AS BIGINT) AS window_s,
    CAST(COALESCE(a.n_antecedent, 0) AS BIGINT) AS n_antecedent,
    CAST(COALESCE(t.n_support, 0) AS BIGINT) AS n_support,
    CAST(COALESCE(t.customers, 0) AS BIGINT) AS customers,
    CASE WHEN a.n_antecedent > 0
         THEN CAST(COALESCE(t.n_support, 0) AS DOUBLE) / a.n_antecedent
    END AS confidence,
    CAST(COALESCE(t.n_counted, 0) AS DOUBLE) AS observed,
    CAST(e.counted_triggers AS DOUBLE) AS triggers,
    CAST(COALESCE(t.sum_sq, 0) AS DOUBLE) AS variance,
    e.expected,
    CASE WHEN e.expected > 0 THEN COALESCE(t.n_counted, 0) / e.expected END AS lift,
    t.q_value,
    COALESCE(t.q_value <= ${alpha} AND t.n_support >= ${min_support}
             AND t.customers >= ${min_customers}, false) AS significant
FROM pair_expectations e
LEFT JOIN antecedents a ON a.antecedent = e.antecedent AND a.window_s = e.window_s
LEFT JOIN tested t
  ON t.window_s = CAST(e.window_s AS BIGINT) AND t.antecedent = e.antecedent
 AND t.consequent = e.consequent
