-- repeat_groups: the contacts at hand (all of them, or one bucket's) counted
-- once per combination of the keys repeat_counts.sql breaks them down by.
--
-- Input:  contacts (one row per contact, written by the timeline pass; its
--         _channel_code, _reason_code and _prev_channel_code number the
--         bucket's channel and reason texts), channel_codes (code, channel)
--         and reason_codes (code, reason): the texts behind those numbers.
-- Output: channel, reason, agent, date, prev_channel, has_prev (the contact
--         has a previous contact), and per combination: contacts, repeats,
--         same_reason_repeats, events, closed, unfollowed (see
--         repeat_counts.sql).
--
-- One pass over the contacts into far fewer rows (a 10M-contact log without
-- agents: 170k), so that repeat_counts.sql adds up six dimensions over this
-- small table instead of reading the contacts six times. The contacts are
-- grouped by the integer codes, which is several times cheaper than grouping
-- by the texts, and the few grouped rows get their texts back by a join.
WITH grouped AS (
    SELECT
        _channel_code,
        _reason_code,
        agent,
        date,
        _prev_channel_code,
        prev_gap_s IS NOT NULL AS has_prev,
        COUNT(*) AS contacts,
        SUM(CASE WHEN is_repeat THEN 1 ELSE 0 END) AS repeats,
        SUM(CASE WHEN is_repeat_same_reason THEN 1 ELSE 0 END) AS same_reason_repeats,
        SUM(CASE WHEN event_seq = 1 THEN 1 ELSE 0 END) AS events,
        SUM(CASE WHEN followed_within_window IS NOT NULL THEN 1 ELSE 0 END) AS closed,
        SUM(CASE WHEN followed_within_window = false THEN 1 ELSE 0 END) AS unfollowed
    FROM contacts
    GROUP BY _channel_code, _reason_code, agent, date, _prev_channel_code,
             prev_gap_s IS NOT NULL
)
SELECT
    c.channel,
    r.reason,
    g.agent,
    g.date,
    p.channel AS prev_channel,
    g.has_prev,
    g.contacts,
    g.repeats,
    g.same_reason_repeats,
    g.events,
    g.closed,
    g.unfollowed
FROM grouped g
LEFT JOIN channel_codes c ON c.code = g._channel_code
LEFT JOIN reason_codes r ON r.code = g._reason_code
LEFT JOIN channel_codes p ON p.code = g._prev_channel_code
