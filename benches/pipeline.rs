//! Criterion benches of the hot stages (the per-customer pass in each mode and
//! the sort in front of it), on data generated in the bench.
//!
//! `cargo bench --bench pipeline`

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::DataType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recur::ingest::contacts_in_schema;
use recur::timeline::{Mode, TimelineParams, process};

const H: i64 = 3_600_000_000;

/// A batch sorted by (customer, ts) as the operator receives it.
fn sorted_batch(rows: usize, customers: usize) -> RecordBatch {
    let mut rng = StdRng::seed_from_u64(1);
    let mut v: Vec<(String, i64, &str)> = (0..rows)
        .map(|_| {
            let c = rng.random_range(0..customers);
            let r = ["billing", "outage", "password", "plan", "device", "refund"]
                [rng.random_range(0..6)];
            (format!("C{c:08}"), rng.random_range(0..90 * 24 * H), r)
        })
        .collect();
    v.sort();
    let n = v.len() as i64;
    RecordBatch::try_new(
        contacts_in_schema(&DataType::Int64),
        vec![
            Arc::new(Int64Array::from_iter_values(1..=n)),
            Arc::new(StringArray::from_iter_values(
                v.iter().map(|r| r.0.as_str()),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(v.iter().map(|r| r.1))
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter_values(v.iter().map(|_| "phone"))),
            Arc::new(StringArray::from_iter_values(v.iter().map(|r| r.2))),
            Arc::new(StringArray::from(vec![None::<&str>; v.len()])),
            Arc::new(Int64Array::from_iter_values(0..n)),
        ],
    )
    .expect("valid batch")
}

fn timeline(c: &mut Criterion) {
    let rows = 200_000;
    // with the channel and reason codes, as the pipeline's sort hands it on
    let (mut coded, _) = recur::codes::encode_texts(vec![sorted_batch(rows, rows / 5)]).unwrap();
    let batch = coded.pop().expect("one partition");
    let params = TimelineParams {
        repeat_window_us: 24 * H,
        cluster_window_us: 7 * 24 * H,
        data_end_us: 90 * 24 * H,
        as_of_us: 90 * 24 * H,
        tz: chrono_tz::UTC,
        max_gap_us: 7 * 24 * H,
        max_span_us: 30 * 24 * H,
        channel_items: false,
        sequence_filter: Arc::new(Vec::new()),
        pair_windows_us: Arc::new(vec![24 * H, 7 * 24 * H]),
        channel_cost_micros: Arc::new(Default::default()),
        default_cost_micros: 1_000_000,
        pair_filter: Arc::new(Vec::new()),
        customer_cap: 3,
        sequence_steps: None,
        trigger_period: None,
    };
    let mut g = c.benchmark_group("timeline");
    g.throughput(Throughput::Elements(rows as u64));
    g.sample_size(20);
    g.bench_function("contacts", |b| {
        b.iter(|| process(&batch, Mode::Contacts, &params).unwrap())
    });
    g.bench_function("sequence_counts", |b| {
        b.iter(|| process(&batch, Mode::SequenceCounts, &params).unwrap())
    });
    g.bench_function("pair_counts", |b| {
        b.iter(|| process(&batch, Mode::PairCounts, &params).unwrap())
    });
    g.bench_function("exposure", |b| {
        b.iter(|| process(&batch, Mode::Exposure, &params).unwrap())
    });
    g.finish();
}

/// The (customer, time) sort in front of the pass, on the same contacts in
/// input (random) order.
fn sort(c: &mut Criterion) {
    let rows = 200_000;
    let sorted = sorted_batch(rows, rows / 5);
    // a fixed shuffle of the sorted rows
    let mut order: Vec<u32> = (0..rows as u32).collect();
    let mut rng = StdRng::seed_from_u64(2);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let shuffled = datafusion::arrow::compute::take_record_batch(
        &sorted,
        &datafusion::arrow::array::UInt32Array::from(order),
    )
    .expect("valid indices");
    let mut g = c.benchmark_group("sort");
    g.throughput(Throughput::Elements(rows as u64));
    g.sample_size(20);
    g.bench_function("customer_time", |b| {
        b.iter(|| recur::timeline::sorted::sort_partition(&shuffled).unwrap())
    });
    // as the pipeline sorts: many input batches (as ingest yields them) into
    // two partitions, on a pool of two threads, with the channel and reason
    // codes
    let batches: Vec<RecordBatch> = (0..rows)
        .step_by(8192)
        .map(|off| shuffled.slice(off, 8192.min(rows - off)))
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("a thread pool");
    g.bench_function("partition_and_sort_2", |b| {
        b.iter(|| {
            pool.install(|| {
                recur::timeline::sorted::partition_sort_and_encode(&batches, 2).unwrap()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, timeline, sort);
criterion_main!(benches);
