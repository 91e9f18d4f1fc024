-- sequence_candidates: every pattern of 3 or 4 steps found on customers'
-- timelines, with its counts, value and p-value.
--
-- Input:  pattern_totals (pattern_totals.sql: one row per pattern of 2-4 items
--                         found by leftmost occurrence with max-gap and
--                         max-span: n_support start contacts, distinct
--                         customers, the follow-up cost of the last steps)
--         pair_counts (the pass counts at max-gap too)
-- Output: key, pattern, length, prefix, n_prefix, n_support, customers,
--         confidence, baseline, lift, score, avoidable_contacts, value, p_value,
--         reason_1 .. reason_4 (step lags are taken in sequences.sql, for the
--         significant patterns only)
--
-- Parameters: ${min_support}, ${effectiveness}, ${max_gap_s}.
--
-- n_support = start contacts from which the whole pattern occurs; n_prefix =
-- start contacts from which the pattern without its last step occurs;
-- confidence = n_support / n_prefix (the last step given the prefix).
-- baseline = share of all contacts followed within max-gap by a contact with the
-- last step's reason. p_value: the clustered binomial test of cluster_candidates,
-- k = n_support among n = n_prefix at the baseline, design effect = prefix
-- occurrences / their distinct customers.
WITH total AS (
    -- all contacts counted by the pass (its rows without a consequent)
    SELECT SUM(n_support) AS n_contacts FROM pair_counts WHERE consequent IS NULL
),
base AS (
    SELECT consequent, SUM(n_support) AS n_followed
    FROM pair_counts
    WHERE window_s = ${max_gap_s}
    GROUP BY consequent
),
support AS (
    SELECT *, CASE length WHEN 3 THEN reason_3 ELSE reason_4 END AS last_reason
    FROM pattern_totals
    WHERE length >= 3 AND n_support >= ${min_support}
),
prefixes AS (
    SELECT pattern AS prefix, n_support AS n_prefix, customers AS prefix_customers
    FROM pattern_totals
),
counted AS (
    SELECT s.*, p.n_prefix, p.prefix_customers,
           CAST(s.n_support AS DOUBLE) / p.n_prefix AS confidence,
           CAST(COALESCE(b.n_followed, 0) AS DOUBLE) / t.n_contacts AS baseline
    FROM support s
    JOIN prefixes p ON p.prefix = s.prefix
    LEFT JOIN base b ON b.consequent = s.last_reason
    CROSS JOIN total t
)
SELECT
    pattern || ' @gap ' || CAST(CAST(${max_gap_s} AS BIGINT) AS VARCHAR) || 's' AS key,
    pattern, length, prefix, n_prefix, n_support, customers, confidence, baseline,
    confidence / baseline AS lift,
    n_support - n_prefix * baseline AS score,
    ${effectiveness} * n_support AS avoidable_contacts,
    ${effectiveness} * followup_cost AS value,
    binomial_p_value(
        n_support, n_prefix, baseline, CAST(n_prefix AS DOUBLE) / prefix_customers
    ) AS p_value,
    reason_1, reason_2, reason_3, reason_4
FROM counted
