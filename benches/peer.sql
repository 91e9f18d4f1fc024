-- The peer: what a user would otherwise write in DuckDB for the same figures
-- as `recur run --cluster-window 7d`: repeat flags and rate (a LAG window),
-- and A -> B counts with baseline and lift for one window (a range self-join).
-- {input} is replaced by the Parquet path; placeholders '0' and 'UNKNOWN' are
-- left out as recur is told to.
CREATE TEMP TABLE c AS
SELECT contact_id, customer_id, ts, channel, reason
FROM read_parquet('{input}')
WHERE customer_id IS NOT NULL AND customer_id <> ''
  AND customer_id NOT IN ('UNKNOWN', '0') AND ts IS NOT NULL;

CREATE TEMP TABLE repeats AS
SELECT contact_id,
       COALESCE(ts - LAG(ts) OVER (PARTITION BY customer_id ORDER BY ts, contact_id)
                <= INTERVAL 24 HOUR, false) AS is_repeat
FROM c;

-- first B-contact after each contact, per reason B, within 7 days
CREATE TEMP TABLE followups AS
SELECT a.contact_id, a.reason AS antecedent, b.reason AS consequent,
       MIN(epoch_us(b.ts) - epoch_us(a.ts)) / 1e6 AS lag_s
FROM c a
JOIN c b
  ON a.customer_id = b.customer_id AND b.ts > a.ts AND b.ts <= a.ts + INTERVAL 7 DAY
WHERE b.reason IS NOT NULL
GROUP BY ALL;

CREATE TEMP TABLE result_summary AS
SELECT COUNT(*) AS contacts, SUM(is_repeat::INT) AS repeats FROM repeats;

CREATE TEMP TABLE result_pairs AS
WITH total AS (SELECT COUNT(*) AS n FROM c),
     ante AS (SELECT reason AS antecedent, COUNT(*) AS n_antecedent FROM c
              WHERE reason IS NOT NULL GROUP BY reason),
     base AS (SELECT consequent, COUNT(*) AS n_followed FROM followups GROUP BY consequent),
     pairs AS (SELECT antecedent, consequent, COUNT(*) AS n_support FROM followups
               WHERE antecedent IS NOT NULL AND antecedent <> consequent
               GROUP BY ALL HAVING COUNT(*) >= 30)
SELECT p.antecedent, p.consequent, a.n_antecedent, p.n_support,
       b.n_followed / total.n AS baseline,
       (p.n_support / a.n_antecedent) / (b.n_followed / total.n) AS lift
FROM pairs p JOIN ante a USING (antecedent) JOIN base b USING (consequent), total;
