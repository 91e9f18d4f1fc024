//! `recur evaluate`: how well a run recovered what `recur generate` planted.
//!
//! Input: a truth file (`<log>.truth.json`) and a run's output folder (its
//! `clusters.parquet` and `manifest.json`). Output: an [`Evaluation`] —
//! precision and recall of the planted clusters among the top K ranked rows
//! (K = 5, 10, 20) and the rank of each planted item — written as
//! `evaluation.json` in the output folder.
//!
//! A planted cluster counts as findable when its median lag fits the run's
//! longest cluster window. Precision@K = planted pairs among the top K rows /
//! min(K, rows); recall@K = findable planted pairs in the top K / findable.
//! Precision = planted pairs among all reported rows / rows, and the rows
//! that are neither planted nor implied by the planted sequence are listed.
//!
//! Surges (`surges.parquet`): a planted surge is found when a reported
//! surge of its reason starts within [`SURGE_START_SLACK_DAYS`] of its
//! first day; the start error is that surge's start − the planted start.
//! A reported surge of a reason with no planted surge is a false surge.
//!
//! Trends (`cluster_trends.parquet`): a planted cluster that begins partway
//! through the log is right when its status is new or growing, one that
//! stops when it is fading or gone; any other pattern with a status other
//! than stable is an unplanted change.

use std::path::Path;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{Date32Type, Int64Type};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::generate::Truth;

/// Days a found surge's start may be off its planted start.
pub const SURGE_START_SLACK_DAYS: i64 = 1;

/// One planted surge, and the reported surge that found it.
#[derive(Debug, Clone, Serialize)]
pub struct PlantedSurgeFound {
    /// The planted reason.
    pub reason: String,
    /// Its planted first day.
    pub start_date: String,
    /// Whether a reported surge of the reason starts within the slack.
    pub found: bool,
    /// That surge's start − the planted start, days.
    pub start_error_days: Option<i64>,
}

/// The surges against the planted ones.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SurgeScore {
    /// Per planted surge (the policy-change one first).
    pub planted: Vec<PlantedSurgeFound>,
    /// Planted surges found.
    pub found: usize,
    /// Surges reported.
    pub reported: usize,
    /// The reported surges of reasons with no planted surge, `reason from
    /// date`.
    pub false_surges: Vec<String>,
    /// Reason-days the run tested (manifest).
    pub reason_days_tested: u64,
}

/// One planted changing cluster, and the status the run gave it.
#[derive(Debug, Clone, Serialize)]
pub struct PlantedChange {
    /// `A -> B`.
    pub item: String,
    /// `begins` or `stops`, as planted.
    pub change: String,
    /// Its status in cluster_trends (None: not listed).
    pub status: Option<String>,
    /// Whether that status is what the change should give: new or growing
    /// for one that begins, fading or gone for one that stops.
    pub right: bool,
}

/// The cluster trends against the planted changes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrendScore {
    /// Per planted changing cluster.
    pub planted: Vec<PlantedChange>,
    /// Planted changes given the right status.
    pub right: usize,
    /// The other patterns whose status is not stable, `status pattern`.
    pub unplanted_changes: Vec<String>,
}

/// The statuses that are right for a planted change.
fn right_statuses(change: &str) -> &'static [&'static str] {
    match change {
        "begins" => &["new", "growing"],
        _ => &["fading", "gone"],
    }
}

/// Scores the trends of `out_dir` against the planted changes.
fn score_trends(truth: &Truth, out_dir: &Path) -> Result<TrendScore> {
    let path = out_dir.join("cluster_trends.parquet");
    let mut rows: Vec<(String, String)> = Vec::new();
    if path.exists() {
        for b in crate::report::open_parquet(&path)?.build()? {
            let b = b?;
            let (Some(id), Some(status)) =
                (b.column_by_name("pattern_id"), b.column_by_name("status"))
            else {
                return Err(Error::MissingColumn {
                    path: path.clone(),
                    column: "pattern_id, status".into(),
                    role: "cluster_trends",
                    available: String::new(),
                });
            };
            let (id, status) = (crate::report::utf8(id), crate::report::utf8(status));
            for i in 0..b.num_rows() {
                rows.push((id.value(i).to_string(), status.value(i).to_string()));
            }
        }
    }
    let planted: Vec<PlantedChange> = truth
        .changing
        .iter()
        .map(|c| {
            let item = format!("{} -> {}", c.antecedent, c.consequent);
            let status = rows.iter().find(|r| r.0 == item).map(|r| r.1.clone());
            PlantedChange {
                right: status
                    .as_deref()
                    .is_some_and(|s| right_statuses(&c.change).contains(&s)),
                item,
                change: c.change.clone(),
                status,
            }
        })
        .collect();
    Ok(TrendScore {
        right: planted.iter().filter(|p| p.right).count(),
        unplanted_changes: rows
            .iter()
            .filter(|r| r.1 != "stable" && !planted.iter().any(|p| p.item == r.0))
            .map(|r| format!("{} {}", r.1, r.0))
            .collect(),
        planted,
    })
}

