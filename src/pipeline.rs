//! The whole run, as a short list of stages over typed results:
//!
//! 1. [`ingest`](crate::ingest): files → normalised contacts in buckets of
//!    whole customers ([`crate::buckets`]) → `Ingested`
//! 2. [`first_pass`](crate::stages::first_pass): per bucket, sort, the
//!    contacts pass (written to the contacts table), the per-customer SQL,
//!    the pair-count and exposure passes → `FirstPass`
//! 3. [`rank`](crate::stages::rank): what chance gives each pair
//!    ([`crate::significance`]), the tests and the clusters in SQL → `Ranked`
//! 4. [`second_pass`](crate::stages::second_pass): per bucket, sequences along
//!    the clusters' steps, follow-ups, outreach triggers → `SecondPass`; then
//!    the sequences ranked
//! 5. [`reports`](crate::stages::reports): the Parquet reports → `Reports`;
//!    then the frequent contacters and the manifest.
//!
//! With `--null-check`, [`crate::stages::nullcheck`] runs beside stages 2–4 on the
//! log with its reasons permuted. With `--cluster` (the `ballista` feature),
//! `crate::distributed::run` runs stages 1, 2 and 4 as tasks on a cluster's
//! executors and shares the rest with this module ([`after_first`]: from
//! the first passes' counts to the manifest).
//!
//! Input: a validated [`PipelineConfig`]. Output: the tables under
//! `cfg.out` (see [`crate::report`]) and a [`RunSummary`] for the caller to
//! show.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::record_batch::RecordBatch;

use crate::config::PipelineConfig;
use crate::error::{Error, Result};
use crate::ingest::{self, IngestStats};
use crate::report::{self, ClusterRow, Manifest};
use crate::session::{RunSession, register_pair_tables};
use crate::stages::nullcheck::NullCheck;
use crate::stages::{Beside, first_pass, rank, reports, second_pass};
use crate::timeline::TimelineParams;

pub use crate::session::{NoProgress, Progress};

/// What a run found, for the terminal summary.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Ingest counts.
    pub ingest: IngestStats,
    /// Contacts analysed.
    pub contacts: u64,
    /// Share of contacts that are repeats.
    pub repeat_rate: Option<f64>,
    /// Contacts per event.
    pub contacts_per_event: Option<f64>,
    /// First-contact-resolution rate.
    pub fcr_rate: Option<f64>,
    /// The top clusters, best first (at most 10).
    pub top_clusters: Vec<ClusterRow>,
    /// Clusters reported.
    pub clusters: u64,
    /// Sequences reported, best first.
    pub sequences: Vec<report::SequenceRow>,
    /// The surges, one line each in plain words, largest first.
    pub surges: Vec<String>,
    /// The cluster trends that changed, one line each in plain words: new
    /// and growing first.
    pub trends: Vec<String>,
    /// The run's manifest as written.
    pub manifest: Manifest,
    /// The folder the run's tables are in.
    pub run_dir: std::path::PathBuf,
    /// Earlier runs `--keep` removed ([`crate::runs`]).
    pub removed_runs: Vec<std::path::PathBuf>,
}

/// Passes stages on and remembers the current one, to name it in errors.
struct StageTracker<'a> {
    inner: &'a dyn Progress,
    current: std::sync::Mutex<String>,
}

impl Progress for StageTracker<'_> {
    fn stage(&self, name: &str) {
        if let Ok(mut c) = self.current.lock() {
            *c = name.to_string();
        }
        self.inner.stage(name);
    }
}

/// Runs recur end to end.
pub async fn run(cfg: &PipelineConfig, progress: &dyn Progress) -> Result<RunSummary> {
    let tracker = StageTracker {
        inner: progress,
        current: std::sync::Mutex::new(String::new()),
    };
    run_stages(cfg, &tracker).await.map_err(|e| match e {
        Error::DataFusion(d) => {
            let stage = tracker
                .current
                .lock()
                .map(|c| c.clone())
                .unwrap_or_default();
            Error::in_stage(d, &stage, cfg.memory_limit_bytes)
        }
        other => other,
    })
}

