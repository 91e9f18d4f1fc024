//! Golden test: sample-data run rendered as sorted text and compared with
//! tests/golden/sample.txt (regenerate with UPDATE_GOLDEN=1), and the planted
//! clusters of the sample's truth ranked on top.

use std::fmt::Write;
use std::path::PathBuf;

use recur::config::RunOptions;
use recur::generate::Truth;

use crate::common::{self, column_text, read_parquet, root};
use std::sync::Arc;

fn render(out: &std::path::Path, manifest: &recur::report::Manifest) -> String {
    let mut s = String::new();
    writeln!(s, "# rows").unwrap();
    writeln!(s, "read {} used {}", manifest.rows.read, manifest.rows.used).unwrap();
    for (k, v) in &manifest.rows.excluded {
        writeln!(s, "excluded {k} {} example={:?}", v.rows, v.example).unwrap();
    }
    for (k, v) in &manifest.tables {
        writeln!(s, "table {k} {} rows", v.rows).unwrap();
    }
    writeln!(
        s,
        "# repeat_summary (all, channel, channel_transition; sorted)"
    )
    .unwrap();
    let b = read_parquet(&out.join("repeat_summary.parquet"));
    let cols: Vec<Vec<String>> = [
        "dimension",
        "key",
        "contacts",
        "repeats",
        "repeat_rate",
        "same_reason_repeats",
        "events",
        "contacts_per_event",
        "fcr_rate",
    ]
    .iter()
    .map(|c| column_text(&b, c))
    .collect();
    let mut lines: Vec<String> = (0..cols[0].len())
        .filter(|i| ["all", "channel", "channel_transition"].contains(&cols[0][*i].as_str()))
        .map(|i| {
            let f = |x: &str| {
                x.parse::<f64>()
                    .map(|v| format!("{v:.6}"))
                    .unwrap_or(x.into())
            };
            format!(
                "{} {} contacts={} repeats={} rate={} same={} events={} cpe={} fcr={}",
                cols[0][i],
                cols[1][i],
                cols[2][i],
                cols[3][i],
                f(&cols[4][i]),
                cols[5][i],
                cols[6][i],
                f(&cols[7][i]),
                f(&cols[8][i])
            )
        })
        .collect();
    lines.sort();
    for l in lines {
        writeln!(s, "{l}").unwrap();
    }
    writeln!(s, "# clusters (by rank)").unwrap();
    let c = read_parquet(&out.join("clusters.parquet"));
    let names = [
        "rank",
        "antecedent",
        "consequent",
        "window_s",
        "n_antecedent",
        "n_support",
        "confidence",
        "baseline",
        "lift",
        "median_lag_s",
        "p90_lag_s",
        "customers",
        "score",
    ];
    let cols: Vec<Vec<String>> = names.iter().map(|n| column_text(&c, n)).collect();
    let mut rows: Vec<(u64, String)> = (0..cols[0].len())
        .map(|i| {
            let line = names
                .iter()
                .zip(&cols)
                .map(|(n, col)| {
                    let v = &col[i];
                    match v.parse::<f64>() {
                        Ok(x) if n.ends_with("_value") => format!("{n}={x:.4e}"),
                        Ok(x) if v.contains('.') || v.contains('e') => format!("{n}={x:.6}"),
                        _ => format!("{n}={v}"),
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            (cols[0][i].parse().unwrap(), line)
        })
        .collect();
    rows.sort();
    for (_, l) in rows {
        writeln!(s, "{l}").unwrap();
    }
    writeln!(s, "# sequences (by rank)").unwrap();
    let q = read_parquet(&out.join("sequences.parquet"));
    let pats = common::list_text(&q, "pattern");
    let lags = common::list_text(&q, "median_lag_s");
    let f = |n: &str| column_text(&q, n);
    let (rank, ns, cu, conf, qv) = (
        f("rank"),
        f("n_support"),
        f("customers"),
        f("confidence"),
        f("q_value"),
    );
    for k in 0..pats.len() {
        writeln!(
            s,
            "rank={} pattern={} n_support={} customers={} confidence={:.6} median_lags={:?} q={:.4e}",
            rank[k], pats[k].join(" -> "), ns[k], cu[k], conf[k].parse::<f64>().unwrap(),
            lags[k], qv[k].parse::<f64>().unwrap()
        )
        .unwrap();
    }
    writeln!(s, "# cluster_trends (by rank)").unwrap();
    let t = read_parquet(&out.join("cluster_trends.parquet"));
    let f = |n: &str| column_text(&t, n);
    let cols = [
        "rank",
        "kind",
        "pattern_id",
        "status",
        "window_s",
        "before_n_support",
        "before_rate",
        "recent_n_support",
        "recent_rate",
    ]
    .map(|n| (n, f(n)));
    for k in 0..cols[0].1.len() {
        let line = cols
            .iter()
            .map(|(n, col)| match col[k].parse::<f64>() {
                Ok(x) if n.ends_with("_rate") => format!("{n}={x:.6}"),
                _ => format!("{n}={}", col[k]),
            })
            .collect::<Vec<_>>()
            .join(" ");
        writeln!(s, "{line}").unwrap();
    }
    writeln!(s, "# prompts (sorted)").unwrap();
    let p = read_parquet(&out.join("prompts.parquet"));
    let mut lines: Vec<String> = column_text(&p, "reason")
        .into_iter()
        .zip(column_text(&p, "rank"))
        .zip(column_text(&p, "text"))
        .map(|((r, k), t)| format!("{r} {k} {t}"))
        .collect();
    lines.sort();
    for l in lines {
        writeln!(s, "{l}").unwrap();
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_data_golden() {
    let sample = root().join("sample-data");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = sample_config(&[sample.join("contacts.parquet")], out.clone());
    let summary = recur::pipeline::run(&cfg, &recur::pipeline::NoProgress)
        .await
        .unwrap();
    let text = render(&out, &summary.manifest);
    let golden = root().join("tests/golden/sample.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &text).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap_or_default();
    if want != text {
        panic!(
            "golden mismatch for {} (UPDATE_GOLDEN=1 to accept)\n--- expected\n{want}\n--- actual\n{text}",
            golden.display()
        );
    }

    // The planted clusters whose lag fits the window come out on top.
    let truth = Truth::load(&sample.join("contacts.parquet.truth.json")).unwrap();
    let window_s = cfg.max_cluster_window_us() as f64 / 1e6;
    let fitting: Vec<(String, String)> = truth
        .clusters
        .iter()
        .filter(|c| c.lag_median_s <= window_s)
        .map(|c| (c.antecedent.clone(), c.consequent.clone()))
        .collect();
    assert!(
        fitting.len() >= 5,
        "sample plants at least five in-window clusters"
    );
    let top: Vec<(String, String)> = summary
        .top_clusters
        .iter()
        .take(fitting.len())
        .map(|c| (c.antecedent.clone(), c.consequent.clone()))
        .collect();
    for f in &fitting {
        assert!(
            top.contains(f),
            "planted {f:?} not in the top {}: {top:?}",
            fitting.len()
        );
    }
    // The planted policy-change surge is named from its start day, with its
    // share of the peak day's contacts; it is the largest surge.
    let starts = chrono::DateTime::parse_from_rfc3339(&truth.surge.starts_at)
        .unwrap()
        .date_naive();
    let surges = read_parquet(&out.join("surges.parquet"));
    let reasons = column_text(&surges, "reason");
    assert_eq!(reasons.first(), Some(&truth.surge.reason), "{reasons:?}");
    let start =
        chrono::NaiveDate::parse_from_str(&column_text(&surges, "start_date")[0], "%Y-%m-%d")
            .unwrap();
    assert!(
        (start - starts).num_days().abs() <= 1,
        "surge from {start}, planted from {starts}"
    );
    let share: f64 = column_text(&surges, "peak_share")[0].parse().unwrap();
    assert!(share > 0.05, "peak share {share}");
    let line = &summary.surges[0];
    assert!(
        line.starts_with(&format!("{} surged from {start}", truth.surge.reason))
            && line.contains("% of the day's contacts"),
        "{line}"
    );
    // Placeholder ids were excluded, as the truth says they were planted.
    assert_eq!(
        summary.manifest.rows.excluded["placeholder_customer_id"].rows,
        truth.placeholder_rows
    );
    assert_eq!(
        summary.manifest.rows.excluded["null_customer_id"].rows,
        truth.null_customer_rows
    );
    assert_eq!(
        summary.manifest.rows.excluded["null_timestamp"].rows,
        truth.null_ts_rows
    );

    // The contacts file keeps min/max statistics where they can skip row
    // groups (customer, time), not for the few texts in every row group.
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let file = std::fs::File::open(out.join("contacts.parquet")).unwrap();
    let meta = SerializedFileReader::new(file).unwrap().metadata().clone();
    let schema = meta.file_metadata().schema_descr();
    for rg in meta.row_groups() {
        for (i, c) in rg.columns().iter().enumerate() {
            let name = schema.column(i).name().to_string();
            let has_min_max = c
                .statistics()
                .is_some_and(|s| s.min_bytes_opt().is_some() && s.max_bytes_opt().is_some());
            let want = !["channel", "reason", "agent", "prev_channel"].contains(&name.as_str());
            assert_eq!(has_min_max, want, "statistics of {name}");
        }
    }
}

/// Every table, rendered row by row, with floats to 12 significant digits
/// (sums of costs may round differently when added in another order).
fn render_all(out: &std::path::Path) -> String {
    render_tables(
        out,
        &[
            "contacts",
            "repeat_summary",
            "clusters",
            "sequences",
            "cluster_members",
            "prompts",
            "outreach",
            "surges",
            "reason_days",
            "cluster_trends",
        ],
    )
}

/// The bundled sample run with its settings into `dir/out`: the folder and
/// the run's summary.
pub(crate) async fn sample_run(dir: &std::path::Path) -> (PathBuf, recur::pipeline::RunSummary) {
    let out = dir.join("out");
    let cfg = sample_config(&[root().join("sample-data/contacts.parquet")], out.clone());
    let summary = recur::pipeline::run(&cfg, &recur::pipeline::NoProgress)
        .await
        .unwrap();
    (out, summary)
}

/// A run over `inputs` with the bundled sample's settings (recur.toml).
fn sample_config(inputs: &[PathBuf], out: PathBuf) -> recur::config::PipelineConfig {
    let file = RunOptions::load(&root().join("sample-data/recur.toml")).unwrap();
    let flags = RunOptions {
        inputs: Some(inputs.iter().map(|p| p.to_string_lossy().into()).collect()),
        out: Some(out),
        ..Default::default()
    };
    recur::config::PipelineConfig::from_raw(flags.or(file)).unwrap()
}

/// Fails with the first line where two renderings differ.
fn assert_same(got: &str, want: &str) {
    if got != want {
        let diff = got
            .lines()
            .zip(want.lines())
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("got:  {a}\nwant: {b}"));
        panic!(
            "renderings differ ({} vs {} lines): {diff:?}",
            got.lines().count(),
            want.lines().count()
        );
    }
}

/// The tables named, rendered as [`render_all`] does.
fn render_tables(out: &std::path::Path, tables: &[&str]) -> String {
    let mut s = String::new();
    for t in tables {
        let b = read_parquet(&out.join(format!("{t}.parquet")));
        let Some(first) = b.first() else {
            writeln!(s, "# {t}: no rows").unwrap();
            continue;
        };
        let schema = first.schema();
        let cols: Vec<Vec<String>> = schema
            .fields()
            .iter()
            .map(|f| column_text(&b, f.name()))
            .collect();
        writeln!(s, "# {t}").unwrap();
        for i in 0..cols[0].len() {
            let row: Vec<String> = cols
                .iter()
                .map(|c| match c[i].parse::<f64>() {
                    Ok(x) if c[i].contains('.') || c[i].contains('e') => format!("{x:.11e}"),
                    _ => c[i].clone(),
                })
                .collect();
            writeln!(s, "{}", row.join("|")).unwrap();
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_does_not_depend_on_partitions() {
    let sample = root().join("sample-data");
    let dir = tempfile::tempdir().unwrap();
    let mut rendered = Vec::new();
    for threads in [1, 2, 5] {
        let out = dir.path().join(format!("out{threads}"));
        let mut cfg = sample_config(&[sample.join("contacts.parquet")], out.clone());
        cfg.target_partitions = threads;
        recur::pipeline::run(&cfg, &recur::pipeline::NoProgress)
            .await
            .unwrap();
        rendered.push(render_all(&out));
    }
    assert!(rendered[0].len() > 1_000_000, "all tables rendered");
    for r in rendered.iter().skip(1) {
        assert_same(r, &rendered[0]);
    }
}

/// Writes the result of `sql` over the bundled sample (table `sample`) as
/// one Parquet file at `path`.
async fn sample_as(sql: &str, path: &std::path::Path) {
    use datafusion::prelude::{ParquetReadOptions, SessionContext};
    let ctx = SessionContext::new();
    ctx.register_parquet(
        "sample",
        root()
            .join("sample-data/contacts.parquet")
            .to_string_lossy()
            .as_ref(),
        ParquetReadOptions::default(),
    )
    .await
    .unwrap();
    ctx.sql(sql)
        .await
        .unwrap()
        .write_parquet(
            path.to_string_lossy().as_ref(),
            datafusion::dataframe::DataFrameWriteOptions::new().with_single_file_output(true),
            None,
        )
        .await
        .unwrap();
}

/// A log split into buckets by customer (on disk, analysed a bucket at a
/// time) gives exactly the tables of the run that holds it all in memory,
/// row for row, whatever the number of buckets and threads; contact ids
/// assigned from input rows (a log without an id column) too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_do_not_change_the_output() {
    let sample = root().join("sample-data/contacts.parquet");
    let dir = tempfile::tempdir().unwrap();
    let no_ids = dir.path().join("no_ids.parquet");
    sample_as("SELECT * EXCLUDE (contact_id) FROM sample", &no_ids).await;
    // (channel:reason items: patterns with the same reasons on different
    // channels are summed over buckets each on its own; the sample's
    // settings map an agent column, which the bucket files keep, and
    // without it they leave the all-null column out)
    for (name, input, channel_items, agents) in [
        ("ids", &sample, false, true),
        ("no_ids", &no_ids, false, true),
        ("channel_items", &sample, true, true),
        ("no_agent", &sample, false, false),
    ] {
        let mut rendered = Vec::new();
        for (bucket_contacts, threads) in [(None, 2), (Some(1_000), 1), (Some(9_000), 3)] {
            let out = dir
                .path()
                .join(format!("{name}-{bucket_contacts:?}-{threads}"));
            let mut cfg = sample_config(std::slice::from_ref(input), out.clone());
            cfg.sequence_channel_items = channel_items;
            if !agents {
                cfg.columns.agent = None;
            }
            cfg.bucket_contacts = bucket_contacts;
            cfg.target_partitions = threads;
            let summary = recur::pipeline::run(&cfg, &recur::pipeline::NoProgress)
                .await
                .unwrap();
            let rows = summary.manifest.rows.read;
            let want = bucket_contacts.map_or(1, |b| rows.div_ceil(b) as usize);
            assert_eq!(summary.manifest.memory.buckets, want, "{name}");
            if !agents {
                // the contacts keep their agent column, null throughout
                let c = read_parquet(&out.join("contacts.parquet"));
                let agent: Vec<_> = c
                    .iter()
                    .map(|b| b.column_by_name("agent").unwrap())
                    .collect();
                assert!(agent.iter().all(|a| a.null_count() == a.len()), "{name}");
            }
            rendered.push(render_all(&out));
        }
        assert!(rendered[0].len() > 1_000_000, "all tables rendered");
        // (the repeat summary has rows per agent only with the column)
        assert_eq!(rendered[0].contains("\nagent|"), agents, "{name}");
        for r in rendered.iter().skip(1) {
            assert_same(r, &rendered[0]);
        }
    }
}

/// A bucket that gets no contact at all changes nothing either. Buckets are
/// ranges of customer ids cut at quantiles of the ids as read, so a customer
/// with most of the rows, all of them without a timestamp (left out after the
/// cut), makes buckets that hold nobody; the other customers are cut into
/// more buckets than they have customers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_buckets_do_not_change_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let few = dir.path().join("few.parquet");
    sample_as(
        "SELECT * FROM sample WHERE customer_id IN \
         (SELECT customer_id FROM sample WHERE customer_id IS NOT NULL \
          GROUP BY customer_id ORDER BY COUNT(*) DESC, customer_id LIMIT 3) \
         UNION ALL \
         SELECT * REPLACE ('zz-no-time' AS customer_id, CASE WHEN false THEN ts END AS ts) \
         FROM (SELECT * FROM sample LIMIT 1000)",
        &few,
    )
    .await;
    let mut rendered = Vec::new();
    for bucket_contacts in [None, Some(100)] {
        let out = dir.path().join(format!("out-{bucket_contacts:?}"));
        let mut cfg = sample_config(std::slice::from_ref(&few), out.clone());
        cfg.bucket_contacts = bucket_contacts;
        let summary = recur::pipeline::run(&cfg, &recur::pipeline::NoProgress)
            .await
            .unwrap();
        let manifest = &summary.manifest;
        assert_eq!(manifest.rows.excluded["null_timestamp"].rows, 1000);
        if bucket_contacts.is_some() {
            // at most one bucket per customer (4), and at least 2
            let buckets = manifest.memory.buckets;
            assert!((2..=4).contains(&buckets), "{:?}", manifest.memory);
        }
        rendered.push(render_all(&out));
    }
    assert_same(&rendered[1], &rendered[0]);
}

/// Contact ids assigned from input rows (a log without an id column) hold
/// the rows' 1-based positions in the file in their low 32 bits (the file's
/// key in the high ones, the same for the whole file) even when the scan reads the file in
/// several partitions at once and the contacts go through bucket files: each
/// output row's id points back at an input row of the same customer, time and
/// reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assigned_ids_are_input_rows_across_scan_partitions_and_buckets() {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{DataType, Int64Type};
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::WriterProperties;

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.parquet");
    recur::generate::generate(
        &log,
        &recur::generate::GenerateParams {
            customers: 80_000,
            days: 90,
            seed: 11,
            ..Default::default()
        },
    )
    .unwrap();
    // the log without contact_id, uncompressed and without dictionaries, in
    // small row groups: larger
    // than the 10 MiB above which DataFusion reads a file in several
    // partitions at once
    let batches = read_parquet(&log);
    let keep: Vec<usize> = (1..batches[0].num_columns()).collect();
    let no_ids = dir.path().join("no_ids.parquet");
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(&no_ids).unwrap(),
        Arc::new(batches[0].schema().project(&keep).unwrap()),
        Some(
            WriterProperties::builder()
                .set_max_row_group_row_count(Some(20_000))
                .set_dictionary_enabled(false)
                .build(),
        ),
    )
    .unwrap();
    for b in &batches {
        w.write(&b.project(&keep).unwrap()).unwrap();
    }
    w.close().unwrap();
    assert!(std::fs::metadata(&no_ids).unwrap().len() > 10 << 20);
    let input = read_parquet(&no_ids);
    let text = |name: &str| column_text(&input, name);
    let (customer, reason) = (text("customer_id"), text("reason"));
    let ts: Vec<i64> = input
        .iter()
        .flat_map(|b| {
            let c = cast(b.column_by_name("ts").unwrap(), &DataType::Int64).unwrap();
            let c = c.as_primitive::<Int64Type>();
            (0..c.len()).map(|i| c.value(i)).collect::<Vec<_>>()
        })
        .collect();

    let mut rendered = Vec::new();
    for bucket_contacts in [None, Some(70_000)] {
        let out = dir.path().join(format!("out-{bucket_contacts:?}"));
        let flags = RunOptions {
            inputs: Some(vec![no_ids.to_string_lossy().into()]),
            out: Some(out.clone()),
            bucket_contacts,
            exclude_customer: Some(vec!["UNKNOWN".into(), "0".into()]),
            ..Default::default()
        };
        let mut cfg = recur::config::PipelineConfig::from_raw(flags).unwrap();
        cfg.target_partitions = 2;
        let summary = recur::pipeline::run(&cfg, &recur::pipeline::NoProgress)
            .await
            .unwrap();
        assert_eq!(
            summary.manifest.memory.buckets,
            bucket_contacts.map_or(1, |b| summary.manifest.rows.read.div_ceil(b) as usize)
        );
        let contacts = read_parquet(&out.join("contacts.parquet"));
        let (out_customer, out_reason) = (
            column_text(&contacts, "customer_id"),
            column_text(&contacts, "reason"),
        );
        let mut checked = 0;
        let mut file_keys = std::collections::BTreeSet::new();
        for b in &contacts {
            // (written as text, as every contact id is)
            let ids = cast(b.column_by_name("contact_id").unwrap(), &DataType::Int64).unwrap();
            let ids = ids.as_primitive::<Int64Type>();
            let when = cast(b.column_by_name("ts").unwrap(), &DataType::Int64).unwrap();
            let when = when.as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                file_keys.insert(ids.value(i) >> 32);
                let row = (ids.value(i) & 0xffff_ffff) as usize - 1;
                assert_eq!(customer[row], out_customer[checked], "id {}", row + 1);
                assert_eq!(reason[row], out_reason[checked], "id {}", row + 1);
                assert_eq!(ts[row], when.value(i), "id {}", row + 1);
                checked += 1;
            }
        }
        assert_eq!(checked as u64, summary.manifest.rows.used);
        assert_eq!(file_keys.len(), 1, "one file, one key");
        rendered.push(render_all(&out));
    }
    assert_same(&rendered[1], &rendered[0]);
}

/// Under a memory limit the sort spills to disk and the run still succeeds
/// with the same output; a limit too small for what must stay in memory is a
/// clear error that names the limit and the stage (exit code 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_spills_and_output_is_identical() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.parquet");
    recur::generate::generate(
        &log,
        &recur::generate::GenerateParams {
            customers: 54_000,
            days: 90,
            seed: 7,
            ..Default::default()
        },
    )
    .unwrap();
    let run = |out: PathBuf, limit: Option<&str>| {
        let flags = RunOptions {
            inputs: Some(vec![log.to_string_lossy().into()]),
            out: Some(out),
            memory_limit: limit.map(String::from),
            // one bucket, so that the limit falls on the sort
            bucket_contacts: Some(1_000_000),
            ..Default::default()
        };
        let mut cfg = recur::config::PipelineConfig::from_raw(flags).unwrap();
        cfg.target_partitions = 2;
        cfg
    };
    let free = run(dir.path().join("free"), None);
    recur::pipeline::run(&free, &recur::pipeline::NoProgress)
        .await
        .unwrap();
    // ~200k contacts hold ~27 MB in memory; 50 MiB leaves the sort too little
    // to keep its copy in memory (at 75 MiB the sort spilled 2 to 4 times,
    // depending on timing, and once in a full test run not at all; at 50 MiB
    // 5 times in each of 3 runs)
    let limited = run(dir.path().join("limited"), Some("50MiB"));
    let summary = recur::pipeline::run(&limited, &recur::pipeline::NoProgress)
        .await
        .unwrap();
    let memory = &summary.manifest.memory;
    assert_eq!(memory.limit_bytes, Some(50 << 20));
    assert!(memory.sort_spill_count > 0, "the sort spilled: {memory:?}");
    assert!(memory.held_bytes_peak > 10 << 20, "{memory:?}");
    assert_same(
        &render_all(&dir.path().join("limited")),
        &render_all(&dir.path().join("free")),
    );
    // the unlimited run holds everything in memory and spills nothing
    let free_manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("free/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(free_manifest["memory"]["sort_spill_count"], 0);

    // Without --bucket-contacts the limit sets the bucket size: 40 MiB cuts
    // the log into buckets on disk, analysed one at a time, same output.
    let mut bucketed = run(dir.path().join("bucketed"), Some("40MiB"));
    bucketed.bucket_contacts = None;
    let summary = recur::pipeline::run(&bucketed, &recur::pipeline::NoProgress)
        .await
        .unwrap();
    let memory = &summary.manifest.memory;
    assert!(memory.buckets >= 2, "{memory:?}");
    assert_eq!(memory.bucket_contacts, (40 << 20) / 400);
    assert!(memory.bucket_spilled_bytes > 0, "{memory:?}");
    assert_same(
        &render_all(&dir.path().join("bucketed")),
        &render_all(&dir.path().join("free")),
    );

    let tiny = run(dir.path().join("tiny"), Some("8MiB"));
    let err = recur::pipeline::run(&tiny, &recur::pipeline::NoProgress)
        .await
        .unwrap_err();
    assert!(err.is_bad_input(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("--memory-limit 8.0 MiB is too small for"),
        "{text}"
    );
}

/// A customer id with more contacts than the pair cap (a placeholder nobody
/// excluded) is left out of every A -> B count, sequence and outreach row, and
/// counted in the manifest; the tables built from the other customers do not
/// change at all.
#[tokio::test]
async fn a_heavy_customer_is_capped_and_counted() {
    use datafusion::arrow::array::{
        Array, ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray,
    };
    use datafusion::arrow::compute::{cast, max, min};
    use datafusion::arrow::datatypes::{DataType, TimeUnit};
    use datafusion::arrow::record_batch::RecordBatch;

    let sample = root().join("sample-data");
    let dir = tempfile::tempdir().unwrap();
    let batches = read_parquet(&sample.join("contacts.parquet"));
    let schema = batches[0].schema();
    let ts_us = |b: &RecordBatch| {
        cast(
            b.column_by_name("ts").unwrap(),
            &DataType::Timestamp(TimeUnit::Microsecond, None),
        )
        .unwrap()
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .unwrap()
        .clone()
    };
    let first = batches.iter().filter_map(|b| min(&ts_us(b))).min().unwrap();
    let last = batches.iter().filter_map(|b| max(&ts_us(b))).max().unwrap();
    let mut reasons: Vec<String> = column_text(&batches, "reason")
        .into_iter()
        .filter(|r| r != "null")
        .collect();
    reasons.sort();
    reasons.dedup();
    let n = recur::timeline::MAX_PAIR_CONTACTS_PER_CUSTOMER + 2_000;
    let step = (last - first) / n as i64;
    let heavy: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            (0..n as i64).map(|k| 900_000_000 + k),
        )),
        Arc::new(StringArray::from(vec!["HEAVY"; n])),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values((0..n as i64).map(|k| first + k * step))
                .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from(vec!["phone"; n])),
        Arc::new(StringArray::from_iter_values(
            (0..n).map(|k| reasons[k % 7].as_str()),
        )),
        Arc::new(StringArray::from(vec!["A999"; n])),
    ];
    let heavy: Vec<ArrayRef> = heavy
        .iter()
        .zip(schema.fields())
        .map(|(a, f)| cast(a, f.data_type()).unwrap())
        .collect();
    let heavy_file = dir.path().join("heavy.parquet");
    common::write_batch(&heavy_file, &RecordBatch::try_new(schema, heavy).unwrap());

    let plain = sample_config(&[sample.join("contacts.parquet")], dir.path().join("plain"));
    let with_heavy = sample_config(
        &[sample.join("contacts.parquet"), heavy_file],
        dir.path().join("heavy"),
    );
    let a = recur::pipeline::run(&plain, &recur::pipeline::NoProgress)
        .await
        .unwrap();
    let b = recur::pipeline::run(&with_heavy, &recur::pipeline::NoProgress)
        .await
        .unwrap();
    let unaffected = [
        "clusters",
        "sequences",
        "cluster_members",
        "prompts",
        "outreach",
    ];
    assert_same(
        &render_tables(&dir.path().join("heavy"), &unaffected),
        &render_tables(&dir.path().join("plain"), &unaffected),
    );
    assert!(a.clusters > 0);
    assert_eq!(
        b.contacts,
        a.contacts + n as u64,
        "contacts still count them"
    );
    let caps = &b.manifest.caps;
    assert_eq!(caps["pair_customers_skipped"], 1);
    assert_eq!(caps["pair_contacts_skipped"], n as u64);
    assert_eq!(
        caps["sequence_customers_skipped"],
        a.manifest.caps["sequence_customers_skipped"] + 1
    );
    assert_eq!(a.manifest.caps["pair_customers_skipped"], 0);
}