/// The K values evaluated.
pub const TOP_K: [usize; 3] = [5, 10, 20];

/// Precision and recall at one K.
#[derive(Debug, Clone, Serialize)]
pub struct AtK {
    /// K.
    pub k: usize,
    /// Planted pairs among the top K / min(K, rows).
    pub precision: f64,
    /// Findable planted pairs in the top K / findable planted pairs.
    pub recall: f64,
}

/// One planted item and where the run ranked it.
#[derive(Debug, Clone, Serialize)]
pub struct PlantedRank {
    /// `A -> B`.
    pub item: String,
    /// Median lag planted, seconds.
    pub lag_median_s: f64,
    /// Whether the lag fits the run's longest window.
    pub findable: bool,
    /// Rank in the run's clusters (None: not reported).
    pub rank: Option<u64>,
    /// Window at which it was reported, seconds.
    pub window_s: Option<i64>,
}

/// The evaluation of one run against its truth.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// Planted (or sequence-implied) pairs among all reported clusters /
    /// reported clusters (1 when none is reported).
    pub precision: f64,
    /// The reported clusters that were not planted, `A -> B`.
    pub not_planted: Vec<String>,
    /// Rows in clusters.parquet.
    pub reported: usize,
    /// Per K.
    pub clusters: Vec<AtK>,
    /// Per planted cluster.
    pub planted: Vec<PlantedRank>,
    /// The surges (none when the run wrote no surges table).
    pub surges: SurgeScore,
    /// The cluster trends (none when the run wrote no cluster_trends table).
    pub trends: TrendScore,
}

/// The reported surges: (reason, start date), largest first.
fn read_surges(path: &Path) -> Result<Vec<(String, chrono::NaiveDate)>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let reader = crate::report::open_parquet(path)?.build()?;
    let mut rows = Vec::new();
    for b in reader {
        let b = b?;
        let (Some(reason), Some(start)) =
            (b.column_by_name("reason"), b.column_by_name("start_date"))
        else {
            return Err(Error::MissingColumn {
                path: path.to_path_buf(),
                column: "reason, start_date".into(),
                role: "surges",
                available: String::new(),
            });
        };
        let reason = crate::report::utf8(reason);
        let start = start.as_primitive::<Date32Type>();
        for i in 0..b.num_rows() {
            rows.push((
                reason.value(i).to_string(),
                crate::time::from_epoch_day(start.value(i)),
            ));
        }
    }
    Ok(rows)
}

/// Scores the surges of `out_dir` against the planted ones.
fn score_surges(truth: &Truth, out_dir: &Path, manifest: &serde_json::Value) -> Result<SurgeScore> {
    let reported = read_surges(&out_dir.join("surges.parquet"))?;
    let policy_start = chrono::DateTime::parse_from_rfc3339(&truth.surge.starts_at)
        .map(|d| d.date_naive())
        .ok();
    let planted: Vec<(String, Option<chrono::NaiveDate>)> = policy_start
        .map(|d| (truth.surge.reason.clone(), Some(d)))
        .into_iter()
        .chain(truth.surges.iter().map(|s| {
            (
                s.reason.clone(),
                chrono::NaiveDate::parse_from_str(&s.start_date, "%Y-%m-%d").ok(),
            )
        }))
        .collect();
    let planted_found: Vec<PlantedSurgeFound> = planted
        .iter()
        .map(|(reason, start)| {
            let error = start.and_then(|start| {
                reported
                    .iter()
                    .filter(|(r, _)| r == reason)
                    .map(|(_, d)| (*d - start).num_days())
                    .filter(|e| e.abs() <= SURGE_START_SLACK_DAYS)
                    .min_by_key(|e| e.abs())
            });
            PlantedSurgeFound {
                reason: reason.clone(),
                start_date: start.map(|d| d.to_string()).unwrap_or_default(),
                found: error.is_some(),
                start_error_days: error,
            }
        })
        .collect();
    Ok(SurgeScore {
        found: planted_found.iter().filter(|p| p.found).count(),
        reported: reported.len(),
        false_surges: reported
            .iter()
            .filter(|(r, _)| !planted.iter().any(|(p, _)| p == r))
            .map(|(r, d)| format!("{r} from {d}"))
            .collect(),
        planted: planted_found,
        reason_days_tested: manifest["surges"]["reason_days_tested"]
            .as_u64()
            .unwrap_or(0),
    })
}

