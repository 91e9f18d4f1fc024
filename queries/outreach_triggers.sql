-- outreach_triggers: each customer's latest contact with the antecedent
-- reason of a reported cluster, while it is recent enough for that cluster,
-- one row per (trigger, cluster).
--
-- Input:  clusters, contacts
-- Output: customer_id, contact_id, reason, ts, elapsed_s, cluster_id,
--         consequent, window_s, confidence, baseline, p90_lag_s, value,
--         n_support, rank
--
-- Parameters: ${as_of_us} (µs since the epoch, UTC); ${horizon_us}, the
-- largest p90_lag_s of the clusters in µs, rounded up;
-- ${max_customer_contacts}, the cap above which a customer is left out of A -> B
-- counting (and so of outreach).
--
-- The trigger is the customer's latest contact with reason A at or before
-- as-of (the timeline pass marks it: _latest_of_reason, in its order: time,
-- then contact id). It is a candidate while the time since it is within the
-- cluster's p90 lag (later than that, 90% of follow-ups would already have
-- come); contacts older than the horizon cannot be candidates.
--
-- The small table comes first in each join: DataFusion builds its hash table
-- on the left side, and contacts may be larger than memory. recur keeps the
-- result as a table, so that outreach_candidates.sql can build on it rather
-- than on the follow-ups.
WITH antecedents AS (
    SELECT DISTINCT antecedent FROM clusters
),
triggers AS (
    SELECT k.customer_id, k.contact_id, k.reason, k.ts,
           CAST(${as_of_us} - CAST(k.ts AS BIGINT) AS DOUBLE) / 1000000.0 AS elapsed_s
    FROM antecedents a
    JOIN contacts k ON k.reason = a.antecedent
    WHERE k._latest_of_reason
      AND CAST(k.ts AS BIGINT) >= ${as_of_us} - ${horizon_us}
      AND k._customer_contacts <= ${max_customer_contacts}
),
triggered AS (
    SELECT t.customer_id, t.contact_id, t.reason, t.ts, t.elapsed_s,
           c.cluster_id, c.consequent, c.window_s, c.confidence, c.baseline, c.p90_lag_s,
           c.value, c.n_support, c.rank
    FROM clusters c
    JOIN triggers t ON c.antecedent = t.reason
    WHERE t.elapsed_s <= c.p90_lag_s
)
SELECT * FROM triggered
