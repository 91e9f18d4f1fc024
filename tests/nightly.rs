//! The nightly job: runs as of a date over a daily log, the output folder
//! of many runs, today's outreach list, and what a scheduler relies on
//! (exit codes, the lock); the faults a run survives are in tests/faults.rs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{
    ArrayRef, AsArray, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit, TimestampMicrosecondType};
use recur::config::{PipelineConfig, RunOptions};

use crate::common::{column_text, read_parquet, write_batch};

/// Days of the shared daily log, and its first day.
const DAYS: u32 = 60;
const FIRST_DAY: &str = "2026-08-01";

/// A generated daily log (`date=YYYY-MM-DD/part-0.parquet`), made once.
pub(crate) fn daily_log() -> &'static Path {
    static LOG: OnceLock<PathBuf> = OnceLock::new();
    LOG.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("recur-nightly-{}", std::process::id()));
        let log = dir.join("log");
        recur::generate::generate_daily(
            &log,
            &recur::generate::GenerateParams {
                customers: 60_000,
                days: DAYS,
                seed: 5,
                ..Default::default()
            },
        )
        .unwrap();
        log
    })
}

pub(crate) fn day(n: u64) -> String {
    (chrono::NaiveDate::parse_from_str(FIRST_DAY, "%Y-%m-%d").unwrap() + chrono::Days::new(n))
        .to_string()
}

fn nightly_config(input: &Path, out: &Path, as_of: &str, lookback: &str) -> PipelineConfig {
    PipelineConfig::from_raw(RunOptions {
        inputs: Some(vec![input.to_string_lossy().into()]),
        out: Some(out.to_path_buf()),
        as_of: Some(as_of.into()),
        lookback: Some(lookback.into()),
        exclude_customer: Some(vec!["UNKNOWN".into(), "0".into()]),
        ..Default::default()
    })
    .unwrap()
}

async fn run(cfg: &PipelineConfig) -> recur::pipeline::RunSummary {
    recur::runs::run(cfg, &recur::pipeline::NoProgress)
        .await
        .unwrap()
}

/// A table of a run, as one batch without the named columns.
fn table(run: &Path, name: &str, without: &[&str]) -> RecordBatch {
    let batches = read_parquet(&run.join(format!("{name}.parquet")));
    let schema = batches[0].schema();
    let keep: Vec<usize> = (0..schema.fields().len())
        .filter(|i| !without.contains(&schema.field(*i).name().as_str()))
        .collect();
    let projected: Vec<RecordBatch> = batches.iter().map(|b| b.project(&keep).unwrap()).collect();
    concat_batches(&Arc::new(schema.project(&keep).unwrap()), projected.iter()).unwrap()
}

const TABLES: &[&str] = &[
    "repeat_summary",
    "clusters",
    "sequences",
    "cluster_members",
    "prompts",
    "frequent_contacters",
    "surges",
    "reason_days",
    "cluster_trends",
];

