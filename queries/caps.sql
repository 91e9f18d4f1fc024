-- caps: what the per-customer caps of the pass leave out, per bucket.
-- Customers with more than ${pair_cap} contacts are left out of the pair
-- counts and follow-ups, with more than ${sequence_cap} of the sequences
-- (their contacts are still counted as repeats and events).
--
-- Input:  contacts (one bucket's annotated contacts)
-- Output: one row: pair_customers_skipped, pair_contacts_skipped,
--         sequence_customers_skipped, sequence_contacts_skipped
--
-- A customer's first contact is the one row of it without a previous
-- contact, so counting those rows counts customers.
SELECT
    COALESCE(SUM(CASE WHEN _customer_contacts > ${pair_cap} AND prev_gap_s IS NULL THEN 1 END), 0),
    COALESCE(SUM(CASE WHEN _customer_contacts > ${pair_cap} THEN 1 END), 0),
    COALESCE(SUM(CASE WHEN _customer_contacts > ${sequence_cap} AND prev_gap_s IS NULL THEN 1 END), 0),
    COALESCE(SUM(CASE WHEN _customer_contacts > ${sequence_cap} THEN 1 END), 0)
FROM contacts
