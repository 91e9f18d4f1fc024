//! `recur run --cluster URL`: a run whose contact-handling stages run on a
//! Ballista cluster's executors. This module is the client's side;
//! [`task`] the plan nodes and operators that carry the work to the
//! executors, [`work`] what the executors do.
//!
//! A run on one machine cuts the log into buckets of whole customers and
//! runs every stage a bucket at a time ([`crate::pipeline`]). On a cluster
//! the buckets are the executors' tasks, and the client keeps only what
//! the ranking and the reports read. Four jobs, each a plan of
//! [`TaskNode`]s that the scheduler plans with [`TaskPlanner`] and ships to
//! the executors as [`TaskExec`]s (encoded by [`TaskCodec`]); a job's items
//! (files, buckets) are partitions the scheduler gives each task its own of:
//!
//! 1. **Read** ([`Task::ReadStats`], a task per input file): each file
//!    scanned and normalised as ingest does ([`crate::ingest::read_file`]);
//!    back come its counts (rows read, used, excluded by reason, first and
//!    last time), which give the run its window and as-of.
//! 2. **First passes** ([`Task::ReadContacts`] → Ballista's shuffle by
//!    bucket → [`Task::FirstPass`]): each file read again, every contact
//!    given its bucket (ranges of customer ids cut at quantiles of a sample
//!    of the ids, as on one machine) and its row number (file, then row in
//!    file: the order ties are broken in); the shuffle brings each bucket's
//!    contacts to one task, which runs [`crate::stages::first_pass`] over
//!    it: the sort, the contacts pass, the per-customer SQL, the pair-count
//!    and exposure passes, the trends' passes. The annotated contacts go to
//!    the bucket's staging folder; so do the counts, which the client sums
//!    bucket by bucket in bucket order, as one machine sums its buckets.
//! 3. **The contacts table** ([`Task::WriteContacts`], one task), sent as
//!    soon as the first passes end, so that it runs while the client ranks:
//!    the contacts table (and the contact days) from every bucket's
//!    annotated contacts in bucket order, as one machine writes them.
//! 4. **Second passes** ([`Task::SecondPass`], a task per bucket): after
//!    the client has ranked the clusters, each bucket's annotated contacts
//!    are read back and passed over for sequences, follow-ups, outreach
//!    triggers, the frequent contacters and the trends' sequences
//!    ([`crate::stages::second_pass::bucket`]).
//!
//! The client then ranks the sequences and writes the reports and the
//! manifest, as one machine does ([`crate::pipeline::after_first`]).
//!
//! Input: a validated [`PipelineConfig`] with `cluster` set, whose inputs
//! and output folder every node reads and writes at the same path.
//! Output: the run's tables under `cfg.out`, equal to one machine's run;
//! the staging folder `cfg.out/_cluster` is removed at the end (on a
//! failure, with the run's own staging folder, by [`crate::runs`]).

mod task;
mod work;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Int64Type, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};

use crate::config::PipelineConfig;
use crate::contacters::Contacters;
use crate::error::{Error, Result};
use crate::ingest::{self, FileRead};
use crate::pipeline::{AfterFirst, Progress, Rest, RunSummary};
use crate::report::TableInfo;
use crate::session::RunSession;
use crate::stages::Beside;
use crate::stages::first_pass::Counted;
use crate::stages::rank::Ranked;
use crate::stages::second_pass::{self, Found, SecondPass, Triggers};
use crate::stages::trends::{PeriodRows, Trends};
use crate::timeline::PatternSums;

pub use task::{Task, TaskCodec, TaskExec, TaskNode, TaskPlanner};
use work::{
    ContactsWritten, FirstStaged, counted_tables, first_bucket, from_json, read_ipc, read_json,
    to_json, write_atomic, write_ipc,
};

