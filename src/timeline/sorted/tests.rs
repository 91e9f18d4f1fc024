//! Unit tests of [`super`] (sorted.rs).

use super::*;
use crate::codes::{decode_texts, encode_texts};
use crate::ingest::contacts_in_schema;
use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::datatypes::UInt32Type;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The same text gets the same code in every partition, codes follow
/// the texts' order, nulls stay null, and cutting the same rows into other
/// partitions gives every row the same code.
#[test]
fn text_codes_are_the_same_across_partitions_and_in_text_order() {
    let mut rng = StdRng::seed_from_u64(11);
    let names = ["phone", "chat", "email", "app", "web", "branch"];
    let rows: Vec<(Option<&str>, Option<&str>)> = (0..2_000)
        .map(|_| {
            let mut pick =
                || (rng.random_range(0..8) > 0).then(|| names[rng.random_range(0..names.len())]);
            (pick(), pick())
        })
        .collect();
    let batch = |rows: &[(Option<&str>, Option<&str>)]| {
        let channel: StringArray = rows.iter().map(|r| r.0).collect();
        let reason: StringArray = rows.iter().map(|r| r.1).collect();
        RecordBatch::try_from_iter([
            ("channel", Arc::new(channel) as ArrayRef),
            ("reason", Arc::new(reason) as ArrayRef),
        ])
        .unwrap()
    };
    // each row's (channel code, reason code), partitions read in order
    let codes = |rows: &[(Option<&str>, Option<&str>)], cuts: &[usize]| {
        let mut parts = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain([rows.len()].iter()) {
            parts.push(batch(&rows[start..end]));
            start = end;
        }
        let (coded, dict) = encode_texts(parts).unwrap();
        let mut out = Vec::new();
        for b in &coded {
            let [ch, re] = ["_channel_code", "_reason_code"].map(|c| {
                b.column_by_name(c)
                    .unwrap()
                    .as_primitive::<UInt32Type>()
                    .clone()
            });
            for i in 0..b.num_rows() {
                out.push((
                    ch.is_valid(i).then(|| ch.value(i)),
                    re.is_valid(i).then(|| re.value(i)),
                ));
            }
        }
        (out, dict)
    };
    let (one, dict) = codes(&rows, &[]);
    let mut sorted = names.to_vec();
    sorted.sort_unstable();
    assert_eq!(dict.channel, sorted);
    assert_eq!(dict.reason, sorted);
    for ((ch, re), (ch_code, re_code)) in rows.iter().zip(&one) {
        assert_eq!(*ch, ch_code.map(|c| dict.channel[c as usize].as_str()));
        assert_eq!(*re, re_code.map(|c| dict.reason[c as usize].as_str()));
    }
    // partitions that each see only some of the texts, one of them none
    let mut by_channel = rows.clone();
    by_channel.sort_by_key(|r| r.0);
    let (split, _) = codes(&by_channel, &[0, 300, 301, 1_200]);
    let (whole, _) = codes(&by_channel, &[]);
    assert_eq!(split, whole);
}

#[test]
fn text_columns_from_runs_match_arrows_own() {
    // runs of values and nulls, nulls first, between and last, and a
    // column with no nulls; against the array Arrow collects itself
    let mut rng = StdRng::seed_from_u64(7);
    // (odd trials draw from all but the last word: no nulls)
    // (lengths about the 16 bytes short texts are copied as)
    let words = [
        Some("phone"),
        Some(""),
        Some("a longer reason text"),
        Some("x"),
        Some("C0000001"),
        Some("fifteen bytes.."),
        Some("sixteen bytes..."),
        Some("seventeen bytes.."),
        Some("h\u{e9}llo w\u{f6}rld"),
        None,
    ];
    for trial in 0..200 {
        let runs: Vec<(Option<&str>, usize)> = (0..rng.random_range(0..12))
            .map(|_| {
                let w = words[rng.random_range(0..words.len() - (trial % 2))];
                (w, rng.random_range(0..4))
            })
            .collect();
        let n = runs.iter().map(|(_, len)| len).sum();
        let got = text_column(runs.iter().map(|(w, len)| (w.map(Text::of), *len)), n).unwrap();
        let want: StringArray = runs
            .iter()
            .flat_map(|(w, len)| std::iter::repeat_n(*w, *len))
            .collect();
        assert_eq!(got.as_string::<i32>(), &want, "{runs:?}");
    }
}

