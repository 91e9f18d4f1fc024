-- report_examples: a few customers and contact ids behind each cluster and
-- sequence report.html shows, to open in the CRM (the first by customer id,
-- so the same run shows the same examples).
--
-- Input:  clusters, sequences, cluster_members (the run's tables).
-- Output: cluster_id, customer_id, trigger_contact_id, followup_contact_id,
--         lag_s.
WITH shown AS (
    SELECT cluster_id FROM (SELECT cluster_id FROM clusters ORDER BY rank LIMIT ${top_clusters})
    UNION ALL
    SELECT sequence_id FROM (SELECT sequence_id FROM sequences ORDER BY rank LIMIT ${top_sequences})
),
numbered AS (
    SELECT m.cluster_id, m.customer_id, m.trigger_contact_id, m.followup_contact_id, m.lag_s,
           ROW_NUMBER() OVER (
               PARTITION BY m.cluster_id
               ORDER BY m.customer_id, m.trigger_contact_id, m.followup_contact_id
           ) AS n
    FROM cluster_members m
    JOIN shown s ON s.cluster_id = m.cluster_id
)
SELECT cluster_id, customer_id, trigger_contact_id, followup_contact_id, lag_s
FROM numbered
WHERE n <= ${examples}
ORDER BY cluster_id, n
