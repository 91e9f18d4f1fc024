-- The channel-switch matrix: for every pair of the previous contact's channel
-- and this contact's channel, how many contacts came that way and how many
-- of them within the repeat window (a repeat). `chat -> phone` with a high
-- repeat rate: customers who chatted come back by phone.
SELECT
    split_part(key, ' -> ', 1) AS from_channel,
    split_part(key, ' -> ', 2) AS to_channel,
    contacts,
    repeats,
    ROUND(repeat_rate, 3) AS repeat_rate
FROM repeat_summary
WHERE dimension = 'channel_transition'
ORDER BY from_channel, to_channel
