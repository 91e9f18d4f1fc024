-- report_outreach_due: the customers on the outreach list by the reason they
-- are expected to contact about and the day (UTC) they are expected.
--
-- Input:  outreach (the run's table).
-- Output: expected_reason, due_date, customers, control (of them, held back
--         as the control group).
SELECT
    expected_reason,
    CAST(expected_at AS DATE) AS due_date,
    COUNT(DISTINCT customer_id) AS customers,
    COUNT(DISTINCT CASE WHEN control THEN customer_id END) AS control
FROM outreach
GROUP BY expected_reason, CAST(expected_at AS DATE)
ORDER BY due_date, expected_reason
