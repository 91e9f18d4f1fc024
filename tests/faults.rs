//! Faults a run survives. For each: a complete earlier run (its tables,
//! `latest` and the contacts store) stays intact and readable, nothing
//! half-made becomes visible, the exit code says whose fault it was (1 for
//! the machine: a full disk, a kill; 2 for the user's input: a memory limit
//! too small), and the next run succeeds and clears what the failed one
//! left behind.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common::paths_under;
use crate::nightly::{daily_log, day, parquet_bytes, recur_bin, stderr, store_bytes};

/// An output folder after one complete run as of day 40.
struct Before {
    out: PathBuf,
    tables: BTreeMap<String, Vec<u8>>,
    store: BTreeMap<String, Vec<u8>>,
    latest: String,
}

/// `recur run LOG --out OUT --as-of DAY(n)` and `extra` flags.
fn run_as_of(log: &str, out: &Path, n: u64, extra: &[&str]) -> std::process::Output {
    let as_of = day(n);
    let mut args = vec![
        "run",
        log,
        "--out",
        out.to_str().unwrap(),
        "--as-of",
        &as_of,
    ];
    args.extend_from_slice(extra);
    recur_bin(&args)
}

fn first_run(dir: &Path, log: &str) -> Before {
    let out = dir.join("out");
    let o = run_as_of(log, &out, 40, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    Before {
        tables: parquet_bytes(&out.join(format!("as_of={}", day(40)))),
        store: store_bytes(&out),
        latest: std::fs::read_to_string(out.join("latest")).unwrap(),
        out,
    }
}

/// The earlier run, `latest` and the store are as they were and every
/// visible run is whole; then the next run succeeds and leaves no staging
/// and no partial file anywhere.
fn assert_survived(b: &Before, log: &str, what: &str) {
    let out = &b.out;
    let run = out.join(format!("as_of={}", day(40)));
    assert_eq!(
        parquet_bytes(&run),
        b.tables,
        "{what}: the earlier run is intact"
    );
    assert_eq!(
        store_bytes(out),
        b.store,
        "{what}: the contacts store is intact"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("latest")).unwrap(),
        b.latest,
        "{what}: latest"
    );
    for (_, r) in recur::runs::list_runs(out).unwrap() {
        assert!(
            r.join("manifest.json").is_file(),
            "{what}: {} is whole",
            r.display()
        );
    }
    let o = run_as_of(log, out, 50, &[]);
    assert!(o.status.success(), "{what}: the next run: {}", stderr(&o));
    assert!(
        out.join(format!("as_of={}/manifest.json", day(50)))
            .is_file()
    );
    let staging = out.join(".staging");
    assert!(
        !staging.exists() || std::fs::read_dir(&staging).unwrap().next().is_none(),
        "{what}: the failed run's staging is gone"
    );
    let partial: Vec<_> = paths_under(out)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("partial"))
        .collect();
    assert!(partial.is_empty(), "{what}: leftovers {partial:?}");
}

/// A run as of day 55 logging JSON at debug level, stopped where it logs a
/// line holding `marker`.
fn run_until(out: &Path, log: &str, marker: &str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_recur"))
        .args([
            "run",
            log,
            "--out",
            out.to_str().unwrap(),
            "--as-of",
            &day(55),
        ])
        .args(["--log-format", "json"])
        .env("RUST_LOG", "recur=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let seen = lines.any(|l| l.unwrap().contains(marker));
    assert!(seen, "the run logged {marker}");
    // the rest is read too, so that the run never writes to a closed pipe
    std::thread::spawn(move || lines.for_each(drop));
    child
}

/// kill -9 and Ctrl-C (SIGINT) during ingest, during the passes and while
/// writing.
#[test]
fn killed_or_interrupted_at_three_points_leaves_earlier_runs_intact() {
    let log = daily_log().to_str().unwrap().to_string();
    for signal in [libc::SIGKILL, libc::SIGINT] {
        for (point, marker) in [
            ("ingest", "\"message\":\"input read\""),
            ("passes", "\"stage\":\"repeats\""),
            ("writing", "\"table\":\"clusters\""),
        ] {
            let what = format!("signal {signal} at {point}");
            let dir = tempfile::tempdir().unwrap();
            let before = first_run(dir.path(), &log);
            let mut child = run_until(&before.out, &log, marker);
            // SAFETY: a plain kill(2) of the child we started and still own
            assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
            let status = child.wait().unwrap();
            assert!(!status.success(), "{what}: {status:?}");
            if point != "writing" {
                assert!(
                    !before.out.join(format!("as_of={}", day(55))).exists(),
                    "{what}: stopped before publishing, not visible"
                );
            }
            assert_survived(&before, &log, &what);
        }
    }
}

/// A write that fails (a file-size limit standing in for a full disk) is
/// exit code 1 and names the file.
#[test]
fn a_full_disk_is_exit_1_naming_the_file() {
    let log = daily_log().to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let before = first_run(dir.path(), &log);
    // SIGXFSZ ignored (kept across exec): a write past the limit fails with
    // EFBIG instead of killing the process
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f 64; exec '{}' run '{log}' --out '{}' --as-of {}",
            env!("CARGO_BIN_EXE_recur"),
            before.out.display(),
            day(55)
        ))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&before.out.display().to_string()),
        "names the path: {}",
        stderr(&o)
    );
    assert_survived(&before, &log, "a full disk");
}