/// What every task of a job reads: the run's configuration and what the
/// client has learnt so far. Carried in the plan, as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Spec {
    cfg: PipelineConfig,
    /// The staging folder, under the run's folder.
    staging: PathBuf,
    /// Whether the log's contact ids are texts (else integers).
    text_ids: bool,
    /// The files to read, in order (the log's checks made by the client).
    files: Vec<PathBuf>,
    /// Whether the contact ids are read from the log (else assigned).
    reads_ids: bool,
    /// The earliest and latest contact of the window (after job 1).
    min_ts_us: Option<i64>,
    max_ts_us: Option<i64>,
    /// The buckets' upper bounds of customer ids (after job 1).
    bounds: Vec<String>,
    /// Each bucket's value of `_bucket`, which the shuffle hashes.
    keys: Vec<i64>,
    /// After the ranking: what the second passes need of it.
    second: Option<SecondSpec>,
}

/// What the second passes need of the ranking.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SecondSpec {
    steps: Vec<(String, String)>,
    pairs: Vec<(String, String)>,
    horizon_s: f64,
    /// The steps the trends' periods mine sequences along.
    trend_steps: Option<Vec<(String, String)>>,
}

impl Spec {
    /// A spec of `cfg` with `buckets` buckets, for tests of plans.
    #[cfg(test)]
    pub(crate) fn for_test(cfg: PipelineConfig, buckets: usize) -> Spec {
        Spec {
            cfg,
            staging: PathBuf::from("staging"),
            text_ids: false,
            files: Vec::new(),
            reads_ids: true,
            min_ts_us: None,
            max_ts_us: None,
            bounds: Vec::new(),
            keys: (0..buckets as i64).collect(),
            second: None,
        }
    }

    fn bucket_dir(&self, b: usize) -> PathBuf {
        self.staging.join(format!("b{b}"))
    }

    fn contacts_in(&self) -> SchemaRef {
        ingest::contacts_in_schema(if self.text_ids {
            &DataType::Utf8
        } else {
            &DataType::Int64
        })
    }

    fn params(&self) -> crate::timeline::TimelineParams {
        crate::pipeline::timeline_params(&self.cfg, self.max_ts_us)
    }

    /// The trends of the run, their rows recorded (None: the run has none).
    fn trends(&self) -> Option<Trends> {
        let mut trends = Trends::new(&self.cfg, self.min_ts_us).ok()?;
        trends.record();
        if let Some(steps) = self.second.as_ref().and_then(|s| s.trend_steps.clone()) {
            trends.set_steps(steps);
        }
        Some(trends)
    }
}

/// A run on a cluster after its first passes: the session on the cluster
/// and what its jobs read.
pub(crate) struct Cluster {
    ctx: SessionContext,
    url: String,
    spec: Spec,
    /// The job writing the contacts table, which runs while the client
    /// ranks and the second passes run.
    contacts: tokio::task::JoinHandle<Result<Vec<RecordBatch>>>,
}

/// Runs `plan` on the cluster; a failure names `what`.
async fn run_job(
    ctx: &SessionContext,
    url: &str,
    plan: LogicalPlan,
    what: &str,
) -> Result<Vec<RecordBatch>> {
    let failed = |e: DataFusionError| Error::Cluster {
        reason: format!("{what} failed on the cluster at {url}: {e}"),
    };
    ctx.execute_logical_plan(plan)
        .await
        .map_err(failed)?
        .collect()
        .await
        .map_err(failed)
}

/// The `result` column of a job's rows, by their first column.
fn results(batches: &[RecordBatch]) -> BTreeMap<i64, String> {
    let mut out = BTreeMap::new();
    for b in batches {
        let n = b.column(0).as_primitive::<Int64Type>();
        let r = b.column(1).as_string::<i32>();
        for i in 0..b.num_rows() {
            out.insert(n.value(i), r.value(i).to_string());
        }
    }
    out
}

/// `cfg`'s inputs as absolute paths (an executor's working folder is not
/// the client's).
fn absolute_inputs(cfg: &PipelineConfig) -> Result<Vec<String>> {
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    Ok(cfg
        .inputs
        .iter()
        .map(|i| {
            let p = Path::new(i);
            if p.is_absolute() {
                i.clone()
            } else {
                cwd.join(p).to_string_lossy().into_owned()
            }
        })
        .collect())
}

