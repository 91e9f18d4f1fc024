-- sequence_chains: the sequences that pass both tests, before ranking.
--
-- Input:  sequence_candidates, fdr, sequence_steps
-- Output: the sequence_candidates columns of the patterns kept, and q_value
--
-- Parameters: ${alpha}, ${min_support}, ${min_customers}.
--
-- A sequence is kept when
-- 1. its q_value <= alpha (the last step follows the prefix more often than
--    chance would, given the contacts within reach of each prefix), it has
--    at least min_support occurrences and min_customers customers, and
-- 2. every step in it is itself a cluster at some window (sequence_steps): a
--    sequence is a chain of real follow-ups. Without this rule any common
--    contact X before a real pair B -> C would give a "significant" X -> B -> C.
--    (The pass mines only along those steps; the rule is kept here so that
--    this query says what a sequence is on any input.)
--
-- recur lists the occurrences of the mined patterns in the same pass, and
-- sequences.sql takes the step lags of the patterns kept here.
WITH sig AS (
    SELECT s.*, f.q_value
    FROM sequence_candidates s
    JOIN fdr f ON f.kind = 'sequence' AND f.key = s.key
    WHERE f.q_value <= ${alpha}
      AND s.n_support >= ${min_support}
      AND s.customers >= ${min_customers}
)
SELECT s.*
FROM sig s
WHERE EXISTS (SELECT 1 FROM sequence_steps p
              WHERE p.antecedent = s.reason_1 AND p.consequent = s.reason_2)
  AND EXISTS (SELECT 1 FROM sequence_steps p
              WHERE p.antecedent = s.reason_2 AND p.consequent = s.reason_3)
  AND (s.length < 4 OR EXISTS (SELECT 1 FROM sequence_steps p
              WHERE p.antecedent = s.reason_3 AND p.consequent = s.reason_4))