/// Ten nights in a row into one folder, each equal to a run of its own
/// over the same window; the list carries first_listed from night to night.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nightly_runs_equal_one_shot_runs_and_carry_the_list() {
    let log = daily_log();
    let dir = tempfile::tempdir().unwrap();
    let nightly = dir.path().join("nightly");
    let mut previous: Option<RecordBatch> = None;
    let mut previous_seen: BTreeMap<String, chrono::NaiveDate> = BTreeMap::new();
    for night in 0..10u64 {
        let as_of = day(45 + night);
        let s = run(&nightly_config(log, &nightly, &as_of, "30d")).await;
        assert_eq!(s.run_dir, nightly.join(format!("as_of={as_of}")));
        let alone = dir.path().join(format!("alone-{night}"));
        let a = run(&nightly_config(log, &alone, &as_of, "30d")).await;
        for name in TABLES {
            // (first_seen is carried from night to night)
            assert_eq!(
                table(&s.run_dir, name, &["first_seen"]),
                table(&a.run_dir, name, &["first_seen"]),
                "{name} as of {as_of}"
            );
        }
        // a cluster reported yesterday keeps its first_seen; any other is new
        let clusters = table(&s.run_dir, "clusters", &[]);
        let seen: BTreeMap<String, chrono::NaiveDate> =
            column_text(std::slice::from_ref(&clusters), "cluster_id")
                .into_iter()
                .zip(dates(&clusters, "first_seen"))
                .collect();
        let today = chrono::NaiveDate::parse_from_str(&as_of, "%Y-%m-%d").unwrap();
        for (id, first) in &seen {
            let want = previous_seen.get(id).copied().unwrap_or(today);
            assert_eq!(*first, want, "{id} as of {as_of}");
        }
        if night > 0 {
            assert!(
                seen.values().any(|d| *d < today),
                "clusters carried over as of {as_of}"
            );
        }
        previous_seen = seen;
        // the contact days a night writes are what a run of its own computes
        let days = &s.manifest.contact_days_written;
        assert_eq!(days.len(), if night == 0 { 30 } else { 2 }, "{days:?}");
        for d in days {
            let day = format!("date={d}");
            assert_eq!(
                table(&nightly.join("contacts").join(&day), "part-0", &[]),
                table(&alone.join("contacts").join(&day), "part-0", &[]),
                "contacts of {d} as of {as_of}"
            );
        }
        let history = ["first_listed", "new_today"];
        assert_eq!(
            table(&s.run_dir, "outreach", &history),
            table(&a.run_dir, "outreach", &history),
            "outreach as of {as_of}"
        );
        let list = table(&s.run_dir, "outreach", &[]);
        assert!(list.num_rows() > 0, "a list as of {as_of}");
        let today = chrono::NaiveDate::parse_from_str(&as_of, "%Y-%m-%d").unwrap();
        let first = dates(&list, "first_listed");
        let new = list.column_by_name("new_today").unwrap().as_boolean();
        for (i, f) in first.iter().enumerate() {
            assert_eq!(new.value(i), *f == today);
        }
        if let Some(prev) = &previous {
            // a row listed yesterday keeps its first_listed; any other is new
            let yesterday: BTreeMap<_, _> = keys(prev)
                .into_iter()
                .zip(dates(prev, "first_listed"))
                .collect();
            let mut carried = 0;
            for (k, f) in keys(&list).into_iter().zip(&first) {
                match yesterday.get(&k) {
                    Some(d) => {
                        assert_eq!(d, f, "{k:?}");
                        carried += 1;
                    }
                    None => assert_eq!(*f, today, "{k:?}"),
                }
            }
            assert!(carried > 0, "some rows stay on the list overnight");
            assert!(first.contains(&today), "some rows are new as of {as_of}");
        }
        previous = Some(list);
    }
    assert_eq!(recur::runs::list_runs(&nightly).unwrap().len(), 10);
    assert_eq!(
        std::fs::read_to_string(nightly.join("latest"))
            .unwrap()
            .trim(),
        format!("as_of={}", day(54))
    );
    // a glob over the runs reads every run, with its as-of
    let clusters = read_parquet(&nightly.join(format!("as_of={}/clusters.parquet", day(50))));
    let ids = column_text(&clusters, "cluster_id");
    assert!(
        ids.iter()
            .all(|id| id.contains(" -> ") && !id.contains('@')),
        "{ids:?}"
    );
}

fn keys(list: &RecordBatch) -> Vec<(String, String, String)> {
    let t = |n: &str| column_text(std::slice::from_ref(list), n);
    let (c, r, k) = (
        t("customer_id"),
        t("expected_reason"),
        t("trigger_contact_id"),
    );
    (0..c.len())
        .map(|i| (c[i].clone(), r[i].clone(), k[i].clone()))
        .collect()
}

fn dates(b: &RecordBatch, name: &str) -> Vec<chrono::NaiveDate> {
    let a = b
        .column_by_name(name)
        .unwrap()
        .as_primitive::<datafusion::arrow::datatypes::Date32Type>();
    (0..a.len()).map(|i| a.value_as_date(i).unwrap()).collect()
}

pub(crate) fn parquet_bytes(run: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// The bytes of every contact day file in output folder `out`.
pub(crate) fn store_bytes(out: &Path) -> BTreeMap<String, Vec<u8>> {
    let store = out.join("contacts");
    std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(p.join("part-0.parquet")).unwrap(),
            )
        })
        .collect()
}

