-- clusters: the A -> B clusters worth acting on, ranked.
--
-- Input:  cluster_candidates (see cluster_candidates.sql), fdr (see fdr.sql)
-- Output: rank, cluster_id, antecedent, consequent, window_s, n_antecedent,
--         n_support, confidence, baseline, lift, median_lag_s, p90_lag_s,
--         customers, score, avoidable_contacts, value, p_value, q_value
--
-- Parameters: ${alpha}, ${rank_order}.
--
-- 1. Significance: only candidates with q_value <= alpha.
-- 2. Direction: when B usually follows A, B -> A shows up as a weaker echo.
--    B -> A is dropped when A -> B is also significant at the same window
--    and B -> A's score is less than half of A -> B's.
-- 3. Best window: a pair is reported once, at the window where its score
--    (follow-ups beyond chance) is highest; ties go to the shorter window.
-- 4. Rank: by ${rank_order} (value by default), then by name.
WITH sig AS (
    SELECT c.*, f.q_value
    FROM cluster_candidates c
    JOIN fdr f ON f.kind = 'cluster' AND f.key = c.key
    WHERE f.q_value <= ${alpha}
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
)
SELECT
    CAST(ROW_NUMBER() OVER (ORDER BY ${rank_order}, antecedent, consequent) AS BIGINT) AS rank,
    key AS cluster_id, antecedent, consequent, window_s, n_antecedent, n_support,
    confidence, baseline, lift, median_lag_s, p90_lag_s, customers, score,
    avoidable_contacts, value, p_value, q_value
FROM best
WHERE window_pos = 1
ORDER BY rank
