-- tested: everything tested for significance in a run, clusters and
-- sequences (fdr.sql corrects each kind as a family of its own).
--
-- Input:  cluster_candidates, sequence_candidates
-- Output: kind ('cluster' or 'sequence'), key, p_value
SELECT 'cluster' AS kind, key, p_value FROM cluster_candidates
UNION ALL
SELECT 'sequence' AS kind, key, p_value FROM sequence_candidates
