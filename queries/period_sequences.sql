-- period_sequences: one period's sequences for the trends, as
-- period_clusters.sql lists its pairs. The period's sequences are mined
-- along the steps of both periods' clusters, so that both count the same
-- patterns; a pattern not seen in a period has no row there.
--
-- Input:  sequence_candidates, fdr (the period's tests, as the run's)
-- Output: the columns of period_clusters.sql; kind 'sequence', pattern_id
--         the sequences' sequence_id, window_s the largest gap between
--         steps, n_antecedent the start contacts of its prefix, triggers its
--         counted occurrences.
--
-- Parameters: ${alpha}, ${min_support}, ${min_customers}, ${max_gap_s}.
SELECT
    'sequence' AS kind,
    s.key AS pattern_id,
    CAST(${max_gap_s} AS BIGINT) AS window_s,
    CAST(s.n_prefix AS BIGINT) AS n_antecedent,
    CAST(s.n_support AS BIGINT) AS n_support,
    CAST(s.customers AS BIGINT) AS customers,
    s.confidence,
    CAST(s.n_counted AS DOUBLE) AS observed,
    CAST(s.prefix_counted AS DOUBLE) AS triggers,
    CAST(s.sum_sq AS DOUBLE) AS variance,
    s.expected,
    s.lift,
    f.q_value,
    COALESCE(f.q_value <= ${alpha} AND s.n_support >= ${min_support}
             AND s.customers >= ${min_customers}, false) AS significant
FROM sequence_candidates s
JOIN fdr f ON f.kind = 'sequence' AND f.key = s.key
