//! Frequent contacters and placeholder ids (counted in stage 2, written in
//! stage 5).
//!
//! Input: per bucket, the annotated contacts (each customer's contiguous,
//! in time order, with its number of contacts): [`Contacters::add_bucket`]
//! (first pass) counts customers by their number of contacts and lists
//! those above the fence of the bucket's own customers, in one pass over
//! each customer's contacts. A bucket whose fence was above the log's
//! lists the customers between the two when the second pass reads it again
//! ([`Contacters::fill_bucket`]), so the table is the same however the log
//! is cut into buckets.
//! Output: the `frequent_contacters` table ([`Contacters::finish`]) and its
//! summary for the manifest, with a warning for each id whose share of the
//! contacts no real customer could have.
//!
//! The rule. A customer is a frequent contacter when its number of contacts
//! n is extreme for the log: on the log scale, beyond Tukey's outlier fence,
//! ln n > ln Q3 + 1.5 · max(ln Q3 − ln Q1, ln 2), i.e. n > Q3 · (Q3/Q1)^1.5,
//! with Q1 and Q3 the quartiles of the customers' contact counts. Counts are
//! heavy-tailed, so the log scale; most customers of a log often share one
//! count (Q1 = Q3), so the spread is taken as at least a doubling; and the
//! fence is never below [`MIN_CONTACTS`]. On the ServiceNow log (Q1 = 1,
//! Q3 = 5) the fence is 56 incidents in 11 weeks.
//!
//! Their weight in the pattern statistics is already capped: every customer
//! counts with its first `customer_cap` triggers of a reason
//! ([`crate::timeline::triggers`]).
//!
//! A placeholder suspect is an id with at least [`PLACEHOLDER_SHARE`] of all
//! contacts and ten times the fence: an 'UNKNOWN' or '0' that a source
//! system writes for every caller it could not identify.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use serde::Serialize;

use crate::error::Result;

/// The fewest contacts a frequent contacter has, whatever the quartiles (the
/// per-bucket query lists no customer with fewer).
pub const MIN_CONTACTS: i64 = 8;

/// The share of all contacts from which an id is taken for a placeholder.
pub const PLACEHOLDER_SHARE: f64 = 0.01;

/// The frequent contacters' figures, for the manifest.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ContactersSummary {
    /// Contacts above which a customer is a frequent contacter.
    pub threshold: f64,
    /// Quartiles of the customers' contact counts.
    pub quartiles: (i64, i64),
    /// Frequent contacters.
    pub customers: u64,
    /// Their contacts.
    pub contacts: u64,
    /// Their share of all contacts.
    pub share_of_contacts: f64,
    /// Ids taken for placeholders (see the module docs).
    pub placeholder_suspects: Vec<String>,
    /// Contacts with the customer, time and contact id of the contact before
    /// them (a log holding some rows twice), and one such contact id.
    pub duplicates: u64,
    /// One duplicated contact id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_example: Option<String>,
}

impl ContactersSummary {
    /// The warning for duplicated contacts, if there are any.
    pub fn duplicates_note(&self) -> Option<String> {
        (self.duplicates > 0).then(|| {
            format!(
                "{} contacts have the customer, time and contact id of the contact before \
                 them (contact id {}): the log holds some rows twice; they are analysed \
                 as separate contacts, so remove the copies from the input",
                self.duplicates,
                self.duplicate_example.as_deref().unwrap_or("?")
            )
        })
    }
}

/// One listed customer.
#[derive(Serialize, serde::Deserialize)]
struct Listed {
    customer: String,
    contacts: i64,
    repeats: i64,
    first: i64,
    last: i64,
    top: String,
}

/// The per-bucket rows so far. Serialised, a cluster's executor sends one
/// bucket's to the client ([`Contacters::merge_bucket`]) and the client
/// sends the whole back for the second passes ([`Contacters::fill_part`]).
#[derive(Default, Serialize, serde::Deserialize)]
pub struct Contacters {
    /// Customers by their number of contacts.
    counts: BTreeMap<i64, i64>,
    listed: Vec<Listed>,
    /// The fewest contacts each bucket's list started from, by bucket
    /// ([`Contacters::add_bucket`]).
    listed_from: Vec<i64>,
    /// Duplicated contacts so far, and one contact id of them.
    duplicates: u64,
    duplicate_example: Option<String>,
}

