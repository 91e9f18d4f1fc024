-- cluster_trends: the clusters and sequences of either period, each with
-- its status: new, growing, fading, gone or stable.
--
-- Input:  trend_changes, fdr (over tested_trends)
-- Output: rank, kind, pattern_id, status, window_s, before_* and recent_*
--         (n_antecedent, n_support, customers, confidence, rate, lift,
--         q_value, significant), rate_change (recent rate / before rate),
--         confidence_change (recent - before), change_p_value,
--         change_q_value
--
-- Parameters: ${alpha}.
--
-- Listed: the patterns significant in at least one period (see
-- period_clusters.sql), each at one window: the one where it is most
-- evident (smallest q-value in either period; ties to the shorter window).
-- A change is significant when its q-value (Benjamini-Hochberg over every
-- pattern and window tested, clusters and sequences apart) is at most alpha.
-- Status:
--   new      significant recently, not before, and either absent before (no
--            counted trigger) or with a significant rise of its rate;
--   gone     significant before, not recently, and either absent recently
--            or with a significant fall;
--   growing  significant in both, with a significant rise;
--   fading   significant in both, with a significant fall;
--   stable   significant in at least one period, no significant change.
-- Rank: new, growing, fading, gone, stable; then by the change's q-value.
WITH changes AS (
    SELECT c.*, f.q_value AS change_q_value,
           COALESCE(f.q_value <= ${alpha}, false) AS changed,
           COALESCE(c.recent_rate, 0.0) > COALESCE(c.before_rate, 0.0) AS rose
    FROM trend_changes c
    LEFT JOIN fdr f ON f.kind = c.kind AND f.key = c.key
    WHERE c.before_significant OR c.recent_significant
),
classified AS (
    SELECT *,
           CASE
               WHEN recent_significant AND NOT before_significant
                    AND (COALESCE(before_triggers, 0.0) = 0.0 OR (changed AND rose))
                   THEN 'new'
               WHEN before_significant AND NOT recent_significant
                    AND (COALESCE(recent_triggers, 0.0) = 0.0 OR (changed AND NOT rose))
                   THEN 'gone'
               WHEN before_significant AND recent_significant AND changed AND rose
                   THEN 'growing'
               WHEN before_significant AND recent_significant AND changed AND NOT rose
                   THEN 'fading'
               ELSE 'stable'
           END AS status,
           ROW_NUMBER() OVER (
               PARTITION BY kind, pattern_id
               ORDER BY LEAST(COALESCE(before_q_value, 1.0), COALESCE(recent_q_value, 1.0)),
                        window_s
           ) AS window_pos
    FROM changes
)
SELECT
    CAST(ROW_NUMBER() OVER (
        ORDER BY CASE status WHEN 'new' THEN 0 WHEN 'growing' THEN 1
                             WHEN 'fading' THEN 2 WHEN 'gone' THEN 3 ELSE 4 END,
                 change_q_value NULLS LAST, kind, pattern_id
    ) AS BIGINT) AS rank,
    kind, pattern_id, status, window_s,
    before_n_antecedent, before_n_support, before_customers, before_confidence,
    before_rate, before_lift, before_q_value, before_significant,
    recent_n_antecedent, recent_n_support, recent_customers, recent_confidence,
    recent_rate, recent_lift, recent_q_value, recent_significant,
    recent_rate / NULLIF(before_rate, 0.0) AS rate_change,
    recent_confidence - before_confidence AS confidence_change,
    p_value AS change_p_value,
    change_q_value
FROM classified
WHERE window_pos = 1
ORDER BY rank
