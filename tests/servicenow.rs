//! The real service-desk log (tests/data/servicenow_incidents.parquet): the
//! engine's 24h repeat rate equals a plain reference computed here.

use std::collections::HashMap;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::TimestampMicrosecondType;

use crate::common::{config, read_parquet, root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_rate_matches_plain_reference() {
    let log = root().join("tests/data/servicenow_incidents.parquet");
    // Plain reference: per caller, sort the opening times; an incident is a
    // repeat when the caller's previous incident is at most 24h earlier.
    let mut by_caller: HashMap<String, Vec<i64>> = HashMap::new();
    for b in read_parquet(&log) {
        let caller_col = datafusion::arrow::compute::cast(
            b.column_by_name("caller_id").unwrap(),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let caller = caller_col.as_string::<i32>();
        let opened = datafusion::arrow::compute::cast(
            b.column_by_name("opened_at").unwrap(),
            &datafusion::arrow::datatypes::DataType::Timestamp(
                datafusion::arrow::datatypes::TimeUnit::Microsecond,
                None,
            ),
        )
        .unwrap();
        let opened = opened.as_primitive::<TimestampMicrosecondType>();
        for i in 0..b.num_rows() {
            if caller.is_valid(i) && opened.is_valid(i) {
                by_caller
                    .entry(caller.value(i).to_string())
                    .or_default()
                    .push(opened.value(i));
            }
        }
    }
    let mut total = 0u64;
    let mut repeats = 0u64;
    for times in by_caller.values_mut() {
        times.sort();
        total += times.len() as u64;
        repeats += times
            .windows(2)
            .filter(|w| w[1] - w[0] <= 86_400_000_000)
            .count() as u64;
    }
    assert_eq!(total, 20_766);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = config(&[&log], &out, |c| {
        c.customer_col = Some("caller_id".into());
        c.time_col = Some("opened_at".into());
        c.channel_col = Some("contact_type".into());
        c.reason_col = Some("category".into());
        c.contact_id_col = Some("number".into());
        c.agent_col = Some("assigned_to".into());
    });
    let s = recur::pipeline::run(&cfg, &recur::pipeline::NoProgress)
        .await
        .unwrap();
    assert_eq!(s.contacts, total);
    assert_eq!(s.manifest.rows.read, 20_769);
    assert_eq!(s.manifest.rows.excluded["null_customer_id"].rows, 3);
    let rate = s.repeat_rate.unwrap();
    assert_eq!(rate, repeats as f64 / total as f64);
    assert!((rate - 0.251).abs() < 0.0015, "repeat rate {rate}");

    // The share followed within 24h equals the share preceded: the same pairs.
    let contacts = read_parquet(&out.join("contacts.parquet"));
    let followed: usize = contacts
        .iter()
        .map(|b| {
            let f = b
                .column_by_name("followed_within_window")
                .unwrap()
                .as_boolean();
            (0..b.num_rows())
                .filter(|i| f.is_valid(*i) && f.value(*i))
                .count()
        })
        .sum();
    assert_eq!(followed as u64, repeats);
}
