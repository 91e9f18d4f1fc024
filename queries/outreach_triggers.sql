-- outreach_triggers: each customer's latest contact with the antecedent
-- reason of a reported cluster, while it is recent enough for one of that
-- reason's clusters, one row per trigger contact.
--
-- Input:  clusters, contacts
-- Output: customer_id, contact_id, reason, ts, elapsed_s
--
-- Parameters: ${as_of_us} (µs since the epoch, UTC); ${horizon_us}, the
-- largest p90_lag_s of the clusters in µs, rounded up;
-- ${max_customer_contacts}, the cap above which a customer is left out of A -> B
-- counting (and so of outreach).
--
-- The trigger is the customer's latest contact with reason A at or before
-- as-of (the timeline pass marks it: _latest_of_reason, in its order: time,
-- then contact id). It can be a candidate while the time since it is within
-- the p90 lag of a cluster with antecedent A (later than that, 90% of
-- follow-ups would already have come); contacts older than the horizon
-- cannot be candidates. outreach_candidates.sql pairs each trigger with its
-- clusters: one row per trigger here, not per (trigger, cluster), is what
-- recur keeps (on disk with several buckets) until then.
--
-- The small table comes first in the join: DataFusion builds its hash table
-- on the left side, and contacts may be larger than memory.
WITH antecedents AS (
    SELECT antecedent, max(p90_lag_s) AS horizon_s
    FROM clusters
    GROUP BY antecedent
)
SELECT k.customer_id, k.contact_id, k.reason, k.ts,
       CAST(${as_of_us} - CAST(k.ts AS BIGINT) AS DOUBLE) / 1000000.0 AS elapsed_s
FROM antecedents a
JOIN contacts k ON k.reason = a.antecedent
WHERE k._latest_of_reason
  AND CAST(k.ts AS BIGINT) >= ${as_of_us} - ${horizon_us}
  AND k._customer_contacts <= ${max_customer_contacts}
  AND CAST(${as_of_us} - CAST(k.ts AS BIGINT) AS DOUBLE) / 1000000.0 <= a.horizon_s
