-- fdr: Benjamini-Hochberg q-values, one family per kind: the clusters (every
-- pair at every window) and the sequences are corrected separately, so that
-- many tiny p-values of one kind do not loosen the threshold of the other.
--
-- Input:  tested (kind, key, p_value): every cluster candidate (all windows) and
--         every sequence candidate.
-- Output: kind, key, p_value, q_value
--
-- Within a kind, with its m p-values sorted ascending and i the position of
-- p_(i), q_(i) = min over j >= i of min(1, m * p_(j) / j). Walking the
-- p-values from the largest down, that is a running minimum.
WITH ordered AS (
    SELECT kind, key, p_value,
           ROW_NUMBER() OVER (PARTITION BY kind ORDER BY p_value DESC, key) AS from_top,
           COUNT(*) OVER (PARTITION BY kind) AS m
    FROM tested
)
SELECT kind, key, p_value,
       MIN(LEAST(1.0, p_value * m / (m - from_top + 1))) OVER (
           PARTITION BY kind
           ORDER BY from_top ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
       ) AS q_value
FROM ordered
