-- report_lags: how long after its trigger each follow-up of the clusters
-- report.html shows came, in ten bins (the labels are src/html/mod.rs's
-- LAG_BINS: <1h, 1-3h, 3-6h, 6-12h, 12-24h, 1-2d, 2-3d, 3-7d, 7-14d, 14d+).
--
-- Input:  clusters, cluster_members (the run's tables).
-- Output: cluster_id, bin (0-9), members.
SELECT
    m.cluster_id,
    CASE
        WHEN m.lag_s < 3600 THEN 0
        WHEN m.lag_s < 10800 THEN 1
        WHEN m.lag_s < 21600 THEN 2
        WHEN m.lag_s < 43200 THEN 3
        WHEN m.lag_s < 86400 THEN 4
        WHEN m.lag_s < 172800 THEN 5
        WHEN m.lag_s < 259200 THEN 6
        WHEN m.lag_s < 604800 THEN 7
        WHEN m.lag_s < 1209600 THEN 8
        ELSE 9
    END AS bin,
    COUNT(*) AS members
FROM cluster_members m
JOIN (SELECT cluster_id FROM clusters ORDER BY rank LIMIT ${top_clusters}) c
  ON c.cluster_id = m.cluster_id
WHERE m.kind = 'cluster'
GROUP BY 1, 2
ORDER BY 1, 2
