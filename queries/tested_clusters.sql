-- tested_clusters: the clusters tested for significance, before the
-- sequences are mined (fdr.sql reads `tested`).
--
-- Input:  cluster_candidates
-- Output: kind ('cluster'), key, p_value
SELECT 'cluster' AS kind, key, p_value FROM cluster_candidates
