//! Stage 5 — frequent contacters and placeholder ids.
//!
//! Input: per bucket, the rows of `queries/contact_counts.sql` (customers by
//! number of contacts) and of `queries/frequent_contacters.sql` (one row per
//! customer with at least [`MIN_CONTACTS`] contacts).
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
}

/// One listed customer (a row of `frequent_contacters.sql`).
struct Listed {
    customer: String,
    contacts: i64,
    repeats: i64,
    first: i64,
    last: i64,
    top: String,
}

/// The per-bucket rows so far.
#[derive(Default)]
pub struct Contacters {
    /// Customers by their number of contacts.
    counts: BTreeMap<i64, i64>,
    listed: Vec<Listed>,
}

impl Contacters {
    /// Nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds rows of `contact_counts.sql`.
    pub fn add_counts(&mut self, batches: &[RecordBatch]) -> Result<()> {
        for b in batches {
            let contacts = cast(b.column(0), &DataType::Int64)?;
            let customers = cast(b.column(1), &DataType::Int64)?;
            let (contacts, customers) = (
                contacts.as_primitive::<Int64Type>(),
                customers.as_primitive::<Int64Type>(),
            );
            for i in 0..b.num_rows() {
                *self.counts.entry(contacts.value(i)).or_default() += customers.value(i);
            }
        }
        Ok(())
    }

    /// Adds rows of `frequent_contacters.sql`.
    pub fn add_listed(&mut self, batches: &[RecordBatch]) -> Result<()> {
        for b in batches {
            let col = |name: &str| b.column_by_name(name).expect("frequent_contacters column");
            let customer = cast(col("customer_id"), &DataType::Utf8)?;
            let customer = customer.as_string::<i32>();
            let int = |name: &str| -> Result<ArrayRef> { Ok(cast(col(name), &DataType::Int64)?) };
            let (contacts, repeats, first, last) = (
                int("contacts")?,
                int("repeat_contacts")?,
                int("first_contact")?,
                int("last_contact")?,
            );
            let top = cast(col("top_reasons"), &DataType::Utf8)?;
            let top = top.as_string::<i32>();
            for i in 0..b.num_rows() {
                self.listed.push(Listed {
                    customer: customer.value(i).to_string(),
                    contacts: contacts.as_primitive::<Int64Type>().value(i),
                    repeats: repeats.as_primitive::<Int64Type>().value(i),
                    first: first.as_primitive::<Int64Type>().value(i),
                    last: last.as_primitive::<Int64Type>().value(i),
                    top: if top.is_null(i) {
                        String::new()
                    } else {
                        top.value(i).to_string()
                    },
                });
            }
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

    /// The table, ranked by contacts (then id), and its summary.
    pub fn finish(mut self) -> Result<(RecordBatch, ContactersSummary)> {
        let (fence, quartiles) = self.threshold();
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