/// The schemas of the tables a run writes, as text: per table, each
/// column's name, Arrow type and nullability.
fn render_schemas(out: &std::path::Path) -> String {
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut names: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".parquet"))
        .collect();
    names.sort();
    let mut s = format!("schema_version {}\n", recur::report::SCHEMA_VERSION);
    for name in names {
        let file = std::fs::File::open(out.join(&name)).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        // every table carries the version in its Parquet metadata
        let kv = reader
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .cloned()
            .unwrap_or_default();
        let version = kv
            .iter()
            .find(|k| k.key == recur::report::SCHEMA_VERSION_KEY)
            .and_then(|k| k.value.clone());
        assert_eq!(
            version,
            Some(recur::report::SCHEMA_VERSION.to_string()),
            "{name}: the schema version in its metadata"
        );
        writeln!(s, "table {}", name.trim_end_matches(".parquet")).unwrap();
        for f in reader.schema().fields() {
            let null = if f.is_nullable() { " null" } else { "" };
            writeln!(s, "  {} {}{null}", f.name(), f.data_type()).unwrap();
        }
    }
    s
}

/// The tables' schemas are those of tests/golden/schema.txt, which holds
/// the schema version they belong to: a change of a column fails here until
/// the version (`recur::report::SCHEMA_VERSION`) is bumped and the file
/// written again (UPDATE_GOLDEN=1); the manifest and every table's Parquet
/// metadata carry the version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_schemas_hold_their_version() {
    let dir = tempfile::tempdir().unwrap();
    let (out, summary) = sample_run(dir.path()).await;
    assert_eq!(
        summary.manifest.schema_version,
        recur::report::SCHEMA_VERSION
    );
    let text = render_schemas(&out);
    assert!(text.contains("table cluster_trends\n"), "{text}");
    let golden = root().join("tests/golden/schema.txt");
    let want = std::fs::read_to_string(&golden).unwrap_or_default();
    let version_of = |t: &str| t.lines().next().unwrap_or_default().to_string();
    if want != text {
        if std::env::var_os("UPDATE_GOLDEN").is_some() && version_of(&want) != version_of(&text) {
            std::fs::write(&golden, &text).unwrap();
            return;
        }
        panic!(
            "the output schemas changed: bump recur::report::SCHEMA_VERSION (the file holds {}) \
             and update docs/SCHEMA.md, then UPDATE_GOLDEN=1 writes {}\n--- expected\n{want}\n--- actual\n{text}",
            version_of(&want),
            golden.display()
        );
    }
    // the types are the schema's, not the input's: the sample with its
    // contact ids as text writes the same schemas
    let sample = read_parquet(&root().join("sample-data/contacts.parquet"));
    let texted: Vec<_> = sample
        .iter()
        .map(|b| {
            let i = b.schema().index_of("contact_id").unwrap();
            let mut columns = b.columns().to_vec();
            columns[i] = datafusion::arrow::compute::cast(
                &columns[i],
                &datafusion::arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            let mut fields: Vec<_> = b
                .schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields[i] = fields[i]
                .clone()
                .with_data_type(datafusion::arrow::datatypes::DataType::Utf8);
            datafusion::arrow::record_batch::RecordBatch::try_new(
                Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
                columns,
            )
            .unwrap()
        })
        .collect();
    let log = dir.path().join("texted.parquet");
    common::write_batch(
        &log,
        &datafusion::arrow::compute::concat_batches(&texted[0].schema(), &texted).unwrap(),
    );
    let out2 = dir.path().join("texted");
    let cfg = sample_config(&[log], out2.clone());
    recur::pipeline::run(&cfg, &recur::pipeline::NoProgress)
        .await
        .unwrap();
    assert_same(&render_schemas(&out2), &text);
}

