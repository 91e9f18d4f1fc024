-- failure_demand: for each reason, how often a contact on a self-service
-- channel (--self-service-channels, by default app and web) was followed
-- within the repeat window by the same customer's next contact on an
-- assisted channel (any other channel): the customers digital did not serve.
--
-- Input:  failure_counts (failure_counts.sql, summed over buckets) and
--         self_service_channels (channel): the self-service channels.
-- Output: reason, self_service_contacts, then_assisted, share_then_assisted,
--         then_self_service, top_assisted_channel, top_assisted_contacts;
--         one row per reason with self-service contacts, the reasons that
--         send the most customers to an agent first.
--
--   self_service_contacts  contacts of the reason on a self-service channel
--   then_assisted          those whose customer's next contact, within the
--                          repeat window, was on an assisted channel
--   share_then_assisted    then_assisted / self_service_contacts
--   then_self_service      those followed within the window on a
--                          self-service channel again
--   top_assisted_channel   the assisted channel most of then_assisted went
--                          to (ties by name), and its contacts
WITH counts AS (
    SELECT kind, channel, reason, next_channel, SUM(contacts) AS contacts
    FROM failure_counts
    WHERE reason IS NOT NULL
    GROUP BY kind, channel, reason, next_channel
),
self_service AS (
    SELECT c.reason, SUM(c.contacts) AS contacts
    FROM counts c
    JOIN self_service_channels s ON s.channel = c.channel
    WHERE c.kind = 'contacts'
    GROUP BY c.reason
),
followed AS (
    SELECT c.reason, c.next_channel, n.channel IS NOT NULL AS to_self_service,
           SUM(c.contacts) AS contacts
    FROM counts c
    JOIN self_service_channels s ON s.channel = c.channel
    LEFT JOIN self_service_channels n ON n.channel = c.next_channel
    WHERE c.kind = 'followed_by' AND c.next_channel IS NOT NULL
    GROUP BY c.reason, c.next_channel, n.channel IS NOT NULL
),
by_reason AS (
    SELECT reason,
           SUM(CASE WHEN to_self_service THEN 0 ELSE contacts END) AS then_assisted,
           SUM(CASE WHEN to_self_service THEN contacts ELSE 0 END) AS then_self_service
    FROM followed
    GROUP BY reason
),
top_channel AS (
    SELECT reason, next_channel, contacts,
           ROW_NUMBER() OVER (PARTITION BY reason ORDER BY contacts DESC, next_channel) AS n
    FROM followed
    WHERE NOT to_self_service
)
SELECT
    s.reason,
    s.contacts AS self_service_contacts,
    COALESCE(b.then_assisted, 0) AS then_assisted,
    CAST(COALESCE(b.then_assisted, 0) AS DOUBLE) / s.contacts AS share_then_assisted,
    COALESCE(b.then_self_service, 0) AS then_self_service,
    t.next_channel AS top_assisted_channel,
    t.contacts AS top_assisted_contacts
FROM self_service s
LEFT JOIN by_reason b ON b.reason = s.reason
LEFT JOIN top_channel t ON t.reason = s.reason AND t.n = 1
ORDER BY then_assisted DESC, share_then_assisted DESC, s.reason
