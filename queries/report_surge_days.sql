-- report_surge_days: the days around each surge report.html draws, from two
-- weeks before its start to a week after its end: first contacts against
-- the expected (the baseline), and whether the day is in the surge.
--
-- Input:  surges, reason_days (the run's tables).
-- Output: rank (the surge's), date, first_contacts, expected, in_surge.
SELECT
    s.rank,
    d.date,
    d.first_contacts,
    d.expected,
    d.date BETWEEN s.start_date AND s.end_date AS in_surge
FROM (SELECT * FROM surges ORDER BY rank LIMIT ${top_surges}) s
JOIN reason_days d
  ON d.reason = s.reason
 AND (d.channel = s.channel OR (d.channel IS NULL AND s.channel IS NULL))
WHERE d.date BETWEEN s.start_date - INTERVAL '14 days' AND s.end_date + INTERVAL '7 days'
ORDER BY s.rank, d.date
