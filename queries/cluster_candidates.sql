-- cluster_candidates: every A -> B pair at every cluster window, with its
-- counts, lags, value and p-value. Nothing is filtered here but min_support.
--
-- Input:  pair_counts (per partition of the timeline pass, window W, antecedent A
--                      (null included) and consequent B: n_support = A-contacts
--                      whose first later B-contact of the same customer comes
--                      within W, their distinct customers, the follow-ups'
--                      channel cost in millionths, and their lags, sorted; see
--                      src/timeline/pairs.rs; rows without a consequent hold
--                      each reason's contacts and distinct customers; customers
--                      over the pass's contact cap are in none of them)
-- Output: key, window_s, antecedent, consequent, n_antecedent, n_support, confidence,
--         baseline, lift, median_lag_s, p90_lag_s, customers, score,
--         avoidable_contacts, value, p_value
--
-- Parameters: ${windows} (a VALUES list of windows in seconds), ${min_support},
-- ${effectiveness}.
--
-- A contact is followed by B within window W exactly when its first B comes
-- within W, so one list of first follow-ups serves every window.
-- baseline(B, W) = share of all contacts (any reason, null included) followed by
--   a B-contact within W.
-- score = n_support - n_antecedent * baseline: follow-ups beyond chance.
-- avoidable_contacts = n_support * effectiveness: the follow-ups a proactive
--   contact after A could prevent; value weights each by the cost of the channel
--   the follow-up actually came on.
-- p_value: how surprising n_support follow-ups among n_antecedent triggers are
--   if B's timing were unrelated to A: a one-sided binomial test at the
--   baseline, on effective counts. Contacts of one customer are not independent
--   trials (a customer who calls ten times about A is ten correlated trials),
--   so both counts are divided by the design effect d = A-contacts / distinct
--   A-customers, Kish's bound for clustered samples: conservative for heavy
--   customers, exactly the plain binomial test when each has one A-contact.
-- Lags are nearest-rank percentiles: the ceil(q * n)-th smallest lag.
WITH windows AS (
    SELECT CAST(column1 AS DOUBLE) AS window_s FROM (VALUES ${windows}) AS w
),
-- the pass's per-reason totals are its rows without a consequent
total AS (
    SELECT SUM(n_support) AS n_contacts FROM pair_counts WHERE consequent IS NULL
),
antecedents AS (
    SELECT antecedent, SUM(n_support) AS n_antecedent,
           SUM(customers) AS antecedent_customers
    FROM pair_counts
    WHERE consequent IS NULL AND antecedent IS NOT NULL
    GROUP BY antecedent
),
pc AS (
    SELECT p.* FROM pair_counts p JOIN windows w ON w.window_s = p.window_s
),
base AS (
    SELECT window_s, consequent, SUM(n_support) AS n_followed
    FROM pc
    GROUP BY window_s, consequent
),
pairs AS (
    SELECT window_s, antecedent, consequent,
           SUM(n_support) AS n_support,
           SUM(customers) AS customers,
           SUM(followup_cost_micros) / 1000000.0 AS followup_cost,
           array_sort(flatten(array_agg(lags))) AS lags
    FROM pc
    WHERE antecedent IS NOT NULL AND antecedent <> consequent
    GROUP BY window_s, antecedent, consequent
    HAVING SUM(n_support) >= ${min_support}
),
counted AS (
    SELECT
        p.antecedent,
        p.consequent,
        CAST(p.window_s AS BIGINT) AS window_s,
        a.n_antecedent,
        a.antecedent_customers,
        p.n_support,
        CAST(p.n_support AS DOUBLE) / a.n_antecedent AS confidence,
        CAST(b.n_followed AS DOUBLE) / t.n_contacts AS baseline,
        array_element(p.lags, CAST((p.n_support + 1) / 2 AS BIGINT)) AS median_lag_s,
        array_element(p.lags, CAST((9 * p.n_support + 9) / 10 AS BIGINT)) AS p90_lag_s,
        p.customers,
        p.followup_cost
    FROM pairs p
    JOIN antecedents a ON a.antecedent = p.antecedent
    JOIN base b ON b.consequent = p.consequent AND b.window_s = p.window_s
    CROSS JOIN total t
)
SELECT
    antecedent || ' -> ' || consequent || ' @' || CAST(window_s AS VARCHAR) || 's' AS key,
    window_s, antecedent, consequent, n_antecedent, n_support, confidence, baseline,
    confidence / baseline AS lift,
    median_lag_s, p90_lag_s, customers,
    n_support - n_antecedent * baseline AS score,
    ${effectiveness} * n_support AS avoidable_contacts,
    ${effectiveness} * followup_cost AS value,
    binomial_p_value(
        n_support, n_antecedent, baseline,
        CAST(n_antecedent AS DOUBLE) / antecedent_customers
    ) AS p_value
FROM counted