async fn run_stages(cfg: &PipelineConfig, progress: &dyn Progress) -> Result<RunSummary> {
    if cfg.cluster.is_some() {
        #[cfg(feature = "ballista")]
        return crate::distributed::run::run(cfg, progress).await;
        #[cfg(not(feature = "ballista"))]
        return Err(Error::param(
            "--cluster",
            "this recur was built without the ballista cargo feature: build it with \
             `cargo build --release --features ballista`",
        ));
    }
    let started = chrono::Utc::now();
    let mut s = RunSession::new(cfg)?;
    let cfg = &PipelineConfig {
        target_partitions: s.partitions,
        ..cfg.clone()
    };

    progress.stage("reading input");
    let t = Instant::now();
    let ingested = ingest::ingest(&s.ctx, cfg, progress).await?;
    s.add_seconds("ingest", t);
    if ingested.sample_seconds > 0.0 {
        s.seconds
            .insert("ingest.sample".into(), ingested.sample_seconds);
    }
    let contact_id = ingested.schema.field_with_name("contact_id")?.clone();
    let stats = ingested.stats;
    let cfg = &with_as_of(cfg, &stats, started);
    let spill_dir = ingested.buckets.dir();
    let n_buckets = ingested.buckets.len();
    let params = timeline_params(cfg, stats.max_ts_us);
    let (trends, no_trends) = match crate::stages::trends::Trends::new(cfg, stats.min_ts_us) {
        Ok(t) => (Some(t), None),
        Err(why) => (None, Some(why)),
    };
    let mut beside = Beside {
        null_check: (cfg.null_check > 0).then(|| NullCheck::new(cfg.null_check, NULL_CHECK_SEED)),
        trends,
    };

    // (the output folder only once the input has been read without error)
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    // into an output folder of many runs, the contacts go by day
    let contact_days = match &cfg.history {
        Some(root) => Some(report::contact_days::ContactDays::load(root, cfg)?),
        None => None,
    };
    let first = first_pass::run(
        &mut s,
        cfg,
        ingested.buckets,
        &params,
        &mut beside,
        first_pass::ContactsTo::Table(contact_days),
        progress,
    )
    .await?;
    let first_pass::FirstPass {
        kept,
        schema,
        contacts,
        counted,
    } = first;
    let after = AfterFirst {
        started,
        stats,
        contact_id,
        n_buckets,
        params,
        beside,
        no_trends,
        counted,
        rest: Rest::Local {
            kept,
            schema,
            spill_dir,
            contacts: Some(contacts.expect("the contacts table is written")),
        },
    };
    after_first(&mut s, cfg, after, progress).await
}

/// What makes the second passes and finishes the contacts table.
pub(crate) enum Rest {
    /// This machine: the buckets the first passes kept, and the contacts
    /// table's writer.
    Local {
        kept: Vec<crate::stages::spill::Kept>,
        schema: datafusion::arrow::datatypes::SchemaRef,
        spill_dir: Option<Arc<tempfile::TempDir>>,
        contacts: Option<report::ContactsWriter>,
    },
    /// A cluster's executors ([`crate::distributed::run`]).
    #[cfg(feature = "ballista")]
    Cluster(Box<crate::distributed::run::Cluster>),
}

/// A run after its first passes.
pub(crate) struct AfterFirst {
    pub started: chrono::DateTime<chrono::Utc>,
    pub stats: IngestStats,
    /// The contact id's field.
    pub contact_id: datafusion::arrow::datatypes::Field,
    pub n_buckets: usize,
    pub params: TimelineParams,
    pub beside: Beside,
    /// Why there are no trends, when there are none.
    pub no_trends: Option<String>,
    pub counted: first_pass::Counted,
    pub rest: Rest,
}

