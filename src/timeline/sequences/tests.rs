//! Unit tests of [`super`] (sequences.rs).

use super::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// One row of sequence counts: its items (2 to 4 reasons, or
/// channel:reason items) and counts.
type Row = (Vec<&'static str>, [i64; 3]);

/// The reason of an item: after the channel, if any.
fn reason_of(item: &str) -> &str {
    item.rsplit(':').next().expect("a part")
}

/// `rows` as the pass writes them, coded into `dictionary` (item texts;
/// every item of `rows` among them, in any order).
fn coded_batch(rows: &[Row], dictionary: &[&'static str]) -> RecordBatch {
    let names: ArrayRef = Arc::new(StringArray::from_iter_values(dictionary));
    let reasons: ArrayRef = Arc::new(StringArray::from_iter_values(
        dictionary.iter().map(|d| reason_of(d)),
    ));
    let keys: Vec<UInt32Array> = (0..MAX_SEQUENCE_LEN)
        .map(|k| {
            rows.iter()
                .map(|r| {
                    r.0.get(k)
                        .map(|i| dictionary.iter().position(|d| d == i).unwrap() as u32)
                })
                .collect()
        })
        .collect();
    let int = |f: &dyn Fn(&Row) -> i64| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<Int64Array>())
    };
    let mut columns = vec![int(&|r| r.0.len() as i64)];
    for values in [&names, &reasons] {
        for k in &keys {
            columns.push(Arc::new(
                DictionaryArray::<UInt32Type>::try_new(k.clone(), values.clone()).unwrap(),
            ));
        }
    }
    for c in 0..N_SUMMED {
        columns.push(int(&move |r: &Row| if c < 3 { r.1[c] } else { 0 }));
    }
    RecordBatch::try_new(sequence_counts_schema(), columns).unwrap()
}

/// `rows` as [`PatternSums::finish`] writes them (its first ten
/// columns: the texts and totals).
fn text_batch(rows: &[Row]) -> RecordBatch {
    let text = |f: &dyn Fn(&Row) -> Option<String>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let int = |f: &dyn Fn(&Row) -> i64| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<Int64Array>())
    };
    let reason = |k: usize| move |r: &Row| r.0.get(k).map(|s| reason_of(s).to_string());
    let schema = Arc::new(sequence_totals_schema().project(&TOTALS).unwrap());
    RecordBatch::try_new(
        schema,
        vec![
            text(&|r| Some(r.0.join(PATTERN_SEP))),
            text(&|r| Some(r.0[..r.0.len() - 1].join(PATTERN_SEP))),
            int(&|r| r.0.len() as i64),
            text(&reason(0)),
            text(&reason(1)),
            text(&reason(2)),
            text(&reason(3)),
            int(&|r| r.1[0]),
            int(&|r| r.1[1]),
            int(&|r| r.1[2]),
        ],
    )
    .unwrap()
}

/// The texts and totals of [`sequence_totals_schema`].
const TOTALS: [usize; 10] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];

/// `batch`'s texts and totals with its rows in the order of their
/// pattern texts.
fn by_pattern(batch: &RecordBatch) -> RecordBatch {
    let batch = batch.project(&TOTALS).unwrap();
    let order = datafusion::arrow::compute::sort_to_indices(batch.column(0), None, None).unwrap();
    datafusion::arrow::compute::take_record_batch(&batch, &order).unwrap()
}

