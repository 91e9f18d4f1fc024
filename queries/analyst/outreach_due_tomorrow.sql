-- Outreach due tomorrow: the customers on the latest outreach list whose
-- expected follow-up falls by the end of the day after the run's as-of
-- (overdue ones included), best first,
-- the control group left out (they are not to be contacted).
SELECT
    customer_id,
    expected_reason,
    trigger_reason,
    trigger_ts,
    expected_at,
    ROUND(probability, 3) AS probability,
    ROUND(priority, 3) AS priority,
    new_today
FROM outreach
WHERE NOT control
  AND expected_at < run_as_of + INTERVAL '1 day'
ORDER BY priority DESC, customer_id
