-- sequences: multi-step patterns worth acting on, ranked.
--
-- Input:  sequence_candidates, fdr, cluster_candidates
-- Output: rank, sequence_id, pattern (list of items), length, n_support,
--         customers, confidence, baseline, lift, median_lag_s (list, one per
--         step), score, avoidable_contacts, value, p_value, q_value
--
-- Parameters: ${alpha}, ${rank_order}.
--
-- A sequence is reported when
-- 1. its q_value <= alpha (the last step is likelier after the prefix than
--    after any contact), and
-- 2. every step in it is itself a significant A -> B cluster at some window: a
--    sequence is a chain of real follow-ups. Without this rule any common
--    contact X before a real pair B -> C would give a "significant" X -> B -> C.
WITH sig_pairs AS (
    SELECT DISTINCT c.antecedent, c.consequent
    FROM cluster_candidates c
    JOIN fdr f ON f.kind = 'cluster' AND f.key = c.key
    WHERE f.q_value <= ${alpha}
),
sig AS (
    SELECT s.*, f.q_value
    FROM sequence_candidates s
    JOIN fdr f ON f.kind = 'sequence' AND f.key = s.key
    WHERE f.q_value <= ${alpha}
),
chained AS (
    SELECT s.*
    FROM sig s
    WHERE EXISTS (SELECT 1 FROM sig_pairs p
                  WHERE p.antecedent = s.reason_1 AND p.consequent = s.reason_2)
      AND EXISTS (SELECT 1 FROM sig_pairs p
                  WHERE p.antecedent = s.reason_2 AND p.consequent = s.reason_3)
      AND (s.length < 4 OR EXISTS (SELECT 1 FROM sig_pairs p
                  WHERE p.antecedent = s.reason_3 AND p.consequent = s.reason_4))
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
    score, avoidable_contacts, value, p_value, q_value
FROM chained
ORDER BY rank
