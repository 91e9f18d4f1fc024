-- sequence_steps: the steps a reported sequence may take: the (antecedent,
-- consequent) pairs kept as clusters at some window (significant, with the
-- support and customers a cluster needs). The timeline pass mines
-- sequences along these steps only.
--
-- Input:  cluster_candidates, fdr (clusters)
-- Output: antecedent, consequent
--
-- Parameters: ${alpha}, ${min_support}, ${min_customers}.
SELECT DISTINCT c.antecedent, c.consequent
FROM cluster_candidates c
JOIN fdr f ON f.kind = 'cluster' AND f.key = c.key
WHERE f.q_value <= ${alpha}
  AND c.n_support >= ${min_support}
  AND c.customers >= ${min_customers}
ORDER BY c.antecedent, c.consequent
