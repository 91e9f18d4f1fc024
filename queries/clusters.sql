-- clusters: the A -> B clusters worth acting on, ranked.
--
-- Input:  cluster_candidates (see cluster_candidates.sql), fdr (see fdr.sql),
--         pair_counts (for the lags of the clusters kept)
-- Output: rank, cluster_id, antecedent, consequent, window_s, n_antecedent,
--         n_support, confidence, baseline, lift, median_lag_s, p90_lag_s,
--         customers, n_counted, expected, score, avoidable_contacts, value,
--         p_value, q_value
--
-- Parameters: ${alpha}, ${min_support}, ${min_customers}, ${rank_order}.
--
-- 1. Evidence: only candidates with q_value <= alpha, at least min_support
--    follow-ups and at least min_customers distinct customers.
-- 2. Direction: when B usually follows A, B -> A shows up as a weaker echo.
--    B -> A is dropped when A -> B is also kept at the same window and
--    B -> A's score is less than half of A -> B's.
-- 3. Best window: a pair is reported once, at the window where its score
--    (follow-ups beyond chance) is highest; ties go to the shorter window.
-- 4. Lags: median and 90th percentile of the lags to the first B within the
--    window, nearest rank (the ceil(q * n)-th smallest).
-- 5. Rank: by ${rank_order} (value by default), then by name.
-- 6. Id: the pattern, `A -> B`, the same whatever window it scores best at
--    (a pair is reported once), so that it holds from night to night.
WITH sig AS (
    SELECT c.*, f.q_value
    FROM cluster_candidates c
    JOIN fdr f ON f.kind = 'cluster' AND f.key = c.key
    WHERE f.q_value <= ${alpha}
      AND c.n_support >= ${min_support}
      AND c.customers >= ${min_customers}
),
echo AS (
    SELECT s.key
    FROM sig s
    JOIN sig r
      ON r.window_s = s.window_s AND r.antecedent = s.consequent
     AND r.consequent = s.antecedent
    WHERE s.score < 0.5 * r.score
),
kept AS (
    SELECT * FROM sig WHERE key NOT IN (SELECT key FROM echo)
),
best AS (
    SELECT *,
           ROW_NUMBER() OVER (
               PARTITION BY antecedent, consequent ORDER BY score DESC, window_s
           ) AS window_pos
    FROM kept
),
chosen AS (
    SELECT * FROM best WHERE window_pos = 1
),
lags AS (
    SELECT c.key, array_sort(flatten(array_agg(p.lags))) AS lags
    FROM chosen c
    JOIN pair_counts p
      ON CAST(p.window_s AS BIGINT) = c.window_s AND p.antecedent = c.antecedent
     AND p.consequent = c.consequent
    GROUP BY c.key
)
SELECT
    CAST(ROW_NUMBER() OVER (ORDER BY ${rank_order}, c.antecedent, c.consequent) AS BIGINT) AS rank,
    c.antecedent || ' -> ' || c.consequent AS cluster_id, c.antecedent, c.consequent, c.window_s, c.n_antecedent, c.n_support,
    c.confidence, c.baseline, c.lift,
    array_element(l.lags, CAST((c.n_support + 1) / 2 AS BIGINT)) AS median_lag_s,
    array_element(l.lags, CAST((9 * c.n_support + 9) / 10 AS BIGINT)) AS p90_lag_s,
    c.customers, c.n_counted, c.expected, c.score,
    c.avoidable_contacts, c.value, c.p_value, c.q_value
FROM chosen c
JOIN lags l ON l.key = c.key
ORDER BY rank
