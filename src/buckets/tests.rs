//! Unit tests of [`super`] (buckets.rs).

use super::*;
use datafusion::arrow::array::StringArray;

#[test]
fn row_numbers_follow_scan_order() {
    // partition 0 has batches of 3 and 2 rows, partition 1 one of 4
    let k00 = provisional_row(0, 0).unwrap();
    let k01 = provisional_row(0, 1).unwrap();
    let k10 = provisional_row(1, 0).unwrap();
    // partition 0 is one file (key 7), partition 1 another (key 9)
    let ids = AssignedIds {
        files: vec![(0, 7), (1, 9)],
    };
    let numbers = RowNumbers::new(vec![(k10, 4), (k01, 2), (k00, 3)], Some(&ids));
    let schema = crate::ingest::contacts_in_schema(&DataType::Int64);
    let batch = |rows: Vec<i64>| {
        let n = rows.len();
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(rows.clone())),
                Arc::new(StringArray::from(vec!["c"; n])),
                Arc::new(
                    datafusion::arrow::array::TimestampMicrosecondArray::from(vec![0; n])
                        .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from(vec![Some("x"); n])),
                Arc::new(StringArray::from(vec![Some("x"); n])),
                new_null_array(&DataType::Utf8, n),
                Arc::new(Int64Array::from(rows)),
            ],
        )
        .unwrap()
    };
    let out = numbers.renumber(batch(vec![k10, k10 + 3])).unwrap();
    let rows = out.column(6).as_primitive::<Int64Type>().values().to_vec();
    assert_eq!(rows, vec![5, 8]);
    let ids = out.column(0).as_primitive::<Int64Type>().values().to_vec();
    assert_eq!(ids, vec![(9 << 32) + 1, (9 << 32) + 4]);
    let out = numbers.renumber(batch(vec![k01 + 1])).unwrap();
    assert_eq!(out.column(6).as_primitive::<Int64Type>().value(0), 4);
    assert_eq!(
        out.column(0).as_primitive::<Int64Type>().value(0),
        (7 << 32) + 5
    );
    assert!(provisional_row(MAX_SCAN_PARTITIONS, 0).is_err());
}

/// Contacts through bucket files come back as they went in: channel and
/// reason (nulls, empty texts, texts first seen in either bucket) as
/// codes and back, as dictionaries or as texts; the agent column left
/// out when unmapped (null again) and kept when mapped.
#[test]
fn bucket_files_give_the_contacts_back() {
    type Contact = (String, Option<String>, Option<String>, Option<String>);
    let schema = crate::ingest::contacts_in_schema(&DataType::Int64);
    let texts = [
        None,
        Some(""),
        Some("phone"),
        Some("a reason longer than 16 bytes"),
    ];
    let bounds = vec!["m".to_string()];
    // a sink's buckets after 5 scan batches of 7 rows, and the contacts
    // expected in each bucket
    let fill = |with_agent: bool| -> (Buckets, Vec<Vec<Contact>>) {
        let sink = Sink::new(schema.clone(), bounds.clone(), with_agent).unwrap();
        let mut want: Vec<Vec<Contact>> = vec![Vec::new(), Vec::new()];
        let mut scanned = Vec::new();
        for k in 0..5usize {
            let n = 7;
            let first = provisional_row(0, k as u64).unwrap();
            scanned.push((first, n as u64));
            let pick = |i: usize, m: usize| texts[(i * m + k) % texts.len()];
            let customers: Vec<String> = (0..n)
                .map(|i| format!("{}{i}", if (i + k) % 3 == 0 { "z" } else { "a" }))
                .collect();
            let channel: Vec<Option<&str>> = (0..n).map(|i| pick(i, 1)).collect();
            let reason: Vec<Option<&str>> = (0..n).map(|i| pick(i, 3)).collect();
            let agent: Vec<Option<&str>> = (0..n)
                .map(|i| if with_agent { pick(i, 2) } else { None })
                .collect();
            let own = |t: Option<&str>| t.map(|t| t.to_string());
            for i in 0..n {
                want[bucket_of(&bounds, &customers[i])].push((
                    customers[i].clone(),
                    own(channel[i]),
                    own(reason[i]),
                    own(agent[i]),
                ));
            }
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values(0..n as i64)),
                    Arc::new(StringArray::from(customers)),
                    Arc::new(
                        datafusion::arrow::array::TimestampMicrosecondArray::from(vec![0; n])
                            .with_timezone("UTC"),
                    ),
                    Arc::new(StringArray::from(channel)),
                    Arc::new(StringArray::from(reason)),
                    Arc::new(StringArray::from(agent)),
                    Arc::new(Int64Array::from_iter_values(
                        (0..n as i64).map(|i| first + i),
                    )),
                ],
            )
            .unwrap();
            sink.push(batch).unwrap();
        }
        sink.scanned(scanned);
        (sink.finish(None).unwrap(), want)
    };
    for with_agent in [false, true] {
        for as_text in [false, true] {
            let (mut buckets, want) = fill(with_agent);
            assert_eq!(buckets.len(), 2);
            for (b, want) in want.into_iter().enumerate() {
                let mut got = Vec::new();
                for batch in buckets.take(b, 2, as_text).unwrap().iter().flatten() {
                    let text = |name: &str| {
                        let c = batch.column_by_name(name).unwrap();
                        assert_eq!(
                            matches!(c.data_type(), DataType::Utf8),
                            as_text || !FileCodec::CODED.contains(&name),
                            "{name}"
                        );
                        let c = cast(c, &DataType::Utf8).unwrap();
                        let c = c.as_string::<i32>().clone();
                        (0..c.len())
                            .map(|i| c.is_valid(i).then(|| c.value(i).to_string()))
                            .collect::<Vec<_>>()
                    };
                    let [cu, ch, re, ag] = ["customer_id", "channel", "reason", "agent"].map(text);
                    for i in 0..batch.num_rows() {
                        got.push((
                            cu[i].clone().unwrap(),
                            ch[i].clone(),
                            re[i].clone(),
                            ag[i].clone(),
                        ));
                    }
                }
                let mut want = want;
                got.sort();
                want.sort();
                assert_eq!(got, want, "bucket {b}, agent {with_agent}");
            }
        }
    }
}

