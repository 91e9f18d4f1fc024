-- fdr: Benjamini-Hochberg q-values across everything tested in the run.
--
-- Input:  tested (kind, key, p_value): every cluster candidate (all windows) and
--         every sequence candidate.
-- Output: kind, key, p_value, q_value
--
-- With the m p-values sorted ascending and i the position of p_(i),
-- q_(i) = min over j >= i of min(1, m * p_(j) / j). Walking the p-values from
-- the largest down, that is a running minimum.
WITH ordered AS (
    SELECT kind, key, p_value,
           ROW_NUMBER() OVER (ORDER BY p_value DESC, kind, key) AS from_top,
           COUNT(*) OVER () AS m
    FROM tested
)
SELECT kind, key, p_value,
       MIN(LEAST(1.0, p_value * m / (m - from_top + 1))) OVER (
           ORDER BY from_top ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
       ) AS q_value
FROM ordered
