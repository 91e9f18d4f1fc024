//! The catalogue of bad inputs, through the built binary: each case's exit
//! code, that its message names the file, the column and an example value
//! where there is one, and that nothing is written as if complete (or, for
//! what a run passes over, that it is counted in the manifest). The rest of
//! the catalogue (missing files, non-Parquet files, bad time columns, bad
//! flags) is in tests/cli.rs; docs/TESTING.md lists every case.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    ArrayRef, Int64Array, ListArray, RecordBatch, StringArray, TimestampMicrosecondArray,
    TimestampSecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema};

use crate::cli::{manifest, text};
use crate::common::write_batch;

const DAY_US: i64 = 86_400_000_000;
/// 2026-11-01T00:00:00Z.
const BASE_US: i64 = 1_793_491_200_000_000;

/// A log of `n` contacts of ten customers over a few days, with `reason`
/// as its reason column (a text column when None) and `ts` as its times
/// (a day apart from BASE when None).
fn log(path: &Path, n: usize, reason: Option<ArrayRef>, ts: Option<ArrayRef>) {
    let customers: Vec<String> = (0..n).map(|i| format!("c{}", i % 10)).collect();
    let reason = reason.unwrap_or_else(|| {
        Arc::new(StringArray::from_iter_values(
            (0..n).map(|i| ["a", "b", "c"][i % 3]),
        ))
    });
    let ts = ts.unwrap_or_else(|| {
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                (0..n as i64).map(|i| BASE_US + i * DAY_US / 7),
            )
            .with_timezone("UTC"),
        )
    });
    let schema = Arc::new(Schema::new(vec![
        Field::new("contact_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Utf8, false),
        Field::new("ts", ts.data_type().clone(), true),
        Field::new("channel", DataType::Utf8, false),
        Field::new("reason", reason.data_type().clone(), true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(1..=n as i64)),
            Arc::new(StringArray::from_iter_values(customers)),
            ts,
            Arc::new(StringArray::from_iter_values((0..n).map(|_| "phone"))),
            reason,
        ],
    )
    .unwrap();
    write_batch(path, &batch);
}

/// Runs recur, failing the test if it has not ended within a minute (a
/// hang is a failure, not a stuck test).
fn recur_bounded(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_recur"))
        .current_dir(dir)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("recur {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Exit 2, and stderr holds every one of `names`; no run folder published.
fn bad(dir: &Path, args: &[&str], names: &[&str]) {
    let o = recur_bounded(dir, args);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    for n in names {
        assert!(err.contains(n), "{args:?}: '{n}' not in: {err}");
    }
    if let Some(i) = args.iter().position(|a| *a == "--out") {
        let out = dir.join(args[i + 1]);
        assert!(
            !out.join("latest").exists(),
            "{args:?}: a run was published"
        );
    }
}

#[test]
fn a_symlink_loop_is_walked_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    log(&input.join("a.parquet"), 1000, None, None);
    std::os::unix::fs::symlink(".", input.join("loop")).unwrap();
    let o = recur_bounded(dir.path(), &["run", "in", "--out", "out"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let m = manifest(&dir.path().join("out"));
    assert_eq!(m["rows"]["read"], 1000, "each row once");
    assert_eq!(m["inputs"].as_array().unwrap().len(), 1);
    let skipped = m["skipped_inputs"].as_array().unwrap();
    assert!(
        skipped
            .iter()
            .any(|s| s["path"].as_str().unwrap().ends_with("loop")
                && s["reason"]
                    .as_str()
                    .unwrap()
                    .contains("folder already read")),
        "{skipped:?}"
    );
}

#[test]
fn fifos_and_dangling_links_are_passed_over_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    log(&input.join("a.parquet"), 100, None, None);
    let fifo = input.join("x.parquet");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    std::os::unix::fs::symlink("nowhere.parquet", input.join("gone.parquet")).unwrap();
    let o = recur_bounded(dir.path(), &["run", "in", "--out", "out"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let m = manifest(&dir.path().join("out"));
    assert_eq!(m["rows"]["read"], 100);
    let reasons: Vec<String> = m["skipped_inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{} {}", s["path"], s["reason"]))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("x.parquet") && r.contains("not a regular file")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("gone.parquet") && r.contains("link to nothing")),
        "{reasons:?}"
    );
    // named directly, a FIFO is an error, not a hang
    bad(
        dir.path(),
        &["run", "in/x.parquet", "--out", "out2"],
        &["in/x.parquet", "not a regular file"],
    );
}

#[test]
fn wrong_typed_and_doubled_columns_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    // a reason column of lists of text
    let n = 30;
    let values = StringArray::from_iter_values((0..n).map(|i| format!("r{}", i % 3)));
    let offsets = datafusion::arrow::buffer::OffsetBuffer::from_lengths(vec![1; n]);
    let lists: ArrayRef = Arc::new(
        ListArray::try_new(
            Arc::new(Field::new("item", DataType::Utf8, true)),
            offsets,
            Arc::new(values),
            None,
        )
        .unwrap(),
    );
    log(&dir.path().join("lists.parquet"), n, Some(lists), None);
    bad(
        dir.path(),
        &["run", "lists.parquet", "--out", "out"],
        &["lists.parquet", "reason", "List", "r0"],
    );
    // a float reason
    let floats: ArrayRef = Arc::new(datafusion::arrow::array::Float64Array::from_iter_values(
        (0..n).map(|i| i as f64 + 0.5),
    ));
    log(&dir.path().join("floats.parquet"), n, Some(floats), None);
    bad(
        dir.path(),
        &["run", "floats.parquet", "--out", "out"],
        &["floats.parquet", "reason", "Float64", "0.5"],
    );
    // integer codes, dictionary-encoded, are fine
    let codes: ArrayRef = Arc::new(
        (0..n as i32)
            .map(|i| Some(["x", "y"][i as usize % 2]))
            .collect::<datafusion::arrow::array::DictionaryArray<Int32Type>>(),
    );
    log(&dir.path().join("codes.parquet"), n, Some(codes), None);
    let o = recur_bounded(dir.path(), &["run", "codes.parquet", "--out", "ok"]);
    assert!(o.status.success(), "{:?}", text(&o));
    // one column in two roles
    log(&dir.path().join("log.parquet"), n, None, None);
    bad(
        dir.path(),
        &[
            "run",
            "log.parquet",
            "--reason-col",
            "channel",
            "--out",
            "out",
        ],
        &["--reason-col", "'channel'", "--channel-col"],
    );
}

#[test]
fn extreme_times_are_excluded_with_an_example() {
    let dir = tempfile::tempdir().unwrap();
    // two contacts of one customer at ∓2^62 µs among ordinary ones
    let n = 40;
    let mut times: Vec<i64> = (0..n as i64).map(|i| BASE_US + i * DAY_US / 7).collect();
    times[0] = -(1 << 62);
    times[10] = 1 << 62;
    times[20] = i64::MAX;
    let ts: ArrayRef =
        Arc::new(TimestampMicrosecondArray::from_iter_values(times).with_timezone("UTC"));
    log(&dir.path().join("far.parquet"), n, None, Some(ts));
    let o = recur_bounded(dir.path(), &["run", "far.parquet", "--out", "out"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let m = manifest(&dir.path().join("out"));
    let far = &m["rows"]["excluded"]["timestamp_out_of_range"];
    assert_eq!(far["rows"], 3, "{m}");
    assert!(
        far["example"].as_str().is_some_and(|e| !e.is_empty()),
        "{far}"
    );
    assert_eq!(m["rows"]["used"], n as u64 - 3);
    // seconds beyond what microseconds hold
    let mut secs: Vec<i64> = (0..n as i64)
        .map(|i| BASE_US / 1_000_000 + i * 3600)
        .collect();
    secs[5] = 1_000_000_000_000_000;
    let ts: ArrayRef = Arc::new(TimestampSecondArray::from_iter_values(secs).with_timezone("UTC"));
    log(&dir.path().join("secs.parquet"), n, None, Some(ts));
    let o = recur_bounded(dir.path(), &["run", "secs.parquet", "--out", "out2"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let m = manifest(&dir.path().join("out2"));
    let far = &m["rows"]["excluded"]["timestamp_out_of_range"];
    assert_eq!(far["rows"], 1, "{m}");
    assert!(
        far["example"].as_str().is_some_and(|e| !e.is_empty()),
        "{far}"
    );
    assert_eq!(m["rows"]["excluded"]["null_timestamp"]["rows"], 0);
}

#[test]
fn outputs_truth_files_and_durations_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    log(&dir.path().join("log.parquet"), 30, None, None);
    std::fs::write(dir.path().join("a-file"), "not a folder").unwrap();
    bad(
        dir.path(),
        &["run", "log.parquet", "--out", "a-file"],
        &["--out", "a-file", "is a file"],
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("a-file")).unwrap(),
        "not a folder"
    );
    bad(
        dir.path(),
        &[
            "run",
            "log.parquet",
            "--repeat-window",
            "99999999999d",
            "--out",
            "out",
        ],
        &["--repeat-window", "99999999999d", "longer than"],
    );
    let o = recur_bounded(dir.path(), &["run", "log.parquet", "--out", "out"]);
    assert!(o.status.success(), "{:?}", text(&o));
    bad(
        dir.path(),
        &["evaluate", "--truth", "missing.json", "out"],
        &["missing.json"],
    );
    std::fs::write(dir.path().join("bad.json"), "{ not json").unwrap();
    bad(
        dir.path(),
        &["evaluate", "--truth", "bad.json", "out"],
        &["bad.json"],
    );
}

#[test]
fn a_log_of_which_no_row_is_usable_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let n = 50;
    let nulls: ArrayRef =
        Arc::new(TimestampMicrosecondArray::from(vec![None::<i64>; n]).with_timezone("UTC"));
    log(&dir.path().join("nullts.parquet"), n, None, Some(nulls));
    bad(
        dir.path(),
        &["run", "nullts.parquet", "--out", "out"],
        &[
            "none of the 50 rows",
            "nullts.parquet",
            "50 null_timestamp",
            "'ts'",
        ],
    );
    // every customer a placeholder: the example names it
    log(&dir.path().join("log.parquet"), 20, None, None);
    let mut args = vec!["run", "log.parquet", "--out", "out"];
    let ids: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    for id in &ids {
        args.extend(["--exclude-customer", id.as_str()]);
    }
    bad(
        dir.path(),
        &args,
        &["20 placeholder_customer_id", "'customer_id'", "e.g. \"c0\""],
    );
    // unless an empty result is expected
    let o = recur_bounded(
        dir.path(),
        &["run", "nullts.parquet", "--allow-empty", "--out", "out"],
    );
    assert!(o.status.success(), "{:?}", text(&o));
}

/// A command of `args` with stdout (`out`) or stderr on /dev/full.
fn on_full_device(dir: &Path, args: &[&str], stdout_full: bool) -> std::process::Output {
    let full = || {
        std::fs::File::options()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_recur"));
    cmd.current_dir(dir).args(args);
    if stdout_full {
        cmd.stdout(full()).stderr(std::process::Stdio::piped());
    } else {
        cmd.stdout(std::process::Stdio::piped()).stderr(full());
    }
    cmd.output().unwrap()
}

#[test]
fn a_full_device_on_stdout_or_stderr_is_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    // what generate says goes nowhere: exit 1 naming stdout, not a panic (101)
    let o = on_full_device(
        dir.path(),
        &[
            "generate",
            "--out",
            "g.parquet",
            "--customers",
            "50",
            "--days",
            "3",
        ],
        true,
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("stdout"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // a run's summary likewise, the run itself published
    log(&dir.path().join("log.parquet"), 30, None, None);
    let o = on_full_device(dir.path(), &["run", "log.parquet", "--out", "out"], true);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(dir.path().join("out/latest").exists());
    // a bad-input error with stderr full still exits 2
    let o = on_full_device(dir.path(), &["run", "missing.parquet"], false);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn damaged_parquet_files_are_exit_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.parquet");
    log(&good, 200, None, None);
    let bytes = std::fs::read(&good).unwrap();
    // cut in half: no footer
    std::fs::write(
        dir.path().join("truncated.parquet"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    // the footer's length made huge
    let mut footer = bytes.clone();
    let at = footer.len() - 8;
    footer[at..at + 4].copy_from_slice(&[0xff; 4]);
    std::fs::write(dir.path().join("footer.parquet"), &footer).unwrap();
    // the footer's bytes scrambled, the length and magic intact
    let mut scrambled = bytes.clone();
    let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    for b in &mut scrambled[at - len..at] {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
    std::fs::write(dir.path().join("scrambled.parquet"), &scrambled).unwrap();
    for name in ["truncated.parquet", "footer.parquet", "scrambled.parquet"] {
        bad(dir.path(), &["run", name, "--out", "out"], &[name]);
        // beside a good file in one folder: the damaged one is named
        let folder = dir.path().join(format!("in-{name}"));
        std::fs::create_dir(&folder).unwrap();
        std::fs::copy(&good, folder.join("good.parquet")).unwrap();
        std::fs::copy(dir.path().join(name), folder.join(name)).unwrap();
        bad(
            dir.path(),
            &[
                "run",
                folder.file_name().unwrap().to_str().unwrap(),
                "--out",
                "out",
            ],
            &[name],
        );
    }
}

#[test]
fn files_of_one_folder_with_differing_types_are_read_alike() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    log(&input.join("a.parquet"), 100, None, None);
    // the same contacts a year later, times as text and seconds
    let text_times: ArrayRef =
        Arc::new(StringArray::from_iter_values((0..100i64).map(|i| {
            recur::time::format_utc(BASE_US + 365 * DAY_US + i * DAY_US / 7)
        })));
    log(&input.join("b.parquet"), 100, None, Some(text_times));
    let secs: ArrayRef = Arc::new(TimestampSecondArray::from_iter_values(
        (0..100i64).map(|i| (BASE_US + 2 * 365 * DAY_US + i * DAY_US / 7) / 1_000_000),
    ));
    log(&input.join("c.parquet"), 100, None, Some(secs));
    let o = recur_bounded(dir.path(), &["run", "in", "--out", "out"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let m = manifest(&dir.path().join("out"));
    assert_eq!(m["rows"]["read"], 300);
    assert_eq!(m["rows"]["used"], 300, "{}", m["rows"]);
}

#[test]
fn long_ids_and_odd_texts_come_through_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let odd = [
        "déjà vu",
        "📞 call\nback",
        "\u{202e}reversed",
        "nul\0inside",
        "<script>alert(1)</script>",
        "",
    ];
    let n = 300;
    let reason: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..n).map(|i| odd[i % odd.len()]),
    ));
    let path = dir.path().join("odd.parquet");
    log(&path, n, Some(reason), None);
    // every customer id made 10 kB long
    let batch = &crate::common::read_parquet(&path)[0];
    let long: ArrayRef = Arc::new(StringArray::from_iter_values(
        crate::common::column_text(std::slice::from_ref(batch), "customer_id")
            .iter()
            .map(|c| format!("{}{c}", "x".repeat(10_000))),
    ));
    let mut columns = batch.columns().to_vec();
    columns[1] = long;
    write_batch(
        &path,
        &RecordBatch::try_new(batch.schema(), columns).unwrap(),
    );
    let o = recur_bounded(dir.path(), &["run", "odd.parquet", "--out", "out"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let out = dir.path().join("out");
    let m = manifest(&out);
    assert_eq!(m["rows"]["used"], n);
    assert_eq!(m["rows"]["customers"], 10);
    let contacts: Vec<_> = std::fs::read_dir(out.join("contacts"))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path().join("part-0.parquet");
            p.exists().then(|| crate::common::read_parquet(&p))
        })
        .flatten()
        .collect();
    let mut reasons = crate::common::column_text(&contacts, "reason");
    reasons.sort();
    reasons.dedup();
    let mut expected: Vec<String> = odd.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(reasons, expected, "every text as it was");
    assert!(
        crate::common::column_text(&contacts, "customer_id")
            .iter()
            .all(|c| c.len() == 10_002),
        "ids kept whole"
    );
    let run = recur::runs::resolve_run_dir(&out);
    let page = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(!page.contains("<script>alert"), "texts escaped in the page");
}

#[test]
fn non_utf8_text_is_exit_2_with_the_bytes() {
    use datafusion::arrow::array::BinaryArray;
    let dir = tempfile::tempdir().unwrap();
    let reason: ArrayRef = Arc::new(BinaryArray::from_iter_values(
        (0..50).map(|_| b"\xff\xfe bad".as_slice()),
    ));
    log(&dir.path().join("bin.parquet"), 50, Some(reason), None);
    bad(
        dir.path(),
        &["run", "bin.parquet", "--out", "out"],
        &["bin.parquet", "'reason'", "Binary", "fffe20626164"],
    );
}

#[test]
fn duplicate_contacts_are_warned_of() {
    use datafusion::arrow::compute::concat_batches;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("once.parquet");
    log(&path, 200, None, None);
    let batch = &crate::common::read_parquet(&path)[0];
    let twice = concat_batches(&batch.schema(), [batch, batch]).unwrap();
    write_batch(&dir.path().join("twice.parquet"), &twice);
    let o = recur_bounded(dir.path(), &["run", "twice.parquet", "--out", "out"]);
    let (stdout, _) = text(&o);
    assert!(o.status.success());
    assert!(
        stdout.contains("warning: 200 contacts have the customer, time and contact id"),
        "{stdout}"
    );
    let m = manifest(&dir.path().join("out"));
    assert!(
        m["notes"].to_string().contains("holds some rows twice"),
        "{}",
        m["notes"]
    );
    let o = recur_bounded(dir.path(), &["run", "once.parquet", "--out", "out1"]);
    assert!(!text(&o).0.contains("twice"), "no warning without copies");
}

#[test]
fn an_unreadable_file_or_output_place_is_exit_2() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.parquet");
    log(&path, 20, None, None);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    // (root reads a file whatever its mode; /proc/self/mem it cannot read
    // as a file of bytes)
    let unreadable = if std::fs::read(&path).is_err() {
        path.to_str().unwrap().to_string()
    } else {
        "/proc/self/mem".to_string()
    };
    bad(
        dir.path(),
        &["run", &unreadable, "--out", "out"],
        &[&unreadable],
    );
    // a place no folder can be made in
    log(&dir.path().join("ok.parquet"), 20, None, None);
    bad(
        dir.path(),
        &["run", "ok.parquet", "--out", "/sys/recur-out"],
        &["--out", "cannot write in /sys/recur-out"],
    );
}

#[test]
fn config_files_with_unknown_keys_bad_syntax_or_types_are_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    log(&dir.path().join("a.parquet"), 20, None, None);
    for (name, body, says) in [
        (
            "unknown.toml",
            "repeat_windw = \"24h\"\n",
            "unknown field `repeat_windw`",
        ),
        ("syntax.toml", "repeat_window = \"24h\n", "line 1"),
        ("type.toml", "repeat_window = 24\n", "expected a string"),
        ("value.toml", "repeat_window = \"-3h\"\n", "repeat"),
        ("binary.toml", "\u{0}\u{1}\u{2}", "binary.toml"),
    ] {
        std::fs::write(dir.path().join(name), body).unwrap();
        bad(
            dir.path(),
            &["run", "a.parquet", "--config", name, "--out", "out"],
            &[says],
        );
    }
    bad(
        dir.path(),
        &[
            "run",
            "a.parquet",
            "--config",
            "missing.toml",
            "--out",
            "out",
        ],
        &["missing.toml"],
    );
}

/// Every option of `recur run` with a value it cannot take: exit 2, the
/// message naming the option (or the column it names) and the value.
#[test]
fn every_option_with_an_invalid_value_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    log(&dir.path().join("a.parquet"), 60, None, None);
    let cases: &[(&str, &str, &str)] = &[
        ("--customer-col", "nosuch", "'nosuch' (customer) not found"),
        ("--time-col", "nosuch", "'nosuch' (time) not found"),
        ("--reason-col", "nosuch", "'nosuch' (reason) not found"),
        ("--channel-col", "nosuch", "'nosuch' (channel) not found"),
        (
            "--contact-id-col",
            "nosuch",
            "'nosuch' (contact id) not found",
        ),
        ("--agent-col", "nosuch", "'nosuch' (agent) not found"),
        ("--time-col", "reason", "--time-col"),
        ("--timezone", "Mars/Olympus", "Mars/Olympus"),
        ("--repeat-window", "0", "--repeat-window"),
        ("--repeat-window", "99999999999d", "longer than the 36500d"),
        ("--cluster-window", "abc", "--cluster-window"),
        ("--alpha", "2", "--alpha"),
        ("--alpha", "x", "--alpha"),
        ("--surge-min-contacts", "-1", "-1"),
        ("--effectiveness", "1.5", "--effectiveness"),
        ("--rank-by", "foo", "--rank-by"),
        ("--as-of", "notadate", "--as-of"),
        ("--as-of", "2026-02-30", "--as-of"),
        ("--lookback", "x", "--lookback"),
        ("--recent", "x", "--recent"),
        ("--self-service-channels", ",", "--self-service-channels"),
        ("--keep", "0", "--keep"),
        ("--contacted", "missing.parquet", "missing.parquet"),
        ("--control-share", "2", "--control-share"),
        ("--log-format", "xml", "--log-format"),
        ("--max-gap", "0", "--max-gap"),
        ("--max-span", "1s", "shorter than --max-gap"),
        ("--sequence-items", "foo", "--sequence-items"),
        ("--min-support", "x", "--min-support"),
        ("--min-lift", "0.5", "--min-lift"),
        ("--min-customers", "x", "--min-customers"),
        ("--customer-cap", "0", "--customer-cap"),
        ("--null-check", "1000000", "--null-check"),
        ("--threads", "x", "--threads"),
        ("--memory-limit", "1KB", "--memory-limit"),
        ("--bucket-contacts", "0", "--bucket-contacts"),
        ("--config", "missing.toml", "missing.toml"),
        (
            "--pseudonym-key-file",
            "missing.key",
            "--pseudonym-key-file",
        ),
    ];
    // (--partition-col takes any name, --exclude-customer any id)
    for (flag, value, says) in cases {
        bad(
            dir.path(),
            &["run", "a.parquet", "--out", "out", flag, value],
            &[says],
        );
    }
    // the flags that take no value refuse one
    for flag in [
        "--require-data",
        "--allow-empty",
        "--no-report",
        "--pseudonymize",
    ] {
        bad(
            dir.path(),
            &["run", "a.parquet", "--out", "out", &format!("{flag}=maybe")],
            &[flag],
        );
    }
}

/// The Parquet fuzz target's seeds and every input it ever crashed on
/// (`tests/fuzz_regressions/`, see docs/TESTING.md) through `recur run`:
/// exit 0 with every row accounted for, or exit 2; never a panic.
#[test]
fn fuzzed_parquet_files_never_panic() {
    let root = crate::common::root();
    let mut files = Vec::new();
    for dir in ["fuzz/seeds/parquet_ingest", "tests/fuzz_regressions"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir)) {
            files.extend(entries.map(|e| e.unwrap().path()));
        }
    }
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    for (i, file) in files.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("log.parquet");
        std::fs::copy(file, &input).unwrap();
        let o = recur_bounded(dir.path(), &["run", "log.parquet", "--out", "out"]);
        let (_, err) = text(&o);
        assert!(!err.contains("panicked"), "{}: {err}", file.display());
        match o.status.code() {
            Some(0) => {
                let m = manifest(&dir.path().join("out"));
                let excluded: u64 = m["rows"]["excluded"]
                    .as_object()
                    .unwrap()
                    .values()
                    .map(|e| e["rows"].as_u64().unwrap())
                    .sum();
                assert_eq!(
                    m["rows"]["read"].as_u64().unwrap(),
                    m["rows"]["used"].as_u64().unwrap() + excluded,
                    "{}",
                    file.display()
                );
            }
            Some(2) => {}
            other => panic!("{} ({i}): exit {other:?}: {err}", file.display()),
        }
    }
}