/// The run after its first passes: the surges, the ranking, the second
/// passes, the reports and the manifest.
pub(crate) async fn after_first(
    s: &mut RunSession,
    cfg: &PipelineConfig,
    after: AfterFirst,
    progress: &dyn Progress,
) -> Result<RunSummary> {
    let AfterFirst {
        started,
        stats,
        contact_id,
        n_buckets,
        params,
        mut beside,
        no_trends,
        mut counted,
        mut rest,
    } = after;
    // Under a memory limit the contacts file is made whole here, so that its
    // writer lets go of the last bucket's rows before the ranking; otherwise
    // it is finished while the ranking and the second passes run.
    let mut tables = std::collections::BTreeMap::new();
    let mut days_written = Vec::new();
    if let Rest::Local { contacts, .. } = &mut rest
        && cfg.memory_limit_bytes.is_some()
    {
        let t = Instant::now();
        days_written = contacts
            .take()
            .expect("not finished")
            .finish(&mut tables)
            .await?;
        s.add_seconds("write.contacts", t);
    }
    s.register("repeat_counts", counted.repeat_counts.table()?)?;
    s.register(
        "failure_counts",
        std::mem::take(&mut counted.failure_counts).table()?,
    )?;
    let t = Instant::now();
    let surges = surges(
        cfg,
        &stats,
        [&counted.reason_days.parts, &counted.reason_precedents.parts],
        &mut tables,
    )?;
    s.add_seconds("surges", t);
    let t = Instant::now();
    // (the exposures let go once their expectations are made)
    let expectations = std::mem::take(&mut counted.exposures)
        .pair_expectations(counted.pair_counts.parts.iter().flatten())?;
    s.add_seconds("expectations", t);
    register_pair_tables(&s.ctx, counted.pair_counts.table()?, expectations)?;

    progress.stage("ranking clusters");
    let t_rank = Instant::now();
    let ranked = rank::clusters(&s.ctx, cfg, &mut s.seconds).await?;
    if let Some(check) = beside.null_check.as_mut() {
        progress.stage("ranking the permuted logs");
        let t = Instant::now();
        check.rank_clusters(cfg).await?;
        s.add_seconds("null_check", t);
    }
    if let Some(trends) = beside.trends.as_mut() {
        progress.stage("ranking each period's clusters");
        let t = Instant::now();
        trends.rank_clusters(cfg).await?;
        s.add_seconds("trends.rank", t);
    }
    let (second, contacts) = match rest {
        Rest::Local {
            kept,
            schema,
            spill_dir,
            contacts,
        } => {
            let second = second_pass::run(
                s,
                cfg,
                kept,
                &schema,
                spill_dir,
                &ranked,
                &params,
                &mut beside,
                &mut counted.contacters,
                progress,
            )
            .await?;
            (second, Contacts::Local(contacts))
        }
        #[cfg(feature = "ballista")]
        Rest::Cluster(cluster) => {
            let second = cluster
                .second_passes(
                    s,
                    cfg,
                    &ranked,
                    &mut beside,
                    &mut counted.contacters,
                    progress,
                )
                .await?;
            (second, Contacts::Cluster(cluster))
        }
    };
    let sequences = rank::sequences(&s.ctx, cfg, &mut s.seconds).await?;
    s.seconds
        .insert("rank".into(), t_rank.elapsed().as_secs_f64());

    progress.stage("writing reports");
    let spilled_bytes = counted.spilled_bytes + second.spilled_bytes;
    let written = reports::write(
        s,
        cfg,
        &ranked,
        sequences,
        second,
        contact_id.data_type(),
        &mut tables,
    )
    .await?;
    match contacts {
        Contacts::Local(Some(contacts)) => {
            let t = Instant::now();
            days_written = contacts.finish(&mut tables).await?;
            s.add_seconds("write.contacts", t);
        }
        Contacts::Local(None) => {}
        #[cfg(feature = "ballista")]
        Contacts::Cluster(cluster) => {
            let t = Instant::now();
            days_written = cluster.contacts_written(&mut tables).await?;
            s.add_seconds("write.contacts", t);
        }
    }
    progress.stage("comparing the periods");
    let t = Instant::now();
    let (trend_rows, trend_summary) =
        crate::stages::trends::write(beside.trends, no_trends, cfg, &mut tables).await?;
    s.add_seconds("trends.compare", t);
    let null_check = match beside.null_check {
        Some(check) => {
            progress.stage("ranking the permuted logs' sequences");
            let t = Instant::now();
            let summary = check.finish(cfg).await?;
            s.add_seconds("null_check", t);
            Some(summary)
        }
        None => None,
    };
    let customers = counted.contacters.customers();
    let frequent = reports::frequent_contacters(cfg, counted.contacters, &mut tables)?;

    let mut manifest = Manifest::new(cfg, &stats, tables, std::mem::take(&mut s.seconds), started);
    manifest.rows.customers = customers;
    manifest.outreach_list = written.list;
    manifest.surges = surges.summary();
    manifest.trends = trend_summary;
    manifest.contact_days_written = days_written.iter().map(|d| d.to_string()).collect();
    manifest.caps = counted.caps;
    manifest.add_frequent_contacters(frequent);
    manifest.null_check = null_check;
    manifest.memory = report::MemoryUse {
        limit_bytes: cfg.memory_limit_bytes,
        held_bytes_peak: s.held.peak,
        sort_spill_count: counted.sort_spills.0,
        sort_spilled_bytes: counted.sort_spills.1,
        buckets: n_buckets,
        bucket_contacts: crate::buckets::bucket_contacts(
            cfg.bucket_contacts,
            cfg.memory_limit_bytes,
        ),
        bucket_spilled_bytes: spilled_bytes,
    };
    write_page_and_manifest(cfg, &mut manifest, progress).await?;
    let all = report::summary_all_row(&written.summary);
    Ok(RunSummary {
        ingest: stats,
        contacts: all.map(|a| a.contacts).unwrap_or(0),
        repeat_rate: all.and_then(|a| a.repeat_rate),
        contacts_per_event: all.and_then(|a| a.contacts_per_event),
        fcr_rate: all.and_then(|a| a.fcr_rate),
        clusters: ranked.rows.len() as u64,
        top_clusters: ranked.rows.into_iter().take(10).collect(),
        sequences: report::sequence_rows(&written.sequences),
        surges: surges.lines(),
        trends: crate::stages::trends::lines(&trend_rows),
        manifest,
        run_dir: cfg.out.clone(),
        removed_runs: Vec::new(),
    })
}

