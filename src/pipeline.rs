//! The whole run: ingest → timeline pass → SQL stages → Parquet reports and
//! manifest.
//!
//! A log is processed in buckets of customers ([`crate::buckets`]; one bucket,
//! in memory, unless the log is larger than `bucket_contacts`): per bucket the
//! sort, the contacts pass with the per-customer SQL over it (repeat counts,
//! caps) and the counting passes; then the ranking SQL over what the buckets
//! counted; then per bucket again the occurrence and follow-up passes and the
//! outreach triggers; then the reports, the outreach list a bucket at a time.
//!
//! Input: a validated [`PipelineConfig`]. Output: the tables under
//! `cfg.out` (see [`crate::report`]) and a [`RunSummary`] for the caller to
//! show.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{MemTable, TableProvider};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::{FairSpillPool, MemoryConsumer, MemoryReservation};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::{ExecutionPlan, collect_partitioned};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::config::PipelineConfig;
use crate::error::{Error, Result};
use crate::ingest::{self, IngestStats};
use crate::queries;
use crate::report::{self, ClusterRow, Manifest};
use crate::timeline::exec::TimelineExec;
use crate::timeline::sorted::{CODED_COLUMNS, SortedContactsExec, TextDictionaries};
use crate::timeline::{Mode, TimelineParams};

/// Receives stage names as the run advances (for a progress display).
pub trait Progress: Sync {
    /// A stage started.
    fn stage(&self, name: &str);
}

/// A [`Progress`] that ignores everything.
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage(&self, _name: &str) {}
}

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
    /// The run's manifest as written.
    pub manifest: Manifest,
}

/// Builds the DataFusion session for a run: `cfg.target_partitions`
/// partitions (0 = one per core) and, under `--memory-limit`, a memory pool of
/// that size that lets spilling operators share what is left fairly.
pub fn session(cfg: &PipelineConfig) -> Result<SessionContext> {
    let partitions = if cfg.target_partitions == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    } else {
        cfg.target_partitions
    };
    let config = SessionConfig::new()
        .with_target_partitions(partitions)
        .with_information_schema(false);
    let mut config = config;
    // strings are read as plain Utf8, the type every stage works on, instead
    // of views that ingest would copy into Utf8 again
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    // each scan partition reads its own file ranges, in order: ingest numbers
    // rows by (scan partition, batch), which is the input order only then.
    // With DataFusion's work stealing on, an idle partition takes another's
    // next file range, and the numbering depended on timing (a golden test
    // failed about one run in six with other tests running beside it)
    config
        .options_mut()
        .execution
        .enable_file_stream_work_stealing = false;
    // reports are written with zstd at level 1, not DataFusion's default 3:
    // compressing took 8% of a 1M-contact run's cycles (perf), and the
    // contacts file grows 3.5%
    config.options_mut().execution.parquet.compression = Some(REPORT_COMPRESSION.into());
    if let Some(limit) = cfg.memory_limit_bytes {
        // what each sort sets aside to merge its spill files: DataFusion's
        // 10 MB default would not leave a small limit room to sort at all
        config.options_mut().execution.sort_spill_reservation_bytes =
            (limit as usize / 32).clamp(64 << 10, 10 << 20);
    }
    let mut state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features();
    if let Some(limit) = cfg.memory_limit_bytes {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(limit as usize)))
            .build_arc()?;
        state = state.with_runtime_env(runtime);
    }
    let ctx = SessionContext::new_with_state(state.build());
    // the contacts table written around the page cache
    crate::direct_store::DirectStore::register(&ctx);
    Ok(ctx)
}

/// The tables recur keeps in memory between stages, registered with the
/// session's memory pool (which cannot spill them), so that a memory limit
/// covers them too and is reported, not exceeded.
struct Held {
    reservation: MemoryReservation,
    limit: Option<u64>,
    peak: u64,
}

impl Held {
    fn new(ctx: &SessionContext, limit: Option<u64>) -> Self {
        let pool = ctx.runtime_env().memory_pool.clone();
        Held {
            reservation: MemoryConsumer::new("recur tables held in memory").register(&pool),
            limit,
            peak: 0,
        }
    }

    /// Holds `bytes` more for `what`, or explains which limit is too small.
    fn grow(&mut self, bytes: usize, what: &str) -> Result<()> {
        let held_before = self.reservation.size() as u64;
        self.reservation
            .try_grow(bytes)
            .map_err(|_| Error::MemoryLimit {
                limit: bytesize::ByteSize(self.limit.unwrap_or(0)).to_string(),
                stage: what.to_string(),
                reason: format!(
                    "they take {} in memory and the run already holds {}",
                    bytesize::ByteSize(bytes as u64),
                    bytesize::ByteSize(held_before),
                ),
            })?;
        self.peak = self.peak.max(self.reservation.size() as u64);
        Ok(())
    }

    fn shrink(&mut self, bytes: usize) {
        self.reservation.shrink(bytes.min(self.reservation.size()));
    }
}

/// The compression of every report file (as DataFusion's option string).
pub const REPORT_COMPRESSION: &str = "zstd(1)";

/// Most contacts in one partition of the pass (each partition is one batch).
const MAX_PARTITION_ROWS: u64 = 16_000_000;

/// Rows per batch of the tables the SQL stages read.
const TABLE_BATCH_ROWS: usize = 65_536;

/// The partitions cut into batches of `rows` rows (without copying).
fn sliced(parts: Vec<Vec<RecordBatch>>, rows: usize) -> Vec<Vec<RecordBatch>> {
    parts
        .into_iter()
        .map(|p| {
            p.into_iter()
                .flat_map(|b| {
                    (0..b.num_rows())
                        .step_by(rows)
                        .map(|off| b.slice(off, rows.min(b.num_rows() - off)))
                        .collect::<Vec<_>>()
                })
                .collect()
        })
        .collect()
}

fn batches_size(parts: &[Vec<RecordBatch>]) -> usize {
    parts
        .iter()
        .flatten()
        .map(datafusion::common::utils::memory::get_record_batch_memory_size)
        .sum()
}

/// Plans the timeline pass over `input` and lets DataFusion's physical
/// optimizer satisfy its distribution and ordering requirements (over a
/// [`SortedContactsExec`] there is nothing left to satisfy).
pub fn plan_timeline(
    ctx: &SessionContext,
    input: Arc<dyn ExecutionPlan>,
    mode: Mode,
    params: TimelineParams,
) -> Result<Arc<dyn ExecutionPlan>> {
    let mut plan: Arc<dyn ExecutionPlan> = Arc::new(TimelineExec::try_new(input, mode, params)?);
    let state = ctx.state();
    for rule in state.physical_optimizers() {
        plan = rule.optimize(plan, state.config_options())?;
    }
    Ok(plan)
}

