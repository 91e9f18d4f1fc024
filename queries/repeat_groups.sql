-- repeat_groups: the contacts at hand (all of them, or one bucket's) counted
-- in three small groupings that repeat_counts.sql breaks down further.
--
-- Input:  contacts (one row per contact, written by the timeline pass; its
--         _channel_code, _reason_code and _prev_channel_code number the
--         bucket's channel and reason texts), channel_codes (code, channel)
--         and reason_codes (code, reason): the texts behind those numbers.
-- Output: grouped_by ('day', 'agent' or 'transition'), channel, reason, agent,
--         date, prev_channel, and per group: contacts, repeats,
--         same_reason_repeats, events, closed, unfollowed (see
--         repeat_counts.sql).
--           'day':        one row per channel, reason and local date
--                         (agent and prev_channel are null);
--           'agent':      one row per agent, over the contacts that have
--                         one (the rest null);
--           'transition': one row per previous channel and channel, over the
--                         contacts that have a previous contact (reason,
--                         agent and date null).
--
-- Three groupings of few groups each (a 10M-contact log: 19,871 days, the
-- agents, 64 transitions) instead of one of every combination (169,366
-- groups, whose hash table no longer fits the cache: twice as slow although
-- it reads the contacts once). The contacts are grouped by the integer
-- codes, several times cheaper than by the texts, and the few grouped rows
-- get their texts back by a join. Each contact's counts are defined once,
-- in `counted`, and each grouping sums them.
WITH counted AS (
    SELECT
        _channel_code,
        _reason_code,
        _prev_channel_code,
        agent,
        date,
        prev_gap_s IS NOT NULL AS has_prev,
        CASE WHEN is_repeat THEN 1 ELSE 0 END AS repeats,
        CASE WHEN is_repeat_same_reason THEN 1 ELSE 0 END AS same_reason_repeats,
        CASE WHEN event_seq = 1 THEN 1 ELSE 0 END AS events,
        CASE WHEN followed_within_window IS NOT NULL THEN 1 ELSE 0 END AS closed,
        CASE WHEN followed_within_window = false THEN 1 ELSE 0 END AS unfollowed
    FROM contacts
),
day_groups AS (
    SELECT _channel_code, _reason_code, date,
           COUNT(*) AS contacts, SUM(repeats) AS repeats,
           SUM(same_reason_repeats) AS same_reason_repeats, SUM(events) AS events,
           SUM(closed) AS closed, SUM(unfollowed) AS unfollowed
    FROM counted
    GROUP BY _channel_code, _reason_code, date
),
agent_groups AS (
    SELECT agent,
           COUNT(*) AS contacts, SUM(repeats) AS repeats,
           SUM(same_reason_repeats) AS same_reason_repeats, SUM(events) AS events,
           SUM(closed) AS closed, SUM(unfollowed) AS unfollowed
    FROM counted
    WHERE agent IS NOT NULL
    GROUP BY agent
),
transition_groups AS (
    SELECT _prev_channel_code, _channel_code,
           COUNT(*) AS contacts, SUM(repeats) AS repeats,
           SUM(same_reason_repeats) AS same_reason_repeats, SUM(events) AS events,
           SUM(closed) AS closed, SUM(unfollowed) AS unfollowed
    FROM counted
    WHERE has_prev
    GROUP BY _prev_channel_code, _channel_code
)
SELECT
    'day' AS grouped_by,
    c.channel,
    r.reason,
    CAST(NULL AS VARCHAR) AS agent,
    g.date,
    CAST(NULL AS VARCHAR) AS prev_channel,
    g.contacts, g.repeats, g.same_reason_repeats, g.events, g.closed, g.unfollowed
FROM day_groups g
LEFT JOIN channel_codes c ON c.code = g._channel_code
LEFT JOIN reason_codes r ON r.code = g._reason_code
UNION ALL
SELECT
    'agent', CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR), agent, CAST(NULL AS DATE),
    CAST(NULL AS VARCHAR),
    contacts, repeats, same_reason_repeats, events, closed, unfollowed
FROM agent_groups
UNION ALL
SELECT
    'transition',
    c.channel,
    CAST(NULL AS VARCHAR),
    CAST(NULL AS VARCHAR),
    CAST(NULL AS DATE),
    p.channel AS prev_channel,
    g.contacts, g.repeats, g.same_reason_repeats, g.events, g.closed, g.unfollowed
FROM transition_groups g
LEFT JOIN channel_codes c ON c.code = g._channel_code
LEFT JOIN channel_codes p ON p.code = g._prev_channel_code
