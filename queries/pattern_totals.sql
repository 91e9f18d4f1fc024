-- pattern_totals: the timeline pass's pattern counts, one row per pattern,
-- with the follow-up cost in currency units and the significance test's
-- counted occurrences and expectation (see sequence_candidates.sql).
--
-- Input:  sequence_counts (one row per pattern of 2-4 items found by leftmost
--                          occurrence with max-gap and max-span: n start
--                          contacts, distinct customers, and the channel cost
--                          of the last steps in millionths; the pass counts
--                          per partition, and per bucket of a large log, by
--                          item codes, and recur sums those counts by pattern
--                          before writing the texts: see PatternSums in
--                          src/timeline/sequences.rs; only the patterns with
--                          n at least the minimum support (--min-support) are
--                          written, the only ones sequence_candidates.sql
--                          reads: a prefix occurs wherever its pattern does,
--                          so it has at least the pattern's n)
-- Output: pattern, prefix, length, reason_1 .. reason_4, n_support,
--         customers, followup_cost
--
-- Kept as a table of its own because sequence_candidates.sql reads it twice
-- (the patterns, and their prefixes).
SELECT pattern, prefix, length, reason_1, reason_2, reason_3, reason_4,
       n AS n_support,
       customers,
       followup_cost_micros / 1000000.0 AS followup_cost,
       n_counted, sum_sq, prefix_counted, expected
FROM sequence_counts