impl Contacters {
    /// Nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds what [`Contacters::add_bucket`] gave over another bucket's
    /// contacts (a `Contacters` of that one bucket), as the next bucket.
    pub fn merge_bucket(&mut self, bucket: Contacters) {
        for (n, c) in bucket.counts {
            *self.counts.entry(n).or_default() += c;
        }
        self.listed.extend(bucket.listed);
        self.listed_from.extend(bucket.listed_from);
        self.duplicates += bucket.duplicates;
        if self.duplicate_example.is_none() {
            self.duplicate_example = bucket.duplicate_example;
        }
    }

    /// What [`Contacters::fill_bucket`] of bucket `b` added since the list
    /// held `before` customers, for [`Contacters::add_fill`] elsewhere.
    pub fn fill_part(&self, b: usize, before: usize) -> Contacters {
        Contacters {
            listed: self.listed[before..]
                .iter()
                .map(|l| Listed {
                    customer: l.customer.clone(),
                    top: l.top.clone(),
                    ..*l
                })
                .collect(),
            listed_from: vec![self.listed_from[b]],
            ..Default::default()
        }
    }

    /// Adds bucket `b`'s part of the second passes' list ([`Contacters::fill_part`]).
    pub fn add_fill(&mut self, b: usize, part: Contacters) {
        self.listed.extend(part.listed);
        if let Some(from) = part.listed_from.first() {
            self.listed_from[b] = *from;
        }
    }

    /// The customers listed so far.
    pub fn listed_len(&self) -> usize {
        self.listed.len()
    }

    /// Adds a bucket: its annotated contacts (the timeline pass's contacts
    /// mode: each customer's contacts contiguous, in time order, with
    /// `_customer_contacts`), one pass to count customers by their number of
    /// contacts, one to list those above the fence of the bucket's own
    /// customers. A bucket holds a random share of the customers (by the
    /// hash of their ids), so its quartiles are the log's (they are small
    /// integers); where they are not, `finish` says so.
    pub fn add_bucket(&mut self, parts: &[Vec<RecordBatch>]) -> Result<()> {
        let mut bucket: BTreeMap<i64, i64> = BTreeMap::new();
        for b in parts.iter().flatten() {
            let runs = b
                .column_by_name("_customer_contacts")
                .expect("annotated contacts")
                .as_primitive::<Int64Type>();
            let mut i = 0;
            while i < b.num_rows() {
                let n = runs.value(i).max(1);
                *bucket.entry(n).or_default() += 1;
                i += n as usize;
            }
        }
        let from = Contacters {
            counts: bucket.clone(),
            ..Default::default()
        }
        .threshold()
        .0
        .floor() as i64
            + 1;
        for (n, c) in bucket {
            *self.counts.entry(n).or_default() += c;
        }
        self.listed_from.push(from);
        for b in parts.iter().flatten() {
            self.list(b, from..=i64::MAX)?;
        }
        for part in parts {
            self.count_duplicates(part)?;
        }
        Ok(())
    }

    /// Counts the contacts of one partition (in customer and time order)
    /// whose customer, time and contact id are the previous contact's: a
    /// log loaded twice, or overlapping extracts. (Two copies of a contact
    /// are found when they are next to each other in that order, as they
    /// are unless the customer has another contact at the same instant.)
    fn count_duplicates(&mut self, part: &[RecordBatch]) -> Result<()> {
        use datafusion::arrow::compute::kernels::{boolean::and, cmp::eq};
        const KEYS: [&str; 3] = ["customer_id", "ts", "contact_id"];
        // rows `a..a+n` of `x` against rows `b..b+n` of `y`, key by key
        let same = |x: &RecordBatch, a: usize, y: &RecordBatch, b: usize, n: usize| {
            let mut all: Option<BooleanArray> = None;
            for k in KEYS {
                let (cx, cy) = (x.column_by_name(k), y.column_by_name(k));
                let (Some(cx), Some(cy)) = (cx, cy) else {
                    return Ok(BooleanArray::from(vec![false; n]));
                };
                let equal = eq(&cx.slice(a, n), &cy.slice(b, n))?;
                all = Some(match all {
                    Some(s) => and(&s, &equal)?,
                    None => equal,
                });
            }
            Ok::<_, datafusion::arrow::error::ArrowError>(all.expect("three keys"))
        };
        let mut previous: Option<&RecordBatch> = None;
        for b in part.iter().filter(|b| b.num_rows() > 0) {
            let n = b.num_rows();
            // the first row against the previous batch's last, then each
            // row against the one before it
            let mut found = Vec::new();
            if let Some(p) = previous {
                found.push((same(p, p.num_rows() - 1, b, 0, 1)?, 0));
            }
            if n > 1 {
                found.push((same(b, 0, b, 1, n - 1)?, 1));
            }
            for (flags, offset) in found {
                self.duplicates += flags.true_count() as u64;
                if self.duplicate_example.is_none()
                    && let Some(at) = flags.iter().position(|v| v == Some(true))
                    && let Some(id) = b.column_by_name("contact_id")
                {
                    self.duplicate_example = Some(
                        datafusion::arrow::util::display::array_value_to_string(id, at + offset)?,
                    );
                }
            }
            previous = Some(b);
        }
        Ok(())
    }

