-- cluster_candidates: every A -> B pair at every cluster window, with its
-- counts, what chance would give, value and p-value. Nothing is filtered
-- here: every pair seen is tested (fdr.sql), and clusters.sql keeps the
-- significant ones with enough support and customers.
--
-- Input:  pair_counts       (per partition of the timeline pass, window W,
--                            antecedent A and consequent B: n_support =
--                            A-contacts whose first later B-contact of the
--                            same customer comes within W, their distinct
--                            customers, the follow-ups' channel cost in
--                            millionths, their lags; over the counted
--                            triggers (each customer's first few A-contacts):
--                            n_counted followed by B, sum_sq = Σ over
--                            customers of their n_counted squared; see
--                            src/timeline/pairs.rs. Rows without a consequent
--                            hold each reason's contacts and customers.)
--         pair_expectations (per W, A, B: counted_triggers, expected = how
--                            many counted triggers chance alone would have
--                            followed by B given each one's own followers and
--                            B's share of contacts at the time; cross and
--                            expected_sq, the other terms of the variance; see
--                            src/significance.rs)
-- Output: key, window_s, antecedent, consequent, n_antecedent, n_support,
--         customers, confidence, n_counted, expected, baseline, lift, score,
--         avoidable_contacts, value, p_value, counted_triggers, sum_sq (the
--         cluster trends compare periods with them)
--
-- Parameters: ${windows} (a VALUES list of windows in seconds), ${min_lift},
-- ${effectiveness}.
--
-- confidence = n_support / n_antecedent: the share of all A-contacts followed
--   by B within W.
-- baseline = expected / counted_triggers: the chance a counted A-trigger is
--   followed by B if B's timing were unrelated to A.
-- lift = n_counted / expected: follow-ups over chance.
-- score = n_counted - expected: follow-ups beyond chance, each customer
--   counted with its first few triggers only (one customer cannot carry it).
-- avoidable_contacts = effectiveness * max(score, 0): the follow-ups beyond
--   chance a proactive contact after A could prevent; value weights each by
--   the mean cost of the channels B's follow-ups came on.
-- p_value: H0 "lift <= min_lift" (chance explains the follow-ups up to a
--   min_lift excess). Customers are the independent units: with s_c and e_c
--   a customer's observed and expected counts and l = n_counted / expected
--   the fitted lift, the variance of n_counted is Σ_c (s_c - l * e_c)^2 =
--   sum_sq - 2 * l * cross + l^2 * expected_sq (the cluster-robust, or
--   sandwich, variance); excess_p_value takes n_counted as Poisson,
--   over-dispersed by that variance where it exceeds the Poisson's
--   (src/significance.rs).
WITH windows AS (
    SELECT CAST(column1 AS DOUBLE) AS window_s FROM (VALUES ${windows}) AS w
),
-- (window_s = 0: at every window; a trend's period counts each window's)
antecedents AS (
    SELECT window_s, antecedent, SUM(n_support) AS n_antecedent
    FROM pair_counts
    WHERE consequent IS NULL
    GROUP BY window_s, antecedent
),
pairs AS (
    SELECT p.window_s, p.antecedent, p.consequent,
           SUM(p.n_support) AS n_support,
           SUM(p.customers) AS customers,
           SUM(p.followup_cost_micros) / 1000000.0 AS followup_cost,
           SUM(p.n_counted) AS n_counted,
           SUM(p.sum_sq) AS sum_sq
    FROM pair_counts p
    JOIN windows w ON w.window_s = p.window_s
    WHERE p.consequent IS NOT NULL
    GROUP BY p.window_s, p.antecedent, p.consequent
),
counted AS (
    SELECT
        p.antecedent,
        p.consequent,
        CAST(p.window_s AS BIGINT) AS window_s,
        a.n_antecedent,
        p.n_support,
        p.customers,
        CAST(p.n_support AS DOUBLE) / a.n_antecedent AS confidence,
        p.n_counted,
        e.expected,
        e.counted_triggers,
        e.expected / e.counted_triggers AS baseline,
        CAST(p.n_counted AS DOUBLE) - e.expected AS score,
        p.followup_cost / p.n_support AS mean_cost,
        e.cross,
        e.expected_sq,
        p.sum_sq
    FROM pairs p
    JOIN antecedents a
      ON a.antecedent = p.antecedent AND (a.window_s = 0 OR a.window_s = p.window_s)
    JOIN pair_expectations e
      ON e.window_s = p.window_s AND e.antecedent = p.antecedent
     AND e.consequent = p.consequent
)
SELECT
    antecedent || ' -> ' || consequent || ' @' || CAST(window_s AS VARCHAR) || 's' AS key,
    window_s, antecedent, consequent, n_antecedent, n_support, customers, confidence,
    n_counted, expected, baseline,
    n_counted / NULLIF(expected, 0.0) AS lift,
    score,
    ${effectiveness} * GREATEST(score, 0.0) AS avoidable_contacts,
    ${effectiveness} * GREATEST(score, 0.0) * mean_cost AS value,
    excess_p_value(n_counted, expected, variance, ${min_lift}) AS p_value,
    counted_triggers, sum_sq
FROM (
    SELECT *,
           CAST(sum_sq AS DOUBLE) - 2.0 * fitted * cross + fitted * fitted * expected_sq AS variance
    FROM (
        SELECT *,
               CASE WHEN expected > 0 THEN n_counted / expected ELSE 0.0 END AS fitted
        FROM counted
    ) f
) v
