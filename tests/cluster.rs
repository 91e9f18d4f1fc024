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
//!   a message; the cluster serves the next run either way.

#![cfg(feature = "ballista")]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
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
    // once the second executor has written shuffle output, it dies
    let started = Instant::now();
    while cluster.shuffle_files(1) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "executor 1 never started work"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.executors[1].kill().unwrap();
    cluster.executors[1].wait().unwrap();
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

    let batch = datafusion::arrow::record_batch::RecordBatch::try_from_iter([(
        "customer_id",
        std::sync::Arc::new(datafusion::arrow::array::StringArray::from(vec!["a"])) as _,
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
