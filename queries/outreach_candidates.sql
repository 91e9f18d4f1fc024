-- outreach_candidates: customers whose latest trigger contact is recent and
-- whose expected follow-up has not come yet, one row per (customer, cluster).
--
-- Input:  clusters, outreach_cutoffs, outreach_triggers, followups
-- Output: customer_id, trigger_contact_id, trigger_reason, trigger_ts, elapsed_s,
--         cluster_id, expected_reason, window_s, confidence, baseline, p90_lag_s,
--         value, n_support, cluster_rank
--
-- A trigger (see outreach_triggers.sql) is a candidate for each cluster with
-- its reason as antecedent while the time since it is within the cluster's
-- p90 lag and no B-contact came after it up to as-of: its first B, if any, is
-- later than the time elapsed.
--
-- recur then turns the lag distribution into a probability (src/outreach.rs)
-- and keeps a row while it is above the cluster's baseline. That probability
-- falls as time passes, so outreach_cutoffs (cluster_id, elapsed_below_s,
-- made by recur from the member lags) says how long after its trigger a row
-- can still be kept; later ones are left out here, before the anti-join.
SELECT t.customer_id, t.contact_id AS trigger_contact_id, t.reason AS trigger_reason,
       t.ts AS trigger_ts, t.elapsed_s, c.cluster_id, c.consequent AS expected_reason,
       c.window_s, c.confidence, c.baseline, c.p90_lag_s, c.value, c.n_support,
       c.rank AS cluster_rank
FROM clusters c
JOIN outreach_cutoffs k ON k.cluster_id = c.cluster_id
JOIN outreach_triggers t
  ON t.reason = c.antecedent
 AND t.elapsed_s <= c.p90_lag_s
 AND t.elapsed_s < k.elapsed_below_s
LEFT JOIN followups f
  ON f.customer_id = t.customer_id AND f.trigger_contact_id = t.contact_id
 AND f.consequent = c.consequent AND f.lag_s <= t.elapsed_s
WHERE f.lag_s IS NULL
