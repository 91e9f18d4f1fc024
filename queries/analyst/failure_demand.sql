-- Failure demand across channels: for each reason, how many contacts on a
-- self-service channel (app, web) were followed by the same customer's next
-- contact on an assisted channel (phone, chat, branch) within 24 hours (the
-- default repeat window: change the interval to yours), and which reasons
-- send the most customers from digital to an agent. Edit the channel lists
-- to your channel names. Reads the contact store.
WITH next AS (
    SELECT
        reason,
        channel,
        ts,
        LEAD(channel) OVER (PARTITION BY customer_id ORDER BY ts, contact_id) AS next_channel,
        LEAD(ts) OVER (PARTITION BY customer_id ORDER BY ts, contact_id) AS next_ts
    FROM contacts
)
SELECT
    reason,
    COUNT(*) AS self_service_contacts,
    SUM(CASE WHEN next_channel IN ('phone', 'chat', 'branch')
              AND next_ts - ts <= INTERVAL '24 hours' THEN 1 ELSE 0 END) AS then_assisted,
    ROUND(
        CAST(SUM(CASE WHEN next_channel IN ('phone', 'chat', 'branch')
                       AND next_ts - ts <= INTERVAL '24 hours' THEN 1 ELSE 0 END) AS DOUBLE)
        / COUNT(*),
        3
    ) AS share_then_assisted
FROM next
WHERE channel IN ('app', 'web') AND reason IS NOT NULL
GROUP BY reason
HAVING COUNT(*) >= 30
ORDER BY then_assisted DESC, reason
