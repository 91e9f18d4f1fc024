-- sequences: multi-step patterns worth acting on, ranked.
--
-- Input:  sequence_chains      (the significant, chained sequence candidates)
--         sequence_occurrences (one row per start contact and pattern of
--                               sequence_chains, with the step lags)
-- Output: rank, sequence_id, pattern (list of items), length, n_support,
--         customers, confidence, baseline, lift, median_lag_s (list, one per
--         step), n_counted, expected, score, avoidable_contacts, value,
--         p_value, q_value
--
-- Parameters: ${rank_order}.
WITH occ AS (
    SELECT o.pattern, o.lag_1_s, o.lag_2_s, o.lag_3_s, s.n_support
    FROM sequence_occurrences o
    JOIN sequence_chains s ON s.pattern = o.pattern
),
-- median step lags, nearest rank: the ceil(n / 2)-th smallest
lags AS (
    SELECT pattern,
           MAX(CASE WHEN rn1 = (n_support + 1) / 2 THEN lag_1_s END) AS median_lag_1_s,
           MAX(CASE WHEN rn2 = (n_support + 1) / 2 THEN lag_2_s END) AS median_lag_2_s,
           MAX(CASE WHEN rn3 = (n_support + 1) / 2 THEN lag_3_s END) AS median_lag_3_s
    FROM (
        SELECT pattern, n_support, lag_1_s, lag_2_s, lag_3_s,
               ROW_NUMBER() OVER (PARTITION BY pattern ORDER BY lag_1_s) AS rn1,
               ROW_NUMBER() OVER (PARTITION BY pattern ORDER BY lag_2_s) AS rn2,
               ROW_NUMBER() OVER (PARTITION BY pattern ORDER BY lag_3_s) AS rn3
        FROM occ
    ) ranked
    GROUP BY pattern
),
chained AS (
    SELECT s.*, l.median_lag_1_s, l.median_lag_2_s, l.median_lag_3_s
    FROM sequence_chains s
    JOIN lags l ON l.pattern = s.pattern
)
SELECT
    CAST(ROW_NUMBER() OVER (ORDER BY ${rank_order}, pattern) AS BIGINT) AS rank,
    key AS sequence_id,
    string_to_array(pattern, ' -> ') AS pattern,
    length, n_support, customers, confidence, baseline, lift,
    CASE WHEN length = 4
         THEN make_array(median_lag_1_s, median_lag_2_s, median_lag_3_s)
         ELSE make_array(median_lag_1_s, median_lag_2_s)
    END AS median_lag_s,
    n_counted, expected, score, avoidable_contacts, value, p_value, q_value
FROM chained
ORDER BY rank