/// The contacts table of output folder `out`: every day's rows.
fn store_contacts(out: &Path) -> Vec<RecordBatch> {
    let mut days: Vec<PathBuf> = std::fs::read_dir(out.join("contacts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    days.sort();
    days.iter()
        .flat_map(|d| read_parquet(&d.join("part-0.parquet")))
        .collect()
}

/// Copies the daily log's folders of days `from..to` into `dest`.
fn copy_days(dest: &Path, from: u64, to: u64) {
    for n in from..to {
        let name = format!("date={}", day(n));
        std::fs::create_dir_all(dest.join(&name)).unwrap();
        std::fs::copy(
            daily_log().join(&name).join("part-0.parquet"),
            dest.join(&name).join("part-0.parquet"),
        )
        .unwrap();
    }
}

/// A rerun of a past as-of after more days (and a later run) have come
/// gives the same files; a corrupt file in a folder outside the window is
/// never opened, and the manifest lists it as skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reruns_are_identical_and_pruned_files_are_not_opened() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    copy_days(&input, 0, 41);
    let out = dir.path().join("out");
    let first = run(&nightly_config(&input, &out, &day(40), "30d")).await;
    let before = parquet_bytes(&first.run_dir);
    copy_days(&input, 41, 50);
    run(&nightly_config(&input, &out, &day(49), "30d")).await;
    // a corrupt file in day 5's folder: outside both windows
    std::fs::write(
        input.join(format!("date={}/part-0.parquet", day(5))),
        b"not parquet",
    )
    .unwrap();
    let store = store_bytes(&out);
    let again = run(&nightly_config(&input, &out, &day(40), "30d")).await;
    assert_eq!(again.run_dir, first.run_dir);
    assert_eq!(parquet_bytes(&again.run_dir), before, "identical files");
    assert!(
        again.manifest.contact_days_written.is_empty(),
        "the later run's contact days stand: {:?}",
        again.manifest.contact_days_written
    );
    assert_eq!(store_bytes(&out), store, "the contacts table is untouched");
    let m = &again.manifest;
    assert!(
        m.skipped_inputs
            .iter()
            .any(|f| f.path.to_string_lossy().contains(&day(5))),
        "day 5 listed as skipped"
    );
    assert!(
        m.inputs
            .iter()
            .all(|f| !f.path.to_string_lossy().contains(&day(5))),
        "day 5 not read"
    );
    assert_eq!(
        m.rows.read,
        m.rows.used + m.rows.excluded.values().map(|e| e.rows).sum::<u64>()
    );
    // latest stays with the later as-of
    assert_eq!(
        recur::runs::latest_run(&out).unwrap().0.to_string(),
        day(49)
    );
    // the same as-of with another repeat window: its rows differ, so every
    // day of its window is written again, and the stored repeats follow it
    let repeats = |out: &Path| -> usize {
        column_text(&store_contacts(out), "is_repeat")
            .iter()
            .filter(|v| *v == "true")
            .count()
    };
    let narrow = repeats(&out);
    let wider = PipelineConfig {
        repeat_window_us: 7 * 86_400_000_000,
        ..nightly_config(&input, &out, &day(49), "30d")
    };
    let rewritten = run(&wider).await;
    assert_eq!(rewritten.manifest.contact_days_written.len(), 30);
    assert!(
        repeats(&out) > narrow,
        "the store holds the wider window's repeats"
    );
}

/// Ids assigned to a log without contact ids do not move when a late file
/// arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assigned_ids_hold_when_a_late_file_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    for n in [10u64, 11, 12] {
        let from = daily_log().join(format!("date={}/part-0.parquet", day(n)));
        let batches = read_parquet(&from);
        let b = concat_batches(&batches[0].schema(), batches.iter()).unwrap();
        let keep: Vec<usize> = (1..b.num_columns()).collect();
        let folder = input.join(format!("date={}", day(n)));
        std::fs::create_dir_all(&folder).unwrap();
        if n != 11 {
            write_batch(&folder.join("part-0.parquet"), &b.project(&keep).unwrap());
        } else {
            write_batch(&dir.path().join("late.parquet"), &b.project(&keep).unwrap());
        }
    }
    let ids = |out: &Path| -> BTreeMap<(String, String), String> {
        let c = store_contacts(out);
        let (id, cust, ts) = (
            column_text(&c, "contact_id"),
            column_text(&c, "customer_id"),
            column_text(&c, "ts"),
        );
        (0..id.len())
            .map(|i| ((cust[i].clone(), ts[i].clone()), id[i].clone()))
            .collect()
    };
    let cfg = |out: &str| nightly_config(&input, &dir.path().join(out), &day(12), "30d");
    run(&cfg("a")).await;
    let before = ids(&dir.path().join("a"));
    let late = input.join(format!("date={}", day(11)));
    std::fs::rename(dir.path().join("late.parquet"), late.join("part-0.parquet")).unwrap();
    run(&cfg("b")).await;
    let after = ids(&dir.path().join("b"));
    assert!(after.len() > before.len());
    for (k, v) in &before {
        assert_eq!(after.get(k), Some(v), "{k:?}");
    }
}