fn read_clusters(path: &Path) -> Result<Vec<(u64, String, String, i64)>> {
    let reader = crate::report::open_parquet(path)?.build()?;
    let mut rows = Vec::new();
    for b in reader {
        let b = b?;
        let get = |n: &str| {
            b.column_by_name(n)
                .cloned()
                .ok_or_else(|| Error::MissingColumn {
                    path: path.to_path_buf(),
                    column: n.into(),
                    role: "clusters",
                    available: String::new(),
                })
        };
        let (rank, a, c, w) = (
            get("rank")?,
            get("antecedent")?,
            get("consequent")?,
            get("window_s")?,
        );
        let (rank, a, c, w) = (
            rank.as_primitive::<Int64Type>(),
            crate::report::utf8(&a),
            crate::report::utf8(&c),
            w.as_primitive::<Int64Type>(),
        );
        for i in 0..b.num_rows() {
            rows.push((
                rank.value(i) as u64,
                a.value(i).into(),
                c.value(i).into(),
                w.value(i),
            ));
        }
    }
    rows.sort();
    Ok(rows)
}

/// Evaluates the run in `out_dir` against `truth_path` and writes
/// `evaluation.json` there.
pub fn evaluate(truth_path: &Path, out_dir: &Path) -> Result<Evaluation> {
    let truth = Truth::load(truth_path)?;
    let manifest_path = out_dir.join("manifest.json");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&manifest_path)
            .map_err(|e| Error::read_input(&manifest_path, e))?,
    )
    .map_err(|e| Error::Json {
        path: manifest_path.clone(),
        source: e,
    })?;
    let max_window_s = manifest["parameters"]["cluster_windows_us"]
        .as_array()
        .and_then(|w| w.iter().filter_map(|v| v.as_i64()).max())
        .ok_or_else(|| Error::param("manifest", "no cluster_windows_us in manifest.json"))?
        as f64
        / 1e6;
    let rows = read_clusters(&out_dir.join("clusters.parquet"))?;
    let planted: Vec<PlantedRank> = truth
        .clusters
        .iter()
        .map(|p| {
            let hit = rows
                .iter()
                .find(|r| r.1 == p.antecedent && r.2 == p.consequent);
            PlantedRank {
                item: format!("{} -> {}", p.antecedent, p.consequent),
                lag_median_s: p.lag_median_s,
                findable: p.lag_median_s <= max_window_s,
                rank: hit.map(|r| r.0),
                window_s: hit.map(|r| r.3),
            }
        })
        .collect();
    // (a changing cluster is planted too, over the part of the log it holds)
    let is_planted = |a: &str, c: &str| {
        truth
            .clusters
            .iter()
            .any(|p| p.antecedent == a && p.consequent == c)
            || truth
                .changing
                .iter()
                .any(|p| p.antecedent == a && p.consequent == c)
    };
    let findable = planted.iter().filter(|p| p.findable).count().max(1);
    let clusters = TOP_K
        .iter()
        .map(|&k| {
            let top = &rows[..k.min(rows.len())];
            let hits = top.iter().filter(|r| is_planted(&r.1, &r.2)).count();
            let found = planted
                .iter()
                .filter(|p| p.findable && p.rank.is_some_and(|r| r as usize <= k))
                .count();
            AtK {
                k,
                precision: if top.is_empty() {
                    0.0
                } else {
                    hits as f64 / top.len() as f64
                },
                recall: found as f64 / findable as f64,
            }
        })
        .collect();
    let not_planted: Vec<String> = rows
        .iter()
        .filter(|r| !is_planted(&r.1, &r.2))
        .map(|r| format!("{} -> {}", r.1, r.2))
        .collect();
    let eval = Evaluation {
        precision: if rows.is_empty() {
            1.0
        } else {
            1.0 - not_planted.len() as f64 / rows.len() as f64
        },
        not_planted,
        reported: rows.len(),
        clusters,
        planted,
        surges: score_surges(&truth, out_dir, &manifest)?,
        trends: score_trends(&truth, out_dir)?,
    };
    crate::report::write_json(&out_dir.join("evaluation.json"), &eval)?;
    Ok(eval)
}