#[test]
fn range_bounds_cut_at_quantiles_in_order() {
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // 8 ids, 4 buckets: cut before the 3rd, 5th and 7th id in order
    let sample = ids(&["h", "b", "f", "d", "a", "g", "c", "e"]);
    let bounds = range_bounds(sample, 4);
    assert_eq!(bounds, ids(&["c", "e", "g"]));
    let of = |id: &str| bucket_of(&bounds, id);
    assert_eq!(
        ["a", "b", "c", "d", "e", "f", "g", "h", "zz"].map(of),
        [0, 0, 1, 1, 2, 2, 3, 3, 3]
    );
    // ids never seen in the sample fall in the range they sort into
    assert_eq!(of("0"), 0);
    assert_eq!(of("cc"), 1);
    // one id with most rows: no repeated bound, so no bucket between
    // two equal bounds; fewer buckets than asked
    let mut heavy = ids(&["a", "b"]);
    heavy.extend(std::iter::repeat_n("m".to_string(), 20));
    heavy.push("z".into());
    assert_eq!(range_bounds(heavy, 8), ids(&["m"]));
    // the smallest id is no bound (bucket 0 would hold nothing)
    assert_eq!(range_bounds(ids(&["a"; 10]), 4), Vec::<String>::new());
    assert_eq!(range_bounds(Vec::new(), 4), Vec::<String>::new());
    assert_eq!(range_bounds(ids(&["b", "a"]), 1), Vec::<String>::new());
}

#[test]
fn bucket_sizes() {
    assert_eq!(bucket_count(0, 10), 1);
    assert_eq!(bucket_count(10, 10), 1);
    assert_eq!(bucket_count(11, 10), 2);
    assert_eq!(bucket_count(1_000_000, 1), MAX_BUCKETS as usize);
    assert_eq!(bucket_contacts(Some(5), Some(1 << 30)), 5);
    assert_eq!(bucket_contacts(None, Some(4_000_000_000)), 10_000_000);
    assert_eq!(bucket_contacts(None, None), DEFAULT_BUCKET_CONTACTS);
}

#[test]
fn spilled_files_read_back_whole_and_bad_ones_are_named() {
    use datafusion::arrow::array::{StringArray, UInt8Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, true),
        Field::new("code", DataType::UInt8, true),
    ]));
    let batch = |from: i64, n: usize| {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(from..from + n as i64)),
                Arc::new(StringArray::from_iter((0..n).map(|i| {
                    (i % 3 != 0).then(|| format!("text {}", from + i as i64))
                }))),
                Arc::new(UInt8Array::from_iter(
                    (0..n).map(|i| (i % 5 != 0).then_some(i as u8)),
                )),
            ],
        )
        .unwrap()
    };
    let batches = vec![
        batch(0, 1000),
        batch(1000, 1),
        batch(1001, 0),
        batch(1001, 333),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spilled.arrow");
    spill(&path, &schema, &batches).unwrap();
    let back = read_file(&path).unwrap();
    assert_eq!(back, batches);
    // each batch is accounted its own size, not the whole file's
    let file_len = std::fs::metadata(&path).unwrap().len() as usize;
    let counted: usize = back
        .iter()
        .map(datafusion::common::utils::memory::get_record_batch_memory_size)
        .sum();
    assert!(
        counted < file_len,
        "{counted} bytes counted of a {file_len}-byte file"
    );
    // the file outlives nothing: unlinked, the batches stay readable
    std::fs::remove_file(&path).unwrap();
    assert_eq!(back[3], batches[3]);
    // a cut file is an error that names it
    spill(&path, &schema, &batches).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = read_file(&path).unwrap_err().to_string();
    assert!(err.contains("spilled.arrow"), "{err}");
}
