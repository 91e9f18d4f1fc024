-- reason_days: the contacts at hand (all of them, or one bucket's) per local
-- date, reason and channel, for the surge test (src/surges.rs sums them over
-- buckets and tests each reason's daily share).
--
-- Input:  repeat_groups (repeat_groups.sql: counted per channel, reason and
--         date, among other groupings).
-- Output: date, reason, channel, contacts, first_contacts: the contacts that
--         are not a same-reason repeat within the repeat window, so that a
--         customer chasing one problem counts once a window, not once a call.
SELECT
    date,
    reason,
    channel,
    contacts,
    contacts - same_reason_repeats AS first_contacts
FROM repeat_groups
WHERE grouped_by = 'day' AND date IS NOT NULL