/// Against a plain map from pattern text to summed counts: every pattern
/// once, its counts summed over batches whose codes differ (each its own
/// dictionary, in its own order), its texts and reasons its own (the
/// rows compared in the order of their patterns); with reason items and with channel:reason items
/// that share reasons; batches without rows and no batches at all; and
/// the batches summed in two halves and merged.
#[test]
fn sums_by_pattern_like_a_map() {
    let reasons = ["billing", "outage", "login", "moving"];
    let channel_reasons = ["billing", "phone:billing", "chat:billing", "chat:outage"];
    assert!(sum_by_pattern(&[], 0).unwrap().is_none());
    assert!(
        sum_by_pattern(&[coded_batch(&[], &reasons)], 0)
            .unwrap()
            .is_none()
    );
    let mut rng = StdRng::seed_from_u64(3);
    for trial in 0..200 {
        let items = if trial % 2 == 0 {
            reasons
        } else {
            channel_reasons
        };
        let batches: Vec<RecordBatch> = (0..rng.random_range(1..5))
            .map(|_| {
                let rows: Vec<Row> = (0..rng.random_range(0..30))
                    .map(|_| {
                        let len = rng.random_range(2..=4);
                        let pattern = (0..len)
                            .map(|_| items[rng.random_range(0..items.len())])
                            .collect();
                        let counts = [0; 3].map(|_| rng.random_range(0..1_000_000_000_000));
                        (pattern, counts)
                    })
                    .collect();
                let mut dictionary = items.to_vec();
                dictionary.shuffle(&mut rng);
                coded_batch(&rows, &dictionary)
            })
            .collect();
        let mut want: BTreeMap<Vec<&'static str>, [i64; 3]> = BTreeMap::new();
        let mut order: Vec<Vec<&'static str>> = Vec::new();
        for b in &batches {
            for i in 0..b.num_rows() {
                let key: Vec<&'static str> = (1..=MAX_SEQUENCE_LEN)
                    .filter_map(|k| {
                        let d = b
                            .column_by_name(&format!("item_{k}"))
                            .unwrap()
                            .as_dictionary::<UInt32Type>();
                        let v = d.values().as_string::<i32>();
                        d.keys()
                            .is_valid(i)
                            .then(|| v.value(d.keys().value(i) as usize))
                            .map(|t| *items.iter().find(|x| **x == t).unwrap())
                    })
                    .collect();
                let sums = want.entry(key.clone()).or_insert_with(|| {
                    order.push(key);
                    [0; 3]
                });
                for (k, sum) in sums.iter_mut().enumerate() {
                    *sum += b
                        .column_by_name(SUMMED[k])
                        .unwrap()
                        .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                        .value(i);
                }
            }
        }
        // a cut at a random support (none, or about half the patterns)
        let min_n = [i64::MIN, 500_000_000_000][rng.random_range(0..2)];
        let got = sum_by_pattern(&batches, min_n).unwrap();
        let rows: Vec<Row> = order
            .iter()
            .map(|p| (p.clone(), want[p]))
            .filter(|r| r.1[0] >= min_n)
            .collect();
        let Some(got) = got else {
            assert!(rows.is_empty(), "trial {trial}");
            continue;
        };
        assert_eq!(
            by_pattern(&got),
            by_pattern(&text_batch(&rows)),
            "trial {trial}"
        );
        // the same from two halves merged
        let half = rng.random_range(0..=batches.len());
        let mut first = PatternSums::new();
        let mut second = PatternSums::new();
        for b in &batches[..half] {
            first.add(b).unwrap();
        }
        for b in &batches[half..] {
            second.add(b).unwrap();
        }
        first.merge(second);
        assert_eq!(
            first.finish(min_n).unwrap().map(|b| by_pattern(&b)),
            Some(by_pattern(&got)),
            "trial {trial}, merged"
        );
    }
}

/// A batch whose reasons are not keyed like its items is refused.
#[test]
fn items_and_reasons_keyed_alike() {
    let b = coded_batch(&[(vec!["a", "b"], [1, 1, 1])], &["a", "b"]);
    let mut columns = b.columns().to_vec();
    let swapped = DictionaryArray::<UInt32Type>::try_new(
        UInt32Array::from(vec![1]),
        Arc::new(StringArray::from(vec!["a", "b"])),
    )
    .unwrap();
    columns[1 + MAX_SEQUENCE_LEN] = Arc::new(swapped);
    let b = RecordBatch::try_new(b.schema(), columns).unwrap();
    assert!(PatternSums::new().add(&b).is_err());
}