    /// Once every bucket is added (the counts are the log's): lists the
    /// customers of bucket `bucket` (its annotated contacts again) above
    /// the log's fence that its own, higher fence left out.
    pub fn fill_bucket(&mut self, bucket: usize, parts: &[Vec<RecordBatch>]) -> Result<()> {
        let from = self.threshold().0.floor() as i64 + 1;
        let listed_from = self.listed_from[bucket];
        if from < listed_from {
            for b in parts.iter().flatten() {
                self.list(b, from..=listed_from - 1)?;
            }
            self.listed_from[bucket] = from;
        }
        Ok(())
    }

    /// Lists the customers of `b` whose number of contacts is in `range`.
    fn list(&mut self, b: &RecordBatch, range: std::ops::RangeInclusive<i64>) -> Result<()> {
        let col = |name: &str| b.column_by_name(name).expect("annotated contacts");
        let runs = col("_customer_contacts").as_primitive::<Int64Type>();
        let customer = cast(col("customer_id"), &DataType::Utf8)?;
        let customer = customer.as_string::<i32>();
        let ts = cast(col("ts"), &DataType::Int64)?;
        let ts = ts.as_primitive::<Int64Type>();
        let reason = cast(col("reason"), &DataType::Utf8)?;
        let reason = reason.as_string::<i32>();
        let repeat = col("is_repeat").as_boolean();
        let mut i = 0;
        while i < b.num_rows() {
            let n = runs.value(i).max(1) as usize;
            if range.contains(&(n as i64)) {
                let rows = i..(i + n).min(b.num_rows());
                let mut by_reason: BTreeMap<&str, i64> = BTreeMap::new();
                for r in rows.clone() {
                    let text = if reason.is_null(r) {
                        "(none)"
                    } else {
                        reason.value(r)
                    };
                    *by_reason.entry(text).or_default() += 1;
                }
                let mut top: Vec<(&str, i64)> = by_reason.into_iter().collect();
                top.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(y.0)));
                self.listed.push(Listed {
                    customer: customer.value(i).to_string(),
                    contacts: n as i64,
                    repeats: rows.clone().filter(|r| repeat.value(*r)).count() as i64,
                    first: rows.clone().map(|r| ts.value(r)).min().unwrap_or(0),
                    last: rows.map(|r| ts.value(r)).max().unwrap_or(0),
                    top: top
                        .iter()
                        .take(3)
                        .map(|(r, c)| format!("{r} ({c})"))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            i += n;
        }
        Ok(())
    }

    /// The nearest-rank quantile q of the customers' contact counts.
    fn quantile(&self, q: f64) -> i64 {
        let total: i64 = self.counts.values().sum();
        let rank = ((q * total as f64).ceil() as i64).max(1);
        let mut seen = 0;
        for (contacts, customers) in &self.counts {
            seen += customers;
            if seen >= rank {
                return *contacts;
            }
        }
        0
    }

    /// The fence of the rule (module docs) and the quartiles.
    pub fn threshold(&self) -> (f64, (i64, i64)) {
        let (q1, q3) = (self.quantile(0.25).max(1), self.quantile(0.75).max(1));
        let spread = (q3 as f64 / q1 as f64).max(2.0);
        let fence = (q3 as f64 * spread.powf(1.5)).max(MIN_CONTACTS as f64);
        (fence, (q1, q3))
    }

    /// The customers counted (every bucket's, each once: a customer's
    /// contacts are all in one bucket).
    pub fn customers(&self) -> u64 {
        self.counts.values().sum::<i64>() as u64
    }

    /// The table, ranked by contacts (then id), and its summary.
    pub fn finish(mut self) -> Result<(RecordBatch, ContactersSummary)> {
        let (fence, quartiles) = self.threshold();
        debug_assert!(
            self.listed_from
                .iter()
                .all(|f| *f <= fence.floor() as i64 + 1),
            "every bucket filled"
        );
        let all: i64 = self.counts.iter().map(|(n, c)| n * c).sum();
        self.listed.retain(|l| l.contacts as f64 > fence);
        self.listed.sort_by(|a, b| {
            b.contacts
                .cmp(&a.contacts)
                .then(a.customer.cmp(&b.customer))
        });
        let share = |n: i64| if all > 0 { n as f64 / all as f64 } else { 0.0 };
        let suspect =
            |l: &Listed| share(l.contacts) >= PLACEHOLDER_SHARE && l.contacts as f64 > 10.0 * fence;
        let l = &self.listed;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(1..=l.len() as i64)),
            Arc::new(StringArray::from_iter_values(l.iter().map(|x| &x.customer))),
            Arc::new(Int64Array::from_iter_values(l.iter().map(|x| x.contacts))),
            Arc::new(Float64Array::from_iter_values(
                l.iter().map(|x| share(x.contacts)),
            )),
            Arc::new(Float64Array::from_iter_values(
                l.iter().map(|x| x.repeats as f64 / x.contacts as f64),
            )),
            Arc::new(StringArray::from_iter_values(l.iter().map(|x| &x.top))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(l.iter().map(|x| x.first))
                    .with_timezone("UTC"),
            ),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(l.iter().map(|x| x.last))
                    .with_timezone("UTC"),
            ),
            Arc::new(BooleanArray::from_iter(l.iter().map(|x| Some(suspect(x))))),
        ];
        let summary = ContactersSummary {
            threshold: fence,
            quartiles,
            customers: l.len() as u64,
            contacts: l.iter().map(|x| x.contacts as u64).sum(),
            share_of_contacts: share(l.iter().map(|x| x.contacts).sum()),
            placeholder_suspects: l
                .iter()
                .filter(|x| suspect(x))
                .map(|x| x.customer.clone())
                .collect(),
            duplicates: self.duplicates,
            duplicate_example: self.duplicate_example.clone(),
        };
        Ok((RecordBatch::try_new(schema(), columns)?, summary))
    }
}

