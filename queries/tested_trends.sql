-- tested_trends: the changes tested, for fdr.sql (clusters and sequences
-- corrected apart, as in the run).
--
-- Input:  trend_changes
-- Output: kind, key, p_value
SELECT kind, key, p_value FROM trend_changes WHERE p_value IS NOT NULL
