-- frequent_contacters: the customers with at least ${min_contacts} contacts,
-- one row each, for the frequent_contacters table (src/contacters.rs keeps
-- those above the log's threshold and ranks them).
--
-- Input:  contacts (all, or one bucket's: a customer is in one bucket)
-- Output: customer_id, contacts, repeat_contacts, first_contact,
--         last_contact, top_reasons (the three most frequent reasons with
--         their contacts, e.g. 'billing (41), outage (7), (none) (2)')
--
-- Parameters: ${min_contacts}.
WITH heavy AS (
    SELECT customer_id, reason, is_repeat, ts
    FROM contacts
    WHERE _customer_contacts >= ${min_contacts}
),
per_reason AS (
    SELECT customer_id, COALESCE(reason, '(none)') AS reason, COUNT(*) AS n
    FROM heavy
    GROUP BY customer_id, COALESCE(reason, '(none)')
),
ranked AS (
    SELECT customer_id, reason, n,
           ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY n DESC, reason) AS pos
    FROM per_reason
),
top AS (
    SELECT customer_id,
           string_agg(reason || ' (' || CAST(n AS VARCHAR) || ')', ', ' ORDER BY pos) AS top_reasons
    FROM ranked
    WHERE pos <= 3
    GROUP BY customer_id
)
SELECT h.customer_id,
       COUNT(*) AS contacts,
       SUM(CASE WHEN h.is_repeat THEN 1 ELSE 0 END) AS repeat_contacts,
       MIN(h.ts) AS first_contact,
       MAX(h.ts) AS last_contact,
       t.top_reasons
FROM heavy h
JOIN top t ON t.customer_id = h.customer_id
GROUP BY h.customer_id, t.top_reasons