/// The prefix is the text's first 16 bytes, zero-padded, big-endian, at
/// every length (each load width, the overlap of its two words).
#[test]
fn text_prefixes_are_the_padded_first_bytes() {
    let mut rng = StdRng::seed_from_u64(11);
    for n in 0..40 {
        for _ in 0..50 {
            let text: String = (0..n)
                .map(|_| char::from(rng.random_range(1u8..128)))
                .collect();
            let mut buf = [0u8; 16];
            let k = n.min(16);
            buf[..k].copy_from_slice(&text.as_bytes()[..k]);
            assert_eq!(text_prefix(&text), u128::from_be_bytes(buf), "{text:?}");
        }
    }
}

/// Text codes against a plain map: many values (the table grows),
/// texts that share their prefix, length and last bytes (one slot hash,
/// told apart by the whole text), empty texts and nulls.
#[test]
fn text_codes_match_a_plain_map() {
    let mut rng = StdRng::seed_from_u64(13);
    let mut pool: Vec<String> = vec![String::new(), "x".into(), "sixteen bytes...".into()];
    for k in 0..300 {
        pool.push(format!("reason_{k}"));
        // same 16-byte prefix, length and last 8 bytes: differ in byte 16
        pool.push(format!(
            "a shared prefix {}_the same tail",
            (b'a' + (k % 26) as u8) as char
        ));
    }
    pool.sort_unstable();
    pool.dedup();
    for _ in 0..20 {
        let rows: Vec<Option<&str>> = (0..2000)
            .map(|_| {
                (rng.random_range(0..10) > 0)
                    .then(|| pool[rng.random_range(0..pool.len())].as_str())
            })
            .collect();
        let array: StringArray = rows.iter().copied().collect();
        let mut codes = TextCodes::default();
        let mut want: HashMap<&str, u32> = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            let got = codes.code(&array, i);
            match row {
                None => assert_eq!(got, u32::MAX),
                Some(t) => {
                    let next = want.len() as u32;
                    assert_eq!(got, *want.entry(t).or_insert(next), "{t:?}");
                    assert_eq!(codes.values()[got as usize], *t);
                }
            }
        }
        assert_eq!(codes.values().len(), want.len());
    }
}

/// Codes give back the texts they were made from: runs of equal codes,
/// nulls (alone, in runs, and under a code that is also used by valid
/// rows), and codes past the texts read as null.
#[test]
fn decoded_texts_are_the_coded_ones() {
    let mut rng = StdRng::seed_from_u64(5);
    let names = ["app", "billing", "", "a longer reason text"];
    for trial in 0..200 {
        let n = rng.random_range(0..40);
        let mut texts: Vec<Option<&str>> = Vec::new();
        while texts.len() < n {
            let t = (trial % 3 == 0 || rng.random_range(0..5) > 0)
                .then(|| names[rng.random_range(0..names.len())]);
            texts.extend(std::iter::repeat_n(t, rng.random_range(1..5)));
        }
        texts.truncate(n);
        let batch = RecordBatch::try_from_iter([
            (
                "channel",
                Arc::new(StringArray::from(texts.clone())) as ArrayRef,
            ),
            (
                "reason",
                Arc::new(StringArray::from(texts.clone())) as ArrayRef,
            ),
        ])
        .unwrap();
        let (coded, dict) = encode_texts(vec![batch]).unwrap();
        let codes = coded[0]
            .column_by_name("_reason_code")
            .unwrap()
            .as_primitive::<UInt32Type>();
        // (a null row's code is 0, the first text's)
        let got = decode_texts(codes, &dict.reason).unwrap();
        assert_eq!(got.as_string::<i32>(), &StringArray::from(texts), "{trial}");
    }
    let past = UInt32Array::from(vec![Some(0), Some(1), None, Some(7)]);
    let got = decode_texts(&past, &["a".to_string(), "b".to_string()]).unwrap();
    let want = StringArray::from(vec![Some("a"), Some("b"), None, None]);
    assert_eq!(got.as_string::<i32>(), &want);
}

