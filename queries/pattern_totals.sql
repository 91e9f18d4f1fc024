-- pattern_totals: the timeline pass's pattern counts summed to one row per
-- pattern (the pass counts per partition, and per bucket of a large log).
--
-- Input:  sequence_counts (per partition of the timeline pass, per pattern of
--                          2-4 items found by leftmost occurrence with max-gap
--                          and max-span: n start contacts, distinct customers,
--                          and the channel cost of the last steps in
--                          millionths; see src/timeline/sequences.rs)
-- Output: pattern, prefix, length, reason_1 .. reason_4, n_support,
--         customers, followup_cost
--
-- Kept as a table of its own because sequence_candidates.sql reads it twice
-- (the patterns, and their prefixes): as a CTE it was computed twice.
-- prefix, length and the reasons are functions of the pattern: grouping by
-- them too is grouping by the pattern.
SELECT pattern, prefix, length, reason_1, reason_2, reason_3, reason_4,
       SUM(n) AS n_support,
       SUM(customers) AS customers,
       SUM(followup_cost_micros) / 1000000.0 AS followup_cost
FROM sequence_counts
GROUP BY pattern, prefix, length, reason_1, reason_2, reason_3, reason_4
