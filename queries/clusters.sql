-- clusters: A -> B event clusters for one window, ranked.
--
-- Input:  contacts  (one row per contact)
--         followups (one row per contact A and reason B such that a B-contact of
--                    the same customer follows A with 0 < lag <= window; lag_s is
--                    the lag to the first such B-contact)
-- Output: rank, antecedent, consequent, window_s, n_antecedent, n_support,
--         confidence, baseline, lift, median_lag_s, p90_lag_s, customers, score
--
-- Parameters (filled in by recur before planning): ${window_s}, ${min_support}.
--
-- baseline(B) = share of all contacts (any reason, null included) followed by a
-- B-contact within the window. score = n_support - n_antecedent * baseline: the
-- follow-ups beyond what chance would give, i.e. the contacts a proactive
-- message after A could address. It is small both for rare pairs (few
-- follow-ups, whatever the lift) and for common pairs that are no likelier
-- after A than after anything else (lift near 1).
-- Lags are nearest-rank percentiles: the ceil(q * n)-th smallest lag.
WITH total AS (
    SELECT COUNT(*) AS n_contacts FROM contacts
),
antecedents AS (
    SELECT reason AS antecedent, COUNT(*) AS n_antecedent
    FROM contacts
    WHERE reason IS NOT NULL
    GROUP BY reason
),
base AS (
    SELECT consequent, COUNT(*) AS n_followed
    FROM followups
    GROUP BY consequent
),
pairs AS (
    SELECT antecedent, consequent,
           COUNT(*) AS n_support,
           COUNT(DISTINCT customer_id) AS customers
    FROM followups
    WHERE antecedent IS NOT NULL AND antecedent <> consequent
    GROUP BY antecedent, consequent
    HAVING COUNT(*) >= ${min_support}
),
ordered_lags AS (
    SELECT f.antecedent, f.consequent, f.lag_s,
           ROW_NUMBER() OVER (PARTITION BY f.antecedent, f.consequent ORDER BY f.lag_s) AS rn,
           p.n_support
    FROM followups f
    JOIN pairs p ON f.antecedent = p.antecedent AND f.consequent = p.consequent
),
lags AS (
    SELECT antecedent, consequent,
           MAX(CASE WHEN rn = (n_support + 1) / 2 THEN lag_s END) AS median_lag_s,
           MAX(CASE WHEN rn = (9 * n_support + 9) / 10 THEN lag_s END) AS p90_lag_s
    FROM ordered_lags
    GROUP BY antecedent, consequent
),
scored AS (
    SELECT
        p.antecedent,
        p.consequent,
        CAST(${window_s} AS BIGINT) AS window_s,
        a.n_antecedent,
        p.n_support,
        CAST(p.n_support AS DOUBLE) / a.n_antecedent AS confidence,
        CAST(b.n_followed AS DOUBLE) / t.n_contacts AS baseline,
        (CAST(p.n_support AS DOUBLE) / a.n_antecedent)
            / (CAST(b.n_followed AS DOUBLE) / t.n_contacts) AS lift,
        l.median_lag_s,
        l.p90_lag_s,
        p.customers,
        p.n_support - a.n_antecedent * (CAST(b.n_followed AS DOUBLE) / t.n_contacts) AS score
    FROM pairs p
    JOIN antecedents a ON a.antecedent = p.antecedent
    JOIN base b ON b.consequent = p.consequent
    JOIN lags l ON l.antecedent = p.antecedent AND l.consequent = p.consequent
    CROSS JOIN total t
)
SELECT
    ROW_NUMBER() OVER (ORDER BY score DESC, lift DESC, antecedent, consequent) AS rank,
    antecedent, consequent, window_s, n_antecedent, n_support, confidence, baseline,
    lift, median_lag_s, p90_lag_s, customers, score
FROM scored
ORDER BY rank