/// The codes the sort's gather hands on are those [`encode_texts`]
/// gives the sorted partitions by hashing their texts.
#[test]
fn the_sorts_codes_are_those_of_encode_texts() {
    for seed in 0..8 {
        let input = full_rows(seed, 50 + seed as usize * 113, seed % 2 == 0);
        let whole = full_batch(&input, seed % 3 == 0);
        // several input batches, as ingest gives them
        let batches: Vec<RecordBatch> = (0..whole.num_rows())
            .step_by(97)
            .map(|o| whole.slice(o, 97.min(whole.num_rows() - o)))
            .collect();
        for partitions in [1, 3] {
            let (coded, dict) = partition_sort_and_encode(&batches, partitions).unwrap();
            let (want, want_dict) =
                encode_texts(partition_and_sort(&batches, partitions).unwrap()).unwrap();
            assert_eq!(dict, want_dict);
            assert_eq!(coded, want, "seed {seed}, {partitions} partitions");
        }
    }
}

#[test]
fn sorts_like_a_plain_sort_with_ties() {
    for seed in 0..20 {
        for text_ids in [false, true] {
            let input = full_rows(seed, 1 + seed as usize * 37, seed % 2 == 0);
            let mut expected = input.clone();
            plain_sort(&mut expected, text_ids);
            let sorted = sort_partition(&full_batch(&input, text_ids)).unwrap();
            let rows: Vec<i64> = sorted
                .column_by_name("_row")
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec();
            let want: Vec<i64> = expected.iter().map(|r| r.3).collect();
            assert_eq!(rows, want, "seed {seed}, text ids {text_ids}");
        }
    }
}

#[test]
fn colliding_hashes_keep_customers_apart() {
    for seed in 0..10 {
        let input = full_rows(seed, 50 + seed as usize * 29, false);
        let mut expected = input.clone();
        plain_sort(&mut expected, false);
        let batch = full_batch(&input, false);
        let customers = [batch
            .column_by_name("customer_id")
            .unwrap()
            .as_string::<i32>()];
        // three hash values for all the ids: every run of equal hashes
        // holds many customers
        let rows = (0..batch.num_rows())
            .map(|i| Row {
                hash: (customers[0].value(i).len() % 3) as u64,
                batch: 0,
                row: i as u32,
            })
            .collect();
        let (sorted, _) = sort_rows(&[&batch], &customers, rows).unwrap();
        let got: Vec<i64> = sorted
            .column_by_name("_row")
            .unwrap()
            .as_primitive::<Int64Type>()
            .values()
            .to_vec();
        let want: Vec<i64> = expected.iter().map(|r| r.3).collect();
        assert_eq!(got, want, "seed {seed}");
    }
}

/// `rows` sorted by (customer, ts, contact id, _row), contact ids compared
/// as the column holds them (text, or numbers).
fn plain_sort(rows: &mut [Full], text_ids: bool) {
    let id = |r: &Full| {
        if text_ids {
            format!("id{}", r.2)
        } else {
            format!("{:020}", r.2)
        }
    };
    rows.sort_by(|a, b| (&a.0, a.1, id(a), a.3).cmp(&(&b.0, b.1, id(b), b.3)));
}

