-- repeat_summary: repeat contacts, events and first-contact resolution by
-- dimension (all, channel, reason, agent, date, channel_transition).
--
-- Input:  repeat_counts (see repeat_counts.sql; one set of rows per bucket).
-- Output: dimension, key, contacts, repeats, repeat_rate, same_reason_repeats,
--         events, contacts_per_event, fcr_rate, pending
--
-- repeat_rate = repeats / contacts; contacts_per_event = contacts / events;
-- fcr_rate is the share of contacts whose window has closed
-- (followed_within_window not null) that were not followed; pending counts
-- the contacts whose window is still open at the as-of (not in fcr_rate).
WITH totals AS (
    SELECT dimension, key,
           SUM(contacts) AS contacts,
           SUM(repeats) AS repeats,
           SUM(same_reason_repeats) AS same_reason_repeats,
           SUM(events) AS events,
           SUM(closed) AS closed,
           SUM(unfollowed) AS unfollowed
    FROM repeat_counts
    GROUP BY dimension, key
)
SELECT
    dimension,
    key,
    contacts,
    repeats,
    CAST(repeats AS DOUBLE) / contacts AS repeat_rate,
    same_reason_repeats,
    events,
    CAST(contacts AS DOUBLE) / NULLIF(events, 0) AS contacts_per_event,
    CAST(unfollowed AS DOUBLE) / NULLIF(closed, 0) AS fcr_rate,
    contacts - closed AS pending
FROM totals
ORDER BY
    CASE dimension
        WHEN 'all' THEN 0 WHEN 'channel' THEN 1 WHEN 'reason' THEN 2
        WHEN 'agent' THEN 3 WHEN 'date' THEN 4 ELSE 5
    END,
    key