/// A memory limit that the ingest and the sort fit in but a later stage
/// (the ranking or the reports) does not: exit 2 naming the stage.
#[test]
fn a_late_memory_limit_failure_is_exit_2_and_harmless() {
    let log = daily_log().to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let before = first_run(dir.path(), &log);
    let late = ["ranking", "writing"];
    let mut failed_late = None;
    for limit in ["24MiB", "20MiB", "16MiB", "12MiB", "8MiB", "4MiB"] {
        let o = run_as_of(
            &log,
            &before.out,
            55,
            &[
                "--memory-limit",
                limit,
                "--bucket-contacts",
                "5000",
                "--threads",
                "3",
            ],
        );
        if o.status.success() {
            // (it fit: the run is published; take it away again)
            std::fs::remove_dir_all(before.out.join(format!("as_of={}", day(55)))).unwrap();
            std::fs::write(before.out.join("latest"), &before.latest).unwrap();
            continue;
        }
        assert_eq!(o.status.code(), Some(2), "{limit}: {}", stderr(&o));
        assert!(stderr(&o).contains("is too small for"), "{}", stderr(&o));
        if late
            .iter()
            .any(|s| stderr(&o).contains(&format!("too small for {s}")))
        {
            failed_late = Some(stderr(&o));
            break;
        }
    }
    let message = failed_late.expect("some limit fails after the sort");
    assert!(
        !before.out.join(format!("as_of={}", day(55))).exists(),
        "not visible: {message}"
    );
    // (the runs that fit rewrote days of the store the same way)
    let after = Before {
        store: store_bytes(&before.out),
        ..before
    };
    assert_survived(&after, &log, "a late memory-limit failure");
}

/// Two runs into one folder at once: the second is refused (exit 3) while
/// the first holds the folder, and the first completes whole.
#[test]
fn a_concurrent_run_is_refused_and_the_first_completes() {
    let log = daily_log().to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let before = first_run(dir.path(), &log);
    let mut first = run_until(&before.out, &log, "\"message\":\"input read\"");
    let o = run_as_of(&log, &before.out, 45, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("another recur run"), "{}", stderr(&o));
    assert!(first.wait().unwrap().success());
    assert!(!before.out.join(format!("as_of={}", day(45))).exists());
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(before.out.join(format!("as_of={}/manifest.json", day(55))))
            .unwrap(),
    )
    .unwrap();
    assert!(
        m["as_of"].as_str().unwrap().starts_with(&day(55)),
        "{}",
        m["as_of"]
    );
    let run = before.out.join(format!("as_of={}", day(40)));
    assert_eq!(
        parquet_bytes(&run),
        before.tables,
        "the earlier run is intact"
    );
}

/// `recur report` where report.html cannot be replaced (a folder of that
/// name in its place): exit 1 naming it, the tables untouched, no partial
/// page left.
#[test]
fn a_report_that_cannot_be_replaced_leaves_the_run_as_it_was() {
    let log = daily_log().to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let before = first_run(dir.path(), &log);
    let run = before.out.join(format!("as_of={}", day(40)));
    let page = run.join("report.html");
    std::fs::remove_file(&page).unwrap();
    std::fs::create_dir(&page).unwrap();
    std::fs::write(page.join("keep"), "x").unwrap();
    let o = recur_bin(&["report", before.out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("report.html"), "{}", stderr(&o));
    assert_eq!(parquet_bytes(&run), before.tables);
    assert!(
        !run.join("report.html.partial").exists(),
        "no partial page left"
    );
    std::fs::remove_dir_all(&page).unwrap();
    let o = recur_bin(&["report", before.out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(page.is_file());
}

/// A scheduler that stops reading the run's log (stderr closed after the
/// first line): the run goes on and publishes, exit 0.
#[test]
fn a_closed_log_pipe_does_not_stop_the_run() {
    let log = daily_log().to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_recur"))
        .args([
            "run",
            &log,
            "--out",
            out.to_str().unwrap(),
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "recur=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with('{'), "{first}");
    // (the reader is dropped: the pipe is closed)
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        recur::runs::resolve_run_dir(&out)
            .join("manifest.json")
            .is_file()
    );
}