/// Each bucket's value of the bucket column: values that DataFusion's hash
/// repartition sends to partitions `0..buckets` in turn (when the shuffle
/// hashes otherwise, a task takes more than one bucket, each in turn).
fn bucket_keys(buckets: usize, partitions: usize) -> Result<Vec<i64>> {
    use datafusion::common::hash_utils::create_hashes;
    use datafusion::physical_plan::repartition::REPARTITION_RANDOM_STATE;
    let candidates = Int64Array::from_iter_values(0..(64 * partitions as i64 + 64));
    let mut hashes = vec![0u64; candidates.len()];
    let arrays: [&dyn Array; 1] = [&candidates];
    create_hashes(arrays, REPARTITION_RANDOM_STATE.random_state(), &mut hashes)?;
    (0..buckets)
        .map(|b| {
            let want = (b % partitions) as u64;
            hashes
                .iter()
                .position(|h| h % partitions as u64 == want)
                .map(|i| candidates.value(i) + if b >= partitions { 1 << 32 } else { 0 })
                .ok_or_else(|| Error::Cluster {
                    reason: format!("no bucket key hashes to partition {want}"),
                })
        })
        .collect()
}

/// Runs recur on the cluster `cfg.cluster` names (see the module docs).
pub async fn run(cfg: &PipelineConfig, progress: &dyn Progress) -> Result<RunSummary> {
    let started = chrono::Utc::now();
    let (url, partitions) = cfg.cluster.clone().expect("a cluster run");
    let mut s = RunSession::new(cfg)?;
    let cfg = &PipelineConfig {
        inputs: absolute_inputs(cfg)?,
        out: std::path::absolute(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?,
        target_partitions: 0,
        ..cfg.clone()
    };
    progress.stage("reading input");
    let t = Instant::now();
    // (the log's files and columns checked here, before any cluster is
    // reached: bad input is exit 2 whether a cluster is up or not)
    let prep = ingest::prepare(cfg)?;
    let ctx = super::connect(&url, partitions)
        .await
        .map_err(|e| Error::Cluster {
            reason: format!("cannot reach the scheduler at {url}: {e}"),
        })?;
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    let staging = cfg.out.join("_cluster");
    let mut spec = Spec {
        cfg: cfg.clone(),
        staging: staging.clone(),
        text_ids: prep.schema.field_with_name("contact_id")?.data_type() == &DataType::Utf8,
        files: prep.paths(),
        reads_ids: prep.reads_contact_ids(),
        min_ts_us: None,
        max_ts_us: None,
        bounds: Vec::new(),
        keys: Vec::new(),
        second: None,
    };
    let json = |spec: &Spec| to_json(&staging, spec);
    let stats = read_log(&ctx, &url, &prep, &spec).await?;
    s.add_seconds("ingest", t);
    let cfg = &crate::pipeline::with_as_of(cfg, &stats, started);
    let bounds = ingest::bucket_bounds(cfg, &prep, partitions)?;
    let n_buckets = bounds.len() + 1;
    spec.cfg = cfg.clone();
    spec.min_ts_us = stats.min_ts_us;
    spec.max_ts_us = stats.max_ts_us;
    spec.keys = bucket_keys(n_buckets, partitions)?;
    spec.bounds = bounds;
    std::fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;

    progress.stage("finding repeats and events (on the cluster)");
    let t = Instant::now();
    let read = TaskNode::try_new(Task::ReadContacts, json(&spec)?, prep.files(), None)?;
    let first = TaskNode::try_new(Task::FirstPass, json(&spec)?, 0, Some(read.into_plan()))?;
    run_job(&ctx, &url, first.into_plan(), "the first passes").await?;
    s.add_seconds("first_passes", t);

    let t = Instant::now();
    let (counted, beside, no_trends) = gather_first(&spec, n_buckets).await?;
    s.add_seconds("first_passes.gather", t);
    // the contacts table is written while the client ranks
    let contacts = {
        let (ctx, url) = (ctx.clone(), url.clone());
        let node = TaskNode::try_new(Task::WriteContacts, json(&spec)?, 1, None)?;
        tokio::spawn(async move {
            run_job(&ctx, &url, node.into_plan(), "writing the contacts table").await
        })
    };
    let contact_id = spec.contacts_in().field_with_name("contact_id")?.clone();
    let after = AfterFirst {
        started,
        stats,
        contact_id,
        n_buckets,
        params: spec.params(),
        beside,
        no_trends,
        counted,
        rest: Rest::Cluster(Box::new(Cluster {
            contacts,
            ctx,
            url,
            spec,
        })),
    };
    let summary = crate::pipeline::after_first(&mut s, cfg, after, progress).await;
    // (the staging folder goes whether the run succeeded or not)
    let _ = std::fs::remove_dir_all(&staging);
    summary
}

/// The read job: each file read for its counts, which make the log's
/// statistics (and its errors: nothing to analyse, a time column with no
/// time in it).
async fn read_log(
    ctx: &SessionContext,
    url: &str,
    prep: &ingest::Prepared,
    spec: &Spec,
) -> Result<ingest::IngestStats> {
    let node = TaskNode::try_new(
        Task::ReadStats,
        to_json(&spec.staging, spec)?,
        prep.files(),
        None,
    )?;
    let rows = run_job(ctx, url, node.into_plan(), "reading the log").await?;
    let mut reads = Vec::new();
    for (j, text) in results(&rows) {
        reads.push(
            from_json::<FileRead>(&spec.staging, &text).map_err(|e| Error::Cluster {
                reason: format!("file {j}'s counts: {e}"),
            })?,
        );
    }
    ingest::finish_stats(&spec.cfg, prep, reads)
}

/// Every bucket's first passes summed in bucket order, as one machine sums
/// its buckets' (a bucket no contact fell in is passed over here); the
/// trends (and why there are none, when there are none).
async fn gather_first(spec: &Spec, n_buckets: usize) -> Result<(Counted, Beside, Option<String>)> {
    let (trends, no_trends) = match Trends::new(&spec.cfg, spec.min_ts_us) {
        Ok(t) => (Some(t), None),
        Err(why) => (None, Some(why)),
    };
    let mut beside = Beside {
        null_check: None,
        trends,
    };
    let mut counted = Counted::default();
    for b in 0..n_buckets {
        let dir = spec.bucket_dir(b);
        if !dir.join("first.json").is_file() {
            first_bucket(spec, b, Vec::new()).await?;
        }
        absorb_first(&dir, &mut counted, beside.trends.as_mut())?;
    }
    Ok((counted, beside, no_trends))
}

/// Sums bucket `dir`'s first passes into `counted` (and the trends').
fn absorb_first(dir: &Path, counted: &mut Counted, trends: Option<&mut Trends>) -> Result<()> {
    let path = dir.join("first.json");
    let staged: FirstStaged = read_json(&path)?;
    for (name, table) in counted_tables(counted) {
        let (schema, batches) = read_ipc(&dir.join(format!("{name}.arrow")))?;
        let mut batches = batches.into_iter();
        let parts = staged.parts[name]
            .iter()
            .map(|n| batches.by_ref().take(*n).collect())
            .collect();
        table.add((schema, parts));
    }
    for b in read_ipc(&dir.join("exposure.arrow"))?.1 {
        counted.exposures.add(&b)?;
    }
    for (name, n) in staged.caps {
        *counted.caps.entry(name).or_default() += n;
    }
    counted.contacters.merge_bucket(staged.contacters);
    counted.sort_spills.0 += staged.sort_spills.0;
    counted.sort_spills.1 += staged.sort_spills.1;
    if let Some(trends) = trends {
        let period = |i: usize| -> Result<PeriodRows> {
            Ok(PeriodRows {
                pair_counts: read_ipc(&dir.join(format!("trends-{i}-pair_counts.arrow")))?.1,
                exposure: read_ipc(&dir.join(format!("trends-{i}-exposure.arrow")))?.1,
                patterns: Vec::new(),
            })
        };
        trends.add_rows([period(0)?, period(1)?])?;
    }
    Ok(())
}

impl Cluster {
    /// The second passes on the cluster, after the ranking `ranked`;
    /// gathered as [`second_pass::run`] gathers one machine's.
    pub(crate) async fn second_passes(
        &self,
        s: &mut RunSession,
        cfg: &PipelineConfig,
        ranked: &Ranked,
        beside: &mut Beside,
        contacters: &mut Contacters,
        progress: &dyn Progress,
    ) -> Result<SecondPass> {
        progress.stage("mining sequences (on the cluster)");
        let started = Instant::now();
        let path = self.spec.staging.join("contacters.json");
        write_atomic(&path, to_json(&path, contacters)?.as_bytes())?;
        let clusters = match ranked.batches.first() {
            Some(b) => b.schema(),
            None => crate::session::table_schema(&s.ctx, "clusters").await?,
        };
        write_ipc(
            &self.spec.staging.join("clusters.arrow"),
            &clusters,
            &ranked.batches,
        )?;
        let spec = Spec {
            second: Some(SecondSpec {
                steps: ranked.steps.clone(),
                pairs: ranked.pairs(),
                horizon_s: ranked.horizon_s(),
                trend_steps: beside.trends.as_ref().map(|t| t.steps().to_vec()),
            }),
            ..self.spec.clone()
        };
        let buckets = spec.keys.len();
        let node = TaskNode::try_new(
            Task::SecondPass,
            to_json(&spec.staging, &spec)?,
            buckets,
            None,
        )?;
        run_job(&self.ctx, &self.url, node.into_plan(), "the second passes").await?;
        s.add_seconds("second_passes", started);
        let mut found = Vec::with_capacity(buckets);
        let mut pattern_sums = PatternSums::new();
        let mut schema = None;
        for b in 0..buckets {
            let dir = spec.bucket_dir(b).join("second");
            let (occ_schema, occ) = read_ipc(&dir.join("occurrences.arrow"))?;
            let (f_schema, f) = read_ipc(&dir.join("followups.arrow"))?;
            let (t_schema, t) = read_ipc(&dir.join("triggers.arrow"))?;
            for batch in read_ipc(&dir.join("patterns.arrow"))?.1 {
                pattern_sums.add(&batch)?;
            }
            if let Some(trends) = beside.trends.as_mut() {
                let period = |i: usize| -> Result<PeriodRows> {
                    Ok(PeriodRows {
                        patterns: read_ipc(&dir.join(format!("trends-{i}-patterns.arrow")))?.1,
                        ..Default::default()
                    })
                };
                trends.add_rows([period(0)?, period(1)?])?;
            }
            let path = dir.join("second.json");
            contacters.add_fill(b, read_json(&path)?);
            schema.get_or_insert(f_schema.clone());
            found.push(Found {
                occurrences: (occ_schema, vec![occ]),
                followups: (f_schema, vec![f]),
                triggers: Triggers::Held(t_schema, t),
                patterns: Vec::new(),
            });
        }
        let schema = schema.unwrap_or_else(|| Arc::new(Schema::empty()));
        second_pass::gather(s, cfg, found, pattern_sums, &schema, started).await
    }

    /// What the contacts table's job wrote: its entry in the run's tables,
    /// and the contact days written.
    pub(crate) async fn contacts_written(
        self,
        tables: &mut BTreeMap<String, TableInfo>,
    ) -> Result<Vec<chrono::NaiveDate>> {
        let rows = self.contacts.await.map_err(|e| Error::Cluster {
            reason: format!("writing the contacts table: {e}"),
        })??;
        let text = results(&rows)
            .into_values()
            .next()
            .ok_or_else(|| Error::Cluster {
                reason: "the contacts table's job said nothing".into(),
            })?;
        let written: ContactsWritten = from_json(&self.spec.staging, &text)?;
        tables.extend(written.tables);
        written
            .days
            .iter()
            .map(|d| {
                d.parse().map_err(|_| Error::Cluster {
                    reason: format!("the contacts writer wrote a day {d:?}"),
                })
            })
            .collect()
    }
}
