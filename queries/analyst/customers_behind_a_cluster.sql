-- The customers behind a cluster: every trigger and follow-up of the top
-- cluster (change `c.rank = 1` to `c.cluster_id = 'A -> B'` for another),
-- with the time and channel of both contacts, to open in the CRM.
SELECT
    m.cluster_id,
    m.customer_id,
    m.trigger_contact_id,
    t.ts AS trigger_ts,
    t.channel AS trigger_channel,
    m.followup_contact_id,
    f.ts AS followup_ts,
    f.channel AS followup_channel,
    m.lag_s
FROM cluster_members m
JOIN clusters c ON c.cluster_id = m.cluster_id AND c.rank = 1
LEFT JOIN contacts t ON t.contact_id = m.trigger_contact_id
LEFT JOIN contacts f ON f.contact_id = m.followup_contact_id
ORDER BY t.ts, m.customer_id