pub(crate) async fn run_timeline(
    ctx: &SessionContext,
    sorted: &Arc<SortedContactsExec>,
    mode: Mode,
    params: TimelineParams,
) -> Result<(SchemaRef, Vec<Vec<RecordBatch>>)> {
    let plan = plan_timeline(ctx, sorted.clone(), mode, params)?;
    let schema = plan.schema();
    let parts = collect_partitioned(plan, ctx.task_ctx()).await?;
    Ok((schema, parts))
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
    let started = chrono::Utc::now();
    let mut stage_seconds: BTreeMap<String, f64> = BTreeMap::new();
    let ctx = session(cfg)?;
    let mut held = Held::new(&ctx, cfg.memory_limit_bytes);
    let mut cfg = cfg.clone();
    if cfg.target_partitions == 0 {
        cfg.target_partitions = ctx.state().config().target_partitions();
    }

    progress.stage("reading input");
    let t = Instant::now();
    let ingested = ingest::ingest(&ctx, &cfg).await?;
    let contact_id_field = ingested.schema.field_with_name("contact_id")?.clone();
    stage_seconds.insert("ingest".into(), t.elapsed().as_secs_f64());
    if ingested.sample_seconds > 0.0 {
        stage_seconds.insert("ingest.sample".into(), ingested.sample_seconds);
    }
    let stats = ingested.stats.clone();

    let mut buckets = ingested.buckets;
    let n_buckets = buckets.len();
    let bucket_rows = buckets.rows();
    let spill_dir = buckets.dir();
    let mut spilled_bytes: u64 = 0;
    let spill = cfg.memory_limit_bytes.is_some();
    // the threads of the in-memory sort, as many as DataFusion's partitions
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.target_partitions)
        .build()
        .map_err(|e| Error::param("threads", e.to_string()))?;
    let params = TimelineParams {
        repeat_window_us: cfg.repeat_window_us,
        cluster_window_us: cfg.max_cluster_window_us().max(cfg.max_gap_us),
        data_end_us: stats.max_ts_us.unwrap_or(i64::MIN),
        as_of_us: cfg.as_of_us.or(stats.max_ts_us).unwrap_or(0),
        tz: cfg.tz(),
        max_gap_us: cfg.max_gap_us,
        max_span_us: cfg.max_span_us,
        channel_items: cfg.sequence_channel_items,
        sequence_filter: Arc::new(Vec::new()),
        pair_windows_us: Arc::new(pair_windows_us(&cfg)),
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
    };

    // Each bucket in turn: sort, then the passes that need no ranking yet.
    // A bucket holds whole customers, so what the passes count adds up over
    // buckets; with several buckets the annotated contacts go to disk.
    let mut spills = (0u64, 0u64);
    let mut annotated_schema: Option<SchemaRef> = None;
    let mut kept: Vec<Annotated> = Vec::new();
    let mut repeat_counts = Collected::default();
    let mut caps_total: BTreeMap<String, u64> = BTreeMap::new();
    let mut pair_counts = Collected::default();
    // the permuted logs of --null-check
    let mut null_check = (cfg.null_check > 0)
        .then(|| crate::nullcheck::NullCheck::new(cfg.null_check, NULL_CHECK_SEED));
    // the customers by their number of contacts, and the heaviest
    let mut contacters = crate::contacters::Contacters::new();
    // the counted triggers' exposure, summed as each bucket's comes
    let mut exposures = crate::significance::Exposures::new();
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    let with_agent = cfg.columns.agent.is_some();
    let mut contacts_writer: Option<report::ContactsWriter> = None;
    for (b, rows) in bucket_rows.iter().enumerate() {
        let label = bucket_label(b, n_buckets);
        progress.stage(&format!("sorting timelines{label}"));
        let t = Instant::now();
        // (texts for DataFusion's sort under a memory limit; the in-memory
        // sort reads the bucket files' codes)
        let parts = buckets.take(b, cfg.target_partitions, spill)?;
        add_seconds(&mut stage_seconds, "sort.read", t);
        let read_bytes = batches_size(&parts);
        held.grow(read_bytes, "the contacts as read")?;
        // more partitions than threads for very large buckets: a partition is
        // one Arrow batch, whose string columns must stay under 2 GiB
        let partitions = cfg
            .target_partitions
            .max(rows.div_ceil(MAX_PARTITION_ROWS) as usize);
        let (sorted, sort_spills, dictionaries) =
            sort_contacts(&ctx, buckets.schema(), parts, partitions, spill, &pool).await?;
        register_dictionaries(&ctx, &dictionaries)?;
        spills = (spills.0 + sort_spills.0, spills.1 + sort_spills.1);
        let sorted = Arc::new(sorted);
        held.grow(sorted.memory_size(), "the sorted contacts")?;
        held.shrink(read_bytes);
        add_seconds(&mut stage_seconds, "sort", t);

        progress.stage(&format!("finding repeats and events{label}"));
        let t = Instant::now();
        let (schema, parts) = run_timeline(&ctx, &sorted, Mode::Contacts, params.clone()).await?;
        // The annotated contacts keep the pass's partitioning and order and
        // every column a pass reads: they feed the later passes, and the
        // sorted input is let go.
        let annotated = Arc::new(SortedContactsExec::try_new(schema.clone(), parts.clone())?);
        let sorted_bytes = sorted.memory_size();
        drop(sorted);
        // (the annotated contacts share most columns with the sorted ones)
        held.shrink(sorted_bytes);
        held.grow(annotated.memory_size(), "the annotated contacts")?;
        add_seconds(&mut stage_seconds, "repeats", t);
        // this bucket's part of the contacts table, written now: buckets
        // are customer ranges in order
        let t = Instant::now();
        let (idx, written) = report::contacts_projection(&schema, with_agent)?;
        if contacts_writer.is_none() {
            contacts_writer = Some(report::ContactsWriter::start(&ctx, written, &cfg.out)?);
        }
        contacts_writer
            .as_mut()
            .expect("started above")
            .write(
                parts
                    .iter()
                    // (one batch per partition: concat only slices it)
                    .map(|p| Ok(concat_batches(&schema, p)?))
                    .collect::<Result<_>>()?,
                idx,
            )
            .await?;
        add_seconds(&mut stage_seconds, "write.contacts", t);
        // what is counted per customer is counted here, over this bucket
        replace_table(&ctx, "contacts", contacts_table(&schema, &parts)?)?;
        let t = Instant::now();
        let groups = query_batches(&ctx, queries::REPEAT_GROUPS).await?;
        replace_table(
            &ctx,
            "repeat_groups",
            Arc::new(MemTable::try_new(groups.0, groups.1)?),
        )?;
        repeat_counts.add(query_batches(&ctx, queries::REPEAT_COUNTS).await?);
        add_seconds(&mut stage_seconds, "query.repeat_counts", t);
        for (name, n) in caps(&ctx).await? {
            *caps_total.entry(name).or_default() += n;
        }
        let t = Instant::now();
        contacters.add_bucket(&parts)?;
        add_seconds(&mut stage_seconds, "frequent_contacters", t);

        progress.stage(&format!("counting follow-ups{label}"));
        let t = Instant::now();
        pair_counts.add(run_timeline(&ctx, &annotated, Mode::PairCounts, params.clone()).await?);
        add_seconds(&mut stage_seconds, "pair_counts", t);
        let t = Instant::now();
        let (_, exposed) = run_timeline(&ctx, &annotated, Mode::Exposure, params.clone()).await?;
        for batch in exposed.iter().flatten() {
            exposures.add(batch)?;
        }
        add_seconds(&mut stage_seconds, "exposure", t);

        if let Some(check) = null_check.as_mut() {
            progress.stage(&format!("permuting reasons{label}"));
            let t = Instant::now();
            check.add_bucket(&ctx, &annotated, b, &params).await?;
            add_seconds(&mut stage_seconds, "null_check", t);
        }

        // Only what the later passes and queries read is kept (the columns
        // of the contacts table were written above).
        let (narrow_schema, narrow_parts) = later_columns(&schema, &parts)?;
        drop(parts);
        let parts = narrow_parts;
        annotated_schema = Some(narrow_schema.clone());
        let full_bytes = annotated.memory_size();
        drop(annotated);
        ctx.deregister_table("contacts")?;
        held.shrink(full_bytes);
        match &spill_dir {
            // with several buckets they go to disk, all but the last when
            // no memory limit is set: that one stays in memory through the
            // ranking (the memory it holds is less than its sort needed),
            // and the second passes take it first
            Some(dir) if b + 1 < n_buckets || cfg.memory_limit_bytes.is_some() => {
                let t = Instant::now();
                // the partitions written side by side (see `spilled_form`):
                // writing is copying into each file's aligned buffer
                let (rows_schema, runs_schema) = spilled_schemas(&narrow_schema, &dictionaries)?;
                let written = pool.install(|| {
                    use rayon::prelude::*;
                    parts
                        .par_iter()
                        .enumerate()
                        .map(|(p, batches)| {
                            let (rows, runs): (Vec<_>, Vec<_>) = batches
                                .iter()
                                .map(|b| spilled_form(b, &dictionaries))
                                .collect::<Result<Vec<_>>>()?
                                .into_iter()
                                .unzip();
                            let path = dir.path().join(format!("annotated-{b}-{p}.arrow"));
                            let runs_path = dir.path().join(format!("runs-{b}-{p}.arrow"));
                            let bytes = crate::buckets::spill(&path, &rows_schema, &rows)?
                                + crate::buckets::spill(&runs_path, &runs_schema, &runs)?;
                            Ok(((path, runs_path), bytes))
                        })
                        .collect::<Result<Vec<_>>>()
                })?;
                spilled_bytes += written.iter().map(|(_, n)| n).sum::<u64>();
                kept.push(Annotated::Spilled(
                    written.into_iter().map(|(paths, _)| paths).collect(),
                    dictionaries,
                ));
                add_seconds(&mut stage_seconds, "spill", t);
            }
            _ => {
                let narrow = Arc::new(SortedContactsExec::try_new(narrow_schema, parts)?);
                held.grow(narrow.memory_size(), "the annotated contacts")?;
                kept.push(Annotated::Held(narrow));
            }
        }
    }
    // Under a memory limit the contacts file is made whole here, so that its
    // writer lets go of the last bucket's rows before the ranking. Otherwise
    // the file is finished while the ranking and the second passes run (the
    // run waited here for the writer 0.9 s at 10M, in one bucket, and 1.6 s
    // at 100M, in 9).
    let mut tables = BTreeMap::new();
    let writer = contacts_writer.expect("at least one bucket");
    let writing = if cfg.memory_limit_bytes.is_none() {
        Some(writer)
    } else {
        let t = Instant::now();
        writer.finish(&mut tables).await?;
        add_seconds(&mut stage_seconds, "write.contacts", t);
        None
    };
    let schema = annotated_schema.expect("at least one bucket");
    ctx.register_table("repeat_counts", repeat_counts.table()?)?;
    let t = Instant::now();
    exposures.register_expectations(&ctx, pair_counts.parts.iter().flatten())?;
    drop(exposures);
    add_seconds(&mut stage_seconds, "expectations", t);
    ctx.register_table("pair_counts", pair_counts.table()?)?;
    let caps = caps_total;

    progress.stage("ranking clusters");
    let t = Instant::now();
    crate::udf::register_all(&ctx);

    let (cluster_batches, steps) = rank_clusters(&ctx, &cfg, &mut stage_seconds).await?;
    if let Some(check) = null_check.as_mut() {
        progress.stage("ranking the permuted logs");
        let t = Instant::now();
        check.rank_clusters(&cfg).await?;
        add_seconds(&mut stage_seconds, "null_check", t);
    }
    // Sequences are mined in the second pass, along the reported clusters'
    // steps only (a sequence is reported only when every step is one), with
    // the occurrences of every such pattern for the step lags of those kept.
    let t_occ = Instant::now();
    let occ_params = TimelineParams {
        sequence_steps: Some(Arc::new(steps)),
        ..params.clone()
    };
    let clusters_found = report::cluster_rows(&cluster_batches);
    let pair_filter = clusters_found
        .iter()
        .map(|c| (c.antecedent.clone(), c.consequent.clone()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let followup_params = TimelineParams {
        pair_filter: Arc::new(pair_filter),
        ..params.clone()
    };
    let as_of_us = cfg.as_of_us.or(stats.max_ts_us).unwrap_or(0);
    let horizon_s = clusters_found
        .iter()
        .map(|c| c.p90_lag_s)
        .fold(0.0_f64, f64::max);
    let triggers_sql = queries::render(
        queries::OUTREACH_TRIGGERS,
        &[
            ("as_of_us", as_of_us.to_string()),
            (
                "horizon_us",
                ((horizon_s * 1e6).ceil() as i64 + 1).to_string(),
            ),
            (
                "max_customer_contacts",
                crate::timeline::MAX_PAIR_CONTACTS_PER_CUSTOMER.to_string(),
            ),
        ],
    );
    // The second passes, over each bucket's annotated contacts again: the
    // sequences along the clusters' steps (their counts and occurrences),
    // the follow-ups of the reported clusters (for members and outreach),
    // and the outreach triggers. The
    // buckets held in memory go first (and are let go), then those on disk;
    // what each gives is gathered in bucket order.
    let mut found: Vec<Option<SecondPasses>> = (0..n_buckets).map(|_| None).collect();
    let mut order: Vec<usize> = (0..n_buckets).collect();
    order.sort_by_key(|b| matches!(kept[*b], Annotated::Spilled(..)));
    let mut followup_seconds = 0.0;
    // the pattern counts, summed as each bucket's come
    let mut pattern_sums = crate::timeline::PatternSums::new();
    // Without a memory limit, the next spilled bucket's files are read on a
    // thread of their own while a bucket is decoded and passed over: the
    // passes leave a core free and the device idle otherwise. Under a
    // limit, each is read when its turn comes (its bytes are counted
    // then).
    let read_ahead = cfg.memory_limit_bytes.is_none();
    let mut ahead: Option<(usize, std::thread::JoinHandle<Result<Vec<SpilledPart>>>)> = None;
    for (k, &b) in order.iter().enumerate() {
        let (annotated, bytes) = match std::mem::replace(&mut kept[b], Annotated::Taken) {
            // (counted as held since the first pass)
            Annotated::Held(annotated) => {
                let bytes = annotated.memory_size();
                (annotated, bytes)
            }
            Annotated::Spilled(files, dictionaries) => {
                progress.stage(&format!(
                    "listing occurrences{}",
                    bucket_label(b, n_buckets)
                ));
                let t = Instant::now();
                let read = match ahead.take() {
                    Some((a, reading)) if a == b => reading
                        .join()
                        .map_err(|_| spill_mismatch("a read ahead panicked".into()))??,
                    _ => read_spilled(&files)?,
                };
                // the next one's files, read while this one is passed over
                // (one read at a time: the device is the bound)
                if read_ahead && let Some(&next) = order.get(k + 1) {
                    if let Annotated::Spilled(next_files, _) = &kept[next] {
                        let next_files = next_files.clone();
                        let dir = spill_dir.as_ref().map(|d| d.path().to_path_buf());
                        ahead = Some((
                            next,
                            std::thread::Builder::new()
                                .name("recur-read".into())
                                .spawn(move || read_spilled(&next_files))
                                .map_err(|e| Error::io(dir.unwrap_or_default(), e))?,
                        ));
                    }
                }
                // the partitions decoded side by side
                let parts = pool.install(|| {
                    use rayon::prelude::*;
                    read.par_iter()
                        .map(|(rows, runs)| {
                            rows.iter()
                                .zip(runs)
                                .map(|(b, r)| from_spilled_form(&schema, b, r, &dictionaries))
                                .collect::<Result<Vec<_>>>()
                        })
                        .collect::<Result<Vec<_>>>()
                })?;
                drop(read);
                let annotated = Arc::new(SortedContactsExec::try_new(schema.clone(), parts)?);
                add_seconds(&mut stage_seconds, "spill", t);
                let bytes = annotated.memory_size();
                held.grow(bytes, "the annotated contacts")?;
                (annotated, bytes)
            }
            Annotated::Taken => unreachable!("each bucket is taken once"),
        };
        progress.stage(&format!("mining sequences{}", bucket_label(b, n_buckets)));
        let t = Instant::now();
        let (_, counted) =
            run_timeline(&ctx, &annotated, Mode::SequenceCounts, occ_params.clone()).await?;
        for batch in counted.iter().flatten() {
            pattern_sums.add(batch)?;
        }
        add_seconds(&mut stage_seconds, "sequences", t);
        let occurrences =
            run_timeline(&ctx, &annotated, Mode::Sequences, occ_params.clone()).await?;
        if let Some(check) = null_check.as_mut() {
            let t = Instant::now();
            check.add_sequences(&ctx, &annotated, b, &params).await?;
            add_seconds(&mut stage_seconds, "null_check", t);
        }
        let t = Instant::now();
        let followups =
            run_timeline(&ctx, &annotated, Mode::Followups, followup_params.clone()).await?;
        followup_seconds += t.elapsed().as_secs_f64();
        let t = Instant::now();
        replace_table(
            &ctx,
            "contacts",
            contacts_table(&schema, &annotated.partitions())?,
        )?;
        // this bucket's triggers, kept (on disk with several buckets) for
        // the outreach list, which needs the member lags of every bucket
        let (trigger_schema, parts) = query_batches(&ctx, &triggers_sql).await?;
        let batches: Vec<RecordBatch> = parts.into_iter().flatten().collect();
        let triggers = match &spill_dir {
            None => Triggers::Held(trigger_schema, batches),
            Some(dir) => {
                let path = dir.path().join(format!("triggers-{b}.arrow"));
                spilled_bytes += crate::buckets::spill(&path, &trigger_schema, &batches)?;
                Triggers::Spilled(trigger_schema, path)
            }
        };
        add_seconds(&mut stage_seconds, "query.outreach_triggers", t);
        ctx.deregister_table("contacts")?;
        drop(annotated);
        held.shrink(bytes);
        found[b] = Some(SecondPasses {
            occurrences,
            followups,
            triggers,
        });
    }
    let mut occurrences = Collected::default();
    let mut followups = Collected::default();
    let mut triggers: Vec<Triggers> = Vec::new();
    let mut followups_by_bucket: Vec<Vec<Vec<RecordBatch>>> = Vec::new();
    for passes in found {
        let passes = passes.expect("every bucket passed");
        occurrences.add(passes.occurrences);
        followups_by_bucket.push(passes.followups.1.clone());
        followups.add(passes.followups);
        triggers.push(passes.triggers);
    }
    ctx.register_table("sequence_occurrences", occurrences.table()?)?;
    let followups = followups.table()?;
    let followups_schema = followups.schema();
    ctx.register_table("followups", followups)?;
    stage_seconds.insert(
        "sequence_occurrences".into(),
        t_occ.elapsed().as_secs_f64()
            - followup_seconds
            - stage_seconds.get("sequences").copied().unwrap_or(0.0),
    );
    stage_seconds.insert("followups".into(), followup_seconds);
    // (only patterns at the minimum support: sequence_candidates.sql reads
    // no others, see PatternSums::finish)
    let t_sum = Instant::now();
    let totals = pattern_sums.finish(i64::try_from(cfg.min_support).unwrap_or(i64::MAX))?;
    add_seconds(&mut stage_seconds, "sequences.sum", t_sum);
    ctx.register_table(
        "sequence_counts",
        Arc::new(MemTable::try_new(
            crate::timeline::sequence_totals_schema(),
            vec![totals.into_iter().collect()],
        )?),
    )?;
    rank_sequences(&ctx, &cfg, &mut stage_seconds).await?;
    let sequences_sql = queries::render(
        queries::SEQUENCES,
        &[
            ("alpha", format!("{:?}", cfg.alpha)),
            ("rank_order", cfg.rank_by.sql().to_string()),
        ],
    );
    let sequence_batches =
        register_query(&ctx, "sequences", &sequences_sql, &mut stage_seconds).await?;
    stage_seconds.insert("rank".into(), t.elapsed().as_secs_f64());

    progress.stage("writing reports");
    let t = Instant::now();
    let summary_batches = register_query(
        &ctx,
        "repeat_summary",
        queries::REPEAT_SUMMARY,
        &mut stage_seconds,
    )
    .await?;
    report::write_batches(
        table_schema(&ctx, "repeat_summary").await?,
        &summary_batches,
        &cfg.out,
        "repeat_summary",
        &mut tables,
    )?;
    report::write_batches(
        table_schema(&ctx, "clusters").await?,
        &cluster_batches,
        &cfg.out,
        "clusters",
        &mut tables,
    )?;
    report::write_batches(
        table_schema(&ctx, "sequences").await?,
        &sequence_batches,
        &cfg.out,
        "sequences",
        &mut tables,
    )?;
    let members = register_query(
        &ctx,
        "cluster_members",
        queries::CLUSTER_MEMBERS,
        &mut stage_seconds,
    )
    .await?;
    // written on a thread of its own while the outreach list is made (the
    // list needs the members, not their file)
    let members_written = {
        let (schema, batches, out) = (
            table_schema(&ctx, "cluster_members").await?,
            members.clone(),
            cfg.out.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let mut written = BTreeMap::new();
            report::write_batches(schema, &batches, &out, "cluster_members", &mut written)?;
            Ok::<_, Error>(written)
        })
    };
    let prompts_sql = queries::render(
        queries::PROMPTS,
        &[("max_prompts", MAX_PROMPTS_PER_REASON.to_string())],
    );
    let prompts = ctx.sql(&prompts_sql).await?;
    let prompts_schema = prompts.schema().inner().clone();
    let prompts = prompts.collect().await?;
    let prompts_schema = prompts
        .first()
        .map(|b| b.schema())
        .unwrap_or(prompts_schema);
    report::write_batches(prompts_schema, &prompts, &cfg.out, "prompts", &mut tables)?;
    // The outreach list a bucket at a time: a customer's trigger and its
    // follow-ups are in one bucket, and the lists merge by priority.
    let t_out = Instant::now();
    let lags = report::member_lags(&members);
    ctx.register_table(
        "outreach_cutoffs",
        Arc::new(MemTable::try_new(
            crate::outreach::cutoffs_schema(),
            vec![vec![crate::outreach::cutoffs(&cluster_batches, &lags)?]],
        )?),
    )?;
    stage_seconds.insert("outreach.lags".into(), t_out.elapsed().as_secs_f64());
    let mut lists = Vec::with_capacity(n_buckets);
    let (mut read_s, mut query_s, mut build_s) = (0.0, 0.0, 0.0);
    for (bucket_triggers, bucket_followups) in triggers.into_iter().zip(followups_by_bucket) {
        let t = Instant::now();
        let (triggers_schema, batches) = match bucket_triggers {
            Triggers::Held(schema, batches) => (schema, batches),
            Triggers::Spilled(schema, path) => (schema, crate::buckets::read_file(&path)?),
        };
        read_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        replace_table(
            &ctx,
            "outreach_triggers",
            Arc::new(MemTable::try_new(triggers_schema, vec![batches])?),
        )?;
        replace_table(
            &ctx,
            "followups",
            Arc::new(MemTable::try_new(
                followups_schema.clone(),
                bucket_followups,
            )?),
        )?;
        let candidates = ctx
            .sql(queries::OUTREACH_CANDIDATES)
            .await?
            .collect()
            .await?;
        query_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        lists.push(crate::outreach::build(
            &candidates,
            &lags,
            contact_id_field.data_type(),
        )?);
        build_s += t.elapsed().as_secs_f64();
    }
    let t_merge = Instant::now();
    let outreach = crate::outreach::merge(&lists)?;
    stage_seconds.insert("outreach.merge".into(), t_merge.elapsed().as_secs_f64());
    stage_seconds.insert("outreach.build".into(), build_s);
    // the whole list; of it, the member lags, reading spilled triggers, the
    // SQL, the lists per bucket and their merge
    stage_seconds.insert("outreach".into(), t_out.elapsed().as_secs_f64());
    stage_seconds.insert("outreach.read_triggers".into(), read_s);
    stage_seconds.insert("query.outreach_candidates".into(), query_s);
    report::write_batches(
        outreach.schema(),
        std::slice::from_ref(&outreach),
        &cfg.out,
        "outreach",
        &mut tables,
    )?;
    tables.extend(
        members_written
            .await
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))??,
    );
    stage_seconds.insert("write".into(), t.elapsed().as_secs_f64());
    if let Some(writer) = writing {
        let t = Instant::now();
        writer.finish(&mut tables).await?;
        add_seconds(&mut stage_seconds, "write.contacts", t);
    }

    let mut manifest_null_check = None;
    if let Some(check) = null_check {
        progress.stage("ranking the permuted logs' sequences");
        let t = Instant::now();
        manifest_null_check = Some(check.finish(&cfg).await?);
        add_seconds(&mut stage_seconds, "null_check", t);
    }
    let (frequent, frequent_summary) = contacters.finish()?;
    report::write_batches(
        frequent.schema(),
        std::slice::from_ref(&frequent),
        &cfg.out,
        "frequent_contacters",
        &mut tables,
    )?;

    let all = report::summary_all_row(&summary_batches);
    let clusters = clusters_found;
    let mut manifest = Manifest::new(&cfg, &stats, tables, stage_seconds, started);
    manifest.caps = caps;
    manifest.notes.extend(frequent_summary.incomplete.clone());
    for id in &frequent_summary.placeholder_suspects {
        manifest.notes.push(format!(
            "customer id '{id}' makes more contacts than any real customer could \
             (see frequent_contacters); if it stands for unidentified callers, \
             leave it out with --exclude-customer '{id}'"
        ));
    }
    manifest.frequent_contacters = frequent_summary;
    manifest.null_check = manifest_null_check;
    manifest.memory = report::MemoryUse {
        limit_bytes: cfg.memory_limit_bytes,
        held_bytes_peak: held.peak,
        sort_spill_count: spills.0,
        sort_spilled_bytes: spills.1,
        buckets: n_buckets,
        bucket_contacts: crate::buckets::bucket_contacts(
            cfg.bucket_contacts,
            cfg.memory_limit_bytes,
        ),
        bucket_spilled_bytes: spilled_bytes,
    };
    manifest.write(&cfg.out.join("manifest.json"))?;
    Ok(RunSummary {
        ingest: stats,
        contacts: all.map(|a| a.contacts).unwrap_or(0),
        repeat_rate: all.and_then(|a| a.repeat_rate),
        contacts_per_event: all.and_then(|a| a.contacts_per_event),
        fcr_rate: all.and_then(|a| a.fcr_rate),
        clusters: clusters.len() as u64,
        top_clusters: clusters.into_iter().take(10).collect(),
        sequences: report::sequence_rows(&sequence_batches),
        manifest,
    })
}

