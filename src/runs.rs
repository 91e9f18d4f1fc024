//! The output folder of many runs: each run one folder, named by its as-of
//! and made visible whole.
//!
//! Input: a validated [`PipelineConfig`] whose `out` is the output folder
//! (ROOT). Output: the run's tables under `ROOT/as_of=YYYY-MM-DD/`, and a
//! [`RunSummary`] naming that folder.
//!
//! | path under ROOT        | what it is                                             |
//! |------------------------|--------------------------------------------------------|
//! | `as_of=2026-11-30/`    | one run's tables and `manifest.json`                   |
//! | `contacts/date=…/`     | the contacts table, one file per contact day, shared by the runs ([`crate::report::contact_days`]) |
//! | `latest`               | text: the folder name of the run with the latest as-of |
//! | `.lock`                | locked (`flock`) by the run writing into ROOT          |
//! | `.staging/`            | runs being written; a dead run's leftovers, removed at the next start |
//!
//! Guarantees:
//! - A run writes into `.staging/` and renames its folder into place when
//!   every table is written: a reader sees a whole run or none. A rerun for
//!   the same as-of swaps the folders in one step (`renameat2` with
//!   `RENAME_EXCHANGE` on Linux; elsewhere, or where the file system cannot,
//!   two renames with the old run set aside between them).
//! - One run at a time per ROOT: a second exits at once with
//!   [`Error::OutputLocked`] (exit code 3). The lock is the kernel's and
//!   goes with the process, however it ends.
//! - A run that dies (kill -9, full disk) leaves the earlier runs and
//!   `latest` as they were; its staging folder goes at the next start.
//! - `--keep N` removes the runs beyond the N latest as-ofs once the new
//!   run is in place (set aside first, so that none is seen half deleted).
//! - The contacts table is stored once per contact day: a run rewrites only
//!   the days whose rows can still change, each day's file replaced in one
//!   rename, before its run folder is published.
//! - The folder name is the as-of's date in `--timezone`: one run per day;
//!   `latest` moves only forward (a backfill of a past date leaves it).

use std::fs::File;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use crate::config::PipelineConfig;
use crate::error::{Error, Result};
use crate::pipeline::{Progress, RunSummary};

/// Prefix of a run's folder name; the rest is its as-of date.
pub const RUN_PREFIX: &str = "as_of=";
/// The file naming the latest run.
pub const LATEST: &str = "latest";
const LOCK: &str = ".lock";
const STAGING: &str = ".staging";

/// The output folder, locked for one run.
pub struct Outputs {
    root: PathBuf,
    _lock: File,
}

impl Outputs {
    /// Creates `root` if need be, takes its lock (or fails at once with
    /// [`Error::OutputLocked`]) and removes a dead run's leftovers.
    pub fn open(root: &Path) -> Result<Outputs> {
        // (the user's input: a file where a folder is wanted)
        if root.exists() && !root.is_dir() {
            return Err(Error::param(
                "--out",
                format!(
                    "{} is a file, not a folder: give a folder (it is made if missing)",
                    root.display()
                ),
            ));
        }
        // A folder that cannot be made or written to is the user's choice of
        // place (exit 2); a failure once writing has begun is the machine's.
        let not_writable = |e: std::io::Error| {
            Error::param(
                "--out",
                format!(
                    "cannot write in {}: {e}; give a folder recur may create and write to",
                    root.display()
                ),
            )
        };
        std::fs::create_dir_all(root).map_err(not_writable)?;
        let lock_path = root.join(LOCK);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(not_writable)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::OutputLocked {
                    path: root.to_path_buf(),
                    lock: lock_path,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
        }
        let staging = root.join(STAGING);
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
        }
        Ok(Outputs {
            root: root.to_path_buf(),
            _lock: lock,
        })
    }

    /// A fresh, empty staging folder for a run.
    fn staging(&self, name: &str) -> Result<PathBuf> {
        let dir = self.root.join(STAGING).join(name);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(dir)
    }

    /// Moves the run written in `staging` to `as_of=DATE`, replacing an
    /// earlier run of that date in one step; then `latest`.
    fn publish(&self, staging: &Path, date: NaiveDate) -> Result<PathBuf> {
        let name = run_name(date);
        let target = self.root.join(&name);
        if !target.exists() {
            std::fs::rename(staging, &target).map_err(|e| Error::io(&target, e))?;
        } else if exchange(staging, &target).is_ok() {
            std::fs::remove_dir_all(staging).map_err(|e| Error::io(staging, e))?;
        } else {
            let aside = self.root.join(STAGING).join(format!("replaced-{name}"));
            std::fs::rename(&target, &aside).map_err(|e| Error::io(&target, e))?;
            std::fs::rename(staging, &target).map_err(|e| Error::io(&target, e))?;
            std::fs::remove_dir_all(&aside).map_err(|e| Error::io(&aside, e))?;
        }
        if latest_run(&self.root).is_none_or(|(d, _)| d <= date) {
            write_atomic(&self.root.join(LATEST), format!("{name}\n").as_bytes())?;
        }
        Ok(target)
    }

    /// Removes the runs beyond the `keep` latest as-ofs; returns them.
    fn retain(&self, keep: usize) -> Result<Vec<PathBuf>> {
        let runs = list_runs(&self.root)?;
        let cut = runs.len().saturating_sub(keep);
        let mut removed = Vec::new();
        for (_, path) in runs.into_iter().take(cut) {
            let name = path.file_name().expect("a run folder").to_owned();
            let aside = self.root.join(STAGING).join(name);
            std::fs::create_dir_all(self.root.join(STAGING))
                .map_err(|e| Error::io(&self.root, e))?;
            std::fs::rename(&path, &aside).map_err(|e| Error::io(&path, e))?;
            std::fs::remove_dir_all(&aside).map_err(|e| Error::io(&aside, e))?;
            removed.push(path);
        }
        Ok(removed)
    }
}

