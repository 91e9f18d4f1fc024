-- What changed: the surges of the latest run and the clusters and sequences
-- whose status is not stable (new, growing, fading, gone), one line each.
SELECT
    'surge' AS kind,
    reason || COALESCE(' on ' || channel, '') AS what,
    CAST(start_date AS VARCHAR) AS since,
    CASE WHEN ongoing THEN 'ongoing' ELSE 'until ' || CAST(end_date AS VARCHAR) END AS status,
    CAST(first_contacts AS VARCHAR) || ' first contacts where '
        || CAST(ROUND(expected, 0) AS VARCHAR) || ' were expected' AS detail
FROM surges
UNION ALL
SELECT
    kind,
    pattern_id,
    NULL,
    status,
    'followed ' || CAST(ROUND(100 * recent_rate, 0) AS VARCHAR) || '% recently, '
        || CAST(ROUND(100 * before_rate, 0) AS VARCHAR) || '% before'
FROM cluster_trends
WHERE status <> 'stable'
ORDER BY kind, what
