-- repeat_counts: repeat contacts, events and first-contact resolution counted
-- by dimension over the contacts at hand: all of them, or one bucket's when a
-- log is split into buckets by customer (every count adds up over buckets;
-- repeat_summary.sql sums them and takes the rates).
--
-- Input:  contacts (one row per contact, written by the timeline pass).
-- Output: dimension, key, contacts, repeats, same_reason_repeats, events,
--         closed (contacts whose repeat window has closed), unfollowed (closed
--         and not followed within it)
--
-- Each contact is counted under its own channel, reason, agent and local date.
-- channel_transition keys every contact that has a previous contact by
-- '<previous channel> -> <channel>'; its repeats are the contacts of that
-- transition that came within the repeat window (e.g. chat -> phone).
-- Null keys are shown as '(null)'. events counts contacts that start an event
-- (event_seq = 1).
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
    SUM(CASE WHEN is_repeat_same_reason THEN 1 ELSE 0 END) AS same_reason_repeats,
    SUM(CASE WHEN event_seq = 1 THEN 1 ELSE 0 END) AS events,
    SUM(CASE WHEN followed_within_window IS NOT NULL THEN 1 ELSE 0 END) AS closed,
    SUM(CASE WHEN followed_within_window = false THEN 1 ELSE 0 END) AS unfollowed
FROM keyed
GROUP BY dimension, key