/// A run's folder name.
pub fn run_name(date: NaiveDate) -> String {
    format!("{RUN_PREFIX}{date}")
}

/// The runs under `root`, oldest as-of first.
pub fn list_runs(root: &Path) -> Result<Vec<(NaiveDate, PathBuf)>> {
    let mut runs = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(runs),
        Err(e) => return Err(Error::io(root, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let name = entry.file_name();
        let Some(date) = name
            .to_str()
            .and_then(|n| n.strip_prefix(RUN_PREFIX))
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        else {
            continue;
        };
        if entry.path().is_dir() {
            runs.push((date, entry.path()));
        }
    }
    runs.sort();
    Ok(runs)
}

/// The run `latest` names, if it is there.
pub fn latest_run(root: &Path) -> Option<(NaiveDate, PathBuf)> {
    let name = std::fs::read_to_string(root.join(LATEST)).ok()?;
    let name = name.trim();
    let date = NaiveDate::parse_from_str(name.strip_prefix(RUN_PREFIX)?, "%Y-%m-%d").ok()?;
    let path = root.join(name);
    path.is_dir().then_some((date, path))
}

/// The run before as-of date `date`: the one with the latest earlier as-of.
pub fn previous_run(root: &Path, date: NaiveDate) -> Result<Option<(NaiveDate, PathBuf)>> {
    Ok(list_runs(root)?.into_iter().rfind(|(d, _)| *d < date))
}

/// A run's folder from what a user names: a run folder itself, or an
/// output folder (its `latest` run).
pub fn resolve_run_dir(path: &Path) -> PathBuf {
    match latest_run(path) {
        Some((_, run)) => run,
        None => path.to_path_buf(),
    }
}

/// Writes `bytes` to `path` whole or not at all (beside it, then renamed).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    std::fs::write(&partial, bytes).map_err(|e| Error::io(&partial, e))?;
    std::fs::rename(&partial, path).map_err(|e| Error::io(path, e))
}

/// Swaps two folders in one step.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).map_err(std::io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Runs recur into the output folder `cfg.out`: locks it, writes the run
/// in staging, and publishes it as `as_of=DATE` (see the module's
/// guarantees). The summary names the run's folder.
pub async fn run(cfg: &PipelineConfig, progress: &dyn Progress) -> Result<RunSummary> {
    let outputs = Outputs::open(&cfg.out)?;
    let staging = outputs.staging(&format!(
        "run-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    ))?;
    let staged = PipelineConfig {
        out: staging.clone(),
        history: Some(cfg.out.clone()),
        ..cfg.clone()
    };
    let result = crate::pipeline::run(&staged, progress).await;
    let mut summary = match result {
        Ok(s) => s,
        Err(e) => {
            // best effort: the next start removes what is left
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let as_of = summary
        .manifest
        .parameters
        .as_of_us
        .expect("a run that wrote its reports has an as-of");
    let date = crate::time::local_date(cfg.tz(), as_of);
    progress.stage("publishing the run");
    let days = summary
        .manifest
        .contact_days_written
        .iter()
        .map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").expect("written as a date"))
        .collect::<Vec<_>>();
    let fingerprint = crate::report::contact_days::fingerprint(cfg);
    crate::report::contact_days::publish(&cfg.out, &staging, &days, as_of, fingerprint)?;
    summary.run_dir = outputs.publish(&staging, date)?;
    tracing::info!(
        run = %summary.run_dir.display(),
        contact_days = days.len(),
        "run published"
    );
    if let Some(keep) = cfg.keep {
        summary.removed_runs = outputs.retain(keep)?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_replaces_in_place_and_latest_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let outputs = Outputs::open(root).unwrap();
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        for (d, text) in [(2, "a"), (1, "b"), (2, "c")] {
            let s = outputs.staging(&format!("s{d}{text}")).unwrap();
            std::fs::write(s.join("t"), text).unwrap();
            outputs.publish(&s, day(d)).unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(root.join("as_of=2026-11-02/t")).unwrap(),
            "c"
        );
        assert_eq!(latest_run(root).unwrap().0, day(2));
        assert_eq!(previous_run(root, day(2)).unwrap().unwrap().0, day(1));
        // a second holder of the lock is refused, and the first one's
        // staging is left alone meanwhile
        let s = outputs.staging("busy").unwrap();
        assert!(matches!(
            Outputs::open(root),
            Err(Error::OutputLocked { .. })
        ));
        assert!(s.is_dir());
        drop(outputs);
        let outputs = Outputs::open(root).unwrap();
        assert!(
            !s.exists(),
            "a dead run's staging is removed at the next start"
        );
        assert_eq!(outputs.retain(1).unwrap().len(), 1);
        assert_eq!(list_runs(root).unwrap().len(), 1);
    }
}
