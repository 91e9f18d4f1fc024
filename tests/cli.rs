//! The built `recur` binary: the no-argument run, mapped runs, config
//! precedence, time encodings, and every bad-input error (exit code 2).

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use crate::common::{root, write_batch};

fn recur(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_recur"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run recur")
}

pub(crate) fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

/// The manifest of the latest run in output folder `out`.
pub(crate) fn manifest(out: &Path) -> serde_json::Value {
    let run = recur::runs::resolve_run_dir(out);
    serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap()
}

/// A small log with the given time column (and customer/reason columns).
fn log_with_time(path: &Path, time: ArrayRef, channel: bool) {
    let n = time.len();
    let mut fields = vec![
        Field::new("customer_id", DataType::Utf8, true),
        Field::new("ts", time.data_type().clone(), true),
        Field::new("reason", DataType::Utf8, true),
    ];
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            (0..n).map(|i| format!("c{}", i % 2)),
        )),
        time,
        Arc::new(StringArray::from_iter_values(
            (0..n).map(|i| ["x", "y"][i % 2]),
        )),
    ];
    if channel {
        fields.push(Field::new("channel", DataType::Utf8, true));
        cols.push(Arc::new(StringArray::from_iter_values(
            (0..n).map(|_| "phone"),
        )));
    }
    write_batch(
        path,
        &RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap(),
    );
}

