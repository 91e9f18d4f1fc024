-- sequence_candidates: every pattern of 3 or 4 steps found on customers'
-- timelines, with its counts, what chance would give, value and p-value.
--
-- Input:  pattern_totals (pattern_totals.sql: one row per pattern of 1-4 items
--                         found by leftmost occurrence with max-gap and
--                         max-span: n_support start contacts, distinct
--                         customers, the follow-up cost of the last steps;
--                         n_counted = occurrences completing a counted prefix
--                         occurrence (each customer's first few of the
--                         prefix), sum_sq = Σ over customers of their
--                         n_counted squared, prefix_counted = the prefix's
--                         counted occurrences, expected = how many of them
--                         chance alone would have followed by the last item
--                         given each one's own followers within reach; see
--                         PatternSums::finish in src/timeline/sequences.rs)
-- Output: key, pattern, length, prefix, n_prefix, n_support, customers,
--         confidence, n_counted, expected, baseline, lift, score,
--         avoidable_contacts, value, p_value, prefix_counted, sum_sq (the
--         cluster trends compare periods with them), reason_1 .. reason_4 (step lags
--         are taken in sequences.sql, for the significant patterns only)
--
-- Parameters: ${min_lift}, ${effectiveness}, ${max_gap_s}.
--
-- n_support = start contacts from which the whole pattern occurs; n_prefix =
-- start contacts from which the pattern without its last step occurs;
-- confidence = n_support / n_prefix (the last step given the prefix).
-- baseline = expected / prefix_counted; lift = n_counted / expected;
-- score = n_counted - expected. p_value: the test of cluster_candidates.sql,
-- H0 "lift <= min_lift", with the variance of n_counted taken as Σ over
-- customers of their n_counted squared: a customer who completes the pattern
-- several times weighs as a clump (the customers' expected counts, small
-- beside their observed ones where a sequence is found, are left out).
WITH support AS (
    SELECT * FROM pattern_totals WHERE length >= 3
),
prefixes AS (
    SELECT pattern AS prefix, n_support AS n_prefix FROM pattern_totals
),
counted AS (
    SELECT s.*, p.n_prefix,
           CAST(s.n_support AS DOUBLE) / p.n_prefix AS confidence,
           s.expected / s.prefix_counted AS baseline,
           CAST(s.n_counted AS DOUBLE) - s.expected AS score
    FROM support s
    JOIN prefixes p ON p.prefix = s.prefix
)
SELECT
    pattern || ' @gap ' || CAST(CAST(${max_gap_s} AS BIGINT) AS VARCHAR) || 's' AS key,
    pattern, length, prefix, n_prefix, n_support, customers, confidence,
    n_counted, expected, baseline,
    n_counted / NULLIF(expected, 0.0) AS lift,
    score,
    ${effectiveness} * GREATEST(score, 0.0) AS avoidable_contacts,
    ${effectiveness} * GREATEST(score, 0.0) * followup_cost / n_support AS value,
    excess_p_value(n_counted, expected, sum_sq, ${min_lift}) AS p_value,
    prefix_counted, sum_sq,
    reason_1, reason_2, reason_3, reason_4
FROM counted
