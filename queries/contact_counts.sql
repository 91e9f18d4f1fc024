-- contact_counts: how many customers made each number of contacts, for the
-- frequent-contacter rule (src/contacters.rs).
--
-- Input:  contacts (all, or one bucket's: the counts add up over buckets)
-- Output: contacts, customers
--
-- A customer's first contact is the one without a previous contact, so
-- counting those counts customers.
SELECT _customer_contacts AS contacts, COUNT(*) AS customers
FROM contacts
WHERE prev_gap_s IS NULL
GROUP BY _customer_contacts
