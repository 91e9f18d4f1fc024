-- Repeat rate by agent: for each agent (when the log maps one), the share of
-- its contacts that were repeats within the repeat window, the repeats of the
-- same reason, and contacts per event; agents with at least 50 contacts,
-- highest repeat rate first.
SELECT
    key AS agent,
    contacts,
    repeats,
    ROUND(repeat_rate, 3) AS repeat_rate,
    same_reason_repeats,
    ROUND(contacts_per_event, 2) AS contacts_per_event,
    ROUND(fcr_rate, 3) AS first_contact_resolution
FROM repeat_summary
WHERE dimension = 'agent' AND contacts >= 50
ORDER BY repeat_rate DESC, agent
