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
-- (src/outreach.rs). Contacts older than the horizon are skipped before the
-- window function: if a customer's latest A-contact is within the horizon it
-- is also the latest among the contacts kept, and if it is not, no A-contact
-- of that customer can be a candidate.
WITH triggers AS (
    SELECT k.customer_id, k.contact_id, k.reason, k.ts,
           CAST(${as_of_us} - CAST(k.ts AS BIGINT) AS DOUBLE) / 1000000.0 AS elapsed_s,
           ROW_NUMBER() OVER (
               PARTITION BY k.customer_id, k.reason ORDER BY k.ts DESC, k.contact_id DESC
           ) AS pos
    FROM contacts k
    WHERE k.reason IN (SELECT antecedent FROM clusters)
      AND CAST(k.ts AS BIGINT) <= ${as_of_us}
      AND CAST(k.ts AS BIGINT) >= ${as_of_us} - ${horizon_us}
      AND k._customer_contacts <= ${max_customer_contacts}
),
candidates AS (
    SELECT t.customer_id, t.contact_id, t.reason, t.ts, t.elapsed_s,
           c.cluster_id, c.consequent, c.window_s, c.confidence, c.baseline, c.p90_lag_s,
           c.value, c.n_support, c.rank
    FROM triggers t
    JOIN clusters c ON c.antecedent = t.reason
    WHERE t.pos = 1 AND t.elapsed_s <= c.p90_lag_s
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
