-- repeat_summary: repeat contacts, events and first-contact resolution by dimension.
--
-- Input:  contacts (one row per contact, written by the timeline pass).
-- Output: dimension, key, contacts, repeats, repeat_rate, same_reason_repeats,
--         events, contacts_per_event, fcr_rate
--
-- Each contact is counted under its own channel, reason, agent and local date.
-- channel_transition keys every contact that has a previous contact by
-- '<previous channel> -> <channel>'; its repeats are the contacts of that
-- transition that came within the repeat window (e.g. chat -> phone).
-- Null keys are shown as '(null)'. events counts contacts that start an event
-- (event_seq = 1); fcr_rate is the share of contacts whose window has closed
-- (followed_within_window not null) that were not followed.
WITH keyed AS (
    SELECT 'all' AS dimension, 'all' AS key,
           is_repeat, is_repeat_same_reason, event_seq, followed_within_window
    FROM contacts
    UNION ALL
    SELECT 'channel', COALESCE(channel, '(null)'),
           is_repeat, is_repeat_same_reason, event_seq, followed_within_window
    FROM contacts
    UNION ALL
    SELECT 'reason', COALESCE(reason, '(null)'),
           is_repeat, is_repeat_same_reason, event_seq, followed_within_window
    FROM contacts
    UNION ALL
    SELECT 'agent', agent,
           is_repeat, is_repeat_same_reason, event_seq, followed_within_window
    FROM contacts
    WHERE agent IS NOT NULL
    UNION ALL
    SELECT 'date', CAST(date AS VARCHAR),
           is_repeat, is_repeat_same_reason, event_seq, followed_within_window
    FROM contacts
    UNION ALL
    SELECT 'channel_transition',
           COALESCE(prev_channel, '(null)') || ' -> ' || COALESCE(channel, '(null)'),
           is_repeat, is_repeat_same_reason, event_seq, followed_within_window
    FROM contacts
    WHERE prev_gap_s IS NOT NULL
)
SELECT
    dimension,
    key,
    COUNT(*) AS contacts,
    SUM(CASE WHEN is_repeat THEN 1 ELSE 0 END) AS repeats,
    CAST(SUM(CASE WHEN is_repeat THEN 1 ELSE 0 END) AS DOUBLE) / COUNT(*) AS repeat_rate,
    SUM(CASE WHEN is_repeat_same_reason THEN 1 ELSE 0 END) AS same_reason_repeats,
    SUM(CASE WHEN event_seq = 1 THEN 1 ELSE 0 END) AS events,
    CAST(COUNT(*) AS DOUBLE)
        / NULLIF(SUM(CASE WHEN event_seq = 1 THEN 1 ELSE 0 END), 0) AS contacts_per_event,
    CAST(SUM(CASE WHEN followed_within_window = false THEN 1 ELSE 0 END) AS DOUBLE)
        / NULLIF(SUM(CASE WHEN followed_within_window IS NOT NULL THEN 1 ELSE 0 END), 0)
        AS fcr_rate
FROM keyed
GROUP BY dimension, key
ORDER BY
    CASE dimension
        WHEN 'all' THEN 0 WHEN 'channel' THEN 1 WHEN 'reason' THEN 2
        WHEN 'agent' THEN 3 WHEN 'date' THEN 4 ELSE 5
    END,
    key
