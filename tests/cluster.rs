//! A Ballista cluster of separate processes on loopback: `recur scheduler`
//! and two `recur executor`s, started for each test and stopped when it
//! ends (their folders removed). Each test waits for the scheduler to say
//! its executors are alive rather than sleeping, and is bounded in time.
//!
//! - the per-customer passes on the cluster give what they give on one
//!   machine, on sample-data and on a generated log of about a million
//!   contacts, and both executors did part of the work;
//! - an executor killed during a run: Ballista runs its tasks again on the
//!   other (the check completes and agrees) or the run fails with exit 1 and
//!   a message; the cluster serves the next run either way;
//! - `recur run --cluster` writes the tables a run on one machine writes,
//!   row for row (floats to 12 significant digits), on sample-data and on
//!   the million-contact log, both executors taking part; with an executor
//!   killed during the run, the same tables or exit 1 and no run published;
//!   options a cluster run cannot take, and an absent scheduler, are named.

#![cfg(feature = "ballista")]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::record_batch::RecordBatch;
use std::time::{Duration, Instant};

/// Seconds without a heartbeat before the scheduler gives an executor up
/// (Ballista's default is 180).
const EXECUTOR_TIMEOUT_S: &str = "4";

/// The processes of a loopback cluster; killed when dropped.
struct Cluster {
    scheduler: Child,
    executors: Vec<Child>,
    work_dirs: Vec<PathBuf>,
    port: u16,
    said: Receiver<String>,
    _dir: tempfile::TempDir,
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn recur() -> Command {
    Command::new(env!("CARGO_BIN_EXE_recur"))
}

impl Cluster {
    /// A scheduler and `n` executors, each running one task at a time,
    /// returned once the scheduler counts `n` executors alive.
    fn start(n: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut scheduler = recur()
            .args(["scheduler", "--bind-port", &port.to_string()])
            .args(["--executor-timeout-seconds", EXECUTOR_TIMEOUT_S])
            .args(["--expire-dead-executor-interval-seconds", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, said) = channel();
        let err = scheduler.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut cluster = Cluster {
            scheduler,
            executors: Vec::new(),
            work_dirs: Vec::new(),
            port,
            said,
            _dir: dir,
        };
        for i in 0..n {
            let work = cluster._dir.path().join(format!("executor-{i}"));
            std::fs::create_dir_all(&work).unwrap();
            let executor = recur()
                .args(["executor", "--scheduler-port", &port.to_string()])
                .args(["--bind-port", &free_port().to_string()])
                .args(["--bind-grpc-port", &free_port().to_string()])
                .args(["--work-dir", work.to_str().unwrap()])
                .args(["--concurrent-tasks", "1"])
                .args(["--executor-heartbeat-interval-seconds", "1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            cluster.executors.push(executor);
            cluster.work_dirs.push(work);
        }
        cluster.wait_for(&alive(n), Duration::from_secs(60));
        cluster
    }

    fn url(&self) -> String {
        format!("df://localhost:{}", self.port)
    }

    /// Waits until the scheduler says `line`; fails the test after `limit`.
    fn wait_for(&self, line: &str, limit: Duration) {
        let started = Instant::now();
        let mut heard = Vec::new();
        while let Some(left) = limit.checked_sub(started.elapsed()) {
            match self.said.recv_timeout(left) {
                Ok(l) if l.contains(line) => return,
                Ok(l) => heard.push(l),
                Err(_) => break,
            }
        }
        panic!("the scheduler did not say '{line}' within {limit:?}; it said {heard:?}");
    }

    /// `recur cluster-check` of `log` on this cluster, failing the test
    /// after `limit`.
    fn check(&self, log: &Path, limit: Duration) -> Output {
        let child = recur()
            .args([
                "cluster-check",
                "--cluster",
                &self.url(),
                "--partitions",
                "4",
            ])
            .arg(log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        bounded(child, limit)
    }

    /// Kills executor `i` (SIGKILL) as soon as it has written shuffle
    /// output; fails the test if it never does.
    fn kill_once_it_shuffles(&mut self, i: usize) {
        let started = Instant::now();
        while self.shuffle_files(i) == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "executor {i} never started work"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.executors[i].kill().unwrap();
        self.executors[i].wait().unwrap();
    }

    /// Shuffle files an executor wrote.
    fn shuffle_files(&self, i: usize) -> usize {
        walk(&self.work_dirs[i])
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "arrow"))
            .count()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.executors.iter_mut().chain([&mut self.scheduler]) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn alive(n: usize) -> String {
    format!("{n} executor{} alive", if n == 1 { "" } else { "s" })
}

/// Waits for `child`, killing it and failing the test after `limit`.
fn bounded(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            panic!("recur cluster-check did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// The files under `dir`. Not `common::paths_under`, which fails on a
/// folder that goes while it reads: Ballista removes a job's shuffle
/// folders while the tests poll them.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A generated log of about a million contacts (heavy-tailed customers).
fn million(dir: &Path) -> PathBuf {
    let log = dir.join("log.parquet");
    let o = recur()
        .args(["generate", "--out", log.to_str().unwrap()])
        .args(["--customers", "230000", "--seed", "7"])
        .args(["--rate-spread", "1.0", "--heavy-customers", "20"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    log
}

/// The check's lines for the four passes, each "same".
fn assert_all_same(o: &Output, what: &str) {
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{what}: {out}{err}");
    let passes: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(passes.len(), 4, "{what}: {out}");
    for line in passes {
        assert!(line.ends_with("same"), "{what}: {line}");
        // a summary of no rows would agree about nothing
        let rows: u64 = line[20..29].trim().parse().unwrap();
        assert!(rows > 0, "{what}: {line}");
    }
}

#[test]
fn passes_on_a_cluster_of_processes_equal_one_machine() {
    let cluster = Cluster::start(2);
    let sample = env!("CARGO_MANIFEST_DIR").to_string() + "/sample-data/contacts.parquet";
    let o = cluster.check(Path::new(&sample), Duration::from_secs(120));
    assert_all_same(&o, "sample-data");
    // the shuffle by customer ran on both executors
    for i in 0..2 {
        assert!(cluster.shuffle_files(i) > 0, "executor {i} did no work");
    }

    let dir = tempfile::tempdir().unwrap();
    let log = million(dir.path());
    let o = cluster.check(&log, Duration::from_secs(300));
    assert_all_same(&o, "a million contacts");
}

#[test]
fn an_executor_killed_mid_run_is_survived_or_named() {
    let mut cluster = Cluster::start(2);
    let dir = tempfile::tempdir().unwrap();
    let log = million(dir.path());
    let child = recur()
        .args(["cluster-check", "--cluster", &cluster.url()])
        .arg(&log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    cluster.kill_once_it_shuffles(1);
    let o = bounded(child, Duration::from_secs(300));
    let err = String::from_utf8_lossy(&o.stderr);
    match o.status.code() {
        // Ballista ran the lost tasks again on the executor left
        Some(0) => {
            assert_all_same(&o, "after the kill");
            eprintln!("the check survived the kill: the lost tasks ran again");
        }
        // or the run failed, saying so
        Some(1) => assert!(err.contains("recur: error: cluster:"), "{err}"),
        other => panic!("exit {other:?}: {err}"),
    }
    cluster.wait_for(&alive(1), Duration::from_secs(30));
    // the cluster serves the next run on the executor left
    let sample = env!("CARGO_MANIFEST_DIR").to_string() + "/sample-data/contacts.parquet";
    assert_all_same(
        &cluster.check(Path::new(&sample), Duration::from_secs(120)),
        "the next run",
    );
}

/// A log the check cannot use is exit 2 naming it, whether or not a
/// cluster is up; a scheduler nobody serves is exit 1 naming the cluster.
#[test]
fn cluster_check_names_a_bad_log_and_an_absent_scheduler() {
    let dir = tempfile::tempdir().unwrap();
    let nobody = format!("df://localhost:{}", free_port());
    let run = |log: &Path, url: &str| {
        let child = recur()
            .args(["cluster-check", "--cluster", url])
            .arg(log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let o = bounded(child, Duration::from_secs(60));
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let missing = dir.path().join("missing.parquet");
    let (code, err) = run(&missing, &nobody);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("missing.parquet"), "{err}");

    let batch = RecordBatch::try_from_iter([(
        "customer_id",
        Arc::new(datafusion::arrow::array::StringArray::from(vec!["a"])) as _,
    )])
    .unwrap();
    let no_reason = dir.path().join("ids.parquet");
    crate::common::write_batch(&no_reason, &batch);
    let (code, err) = run(&no_reason, &nobody);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("ids.parquet") && err.contains("no column 'contact_id'"),
        "{err}"
    );

    let sample = env!("CARGO_MANIFEST_DIR").to_string() + "/sample-data/contacts.parquet";
    let (code, err) = run(Path::new(&sample), &nobody);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("recur: error: cluster:"), "{err}");
}

/// `recur run LOG --out OUT --no-report` and `extra`, failing the test
/// after `limit`.
fn run(log: &Path, out: &Path, extra: &[&str], limit: Duration) -> Output {
    let child = recur()
        .arg("run")
        .arg(log)
        .arg("--out")
        .arg(out)
        .arg("--no-report")
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    bounded(child, limit)
}

/// `array` with every float rounded to 12 significant digits (NaN kept as
/// one value), through lists and structs: what "the same number" means
/// between two runs whose sums were added in another order.
fn rounded(array: &ArrayRef) -> ArrayRef {
    use datafusion::arrow::array::{AsArray, Float64Array, ListArray, StructArray};
    use datafusion::arrow::datatypes::{DataType, Float64Type};
    let round = |v: f64| {
        if v.is_nan() {
            f64::MAX
        } else {
            format!("{v:.11e}").parse::<f64>().unwrap()
        }
    };
    match array.data_type() {
        DataType::Float64 => Arc::new(
            array
                .as_primitive::<Float64Type>()
                .iter()
                .map(|v| v.map(round))
                .collect::<Float64Array>(),
        ),
        DataType::List(field) => {
            let list = array.as_list::<i32>();
            Arc::new(ListArray::new(
                field.clone(),
                list.offsets().clone(),
                rounded(list.values()),
                list.nulls().cloned(),
            ))
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            Arc::new(StructArray::new(
                fields.clone(),
                s.columns().iter().map(rounded).collect(),
                s.nulls().cloned(),
            ))
        }
        _ => array.clone(),
    }
}

/// Every Parquet file under `a` is under `b` with the same schema and the
/// same rows in the same order (floats to 12 significant digits), and no
/// other; returns the files compared.
fn assert_same_tables(a: &Path, b: &Path) -> usize {
    let files = |dir: &Path| -> Vec<PathBuf> {
        let mut f: Vec<PathBuf> = walk(dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .map(|p| p.strip_prefix(dir).unwrap().to_path_buf())
            .collect();
        f.sort();
        f
    };
    let (fa, fb) = (files(a), files(b));
    assert_eq!(fa, fb, "the runs wrote other files");
    assert!(!fa.is_empty());
    for f in &fa {
        let read = |root: &Path| {
            let file = std::fs::File::open(root.join(f)).unwrap();
            let reader =
                datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                    file,
                )
                .unwrap()
                .build()
                .unwrap();
            // (the schema from the file: a table may have no rows)
            let schema = datafusion::arrow::record_batch::RecordBatchReader::schema(&reader);
            let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
            let all = datafusion::arrow::compute::concat_batches(&schema, &batches).unwrap();
            let columns = all.columns().iter().map(rounded).collect();
            RecordBatch::try_new_with_options(
                Arc::new(datafusion::arrow::datatypes::Schema::new(
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.as_ref().clone())
                        .collect::<Vec<_>>(),
                )),
                columns,
                &Default::default(),
            )
            .unwrap()
        };
        let (ta, tb) = (read(a), read(b));
        assert_eq!(ta.schema(), tb.schema(), "{}: schemas differ", f.display());
        assert_eq!(ta.num_rows(), tb.num_rows(), "{}: rows differ", f.display());
        for (i, (ca, cb)) in ta.columns().iter().zip(tb.columns()).enumerate() {
            if ca != cb {
                let first = (0..ca.len())
                    .find(|r| ca.slice(*r, 1) != cb.slice(*r, 1))
                    .unwrap_or(0);
                panic!(
                    "{}: column {} differs, first at row {first}: {:?} vs {:?}",
                    f.display(),
                    ta.schema().field(i).name(),
                    ca.slice(first, 1),
                    cb.slice(first, 1)
                );
            }
        }
    }
    fa.len()
}

/// The run's folder under an output folder (its one `as_of=` folder).
fn run_folder(out: &Path) -> PathBuf {
    std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("as_of=")
        })
        .unwrap_or_else(|| panic!("no run published in {}", out.display()))
}

/// The manifest's counts of rows read, used and excluded.
fn row_counts(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run_folder(out).join("manifest.json")).unwrap();
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    m["rows"].clone()
}

#[test]
fn a_run_on_a_cluster_writes_the_tables_of_one_machine() {
    let cluster = Cluster::start(2);
    let dir = tempfile::tempdir().unwrap();
    let sample = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sample-data/contacts.parquet");
    let log = million(dir.path());
    // a log of many files (a read task each)
    let daily = dir.path().join("daily");
    let o = recur()
        .args(["generate", "--daily", "--out", daily.to_str().unwrap()])
        .args(["--customers", "20000", "--days", "30", "--seed", "3"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (name, log, extra) in [
        ("sample-data", sample, vec![]),
        ("a million contacts", log, vec![]),
        ("30 daily files", daily, vec![]),
        // the real log, without contact ids: assigned from file and row
        (
            "the ServiceNow log",
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/servicenow_incidents.parquet"),
            vec![
                "--customer-col",
                "caller_id",
                "--time-col",
                "opened_at",
                "--channel-col",
                "contact_type",
                "--reason-col",
                "category",
            ],
        ),
    ] {
        let local = dir.path().join(format!("{name}-local"));
        let on_cluster = dir.path().join(format!("{name}-cluster"));
        let o = run(&log, &local, &extra, Duration::from_secs(300));
        assert!(
            o.status.success(),
            "{name} locally: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let url = cluster.url();
        let mut on = extra.clone();
        on.extend(["--cluster", &url, "--cluster-partitions", "4"]);
        let o = run(&log, &on_cluster, &on, Duration::from_secs(300));
        assert!(
            o.status.success(),
            "{name} on the cluster: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let compared = assert_same_tables(&local, &on_cluster);
        eprintln!("{name}: {compared} Parquet files the same");
        assert_eq!(row_counts(&local), row_counts(&on_cluster), "{name}");
        // (the staging folder is gone)
        assert!(
            !walk(&on_cluster)
                .iter()
                .any(|p| p.to_string_lossy().contains("_cluster")),
            "{name}: staging left behind"
        );
    }
    // the contacts went through both executors
    for i in 0..2 {
        assert!(cluster.shuffle_files(i) > 0, "executor {i} did no work");
    }
}

#[test]
fn a_run_on_a_cluster_survives_or_names_a_killed_executor() {
    let mut cluster = Cluster::start(2);
    let dir = tempfile::tempdir().unwrap();
    let log = million(dir.path());
    let local = dir.path().join("local");
    let o = run(&log, &local, &[], Duration::from_secs(300));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let on_cluster = dir.path().join("cluster");
    let child = recur()
        .arg("run")
        .arg(&log)
        .arg("--out")
        .arg(&on_cluster)
        .args(["--no-report", "--cluster", &cluster.url()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    cluster.kill_once_it_shuffles(1);
    let o = bounded(child, Duration::from_secs(300));
    let err = String::from_utf8_lossy(&o.stderr);
    match o.status.code() {
        // Ballista ran the lost tasks again on the executor left
        Some(0) => {
            assert_same_tables(&local, &on_cluster);
            eprintln!("the run survived the kill: the lost tasks ran again");
        }
        // or the run failed, saying so, and published nothing
        Some(1) => {
            assert!(err.contains("recur: error: cluster:"), "{err}");
            assert!(
                !walk(&on_cluster)
                    .iter()
                    .any(|p| p.extension().is_some_and(|e| e == "parquet")),
                "a failed run published tables"
            );
        }
        other => panic!("exit {other:?}: {err}"),
    }
}

/// What a run on a cluster cannot take is exit 2 naming the option; a
/// scheduler nobody serves is exit 1 naming the cluster, with nothing
/// published.
#[test]
fn a_cluster_run_names_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let sample = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sample-data/contacts.parquet");
    let nobody = format!("df://localhost:{}", free_port());
    let out = dir.path().join("out");
    let limit = Duration::from_secs(60);
    for (extra, says) in [
        (vec!["--cluster", "localhost:50050"], "--cluster"),
        (
            vec!["--cluster", &nobody, "--null-check", "2"],
            "--null-check",
        ),
        (
            vec!["--cluster", &nobody, "--pseudonymize"],
            "--pseudonymize",
        ),
        (
            vec!["--cluster", &nobody, "--cluster-partitions", "0"],
            "--cluster-partitions",
        ),
    ] {
        let o = run(&sample, &out, &extra, limit);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(says), "{extra:?}: {err}");
    }
    let missing = dir.path().join("missing.parquet");
    let o = run(&missing, &out, &["--cluster", &nobody], limit);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = run(&sample, &out, &["--cluster", &nobody], limit);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("recur: error: cluster:") && err.contains(&nobody[5..]),
        "{err}"
    );
    assert!(
        !walk(&out)
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "parquet")),
        "a failed run published tables"
    );
}