/// Schema of the `frequent_contacters` table.
pub fn schema() -> SchemaRef {
    let ts = DataType::Timestamp(
        datafusion::arrow::datatypes::TimeUnit::Microsecond,
        Some("UTC".into()),
    );
    Arc::new(Schema::new(vec![
        Field::new("rank", DataType::Int64, false),
        Field::new("customer_id", DataType::Utf8, false),
        Field::new("contacts", DataType::Int64, false),
        Field::new("share_of_contacts", DataType::Float64, false),
        Field::new("repeat_rate", DataType::Float64, false),
        Field::new("top_reasons", DataType::Utf8, false),
        Field::new("first_contact", ts.clone(), false),
        Field::new("last_contact", ts, false),
        Field::new("placeholder_suspect", DataType::Boolean, false),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(i64, i64)]) -> Contacters {
        let mut c = Contacters::new();
        c.counts = pairs.iter().copied().collect();
        c
    }

    #[test]
    fn duplicates_within_and_across_batches() {
        use datafusion::arrow::array::TimestampMicrosecondArray;
        let schema = Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, false),
            Field::new(
                "ts",
                DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None),
                false,
            ),
            Field::new("contact_id", DataType::Utf8, false),
        ]));
        let batch = |rows: &[(&str, i64, &str)]| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                    Arc::new(TimestampMicrosecondArray::from_iter_values(
                        rows.iter().map(|r| r.1),
                    )),
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
                ],
            )
            .unwrap()
        };
        let part = vec![
            // a copy within the batch; a same-time contact with another id;
            // another customer's contact with the same id and time
            batch(&[("a", 1, "x"), ("a", 1, "x"), ("a", 1, "y"), ("b", 1, "y")]),
            batch(&[]),
            // the last row of the batch before, again
            batch(&[("b", 1, "y"), ("b", 2, "z")]),
        ];
        let mut c = Contacters::new();
        c.count_duplicates(&part).unwrap();
        assert_eq!(c.duplicates, 2);
        assert_eq!(c.duplicate_example.as_deref(), Some("x"));
    }

    #[test]
    fn the_fence() {
        // Q1 = 1, Q3 = 2: 2 * 2^1.5 = 5.7, below the floor
        assert_eq!(counts(&[(1, 60), (2, 30), (3, 10)]).threshold().0, 8.0);
        // Q1 = 2, Q3 = 8: 8 * 4^1.5
        assert_eq!(
            counts(&[(2, 30), (4, 30), (8, 30), (9, 10)]).threshold().0,
            64.0
        );
        // every customer alike: never below the floor
        assert_eq!(counts(&[(1, 10)]).threshold().0, MIN_CONTACTS as f64);
    }
}
