-- cluster_candidates: every A -> B pair at every cluster window, with its
-- counts, lags, value and p-value. Nothing is filtered here but min_support.
--
-- Input:  contacts      (one row per contact)
--         followups     (one row per contact A and reason B such that a B-contact of
--                        the same customer follows A with 0 < lag <= the longest
--                        window; lag_s is the lag to the first such B-contact and
--                        followup_channel that contact's channel)
--         channel_costs (channel, cost)
-- Output: key, window_s, antecedent, consequent, n_antecedent, n_support, confidence,
--         baseline, lift, median_lag_s, p90_lag_s, customers, score,
--         avoidable_contacts, value, p_value
--
-- Parameters: ${windows} (a VALUES list of windows in seconds), ${min_support},
-- ${effectiveness}, ${default_cost}.
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
total AS (
    SELECT COUNT(*) AS n_contacts FROM contacts
),
antecedents AS (
    SELECT reason AS antecedent, COUNT(*) AS n_antecedent,
           COUNT(DISTINCT customer_id) AS antecedent_customers
    FROM contacts
    WHERE reason IS NOT NULL
    GROUP BY reason
),
fw AS (
    SELECT f.customer_id, f.antecedent, f.consequent, f.followup_channel, f.lag_s, w.window_s
    FROM followups f
    CROSS JOIN windows w
    WHERE f.lag_s <= w.window_s
),
base AS (
    SELECT window_s, consequent, COUNT(*) AS n_followed
    FROM fw
    GROUP BY window_s, consequent
),
pairs AS (
    SELECT fw.window_s, fw.antecedent, fw.consequent,
           COUNT(*) AS n_support,
           COUNT(DISTINCT fw.customer_id) AS customers,
           -- costs are summed in millionths, exactly, so the sum does not depend on
           -- the order rows arrive in
           SUM(CAST(ROUND(COALESCE(cc.cost, ${default_cost}) * 1000000) AS BIGINT))
               / 1000000.0 AS followup_cost
    FROM fw
    LEFT JOIN channel_costs cc ON cc.channel = fw.followup_channel
    WHERE fw.antecedent IS NOT NULL AND fw.antecedent <> fw.consequent
    GROUP BY fw.window_s, fw.antecedent, fw.consequent
    HAVING COUNT(*) >= ${min_support}
),
ordered_lags AS (
    SELECT fw.window_s, fw.antecedent, fw.consequent, fw.lag_s,
           ROW_NUMBER() OVER (
               PARTITION BY fw.window_s, fw.antecedent, fw.consequent ORDER BY fw.lag_s
           ) AS rn,
           p.n_support
    FROM fw
    JOIN pairs p
      ON fw.window_s = p.window_s AND fw.antecedent = p.antecedent
     AND fw.consequent = p.consequent
),
lags AS (
    SELECT window_s, antecedent, consequent,
           MAX(CASE WHEN rn = (n_support + 1) / 2 THEN lag_s END) AS median_lag_s,
           MAX(CASE WHEN rn = (9 * n_support + 9) / 10 THEN lag_s END) AS p90_lag_s
    FROM ordered_lags
    GROUP BY window_s, antecedent, consequent
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
        l.median_lag_s,
        l.p90_lag_s,
        p.customers,
        p.followup_cost
    FROM pairs p
    JOIN antecedents a ON a.antecedent = p.antecedent
    JOIN base b ON b.consequent = p.consequent AND b.window_s = p.window_s
    JOIN lags l
      ON l.window_s = p.window_s AND l.antecedent = p.antecedent
     AND l.consequent = p.consequent
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