/// Every table reads as written in pyarrow and DuckDB (the Python packages
/// `.ci/run` installs from PyPI), with no conversion: each gives the rows
/// the manifest counts, pyarrow sees the schema version in the file's
/// metadata and no string-view column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_read_in_pyarrow_and_duckdb() {
    let dir = tempfile::tempdir().unwrap();
    let (out, summary) = sample_run(dir.path()).await;
    let script = r#"
import glob, json, os, sys
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
rows = {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.parquet"))):
    name = os.path.basename(path)[: -len(".parquet")]
    table = pq.read_table(path)
    meta = pq.ParquetFile(path).metadata.metadata or {}
    views = [f.name for f in table.schema if pa.types.is_string_view(f.type)]
    duck = duckdb.sql(f"SELECT COUNT(*) FROM read_parquet('{path}')").fetchall()[0][0]
    rows[name] = [table.num_rows, duck, meta.get(b"recur.schema_version", b"").decode(), views]
print(json.dumps(rows))
"#;
    let o = std::process::Command::new("python3")
        .args(["-c", script, out.to_str().unwrap()])
        .output()
        .expect("python3 runs (with duckdb and pyarrow: see .ci/run)");
    assert!(
        o.status.success(),
        "python3 with duckdb and pyarrow (pip install duckdb pyarrow, as .ci/run does): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let got = got.as_object().unwrap();
    assert_eq!(got.len(), summary.manifest.tables.len(), "{got:?}");
    for (name, info) in &summary.manifest.tables {
        let r = &got[name.as_str()];
        assert_eq!(r[0].as_u64(), Some(info.rows), "{name} in pyarrow");
        assert_eq!(r[1].as_u64(), Some(info.rows), "{name} in DuckDB");
        assert_eq!(
            r[2].as_str(),
            Some(recur::report::SCHEMA_VERSION.to_string().as_str()),
            "{name}: schema version"
        );
        assert_eq!(r[3], serde_json::json!([]), "{name}: string views");
    }
}

/// docs/SCHEMA.md describes the written schemas: its version is the
/// tables', and each table's section lists its columns, in order, with
/// their types and whether they can be null, as tests/golden/schema.txt
/// holds them (which the test above holds against the written files).
#[test]
fn schema_doc_lists_every_column() {
    let doc = std::fs::read_to_string(root().join("docs/SCHEMA.md")).unwrap();
    let version = recur::report::SCHEMA_VERSION;
    assert!(
        doc.lines()
            .next()
            .unwrap_or_default()
            .contains(&format!("(schema version {version})")),
        "docs/SCHEMA.md's title names another version than {version}"
    );
    let mut from_doc = format!("schema_version {version}\n");
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    for line in doc.lines() {
        if let Some(name) = line.strip_prefix("## ") {
            sections.push((name.trim().to_string(), Vec::new()));
        } else if let Some((_, columns)) = sections.last_mut()
            && line.starts_with("| ")
            && !line.starts_with("| column |")
        {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let (name, typ) = (cells[1], cells[2]);
            let column = match typ.strip_suffix(" *null*") {
                Some(t) => format!("  {name} {t} null"),
                None => format!("  {name} {typ}"),
            };
            columns.push(column);
        }
    }
    sections.retain(|(_, columns)| !columns.is_empty());
    sections.sort();
    for (name, columns) in sections {
        let _ = writeln!(from_doc, "table {name}");
        for c in columns {
            let _ = writeln!(from_doc, "{c}");
        }
    }
    let snapshot = std::fs::read_to_string(root().join("tests/golden/schema.txt")).unwrap();
    assert_same(&from_doc, &snapshot);
}
