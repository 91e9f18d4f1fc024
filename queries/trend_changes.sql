-- trend_changes: every pattern of either period, the two periods side by
-- side, and the test of the change of its follow-up rate.
--
-- Input:  trend_before, trend_recent (period_clusters.sql and
--         period_sequences.sql of each period)
-- Output: kind, key (pattern and window), pattern_id, window_s, before_*
--         and recent_* (n_antecedent, n_support, customers, confidence,
--         triggers, rate, lift, q_value, significant), p_value (of the
--         change; null when a period has no counted trigger, so that there
--         is nothing to compare)
--
-- rate = observed / triggers: the share of the counted triggers (each
-- customer's first few, whose window has ended by the as-of) followed.
-- p_value: change_p_value (src/significance.rs), a two-proportion test in
-- its conditional form: given both periods' followed triggers, under "the
-- rate is the same in both" the recent period's share of them is binomial
-- with its share of the counted triggers; the counts are divided by the
-- dispersion the customers' own counts show (Σ over customers of their
-- followed triggers squared), so that customers, not contacts, are the
-- units. Two-sided.
SELECT
    COALESCE(b.kind, r.kind) AS kind,
    COALESCE(b.pattern_id, r.pattern_id) || ' @'
        || CAST(COALESCE(b.window_s, r.window_s) AS VARCHAR) || 's' AS key,
    COALESCE(b.pattern_id, r.pattern_id) AS pattern_id,
    COALESCE(b.window_s, r.window_s) AS window_s,
    b.n_antecedent AS before_n_antecedent,
    b.n_support AS before_n_support,
    b.customers AS before_customers,
    b.confidence AS before_confidence,
    b.triggers AS before_triggers,
    b.observed / NULLIF(b.triggers, 0.0) AS before_rate,
    b.lift AS before_lift,
    b.q_value AS before_q_value,
    COALESCE(b.significant, false) AS before_significant,
    r.n_antecedent AS recent_n_antecedent,
    r.n_support AS recent_n_support,
    r.customers AS recent_customers,
    r.confidence AS recent_confidence,
    r.triggers AS recent_triggers,
    r.observed / NULLIF(r.triggers, 0.0) AS recent_rate,
    r.lift AS recent_lift,
    r.q_value AS recent_q_value,
    COALESCE(r.significant, false) AS recent_significant,
    CASE WHEN b.triggers > 0 AND r.triggers > 0
         THEN change_p_value(b.observed, b.triggers, b.variance,
                             r.observed, r.triggers, r.variance)
    END AS p_value
FROM trend_before b
FULL OUTER JOIN trend_recent r
  ON r.kind = b.kind AND r.pattern_id = b.pattern_id AND r.window_s = b.window_s
