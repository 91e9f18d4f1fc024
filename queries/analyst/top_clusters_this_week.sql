-- Top clusters this week: the clusters of the nightly runs of the last seven
-- days, by their best rank: on how many nights each was listed, since when
-- (first_seen), and its figures on the latest night it was listed.
-- Reads runs.clusters (every run of a folder of runs, with its as_of).
WITH week AS (
    SELECT *
    FROM runs.clusters
    WHERE as_of > (SELECT MAX(as_of) FROM runs.clusters) - INTERVAL '7 days'
),
latest AS (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY cluster_id ORDER BY as_of DESC) AS pos
    FROM week
)
SELECT
    l.cluster_id,
    MIN(w.rank) AS best_rank,
    COUNT(*) AS nights_listed,
    MIN(w.first_seen) AS first_seen,
    MAX(l.as_of) AS last_listed,
    MAX(l.n_support) AS follow_ups,
    ROUND(MAX(l.confidence), 3) AS confidence,
    ROUND(MAX(l.lift), 1) AS lift,
    ROUND(MAX(l.avoidable_contacts), 0) AS avoidable_contacts
FROM latest l
JOIN week w ON w.cluster_id = l.cluster_id
WHERE l.pos = 1
GROUP BY l.cluster_id
ORDER BY best_rank, l.cluster_id
