-- cluster_members: the contacts behind every reported cluster, to open real
-- cases and join back to a CRM.
--
-- Input:  clusters, followups
-- Output: cluster_id, kind, customer_id, trigger_contact_id, followup_contact_id, lag_s
--
-- One row per A-contact counted in n_support, with the first B-contact after it.
SELECT c.cluster_id, 'cluster' AS kind, f.customer_id, f.trigger_contact_id,
       f.followup_contact_id, f.lag_s
FROM clusters c
JOIN followups f
  ON f.antecedent = c.antecedent AND f.consequent = c.consequent
 AND f.lag_s <= c.window_s
ORDER BY c.rank, f.customer_id, f.lag_s, f.trigger_contact_id
