-- cluster_members: the contacts behind every reported cluster and sequence, to
-- open real cases and join back to a CRM.
--
-- Input:  clusters, followups, sequences, sequence_occurrences
-- Output: cluster_id, kind, customer_id, trigger_contact_id, followup_contact_id, lag_s
--
-- Clusters: one row per A-contact counted in n_support, with the first
-- B-contact after it. Sequences: one row per start contact counted in
-- n_support, with the contact of its last step; lag_s is the whole span.
SELECT cluster_id, kind, customer_id, trigger_contact_id, followup_contact_id, lag_s
FROM (
    SELECT c.cluster_id, 'cluster' AS kind, c.rank AS pos, f.customer_id,
           f.trigger_contact_id, f.followup_contact_id, f.lag_s
    FROM clusters c
    JOIN followups f
      ON f.antecedent = c.antecedent AND f.consequent = c.consequent
     AND f.lag_s <= c.window_s
    UNION ALL
    SELECT s.sequence_id, 'sequence' AS kind, s.rank AS pos, o.customer_id,
           o.start_contact_id, o.last_contact_id, o.span_s
    FROM sequences s
    JOIN sequence_occurrences o
      ON o.pattern = array_to_string(s.pattern, ' -> ')
) m
ORDER BY kind, pos, customer_id, lag_s, trigger_contact_id
