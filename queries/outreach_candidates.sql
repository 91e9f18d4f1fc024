-- outreach_candidates: customers whose latest trigger contact is recent and
-- whose expected follow-up has not come yet, one row per (customer, cluster).
--
-- Input:  clusters, contacts, followups
-- Output: customer_id, trigger_contact_id, trigger_reason, trigger_ts, elapsed_s,
--         cluster_id, expected_reason, window_s, confidence, baseline, p90_lag_s,
--         value, n_support, cluster_rank
--
-- Parameters: ${as_of_us} (µs since the epoch, UTC); ${horizon_us}, the
-- largest p90_lag_s of the clusters in µs, rounded up;
-- ${max_customer_contacts}, the cap above which a customer is left out of A -> B
-- counting (and so of outreach).
--
-- The trigger is the customer's latest contact with reason A at or before
-- as-of. It is a candidate while the time since it is within the cluster's
-- p90 lag (later than that, 90% of follow-ups would already have come) and no
-- B-contact came after it up to as-of: its first B, if any, is later than
-- the time elapsed. recur then turns the lag distribution into a probability
-- (src/outreach.rs). The timeline pass marks each customer's latest contact per
-- reason at or before as-of (_latest_of_reason, in its order: time, then
-- contact id); contacts older than the horizon cannot be candidates.
WITH triggers AS (
    SELECT k.customer_id, k.contact_id, k.reason, k.ts,
           CAST(${as_of_us} - CAST(k.ts AS BIGINT) AS DOUBLE) / 1000000.0 AS elapsed_s
    FROM contacts k
    WHERE k._latest_of_reason
      AND k.reason IN (SELECT antecedent FROM clusters)
      AND CAST(k.ts AS BIGINT) >= ${as_of_us} - ${horizon_us}
      AND k._customer_contacts <= ${max_customer_contacts}
),
candidates AS (
    SELECT t.customer_id, t.contact_id, t.reason, t.ts, t.elapsed_s,
           c.cluster_id, c.consequent, c.window_s, c.confidence, c.baseline, c.p90_lag_s,
           c.value, c.n_support, c.rank
    FROM triggers t
    JOIN clusters c ON c.antecedent = t.reason
    WHERE t.elapsed_s <= c.p90_lag_s
)
SELECT c.customer_id, c.contact_id AS trigger_contact_id, c.reason AS trigger_reason,
       c.ts AS trigger_ts, c.elapsed_s, c.cluster_id, c.consequent AS expected_reason,
       c.window_s, c.confidence, c.baseline, c.p90_lag_s, c.value, c.n_support,
       c.rank AS cluster_rank
FROM candidates c
LEFT JOIN followups f
  ON f.customer_id = c.customer_id AND f.trigger_contact_id = c.contact_id
 AND f.consequent = c.consequent AND f.lag_s <= c.elapsed_s
WHERE f.lag_s IS NULL
