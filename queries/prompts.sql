-- prompts: "did you know" lines for agents: for each reason, the follow-ups
-- that usually come next, from the reported clusters.
--
-- Input:  clusters
-- Output: reason, rank, follow_up, share, window_s, median_lag_s, text
--
-- share is the cluster's confidence: the share of contacts about the reason
-- followed, within the window, by a contact about follow_up.
WITH c AS (
    SELECT antecedent, consequent, confidence, window_s, median_lag_s,
           ROW_NUMBER() OVER (
               PARTITION BY antecedent ORDER BY confidence DESC, consequent
           ) AS pos
    FROM clusters
)
SELECT
    antecedent AS reason,
    CAST(pos AS BIGINT) AS rank,
    consequent AS follow_up,
    confidence AS share,
    window_s,
    median_lag_s,
    CAST(CAST(ROUND(confidence * 100) AS BIGINT) AS VARCHAR) || '% of contacts about '
        || antecedent || ' are followed within '
        || CASE WHEN window_s % 86400 = 0 AND window_s >= 172800
                THEN CAST(window_s / 86400 AS VARCHAR) || ' days'
                WHEN window_s = 3600 THEN '1 hour'
                ELSE CAST(window_s / 3600 AS VARCHAR) || ' hours' END
        || ' by a contact about ' || consequent || ', typically '
        || CASE WHEN median_lag_s < 5400
                THEN 'less than 2 hours'
                WHEN median_lag_s < 172800
                THEN CAST(CAST(ROUND(median_lag_s / 3600) AS BIGINT) AS VARCHAR) || ' hours'
                ELSE CAST(CAST(ROUND(median_lag_s / 86400) AS BIGINT) AS VARCHAR) || ' days'
           END
        || ' later' AS text
FROM c
WHERE pos <= ${max_prompts}
ORDER BY reason, rank
