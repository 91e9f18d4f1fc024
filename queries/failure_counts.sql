-- failure_counts: what failure_demand.sql needs of the contacts at hand (all
-- of them, or one bucket's; every count adds up over buckets).
--
-- Input:  contacts (as repeat_groups.sql reads them: _channel_code,
--         _reason_code, and the customer's previous contact's
--         _prev_channel_code and _prev_reason_code), channel_codes,
--         reason_codes.
-- Output: kind, channel, reason, next_channel, contacts:
--           kind 'contacts':    the contacts of each channel and reason
--                               (next_channel null);
--           kind 'followed_by': the contacts on next_channel that came within
--                               the repeat window after a contact of channel
--                               and reason (each contact's previous contact is
--                               the one it followed, so each contact is
--                               counted once, under its predecessor).
-- Grouped by the integer codes first, then given their texts back.
SELECT 'contacts' AS kind, ch.channel AS channel, r.reason AS reason,
       CAST(NULL AS VARCHAR) AS next_channel, g.contacts
FROM (
    SELECT _channel_code, _reason_code, COUNT(*) AS contacts
    FROM contacts
    GROUP BY _channel_code, _reason_code
) g
LEFT JOIN channel_codes ch ON ch.code = g._channel_code
LEFT JOIN reason_codes r ON r.code = g._reason_code
UNION ALL
SELECT 'followed_by', p.channel, r.reason, ch.channel AS next_channel, g.contacts
FROM (
    SELECT _prev_channel_code, _prev_reason_code, _channel_code, COUNT(*) AS contacts
    FROM contacts
    WHERE is_repeat
    GROUP BY _prev_channel_code, _prev_reason_code, _channel_code
) g
LEFT JOIN channel_codes p ON p.code = g._prev_channel_code
LEFT JOIN reason_codes r ON r.code = g._prev_reason_code
LEFT JOIN channel_codes ch ON ch.code = g._channel_code
