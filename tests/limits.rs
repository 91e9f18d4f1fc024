//! Logs at the edges of what the engine sizes by their content.

use std::sync::Arc;

use datafusion::arrow::array::TimestampMicrosecondArray;
use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common;

const DISTINCT_REASONS: usize = 50_000;

/// A log of 50,000 distinct reasons (each customer's contacts a day apart,
/// every reason used): every pass runs under a 1 GiB memory limit, every row
/// is counted, and no table is sized by the square of the number of reasons
/// (at 50,000 reasons one such table of bytes is 2.5 GB; the run never asks
/// for a block of even 1 GiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_reasons_run_within_the_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("many-reasons.parquet");
    let mut rng = StdRng::seed_from_u64(50_000);
    let (customers, per_customer) = (12_000usize, 10usize);
    let n = customers * per_customer;
    let day_us = 86_400_000_000i64;
    let start = 1_780_000_000_000_000i64;
    let reasons: Vec<String> = (0..n)
        .map(|i| {
            let r = if i < DISTINCT_REASONS {
                i
            } else {
                rng.random_range(0..DISTINCT_REASONS)
            };
            format!("reason {r:05}")
        })
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("contact_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Utf8, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("reason", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(0..n as i64)),
        Arc::new(StringArray::from_iter_values(
            (0..n).map(|i| format!("C{:06}", i % customers)),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                (0..n).map(|i| start + (i / customers) as i64 * day_us + (i % 977) as i64),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(reasons)),
    ];
    common::write_batch(&log, &RecordBatch::try_new(schema, columns).unwrap());

    let out = dir.path().join("out");
    let cfg = common::config(&[&log], &out, |o| {
        o.memory_limit = Some("1GiB".into());
        o.threads = Some(2);
    });
    let summary = recur::pipeline::run(&cfg, &recur::pipeline::NoProgress)
        .await
        .unwrap();
    let m = &summary.manifest;
    assert_eq!(m.rows.read, n as u64);
    assert_eq!(m.rows.used, n as u64, "{:?}", m.rows.excluded);
    assert_eq!(summary.contacts, n as u64);
    assert!(m.memory.held_bytes_peak <= 1 << 30, "{:?}", m.memory);
    // every customer is under the pass's per-customer caps: none skipped
    assert!(m.caps.values().all(|v| *v == 0), "{:?}", m.caps);
    let largest = crate::largest_allocation();
    assert!(
        largest < 1 << 30,
        "a block of {largest} bytes was allocated for {DISTINCT_REASONS} reasons"
    );
}