#[test]
fn demo_runs_on_the_bundled_sample() {
    let dir = tempfile::tempdir().unwrap();
    let o = recur(dir.path(), &["demo"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.is_empty(), "silent on stderr in a pipe, got: {err}");
    assert!(out.contains("repeat rate"), "{out}");
    assert!(out.contains("  1. "), "top clusters listed: {out}");
    let outdir = recur::runs::resolve_run_dir(&dir.path().join("recur-out"));
    assert!(
        outdir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("as_of=")
    );
    assert!(
        dir.path().join("recur-out/contacts").is_dir(),
        "the contacts table, by day"
    );
    for t in [
        "repeat_summary.parquet",
        "clusters.parquet",
        "failure_demand.parquet",
        "manifest.json",
        "report.html",
    ] {
        assert!(outdir.join(t).is_file(), "{t} written");
    }
    let m = manifest(&outdir);
    assert_eq!(
        m["parameters"]["exclude_customers"],
        serde_json::json!(["UNKNOWN", "0"])
    );
    let read = m["rows"]["read"].as_u64().unwrap();
    let used = m["rows"]["used"].as_u64().unwrap();
    let excluded: u64 = m["rows"]["excluded"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(read, used + excluded);
    assert_eq!(m["tables"]["contacts"]["rows"].as_u64().unwrap(), used);
    // the summary names the ranking's weighting and the list's customers
    assert!(
        out.contains("top 7 by value (avoidable follow-ups"),
        "{out}"
    );
    assert!(out.contains(" avoidable, value "), "{out}");
    let list = crate::common::read_parquet(&outdir.join("outreach.parquet"));
    let ids: std::collections::BTreeSet<String> = crate::common::column_text(&list, "customer_id")
        .into_iter()
        .collect();
    assert_eq!(
        m["outreach_list"]["customers"].as_u64(),
        Some(ids.len() as u64)
    );
    assert!(
        out.contains(&format!("outreach list: {} customers due, ", ids.len())),
        "{out}"
    );

    // recur query: every analyst query runs on the sample output and
    // returns rows (CSV: a header and at least one row)
    let analyst = root().join("queries/analyst");
    let mut files: Vec<_> = std::fs::read_dir(&analyst)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    for f in &files {
        let o = recur(
            dir.path(),
            &[
                "query",
                "recur-out",
                "-f",
                f.to_str().unwrap(),
                "--format",
                "csv",
            ],
        );
        let (out, err) = text(&o);
        assert!(o.status.success(), "{}: {err}", f.display());
        assert!(out.lines().count() >= 2, "{}: no rows\n{out}", f.display());
    }
    // the latest run's tables, every run's with its as_of, the contact store
    let o = recur(
        dir.path(),
        &[
            "query",
            "recur-out",
            "SELECT (SELECT COUNT(*) FROM clusters) AS c, \
                    (SELECT COUNT(*) FROM runs.clusters WHERE as_of = DATE '2026-10-29') AS r, \
                    (SELECT COUNT(*) FROM contacts) AS n",
            "--format",
            "json",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let row: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(row["c"], row["r"]);
    assert!(row["c"].as_u64().unwrap() >= 7, "{row}");
    assert_eq!(row["n"].as_u64(), Some(used));
    // Parquet needs a file; a query that does not plan is exit 2, named
    let o = recur(
        dir.path(),
        &[
            "query",
            "recur-out",
            "SELECT * FROM surges",
            "--format",
            "parquet",
            "-o",
            "s.parquet",
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let surges = crate::common::read_parquet(&dir.path().join("s.parquet"));
    assert!(surges.iter().map(|b| b.num_rows()).sum::<usize>() >= 1);
    let o = recur(
        dir.path(),
        &["query", "recur-out", "SELECT nope FROM clusters"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("nope"), "{:?}", text(&o));

    // recur report writes the page again, the same but for the manifest's
    // report entry it does not show; --no-report writes none
    let page = outdir.join("report.html");
    let before = std::fs::read_to_string(&page).unwrap();
    std::fs::remove_file(&page).unwrap();
    let o = recur(dir.path(), &["report", "recur-out"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("report.html written"), "{:?}", text(&o));
    assert_eq!(std::fs::read_to_string(&page).unwrap(), before);
    let sample = root().join("sample-data/contacts.parquet");
    let o = recur(
        dir.path(),
        &[
            "run",
            sample.to_str().unwrap(),
            "--out",
            "plain",
            "--no-report",
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let plain = recur::runs::resolve_run_dir(&dir.path().join("plain"));
    assert!(plain.join("clusters.parquet").is_file());
    assert!(!plain.join("report.html").exists());
    assert!(manifest(&plain).get("report").is_none());
    let o = recur(dir.path(), &["report", "nowhere"]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
}

/// The evidence flags and `--null-check`, from the command line and the
/// config file: the summary says what the permuted logs reported and the
/// manifest keeps it; a higher minimum of customers leaves out the clusters
/// below it.
#[test]
fn evidence_flags_and_null_check() {
    let dir = tempfile::tempdir().unwrap();
    let o = recur(dir.path(), &["demo", "--null-check", "2", "--out", "a"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.contains("null check: 2 logs with the reasons permuted yielded"),
        "{out}"
    );
    let m = manifest(&dir.path().join("a"));
    assert_eq!(m["null_check"]["permutations"], 2);
    assert_eq!(m["null_check"]["clusters"].as_array().unwrap().len(), 2);
    assert!(m["frequent_contacters"]["threshold"].as_f64().unwrap() >= 8.0);
    // the sample's smallest cluster rests on 269 customers
    let cfg = dir.path().join("recur.toml");
    std::fs::write(
        &cfg,
        "inputs = ['{}']\nexclude_customer = ['UNKNOWN', '0']\nmin_customers = 300\n".replace(
            "{}",
            root()
                .join("sample-data/contacts.parquet")
                .to_str()
                .unwrap(),
        ),
    )
    .unwrap();
    let o = recur(dir.path(), &["run", "--config", "recur.toml", "--out", "b"]);
    assert!(o.status.success(), "{}", text(&o).1);
    let m = manifest(&dir.path().join("b"));
    assert_eq!(m["parameters"]["min_customers"], 300);
    let clusters = m["tables"]["clusters"]["rows"].as_u64().unwrap();
    assert!((1..7).contains(&clusters), "{clusters}");
}

#[test]
fn mapped_run_and_config_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let log = root().join("tests/data/servicenow_incidents.parquet");
    std::fs::write(
        dir.path().join("desk.toml"),
        "customer_col = 'caller_id'\ntime_col = 'opened_at'\nchannel_col = 'contact_type'\n\
         reason_col = 'category'\ncontact_id_col = 'number'\nmin_support = 7\nrepeat_window = '12h'\n",
    )
    .unwrap();
    let o = recur(
        dir.path(),
        &[
            "run",
            log.to_str().unwrap(),
            "--config",
            "desk.toml",
            "--min-support",
            "9",
            "--out",
            "o",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    let m = manifest(&dir.path().join("o"));
    assert_eq!(m["parameters"]["min_support"], 9, "flag wins over file");
    assert_eq!(
        m["parameters"]["repeat_window_us"], 43_200_000_000i64,
        "file wins over default"
    );
    assert_eq!(m["parameters"]["columns"]["customer"], "caller_id");
    assert_eq!(m["rows"]["excluded"]["null_customer_id"]["rows"], 3);
    assert!(out.contains("within 12h"), "{out}");
}

#[test]
fn time_encodings_agree() {
    let dir = tempfile::tempdir().unwrap();
    let secs: Vec<i64> = (0..40).map(|i| 1_780_000_000 + i * 7_000).collect();
    let runs: Vec<(&str, ArrayRef)> = vec![
        ("s", Arc::new(Int64Array::from(secs.clone()))),
        (
            "ms",
            Arc::new(Int64Array::from_iter_values(secs.iter().map(|s| s * 1000))),
        ),
        (
            "us",
            Arc::new(Int64Array::from_iter_values(
                secs.iter().map(|s| s * 1_000_000),
            )),
        ),
        (
            "iso",
            Arc::new(StringArray::from_iter_values(secs.iter().map(|s| {
                chrono::DateTime::from_timestamp(*s, 0)
                    .unwrap()
                    .to_rfc3339()
            }))),
        ),
        (
            "naive",
            Arc::new(StringArray::from_iter_values(secs.iter().map(|s| {
                chrono::DateTime::from_timestamp(*s, 0)
                    .unwrap()
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
            }))),
        ),
    ];
    let mut results = Vec::new();
    for (name, col) in runs {
        let f = dir.path().join(format!("{name}.parquet"));
        log_with_time(&f, col, false);
        let o = recur(dir.path(), &["run", f.to_str().unwrap(), "--out", name]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{name}: {out}\n{err}");
        let m = manifest(&dir.path().join(name));
        assert_eq!(m["rows"]["used"], 40, "{name}");
        assert!(
            m["notes"].to_string().contains("one channel"),
            "no channel column is noted: {}",
            m["notes"]
        );
        results.push((
            m["data_range"].clone(),
            out.lines().nth(1).unwrap().to_string(),
        ));
    }
    for r in &results[1..] {
        assert_eq!(r, &results[0]);
    }
}

#[test]
fn naive_times_are_read_in_the_given_zone() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.parquet");
    log_with_time(
        &f,
        Arc::new(StringArray::from(vec![
            "2026-07-01 12:00:00",
            "2026-07-01 13:00:00",
        ])),
        true,
    );
    let o = recur(
        dir.path(),
        &[
            "run",
            "t.parquet",
            "--timezone",
            "Europe/Paris",
            "--out",
            "o",
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let m = manifest(&dir.path().join("o"));
    assert_eq!(m["data_range"][0], "2026-07-01T10:00:00+00:00");
}

#[test]
fn bad_input_missing_column_lists_the_columns() {
    let dir = tempfile::tempdir().unwrap();
    let sample = root().join("sample-data/contacts.parquet");
    let o = recur(
        dir.path(),
        &["run", sample.to_str().unwrap(), "--customer-col", "client"],
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("'client'") && err.contains("contacts.parquet"),
        "{err}"
    );
    assert!(
        err.contains("the file has columns: contact_id, customer_id, ts"),
        "{err}"
    );
}

#[test]
fn bad_input_not_parquet_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("log.parquet"), "contact_id,ts\n1,2\n").unwrap();
    let o = recur(dir.path(), &["run", "log.parquet"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("log.parquet") && err.contains("parquet"),
        "{err}"
    );
}

#[test]
fn bad_input_missing_path_and_bad_flag() {
    let dir = tempfile::tempdir().unwrap();
    let o = recur(dir.path(), &["run", "nowhere.parquet"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("nowhere.parquet"));
    let sample = root().join("sample-data/contacts.parquet");
    let o = recur(
        dir.path(),
        &["run", sample.to_str().unwrap(), "--repeat-window", "soon"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("--repeat-window"), "{}", text(&o).1);
    let o = recur(
        dir.path(),
        &[
            "run",
            sample.to_str().unwrap(),
            "--timezone",
            "Mars/Olympus",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    for limit in ["lots", "100KB"] {
        let o = recur(
            dir.path(),
            &["run", sample.to_str().unwrap(), "--memory-limit", limit],
        );
        assert_eq!(o.status.code(), Some(2), "{limit}");
        let err = text(&o).1;
        assert!(
            err.contains("--memory-limit") && err.contains(limit),
            "{err}"
        );
    }
    for (flag, value) in [
        ("--min-lift", "0.5"),
        ("--customer-cap", "0"),
        ("--min-lift", "lots"),
    ] {
        let o = recur(dir.path(), &["run", sample.to_str().unwrap(), flag, value]);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}");
        assert!(text(&o).1.contains(flag), "{flag}: {}", text(&o).1);
    }
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = recur(dir.path(), &["run", "empty"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("no parquet files"), "{}", text(&o).1);
}

#[test]
fn bad_input_time_column_type_shows_an_example() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.parquet");
    log_with_time(&f, Arc::new(Float64Array::from(vec![1.5, 2.5])), true);
    let o = recur(dir.path(), &["run", "t.parquet"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("'ts'") && err.contains("Float64") && err.contains("1.5"),
        "{err}"
    );
    let f = dir.path().join("b.parquet");
    log_with_time(&f, Arc::new(BooleanArray::from(vec![true, false])), true);
    let o = recur(dir.path(), &["run", "b.parquet"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o).1);
}

#[test]
fn bad_input_unparseable_time_strings() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("all_bad.parquet");
    log_with_time(
        &f,
        Arc::new(StringArray::from(vec!["soon", "later", "never"])),
        true,
    );
    let o = recur(dir.path(), &["run", "all_bad.parquet"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("'ts'") && err.contains("\"soon\"") && err.contains("all_bad.parquet"),
        "{err}"
    );

    // One bad value in a good column: excluded, counted, shown in the manifest.
    let f = dir.path().join("one_bad.parquet");
    log_with_time(
        &f,
        Arc::new(StringArray::from(vec![
            Some("2026-01-01T10:00:00Z"),
            Some("31/12/2025 10h"),
            None,
            Some("2026-01-02T10:00:00Z"),
        ])),
        true,
    );
    let o = recur(dir.path(), &["run", "one_bad.parquet", "--out", "o"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let m = manifest(&dir.path().join("o"));
    assert_eq!(m["rows"]["excluded"]["unparseable_timestamp"]["rows"], 1);
    assert_eq!(
        m["rows"]["excluded"]["unparseable_timestamp"]["example"],
        "31/12/2025 10h"
    );
    assert_eq!(m["rows"]["excluded"]["null_timestamp"]["rows"], 1);
    assert_eq!(m["rows"]["used"], 2);
}

#[test]
fn generate_writes_log_and_truth() {
    let dir = tempfile::tempdir().unwrap();
    let o = recur(
        dir.path(),
        &[
            "generate",
            "--out",
            "g.parquet",
            "--customers",
            "300",
            "--days",
            "30",
            "--seed",
            "7",
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("g.parquet.truth.json")).unwrap(),
    )
    .unwrap();
    assert!(truth["rows"].as_u64().unwrap() > 300);
    assert!(truth["clusters"].as_array().unwrap().len() >= 5);
    // Same seed, same bytes.
    let o = recur(
        dir.path(),
        &[
            "generate",
            "--out",
            "h.parquet",
            "--customers",
            "300",
            "--days",
            "30",
            "--seed",
            "7",
        ],
    );
    assert!(o.status.success());
    assert_eq!(
        std::fs::read(dir.path().join("g.parquet")).unwrap(),
        std::fs::read(dir.path().join("h.parquet")).unwrap()
    );
}

#[test]
fn hive_folders_globs_and_coded_columns() {
    use datafusion::arrow::array::{DictionaryArray, Int32Array};
    use datafusion::arrow::datatypes::Int32Type;
    let dir = tempfile::tempdir().unwrap();
    for day in 0..2 {
        let part = dir.path().join(format!("log/date=2026-11-0{}", day + 1));
        std::fs::create_dir_all(&part).unwrap();
        let n = 30;
        let reason: DictionaryArray<Int32Type> = (0..n)
            .map(|i| ["login", "bill", "outage"][(i + day) % 3])
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Int64, true),
            Field::new("ts", DataType::Utf8, true),
            Field::new("channel", DataType::Int32, true),
            Field::new(
                "reason",
                datafusion::arrow::array::Array::data_type(&reason).clone(),
                true,
            ),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values((0..n as i64).map(|i| i % 7))),
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("2026-11-0{}T{:02}:00:00Z", day + 1, i % 24)),
                )),
                Arc::new(Int32Array::from_iter_values((0..n as i32).map(|i| i % 2))),
                Arc::new(reason),
            ],
        )
        .unwrap();
        write_batch(&part.join("part-0.parquet"), &batch);
    }
    std::fs::write(dir.path().join("log/_SUCCESS"), "").unwrap();
    let o = recur(
        dir.path(),
        &["run", "log", "--out", "a", "--min-support", "1"],
    );
    let (out_a, err) = text(&o);
    assert!(o.status.success(), "{out_a}\n{err}");
    let m = manifest(&dir.path().join("a"));
    assert_eq!(m["inputs"].as_array().unwrap().len(), 2);
    assert_eq!(m["rows"]["used"], 60);
    let o = recur(
        dir.path(),
        &[
            "run",
            "log/date=*/part-*.parquet",
            "--out",
            "b",
            "--min-support",
            "1",
        ],
    );
    let (out_b, err) = text(&o);
    assert!(o.status.success(), "{out_b}\n{err}");
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("reports written") && !l.starts_with("open "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&out_a), strip(&out_b));
    let contacts: Vec<_> = ["date=2026-11-01", "date=2026-11-02"]
        .iter()
        .flat_map(|d| {
            crate::common::read_parquet(
                &dir.path().join("a/contacts").join(d).join("part-0.parquet"),
            )
        })
        .collect();
    let channels: std::collections::BTreeSet<String> =
        crate::common::column_text(&contacts, "channel")
            .into_iter()
            .collect();
    assert_eq!(channels.into_iter().collect::<Vec<_>>(), vec!["0", "1"]);
}

#[test]
fn degenerate_logs_run_cleanly() {
    use crate::common::{LogRow, write_log};
    let dir = tempfile::tempdir().unwrap();
    let row = |customer: Option<&str>, ts: Option<i64>| LogRow {
        contact_id: 1,
        customer: customer.map(String::from),
        ts,
        channel: Some("phone".into()),
        reason: Some("x".into()),
        agent: None,
    };
    let cases: Vec<(&str, Vec<LogRow>, u64)> = vec![
        ("empty", vec![], 0),
        (
            "all_excluded",
            vec![row(None, Some(1_780_000_000_000_000)), row(Some("a"), None)],
            0,
        ),
        (
            "one_contact",
            vec![row(Some("a"), Some(1_780_000_000_000_000))],
            1,
        ),
    ];
    for (name, rows, used) in cases {
        let f = dir.path().join(format!("{name}.parquet"));
        write_log(&f, &rows);
        let o = recur(
            dir.path(),
            &["run", f.to_str().unwrap(), "--out", name, "--allow-empty"],
        );
        assert!(o.status.success(), "{name}: {:?}", text(&o));
        let m = manifest(&dir.path().join(name));
        assert_eq!(m["rows"]["used"], used, "{name}");
        assert_eq!(m["rows"]["read"], rows.len() as u64, "{name}");
    }
}