/// A full input row: (customer, ts, contact id, _row, channel, reason, agent).
type Full = (
    String,
    i64,
    i64,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn full_rows(seed: u64, n: usize, agents: bool) -> Vec<Full> {
    let mut rng = StdRng::seed_from_u64(seed);
    let pick = |rng: &mut StdRng, names: &[&str]| {
        let k = rng.random_range(0..=names.len());
        names.get(k).map(|s| s.to_string())
    };
    (0..n)
        .map(|r| {
            (
                // ids of different lengths, some sharing 16-byte prefixes
                match rng.random_range(0..3) {
                    0 => format!("c{}", rng.random_range(0..n / 4 + 1)),
                    1 => format!("customer-with-a-long-id-{}", rng.random_range(0..20)),
                    _ => format!("customer-with-a-long-id-{}\0", rng.random_range(0..3)),
                },
                rng.random_range(-3..4) * 1_000_000,
                rng.random_range(0..5),
                r as i64,
                pick(&mut rng, &["phone", "chat", "email"]),
                pick(&mut rng, &["billing", "outage"]),
                if agents {
                    pick(&mut rng, &["a1", "a2", "a3", "a4"])
                } else {
                    None
                },
            )
        })
        .collect()
}

fn full_batch(rows: &[Full], text_ids: bool) -> RecordBatch {
    let id_type = if text_ids {
        DataType::Utf8
    } else {
        DataType::Int64
    };
    let ids: ArrayRef = if text_ids {
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| format!("id{}", r.2)),
        ))
    } else {
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2)))
    };
    let text = |f: fn(&Full) -> &Option<String>| -> ArrayRef {
        Arc::new(
            rows.iter()
                .map(|r| f(r).as_deref())
                .collect::<StringArray>(),
        )
    };
    RecordBatch::try_new(
        contacts_in_schema(&id_type),
        vec![
            ids,
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                    .with_timezone("UTC"),
            ),
            text(|r| &r.4),
            text(|r| &r.5),
            text(|r| &r.6),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3))),
        ],
    )
    .unwrap()
}

/// The rows of a sorted batch, read back column by column.
fn read_back(batch: &RecordBatch, text_ids: bool) -> Vec<Full> {
    let s = |name: &str| batch.column_by_name(name).unwrap().as_string::<i32>();
    let opt = |a: &StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_string());
    let ids = batch.column_by_name("contact_id").unwrap();
    let ts = batch
        .column_by_name("ts")
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>();
    let row = batch
        .column_by_name("_row")
        .unwrap()
        .as_primitive::<Int64Type>();
    (0..batch.num_rows())
        .map(|i| {
            let id = if text_ids {
                ids.as_string::<i32>().value(i)[2..].parse().unwrap()
            } else {
                ids.as_primitive::<Int64Type>().value(i)
            };
            (
                s("customer_id").value(i).to_string(),
                ts.value(i),
                id,
                row.value(i),
                opt(s("channel"), i),
                opt(s("reason"), i),
                opt(s("agent"), i),
            )
        })
        .collect()
}

/// Over many input batches: every partition holds the rows DataFusion's
/// RepartitionExec sends it (the partitioning SortedContactsExec
/// declares), each sorted like a plain sort, with every column's values
/// (nulls included) carried along.
#[tokio::test]
async fn partitions_like_repartition_exec_and_sorts_every_column() {
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::physical_plan::collect_partitioned;
    use datafusion::prelude::SessionContext;
    let ctx = SessionContext::new();
    for seed in 0..12u64 {
        let text_ids = seed % 2 == 1;
        let partitions = 1 + seed as usize % 4;
        let input = full_rows(seed, 50 + 97 * seed as usize, seed % 3 != 0);
        // cut into batches of uneven sizes
        let mut batches = Vec::new();
        let mut at = 0;
        while at < input.len() {
            let len = (1 + (at * 7 + seed as usize) % 61).min(input.len() - at);
            batches.push(full_batch(&input[at..at + len], text_ids));
            at += len;
        }
        let sorted = partition_and_sort(&batches, partitions).unwrap();
        assert_eq!(sorted.len(), partitions, "seed {seed}");
        let schema = batches[0].schema();
        let source = MemorySourceConfig::try_new_exec(&[batches], schema.clone(), None).unwrap();
        let repartitioned =
            RepartitionExec::try_new(source, hash_partitioning(&schema, partitions).unwrap())
                .unwrap();
        let by_datafusion = collect_partitioned(Arc::new(repartitioned), ctx.task_ctx())
            .await
            .unwrap();
        for (p, batch) in sorted.iter().enumerate() {
            let mut expected: Vec<Full> = by_datafusion[p]
                .iter()
                .flat_map(|b| read_back(b, text_ids))
                .collect();
            plain_sort(&mut expected, text_ids);
            assert_eq!(
                read_back(batch, text_ids),
                expected,
                "seed {seed}, partition {p}"
            );
        }
    }
}
