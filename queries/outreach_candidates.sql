-- outreach_candidates: customers whose latest trigger contact is recent and
-- whose expected follow-up has not come yet, one row per (customer, cluster).
--
-- Input:  outreach_triggers, followups
-- Output: customer_id, trigger_contact_id, trigger_reason, trigger_ts, elapsed_s,
--         cluster_id, expected_reason, window_s, confidence, baseline, p90_lag_s,
--         value, n_support, cluster_rank
--
-- A trigger (see outreach_triggers.sql) is a candidate while no B-contact came
-- after it up to as-of: its first B, if any, is later than the time elapsed.
-- recur then turns the lag distribution into a probability (src/outreach.rs).
SELECT c.customer_id, c.contact_id AS trigger_contact_id, c.reason AS trigger_reason,
       c.ts AS trigger_ts, c.elapsed_s, c.cluster_id, c.consequent AS expected_reason,
       c.window_s, c.confidence, c.baseline, c.p90_lag_s, c.value, c.n_support,
       c.rank AS cluster_rank
FROM outreach_triggers c
LEFT JOIN followups f
  ON f.customer_id = c.customer_id AND f.trigger_contact_id = c.contact_id
 AND f.consequent = c.consequent AND f.lag_s <= c.elapsed_s
WHERE f.lag_s IS NULL