/// Hash-partitions the ingested contacts on customer and sorts each partition
/// once, for every pass to read: in memory by
/// [`crate::timeline::sorted::partition_and_sort`] on `pool`, or with
/// `spill` by DataFusion's `SortExec`, which spills to disk when the memory
/// pool is short. Returns the sorted contacts and the sort's (spill count,
/// spilled bytes).
async fn sort_contacts(
    ctx: &SessionContext,
    schema: SchemaRef,
    contacts: Vec<Vec<RecordBatch>>,
    partitions: usize,
    spill: bool,
    pool: &rayon::ThreadPool,
) -> Result<(SortedContactsExec, (u64, u64), TextDictionaries)> {
    // (with the channel and reason codes the passes and the repeat counts use)
    let (coded, spills, dictionaries) = if !spill {
        let batches: Vec<RecordBatch> = contacts.into_iter().flatten().collect();
        let (sorted, dictionaries) = pool
            .install(|| crate::timeline::sorted::partition_sort_and_encode(&batches, partitions))?;
        drop(batches);
        (sorted, (0, 0), dictionaries)
    } else {
        let source = MemTable::try_new(schema.clone(), contacts)?;
        let input = source.scan(&ctx.state(), None, &[], None).await?;
        let plan = crate::timeline::sorted::sort_plan(input, partitions)?;
        let parts = collect_partitioned(plan.clone(), ctx.task_ctx()).await?;
        let spills = plan
            .metrics()
            .map(|m| {
                (
                    m.spill_count().unwrap_or(0) as u64,
                    m.spilled_bytes().unwrap_or(0) as u64,
                )
            })
            .unwrap_or((0, 0));
        let parts = parts
            .iter()
            .map(|p| Ok(concat_batches(&schema, p)?))
            .collect::<Result<Vec<_>>>()?;
        let (coded, dictionaries) =
            pool.install(|| crate::timeline::sorted::encode_texts(parts))?;
        (coded, spills, dictionaries)
    };
    let mut parts: Vec<Vec<RecordBatch>> = coded.into_iter().map(|b| vec![b]).collect();
    // (no contacts: as many empty partitions)
    parts.resize(partitions, Vec::new());
    let schema = crate::timeline::sorted::with_code_fields(&schema);
    Ok((
        SortedContactsExec::try_new(schema, parts)?,
        spills,
        dictionaries,
    ))
}

