-- repeat_groups: the contacts at hand (all of them, or one bucket's) counted
-- once per combination of the keys repeat_counts.sql breaks them down by.
--
-- Input:  contacts (one row per contact, written by the timeline pass).
-- Output: channel, reason, agent, date, prev_channel, has_prev (the contact
--         has a previous contact), and per combination: contacts, repeats,
--         same_reason_repeats, events, closed, unfollowed (see
--         repeat_counts.sql).
--
-- One pass over the contacts into far fewer rows (a 10M-contact log without
-- agents: 170k), so that repeat_counts.sql adds up six dimensions over this
-- small table instead of reading the contacts six times.
SELECT
    channel,
    reason,
    agent,
    date,
    prev_channel,
    prev_gap_s IS NOT NULL AS has_prev,
    COUNT(*) AS contacts,
    SUM(CASE WHEN is_repeat THEN 1 ELSE 0 END) AS repeats,
    SUM(CASE WHEN is_repeat_same_reason THEN 1 ELSE 0 END) AS same_reason_repeats,
    SUM(CASE WHEN event_seq = 1 THEN 1 ELSE 0 END) AS events,
    SUM(CASE WHEN followed_within_window IS NOT NULL THEN 1 ELSE 0 END) AS closed,
    SUM(CASE WHEN followed_within_window = false THEN 1 ELSE 0 END) AS unfollowed
FROM contacts
GROUP BY channel, reason, agent, date, prev_channel, prev_gap_s IS NOT NULL