/// Writes report.html (unless `--no-report`), which shows `manifest`,
/// then the manifest itself, naming the page: the run's last files.
async fn write_page_and_manifest(
    cfg: &PipelineConfig,
    manifest: &mut Manifest,
    progress: &dyn Progress,
) -> Result<()> {
    if cfg.report {
        // the page shows the manifest as it is without the page itself
        progress.stage("writing report.html");
        let value = serde_json::to_value(&*manifest).map_err(|source| Error::Json {
            path: cfg.out.join("manifest.json"),
            source,
        })?;
        let written = crate::html::write(&cfg.out, &value).await?;
        manifest
            .stage_seconds
            .insert("report_html".into(), written.seconds);
        manifest.report = Some(written);
    }
    manifest.write(&cfg.out.join("manifest.json"))
}

/// Who finishes the contacts table.
enum Contacts {
    Local(Option<report::ContactsWriter>),
    #[cfg(feature = "ballista")]
    Cluster(Box<crate::distributed::run::Cluster>),
}

/// The surge test over the first passes' daily counts (reason_days.sql's
/// rows), with what came before each surge (reason_precedents.sql's); writes
/// the `surges` and `reason_days` tables.
fn surges(
    cfg: &PipelineConfig,
    stats: &IngestStats,
    [days, precedents]: [&[Vec<RecordBatch>]; 2],
    tables: &mut std::collections::BTreeMap<String, report::TableInfo>,
) -> Result<crate::surges::Surges> {
    let day_counts = crate::surges::day_counts(days.iter().flatten())?;
    let mut surges = crate::surges::detect(
        &day_counts,
        &crate::surges::SurgeParams::of(cfg, stats.min_ts_us),
    );
    surges.add_precedents(
        &crate::surges::precedent_counts(precedents.iter().flatten())?,
        &day_counts,
    );
    for (name, schema, batch) in [
        (
            "surges",
            crate::surges::surges_schema(),
            surges.surges_batch()?,
        ),
        (
            "reason_days",
            crate::surges::reason_days_schema(),
            surges.reason_days_batch()?,
        ),
    ] {
        report::write_batches(schema, &[batch], &cfg.out, name, tables)?;
    }
    Ok(surges)
}

/// `cfg` with the as-of the run is made for, recorded as used: `--as-of`,
/// else the log's last contact (an empty log's, under --allow-empty: the
/// run's start).
pub(crate) fn with_as_of(
    cfg: &PipelineConfig,
    stats: &IngestStats,
    started: chrono::DateTime<chrono::Utc>,
) -> PipelineConfig {
    PipelineConfig {
        as_of_us: cfg
            .as_of_us
            .or(stats.max_ts_us)
            .or(Some(started.timestamp_micros())),
        ..cfg.clone()
    }
}

/// The parameters of every timeline pass of a run over a log whose last
/// contact is at `data_end_us`.
pub(crate) fn timeline_params(cfg: &PipelineConfig, data_end_us: Option<i64>) -> TimelineParams {
    let mut pair_windows_us = cfg.cluster_windows_us.clone();
    pair_windows_us.sort_unstable();
    pair_windows_us.dedup();
    // costs are summed as integers (millionths), exactly
    let cost_micros = |cost: f64| (cost * 1e6).round() as i64;
    TimelineParams {
        repeat_window_us: cfg.repeat_window_us,
        cluster_window_us: cfg.max_cluster_window_us().max(cfg.max_gap_us),
        data_end_us: data_end_us.unwrap_or(i64::MIN),
        as_of_us: cfg.as_of_us.unwrap_or(0),
        tz: cfg.tz(),
        max_gap_us: cfg.max_gap_us,
        max_span_us: cfg.max_span_us,
        channel_items: cfg.sequence_channel_items,
        sequence_filter: Arc::new(Vec::new()),
        pair_windows_us: Arc::new(pair_windows_us),
        channel_cost_micros: Arc::new(
            cfg.channel_cost
                .iter()
                .map(|(k, v)| (k.clone(), cost_micros(*v)))
                .collect(),
        ),
        default_cost_micros: cost_micros(crate::config::DEFAULT_CHANNEL_COST),
        pair_filter: Arc::new(Vec::new()),
        customer_cap: cfg.customer_cap,
        sequence_steps: None,
        trigger_period: None,
    }
}

/// The seed of `--null-check`'s permutations: the same log gives the same
/// check.
const NULL_CHECK_SEED: u64 = 0x005e_ed0f_4e55;