/// Registers the texts behind a bucket's channel and reason codes as the
/// tables `channel_codes` (code, channel) and `reason_codes` (code, reason),
/// which repeat_groups.sql joins its counts to.
pub(crate) fn register_dictionaries(ctx: &SessionContext, d: &TextDictionaries) -> Result<()> {
    use datafusion::arrow::array::{StringArray, UInt32Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    for (table, name, texts) in [
        ("channel_codes", "channel", &d.channel),
        ("reason_codes", "reason", &d.reason),
    ] {
        let schema = Arc::new(Schema::new(vec![
            Field::new("code", DataType::UInt32, false),
            Field::new(name, DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(UInt32Array::from_iter_values(0..texts.len() as u32)),
                Arc::new(StringArray::from_iter_values(texts.iter())),
            ],
        )?;
        replace_table(
            ctx,
            table,
            Arc::new(MemTable::try_new(schema, vec![vec![batch]])?),
        )?;
    }
    Ok(())
}

/// Registers `table` as `name`, in place of an earlier table of that name.
fn replace_table(ctx: &SessionContext, name: &str, table: Arc<dyn TableProvider>) -> Result<()> {
    ctx.deregister_table(name)?;
    ctx.register_table(name, table)?;
    Ok(())
}

/// The `contacts` table over annotated contacts in memory (one bucket's),
/// its order declared, in batches for the SQL stages.
fn contacts_table(
    schema: &SchemaRef,
    parts: &[Vec<RecordBatch>],
) -> Result<Arc<dyn TableProvider>> {
    contacts_table_by(schema, parts, TABLE_BATCH_ROWS)
}

/// The `contacts` table over annotated contacts in memory, in batches of
/// `rows` rows, its order declared so that a sorted read merges.
fn contacts_table_by(
    schema: &SchemaRef,
    parts: &[Vec<RecordBatch>],
    rows: usize,
) -> Result<Arc<dyn TableProvider>> {
    Ok(Arc::new(
        MemTable::try_new(schema.clone(), sliced(parts.to_vec(), rows))?
            .with_sort_order(vec![report::contacts_order()]),
    ))
}

/// The columns of the annotated contacts that the passes and queries after
/// the ranking read (the occurrence and follow-up passes, the outreach
/// triggers), and the partitions cut down to them (without copying).
const LATER_COLUMNS: &[&str] = &[
    "contact_id",
    "customer_id",
    "ts",
    "channel",
    "reason",
    "_customer_contacts",
    "_latest_of_reason",
    "_row",
    "_channel_code",
    "_reason_code",
];

fn later_columns(
    schema: &SchemaRef,
    parts: &[Vec<RecordBatch>],
) -> Result<(SchemaRef, Vec<Vec<RecordBatch>>)> {
    let idx = LATER_COLUMNS
        .iter()
        .map(|c| schema.index_of(c))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    project_parts(schema, parts, &idx)
}

/// The schema and the partitions cut down to the columns `idx` (without
/// copying).
fn project_parts(
    schema: &SchemaRef,
    parts: &[Vec<RecordBatch>],
    idx: &[usize],
) -> Result<(SchemaRef, Vec<Vec<RecordBatch>>)> {
    let parts = parts
        .iter()
        .map(|p| {
            p.iter()
                .map(|b| b.project(idx))
                .collect::<std::result::Result<Vec<_>, _>>()
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((Arc::new(schema.project(idx)?), parts))
}

/// Runs `sql` to its result: the schema (the batches' own, which can differ
/// from the planned one, e.g. text as views; the planned one when there are
/// no batches; every field nullable) and the batches, as one partition.
async fn query_batches(
    ctx: &SessionContext,
    sql: &str,
) -> Result<(SchemaRef, Vec<Vec<RecordBatch>>)> {
    let df = ctx.sql(sql).await?;
    let planned = df.schema().inner().clone();
    let batches = df.collect().await?;
    let schema = batches.first().map(|b| b.schema()).unwrap_or(planned);
    let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    Ok((schema, vec![batches]))
}

/// One bucket's annotated contacts, cut to [`LATER_COLUMNS`], between the
/// first passes and the second: in memory, or in files of the bucket folder
/// (two per partition, see [`spilled_form`]; the bucket's dictionaries give
/// the texts of channel and reason back); `Taken` once the second passes
/// have them.
enum Annotated {
    Held(Arc<SortedContactsExec>),
    Spilled(Vec<(PathBuf, PathBuf)>, TextDictionaries),
    Taken,
}

/// The columns of the annotated contacts that are the same over each
/// customer's run of rows: spill files keep them once per run.
const RUN_COLUMNS: [&str; 2] = ["customer_id", "_customer_contacts"];

/// Rows of a run in the runs file of [`spilled_form`].
const RUN_ROWS: &str = "_run_rows";

/// The schemas of the two spill files of [`spilled_form`] for annotated
/// contacts of `schema` and a bucket's `dictionaries`.
fn spilled_schemas(
    schema: &SchemaRef,
    dictionaries: &TextDictionaries,
) -> Result<(SchemaRef, SchemaRef)> {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let rows = schema
        .fields()
        .iter()
        .filter(|f| {
            let name = f.name().as_str();
            !CODED_COLUMNS.iter().any(|(text, _)| *text == name) && !RUN_COLUMNS.contains(&name)
        })
        .map(|f| match spilled_code_type(f.name(), dictionaries) {
            Some(t) => Arc::new(f.as_ref().clone().with_data_type(t)),
            None => f.clone(),
        })
        .collect::<Vec<_>>();
    let mut runs = RUN_COLUMNS
        .iter()
        .map(|c| Ok(schema.field_with_name(c)?.clone()))
        .collect::<Result<Vec<Field>>>()?;
    runs.push(Field::new(RUN_ROWS, DataType::UInt32, false));
    Ok((Arc::new(Schema::new(rows)), Arc::new(Schema::new(runs))))
}

/// The type a code column of [`CODED_COLUMNS`] is spilled as: the narrowest
/// unsigned integer that holds every code of its dictionary (`None`: not a
/// code column).
fn spilled_code_type(
    name: &str,
    dictionaries: &TextDictionaries,
) -> Option<datafusion::arrow::datatypes::DataType> {
    use datafusion::arrow::datatypes::DataType;
    let c = CODED_COLUMNS.iter().position(|(_, code)| *code == name)?;
    // (the dictionaries in CODED_COLUMNS' order)
    let codes = [&dictionaries.channel, &dictionaries.reason][c].len();
    Some(if codes <= 1 << 8 {
        DataType::UInt8
    } else if codes <= 1 << 16 {
        DataType::UInt16
    } else {
        DataType::UInt32
    })
}

/// One batch of annotated contacts as it is spilled, in two parts that
/// [`from_spilled_form`] puts back together: the rows without the channel
/// and reason texts (their codes and the bucket's dictionaries give them
/// back) and without [`RUN_COLUMNS`], their codes in as few bytes as the
/// bucket's `dictionaries` allow; and the runs, one row per run of rows
/// with equal values of those columns (a customer's rows), with its number
/// of rows. At 100M contacts this took the spill files from 4.9 to 3.7 GB,
/// 3.2 GB with the narrow codes.
fn spilled_form(
    batch: &RecordBatch,
    dictionaries: &TextDictionaries,
) -> Result<(RecordBatch, RecordBatch)> {
    use datafusion::arrow::array::{Array, AsArray, Int64Array, UInt32Array};
    use datafusion::arrow::compute::take;
    use datafusion::arrow::datatypes::Int64Type;
    let schema = batch.schema();
    let (rows_schema, runs_schema) = spilled_schemas(&schema, dictionaries)?;
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| spill_mismatch(format!("no column {name} to spill")))
    };
    let customer = column(RUN_COLUMNS[0])?.as_string::<i32>();
    let counts = column(RUN_COLUMNS[1])?.as_primitive::<Int64Type>();
    if customer.null_count() > 0 || counts.null_count() > 0 {
        return Err(spill_mismatch("a null customer to spill".into()));
    }
    let counts = counts.values();
    let n = batch.num_rows();
    let mut starts: Vec<u32> = Vec::new();
    for i in 0..n {
        if i == 0 || counts[i] != counts[i - 1] || customer.value(i) != customer.value(i - 1) {
            starts.push(i as u32);
        }
    }
    let lengths: Vec<u32> = starts
        .iter()
        .zip(starts.iter().skip(1).chain([&(n as u32)]))
        .map(|(a, b)| b - a)
        .collect();
    let starts = UInt32Array::from(starts);
    let runs = RecordBatch::try_new(
        runs_schema,
        vec![
            take(customer, &starts, None)?,
            Arc::new(Int64Array::from_iter_values(
                starts.values().iter().map(|s| counts[*s as usize]),
            )),
            Arc::new(UInt32Array::from(lengths)),
        ],
    )?;
    // (a code past its type is an error, not a null)
    let strict = datafusion::arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    let rows = rows_schema
        .fields()
        .iter()
        .map(|f| {
            let c = column(f.name())?;
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                Ok(datafusion::arrow::compute::cast_with_options(
                    c,
                    f.data_type(),
                    &strict,
                )?)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let rows = RecordBatch::try_new_with_options(
        rows_schema,
        rows,
        &datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(n)),
    )?;
    Ok((rows, runs))
}

/// A batch spilled as [`spilled_form`] (its `rows` and `runs`), back in
/// `schema`: the channel and reason texts from their codes and the bucket's
/// `dictionaries`, [`RUN_COLUMNS`] from the runs.
fn from_spilled_form(
    schema: &SchemaRef,
    rows: &RecordBatch,
    runs: &RecordBatch,
    dictionaries: &TextDictionaries,
) -> Result<RecordBatch> {
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{Int64Type, UInt32Type};
    let by_name = |batch: &RecordBatch, name: &str| {
        batch
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| spill_mismatch(format!("no column {name} read back")))
    };
    // the codes, spilled narrow, as wide as in `schema`
    let by_name_as = |batch: &RecordBatch, name: &str| {
        let c = by_name(batch, name)?;
        let want = schema.field_with_name(name)?.data_type();
        if c.data_type() == want {
            Ok(c)
        } else {
            Ok(datafusion::arrow::compute::cast(&c, want)?)
        }
    };
    let lengths = by_name(runs, RUN_ROWS)?;
    let lengths = lengths.as_primitive::<UInt32Type>().values();
    let n: usize = lengths.iter().map(|l| *l as usize).sum();
    if n != rows.num_rows() {
        return Err(spill_mismatch(format!(
            "{n} rows in runs for {} rows",
            rows.num_rows()
        )));
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let name = f.name().as_str();
            if let Some(c) = CODED_COLUMNS.iter().position(|(text, _)| *text == name) {
                // (the dictionaries in CODED_COLUMNS' order)
                let texts = [&dictionaries.channel, &dictionaries.reason][c];
                let codes = by_name_as(rows, CODED_COLUMNS[c].1)?;
                return Ok(crate::timeline::sorted::decode_texts(
                    codes.as_primitive::<UInt32Type>(),
                    texts,
                )?);
            }
            if name == RUN_COLUMNS[0] {
                let ids = by_name(runs, name)?;
                return Ok(crate::timeline::sorted::repeat_texts(
                    ids.as_string::<i32>(),
                    lengths,
                )?);
            }
            if name == RUN_COLUMNS[1] {
                let counts = by_name(runs, name)?;
                let counts = counts.as_primitive::<Int64Type>().values();
                let mut values = Vec::with_capacity(n);
                for (count, len) in counts.iter().zip(lengths) {
                    values.extend(std::iter::repeat_n(*count, *len as usize));
                }
                return Ok(Arc::new(Int64Array::from(values)));
            }
            by_name_as(rows, name)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// One partition's spill files of [`spilled_form`] as read: the batches of
/// rows and of runs.
type SpilledPart = (Vec<RecordBatch>, Vec<RecordBatch>);

/// Reads the spill files (rows, runs) of each partition of a bucket.
fn read_spilled(files: &[(PathBuf, PathBuf)]) -> Result<Vec<SpilledPart>> {
    files
        .iter()
        .map(|(rows, runs)| {
            let rows = crate::buckets::read_file(rows)?;
            let runs = crate::buckets::read_file(runs)?;
            if rows.len() != runs.len() {
                return Err(spill_mismatch(format!(
                    "{} batches of rows and {} of runs",
                    rows.len(),
                    runs.len()
                )));
            }
            Ok((rows, runs))
        })
        .collect()
}

/// An error of spill files that do not fit together.
fn spill_mismatch(what: String) -> Error {
    Error::DataFusion(datafusion::error::DataFusionError::Internal(format!(
        "the spilled annotated contacts: {what}"
    )))
}

/// What the second passes give for one bucket: the sequence occurrences,
/// the follow-ups and the outreach triggers.
struct SecondPasses {
    occurrences: (SchemaRef, Vec<Vec<RecordBatch>>),
    followups: (SchemaRef, Vec<Vec<RecordBatch>>),
    triggers: Triggers,
}

/// One bucket's outreach triggers: in memory, or in a file of the bucket
/// folder.
enum Triggers {
    Held(SchemaRef, Vec<RecordBatch>),
    Spilled(SchemaRef, PathBuf),
}

/// A pass's output gathered over buckets: its schema and every partition.
#[derive(Default)]
struct Collected {
    schema: Option<SchemaRef>,
    /// Whether `schema` is that of real batches (a planned schema can differ
    /// from the batches', e.g. text as views; a bucket can be empty).
    from_batches: bool,
    parts: Vec<Vec<RecordBatch>>,
}

impl Collected {
    fn add(&mut self, (schema, parts): (SchemaRef, Vec<Vec<RecordBatch>>)) {
        // (after a compaction the schema is the compacted one, whose nullable
        // fields take the pass's batches too)
        if !self.from_batches {
            if let Some(b) = parts.iter().flatten().next() {
                self.schema = Some(b.schema());
                self.from_batches = true;
            } else if self.schema.is_none() {
                self.schema = Some(schema);
            }
        }
        self.parts.extend(parts);
    }

    /// The partitions as a table.
    fn table(self) -> Result<Arc<MemTable>> {
        let schema = self.schema.expect("at least one bucket");
        Ok(Arc::new(MemTable::try_new(schema, self.parts)?))
    }
}

/// " (bucket 2/5)" when a run has several buckets.
fn bucket_label(b: usize, buckets: usize) -> String {
    if buckets > 1 {
        format!(" (bucket {}/{buckets})", b + 1)
    } else {
        String::new()
    }
}

/// Adds the time since `t` to a stage's seconds (stages run once per bucket).
fn add_seconds(seconds: &mut BTreeMap<String, f64>, stage: &str, t: Instant) {
    *seconds.entry(stage.to_string()).or_default() += t.elapsed().as_secs_f64();
}

/// What the per-customer caps left out: customers and their contacts.
async fn caps(ctx: &SessionContext) -> Result<BTreeMap<String, u64>> {
    use crate::timeline::{MAX_PAIR_CONTACTS_PER_CUSTOMER, MAX_SEQUENCE_CONTACTS_PER_CUSTOMER};
    // one row per customer has no previous contact
    let sql = format!(
        "SELECT \
           COALESCE(SUM(CASE WHEN _customer_contacts > {p} AND prev_gap_s IS NULL THEN 1 END), 0), \
           COALESCE(SUM(CASE WHEN _customer_contacts > {p} THEN 1 END), 0), \
           COALESCE(SUM(CASE WHEN _customer_contacts > {s} AND prev_gap_s IS NULL THEN 1 END), 0), \
           COALESCE(SUM(CASE WHEN _customer_contacts > {s} THEN 1 END), 0) \
         FROM contacts",
        p = MAX_PAIR_CONTACTS_PER_CUSTOMER,
        s = MAX_SEQUENCE_CONTACTS_PER_CUSTOMER,
    );
    let batches = ctx.sql(&sql).await?.collect().await?;
    let names = [
        "pair_customers_skipped",
        "pair_contacts_skipped",
        "sequence_customers_skipped",
        "sequence_contacts_skipped",
    ];
    let mut caps = BTreeMap::new();
    if let Some(b) = batches.first().filter(|b| b.num_rows() > 0) {
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::Int64Type;
        for (k, name) in names.iter().enumerate() {
            caps.insert(
                name.to_string(),
                b.column(k).as_primitive::<Int64Type>().value(0) as u64,
            );
        }
    }
    Ok(caps)
}

/// The windows the pass counts follow-ups at: every cluster window,
/// ascending.
fn pair_windows_us(cfg: &PipelineConfig) -> Vec<i64> {
    let mut w = cfg.cluster_windows_us.clone();
    w.sort_unstable();
    w.dedup();
    w
}

/// A cost in millionths (costs are summed as integers, exactly).
fn cost_micros(cost: f64) -> i64 {
    (cost * 1e6).round() as i64
}

/// The clusters' ranking queries over the `pair_counts` and
/// `pair_expectations` tables of `ctx` (recur's functions registered), each
/// registered under its name (`tested` and `fdr` with the clusters only).
/// Returns the clusters and the steps sequences may take: the (antecedent,
/// consequent) pairs of the clusters kept at any window
/// (`queries/sequence_steps.sql`).
pub(crate) async fn rank_clusters(
    ctx: &SessionContext,
    cfg: &PipelineConfig,
    stage_seconds: &mut BTreeMap<String, f64>,
) -> Result<(Vec<RecordBatch>, Vec<(String, String)>)> {
    let windows = cfg
        .cluster_windows_us
        .iter()
        .map(|w| format!("({})", *w as f64 / 1e6))
        .collect::<Vec<_>>()
        .join(", ");
    let candidates = queries::render(
        queries::CLUSTER_CANDIDATES,
        &[
            ("windows", windows),
            ("min_lift", format!("{:?}", cfg.min_lift)),
            ("effectiveness", format!("{:?}", cfg.effectiveness)),
        ],
    );
    register_query(ctx, "cluster_candidates", &candidates, stage_seconds).await?;
    register_query(ctx, "tested", TESTED_CLUSTERS, stage_seconds).await?;
    register_query(ctx, "fdr", queries::FDR, stage_seconds).await?;
    let evidence = evidence(cfg);
    let clusters = queries::render(queries::CLUSTERS, &evidence);
    let clusters = register_query(ctx, "clusters", &clusters, stage_seconds).await?;
    let steps = queries::render(queries::SEQUENCE_STEPS, &evidence);
    let steps = register_query(ctx, "sequence_steps", &steps, stage_seconds).await?;
    let steps = steps
        .iter()
        .flat_map(|b| {
            let (a, c) = (report::utf8(b.column(0)), report::utf8(b.column(1)));
            (0..b.num_rows())
                .map(|i| (a.value(i).to_string(), c.value(i).to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    Ok((clusters, steps))
}

/// The sequences' ranking queries, over `sequence_counts` and the tables of
/// [`rank_clusters`]: `pattern_totals`, `sequence_candidates`, then `tested`
/// and `fdr` again with both kinds (Benjamini–Hochberg runs per kind, so the
/// clusters' q-values do not change) and `sequence_chains`, which it
/// returns.
pub(crate) async fn rank_sequences(
    ctx: &SessionContext,
    cfg: &PipelineConfig,
    stage_seconds: &mut BTreeMap<String, f64>,
) -> Result<Vec<RecordBatch>> {
    let candidates = queries::render(
        queries::SEQUENCE_CANDIDATES,
        &[
            ("min_lift", format!("{:?}", cfg.min_lift)),
            ("effectiveness", format!("{:?}", cfg.effectiveness)),
            ("max_gap_s", format!("{:?}", cfg.max_gap_us as f64 / 1e6)),
        ],
    );
    register_query(
        ctx,
        "pattern_totals",
        queries::PATTERN_TOTALS,
        stage_seconds,
    )
    .await?;
    register_query(ctx, "sequence_candidates", &candidates, stage_seconds).await?;
    register_query(ctx, "tested", TESTED, stage_seconds).await?;
    register_query(ctx, "fdr", queries::FDR, stage_seconds).await?;
    let chains = queries::render(queries::SEQUENCE_CHAINS, &evidence(cfg));
    register_query(ctx, "sequence_chains", &chains, stage_seconds).await
}

/// The parameters of what a reported cluster or sequence needs.
fn evidence(cfg: &PipelineConfig) -> [(&'static str, String); 4] {
    [
        ("alpha", format!("{:?}", cfg.alpha)),
        ("min_support", cfg.min_support.to_string()),
        ("min_customers", cfg.min_customers.to_string()),
        ("rank_order", cfg.rank_by.sql().to_string()),
    ]
}

/// The seed of `--null-check`'s permutations: the same log gives the same
/// check.
const NULL_CHECK_SEED: u64 = 0x005e_ed0f_4e55;

/// The clusters tested for significance (before the sequences are mined).
pub const TESTED_CLUSTERS: &str = "SELECT 'cluster' AS kind, key, p_value FROM cluster_candidates";

/// Everything tested for significance in a run: clusters and sequences.
pub const TESTED: &str = "SELECT 'cluster' AS kind, key, p_value FROM cluster_candidates \
     UNION ALL SELECT 'sequence' AS kind, key, p_value FROM sequence_candidates";

/// Prompts written per reason.
pub const MAX_PROMPTS_PER_REASON: usize = 3;

/// The schema of a registered table.
async fn table_schema(ctx: &SessionContext, name: &str) -> Result<SchemaRef> {
    Ok(ctx.table(name).await?.schema().inner().clone())
}

/// Runs `sql`, keeps its result in memory as table `name`, and returns it.
async fn register_query(
    ctx: &SessionContext,
    name: &str,
    sql: &str,
    seconds: &mut BTreeMap<String, f64>,
) -> Result<Vec<RecordBatch>> {
    let t = Instant::now();
    let df = ctx.sql(sql).await?;
    let planned = df.schema().inner().clone();
    let batches = df.collect().await?;
    // The batches' own schema is authoritative (the planned one can differ in
    // nullability, e.g. after a sort over a CASE expression).
    let schema = batches.first().map(|b| b.schema()).unwrap_or(planned);
    ctx.deregister_table(name)?;
    ctx.register_table(
        name,
        Arc::new(MemTable::try_new(schema, vec![batches.clone()])?),
    )?;
    seconds.insert(format!("query.{name}"), t.elapsed().as_secs_f64());
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray, UInt32Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Annotated contacts as spilled and read back are the ones spilled:
    /// customers of one row and of many, ids short and past 16 bytes,
    /// null codes, an empty batch, and a customer whose rows a batch
    /// boundary splits.
    #[test]
    fn spilled_contacts_read_back_as_they_were() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("contact_id", DataType::Int64, false),
            Field::new("customer_id", DataType::Utf8, false),
            Field::new("channel", DataType::Utf8, true),
            Field::new("reason", DataType::Utf8, true),
            Field::new("_customer_contacts", DataType::Int64, false),
            Field::new("_channel_code", DataType::UInt32, true),
            Field::new("_reason_code", DataType::UInt32, true),
        ]));
        let dictionaries = TextDictionaries {
            channel: vec!["phone".into(), "a channel name past sixteen bytes".into()],
            reason: vec!["billing".into(), "r".into(), "x".into()],
        };
        let mut rng = StdRng::seed_from_u64(7);
        let mut rows: Vec<(String, i64, Option<u32>, Option<u32>)> = Vec::new();
        for c in 0..300 {
            let id = if c % 7 == 0 {
                format!("a customer id longer than sixteen bytes {c:04}")
            } else {
                format!("C{c:05}")
            };
            let n = if c % 3 == 0 {
                1
            } else {
                rng.random_range(1..9)
            };
            for _ in 0..n {
                let mut code = |k: u32| (!rng.random_bool(0.1)).then(|| rng.random_range(0..k));
                let (ch, re) = (code(2), code(3));
                rows.push((id.clone(), n as i64, ch, re));
            }
        }
        let text = |codes: &[Option<u32>], texts: &[String]| {
            StringArray::from(
                codes
                    .iter()
                    .map(|c| c.map(|c| texts[c as usize].clone()))
                    .collect::<Vec<_>>(),
            )
        };
        let batch_of = |rows: &[(String, i64, Option<u32>, Option<u32>)], first: i64| {
            let ch: Vec<Option<u32>> = rows.iter().map(|r| r.2).collect();
            let re: Vec<Option<u32>> = rows.iter().map(|r| r.3).collect();
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values(
                        (0..rows.len() as i64).map(|i| first + i),
                    )),
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
                    Arc::new(text(&ch, &dictionaries.channel)),
                    Arc::new(text(&re, &dictionaries.reason)),
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                    Arc::new(UInt32Array::from(ch)),
                    Arc::new(UInt32Array::from(re)),
                ],
            )
            .unwrap()
        };
        // batch boundaries at 0 (an empty batch), inside a customer's rows
        // and at the end
        let cut = rows.iter().position(|r| r.1 > 2).unwrap() + 1;
        let batches = [
            batch_of(&rows[..0], 0),
            batch_of(&rows[..cut], 0),
            batch_of(&rows[cut..], cut as i64),
        ];
        let dir = tempfile::tempdir().unwrap();
        let (rows_schema, runs_schema) = spilled_schemas(&schema, &dictionaries).unwrap();
        let (spilled_rows, spilled_runs): (Vec<_>, Vec<_>) = batches
            .iter()
            .map(|b| spilled_form(b, &dictionaries).unwrap())
            .unzip();
        assert!(spilled_rows.iter().all(|b| b.schema() == rows_schema));
        // the codes of 2 channels and 3 reasons in a byte each
        for code in ["_channel_code", "_reason_code"] {
            let t = rows_schema.field_with_name(code).unwrap().data_type();
            assert_eq!(t, &DataType::UInt8, "{code}");
        }
        assert!(spilled_runs.iter().all(|b| b.schema() == runs_schema));
        // one row per customer run, not per contact
        let runs: usize = spilled_runs.iter().map(|b| b.num_rows()).sum();
        assert_eq!(runs, 300 + 1, "300 customers, one split by a batch");
        let (rows_path, runs_path) = (dir.path().join("rows"), dir.path().join("runs"));
        crate::buckets::spill(&rows_path, &rows_schema, &spilled_rows).unwrap();
        crate::buckets::spill(&runs_path, &runs_schema, &spilled_runs).unwrap();
        let back_rows = crate::buckets::read_file(&rows_path).unwrap();
        let back_runs = crate::buckets::read_file(&runs_path).unwrap();
        assert_eq!(back_rows.len(), batches.len());
        for ((want, r), u) in batches.iter().zip(&back_rows).zip(&back_runs) {
            let got = from_spilled_form(&schema, r, u, &dictionaries).unwrap();
            assert_eq!(&got, want);
        }
    }

    /// Codes are spilled in the narrowest type for their dictionary, and a
    /// code past it fails the spill instead of becoming a null.
    #[test]
    fn spilled_codes_are_narrow_and_checked() {
        let texts = |n: usize| (0..n).map(|i| format!("t{i}")).collect::<Vec<_>>();
        for (n, want) in [
            (1, DataType::UInt8),
            (256, DataType::UInt8),
            (257, DataType::UInt16),
            (65_536, DataType::UInt16),
            (65_537, DataType::UInt32),
        ] {
            let d = TextDictionaries {
                channel: texts(1),
                reason: texts(n),
            };
            assert_eq!(spilled_code_type("_reason_code", &d), Some(want), "{n}");
            assert_eq!(
                spilled_code_type("_channel_code", &d),
                Some(DataType::UInt8)
            );
            assert_eq!(spilled_code_type("reason", &d), None);
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, false),
            Field::new("_customer_contacts", DataType::Int64, false),
            Field::new("_channel_code", DataType::UInt32, true),
            Field::new("_reason_code", DataType::UInt32, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(Int64Array::from(vec![1, 1])),
                Arc::new(UInt32Array::from(vec![Some(0), None])),
                Arc::new(UInt32Array::from(vec![Some(1), Some(256)])),
            ],
        )
        .unwrap();
        let small = TextDictionaries {
            channel: texts(1),
            reason: texts(2),
        };
        assert!(spilled_form(&batch, &small).is_err());
        let large = TextDictionaries {
            channel: texts(1),
            reason: texts(257),
        };
        assert!(spilled_form(&batch, &large).is_ok());
    }
}