/// `--contacted` leaves out the customers reached about a follow-up after
/// its trigger; `--control-share` marks a stable share as control.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacted_customers_leave_the_list_and_control_is_stable() {
    let dir = tempfile::tempdir().unwrap();
    let log = daily_log();
    let s = run(&nightly_config(log, &dir.path().join("a"), &day(50), "30d")).await;
    let list = table(&s.run_dir, "outreach", &[]);
    assert!(list.num_rows() >= 10, "{}", list.num_rows());
    let t = |n: &str| column_text(std::slice::from_ref(&list), n);
    let (customer, reason) = (t("customer_id"), t("expected_reason"));
    let trigger = list
        .column_by_name("trigger_ts")
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>();
    // rows 0 and 1 reached after their trigger; row 2 before it (an
    // earlier episode: stays)
    let at = [
        trigger.value(0) + 1_000_000,
        trigger.value(1) + 1_000_000,
        trigger.value(2) - 1_000_000,
    ];
    let contacted = dir.path().join("contacted.parquet");
    write_batch(
        &contacted,
        &RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("customer_id", DataType::Utf8, false),
                Field::new("expected_reason", DataType::Utf8, false),
                Field::new(
                    "contacted_at",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    false,
                ),
            ])),
            vec![
                Arc::new(StringArray::from(customer[..3].to_vec())) as ArrayRef,
                Arc::new(StringArray::from(reason[..3].to_vec())),
                Arc::new(TimestampMicrosecondArray::from(at.to_vec()).with_timezone("UTC")),
            ],
        )
        .unwrap(),
    );
    let mut cfg = nightly_config(log, &dir.path().join("b"), &day(50), "30d");
    cfg.contacted = Some(contacted);
    cfg.control_share = 0.3;
    let b = run(&cfg).await;
    assert_eq!(b.manifest.outreach_list.removed_contacted, 2);
    let reached = table(&b.run_dir, "outreach", &[]);
    assert_eq!(reached.num_rows(), list.num_rows() - 2);
    let keys_b = keys(&reached);
    let keys_a = keys(&list);
    assert!(!keys_b.contains(&keys_a[0]) && !keys_b.contains(&keys_a[1]));
    assert!(keys_b.contains(&keys_a[2]));
    let control = reached.column_by_name("control").unwrap().as_boolean();
    let share = control.true_count() as f64 / reached.num_rows() as f64;
    assert!((0.15..0.45).contains(&share), "{share}");
    for (i, (c, r, _)) in keys_b.iter().enumerate() {
        assert_eq!(control.value(i), recur::daily_list::is_control(c, r, 0.3));
    }
    assert_eq!(
        b.manifest.outreach_list.control,
        control.true_count() as u64
    );
}

pub(crate) fn recur_bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(args)
        .output()
        .expect("run recur")
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The exit codes a scheduler reads: no input, an empty input, an as-of
/// outside the data (2); a folder another run holds (3); no contact on the
/// as-of day under --require-data (4).
#[test]
fn exit_codes_for_a_scheduler() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out_s = out.to_str().unwrap();
    let log = daily_log().to_str().unwrap().to_string();

    let o = recur_bin(&["run", "--out", out_s]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("recur demo"), "{}", stderr(&o));
    assert!(!out.exists(), "nothing written");

    let empty = dir.path().join("empty.parquet");
    let b = read_parquet(&daily_log().join(format!("date={}/part-0.parquet", day(3))));
    write_batch(&empty, &b[0].slice(0, 0));
    let e = empty.to_str().unwrap();
    let o = recur_bin(&["run", e, "--out", out_s]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no rows"), "{}", stderr(&o));
    let o = recur_bin(&[
        "run",
        e,
        "--out",
        dir.path().join("empty-out").to_str().unwrap(),
        "--allow-empty",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let o = recur_bin(&["run", &log, "--out", out_s, "--as-of", "2025-06-01"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no contact in the window"),
        "{}",
        stderr(&o)
    );

    let after = day(DAYS as u64 + 2);
    let o = recur_bin(&[
        "run",
        &log,
        "--out",
        out_s,
        "--as-of",
        &after,
        "--require-data",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));

    let held = recur::runs::Outputs::open(&out).unwrap();
    let o = recur_bin(&["run", &log, "--out", out_s, "--as-of", &day(30)]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("another recur run"), "{}", stderr(&o));
    drop(held);
    let o = recur_bin(&[
        "run",
        &log,
        "--out",
        out_s,
        "--as-of",
        &format!("{}..{}", day(30), day(31)),
        "--keep",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let runs = recur::runs::list_runs(&out).unwrap();
    assert_eq!(runs.len(), 1, "--keep 1 leaves the latest run: {runs:?}");
    assert_eq!(runs[0].0.to_string(), day(31));
}
