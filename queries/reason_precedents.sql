-- reason_precedents: what came before the contacts at hand (all of them, or
-- one bucket's), per local date, reason and channel, for the surges
-- (src/surges.rs sums them over buckets and compares each surge's days with
-- the weeks before it).
--
-- Input:  contacts (as repeat_groups.sql reads them; _prev_reason_code is
--         the customer's previous contact's reason), channel_codes,
--         reason_codes.
-- Output: date, reason, channel, prev_reason, contacts: the first contacts
--         (not a same-reason repeat) whose customer's previous contact came
--         at most the repeat window before, by that contact's reason.
SELECT c.date, r.reason, ch.channel, p.reason AS prev_reason, c.contacts
FROM (
    SELECT date, _reason_code, _channel_code, _prev_reason_code, COUNT(*) AS contacts
    FROM contacts
    WHERE is_repeat AND NOT is_repeat_same_reason
    GROUP BY date, _reason_code, _channel_code, _prev_reason_code
) c
JOIN reason_codes r ON r.code = c._reason_code
JOIN reason_codes p ON p.code = c._prev_reason_code
LEFT JOIN channel_codes ch ON ch.code = c._channel_code
