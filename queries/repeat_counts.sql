-- repeat_counts: repeat contacts, events and first-contact resolution counted
-- by dimension over the contacts at hand: all of them, or one bucket's when a
-- log is split into buckets by customer (every count adds up over buckets;
-- repeat_summary.sql sums them and takes the rates).
--
-- Input:  repeat_groups (repeat_groups.sql: the same contacts, counted per
--         channel, reason and date; per agent; and per channel transition).
-- Output: dimension, key, contacts, repeats, same_reason_repeats, events,
--         closed (contacts whose repeat window has closed), unfollowed (closed
--         and not followed within it)
--
-- Each contact is counted under its own channel, reason, agent and local date.
-- channel_transition keys every contact that has a previous contact by
-- '<previous channel> -> <channel>'; its repeats are the contacts of that
-- transition that came within the repeat window (e.g. chat -> phone).
-- Null keys are shown as '(null)'; contacts without an agent are not counted
-- under 'agent'. events counts contacts that start an event (event_seq = 1).
WITH keyed AS (
    SELECT 'all' AS dimension, 'all' AS key,
           contacts, repeats, same_reason_repeats, events, closed, unfollowed
    FROM repeat_groups
    WHERE grouped_by = 'day'
    UNION ALL
    SELECT 'channel', COALESCE(channel, '(null)'),
           contacts, repeats, same_reason_repeats, events, closed, unfollowed
    FROM repeat_groups
    WHERE grouped_by = 'day'
    UNION ALL
    SELECT 'reason', COALESCE(reason, '(null)'),
           contacts, repeats, same_reason_repeats, events, closed, unfollowed
    FROM repeat_groups
    WHERE grouped_by = 'day'
    UNION ALL
    SELECT 'agent', agent,
           contacts, repeats, same_reason_repeats, events, closed, unfollowed
    FROM repeat_groups
    WHERE grouped_by = 'agent'
    UNION ALL
    SELECT 'date', CAST(date AS VARCHAR),
           contacts, repeats, same_reason_repeats, events, closed, unfollowed
    FROM repeat_groups
    WHERE grouped_by = 'day'
    UNION ALL
    SELECT 'channel_transition',
           COALESCE(prev_channel, '(null)') || ' -> ' || COALESCE(channel, '(null)'),
           contacts, repeats, same_reason_repeats, events, closed, unfollowed
    FROM repeat_groups
    WHERE grouped_by = 'transition'
)
SELECT
    dimension,
    key,
    SUM(contacts) AS contacts,
    SUM(repeats) AS repeats,
    SUM(same_reason_repeats) AS same_reason_repeats,
    SUM(events) AS events,
    SUM(closed) AS closed,
    SUM(unfollowed) AS unfollowed
FROM keyed
GROUP BY dimension, key
