//! Stage 4 — the second passes, a bucket at a time, after the clusters are
//! ranked: sequences along the clusters' steps, the reported clusters'
//! follow-ups, and the outreach triggers.
//!
//! Input: each bucket's annotated contacts as the first passes kept them
//! ([`Kept`]: in memory, or spilled), the [`Ranked`] clusters and the run's
//! [`TimelineParams`]. The buckets held in memory go first (and are let
//! go), then those on disk, the next one read while one is passed over.
//!
//! Output ([`SecondPass`]): per bucket, in bucket order, the follow-ups and
//! the outreach triggers (kept on disk with several buckets), for the
//! outreach list; and, registered in the session, `sequence_counts` (the
//! pattern counts summed over buckets, at the minimum support),
//! `sequence_occurrences` and `followups` (every bucket's).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;

use super::Beside;
use super::rank::Ranked;
use super::spill::{self, Kept, ReadAhead};
use crate::config::PipelineConfig;
use crate::error::Result;
use crate::queries;
use crate::session::{
    Collected, Progress, RunSession, add_seconds, bucket_label, contacts_table, query_batches,
    register_sequence_counts,
};
use crate::timeline::sorted::SortedContactsExec;
use crate::timeline::{Mode, PatternSums, TimelineParams};

/// What the second passes give for the outreach list, per bucket in bucket
/// order.
pub(crate) struct SecondPass {
    /// Each bucket's follow-ups of the reported clusters.
    pub followups: Vec<Vec<Vec<RecordBatch>>>,
    /// The follow-ups' schema.
    pub followups_schema: SchemaRef,
    /// Each bucket's outreach triggers.
    pub triggers: Vec<Triggers>,
    /// Bytes of outreach triggers spilled.
    pub spilled_bytes: u64,
    /// The folder of the spilled triggers, kept until they are read.
    pub(crate) _dir: Option<Arc<tempfile::TempDir>>,
}

/// One bucket's outreach triggers: in memory, or in a file of the bucket
/// folder.
pub(crate) enum Triggers {
    Held(SchemaRef, Vec<RecordBatch>),
    Spilled(SchemaRef, PathBuf),
}

impl Triggers {
    /// The triggers, read back if spilled.
    pub fn read(self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        match self {
            Triggers::Held(schema, batches) => Ok((schema, batches)),
            Triggers::Spilled(schema, path) => Ok((schema, crate::buckets::read_file(&path)?)),
        }
    }
}

/// What one bucket's second passes gave.
pub(crate) struct Found {
    pub occurrences: (SchemaRef, Vec<Vec<RecordBatch>>),
    pub followups: (SchemaRef, Vec<Vec<RecordBatch>>),
    pub triggers: Triggers,
    /// The sequence-count pass's rows, when the caller sums them (else
    /// summed into the run's pattern sums as they come).
    pub patterns: Vec<RecordBatch>,
}

/// The parameters and SQL of the second passes, the same for every bucket.
pub(crate) struct Plan {
    occ_params: TimelineParams,
    followup_params: TimelineParams,
    triggers_sql: String,
    params: TimelineParams,
}

impl Plan {
    /// The second passes after the ranking `ranked`.
    pub fn new(ranked: &Ranked, params: &TimelineParams) -> Plan {
        Plan::of(
            ranked.steps.clone(),
            ranked.pairs(),
            ranked.horizon_s(),
            params,
        )
    }

    /// The second passes along the clusters' `steps`, listing the
    /// follow-ups of the reported `pairs`, with triggers acted on up to
    /// `horizon_s` back (see [`Ranked`]).
    pub fn of(
        steps: Vec<(String, String)>,
        pairs: Vec<(String, String)>,
        horizon_s: f64,
        params: &TimelineParams,
    ) -> Plan {
        // the sequences along the clusters' steps (a sequence is reported
        // only when every step is one), the follow-ups of the reported
        // clusters
        Plan {
            occ_params: TimelineParams {
                sequence_steps: Some(Arc::new(steps)),
                ..params.clone()
            },
            followup_params: TimelineParams {
                pair_filter: Arc::new(pairs),
                ..params.clone()
            },
            triggers_sql: queries::render(
                queries::OUTREACH_TRIGGERS,
                &[
                    ("as_of_us", params.as_of_us.to_string()),
                    (
                        "horizon_us",
                        ((horizon_s * 1e6).ceil() as i64 + 1).to_string(),
                    ),
                    (
                        "max_customer_contacts",
                        crate::timeline::MAX_PAIR_CONTACTS_PER_CUSTOMER.to_string(),
                    ),
                ],
            ),
            params: params.clone(),
        }
    }
}

/// Runs the second passes over every bucket kept by the first.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    s: &mut RunSession,
    cfg: &PipelineConfig,
    mut kept: Vec<Kept>,
    schema: &SchemaRef,
    spill_dir: Option<Arc<tempfile::TempDir>>,
    ranked: &Ranked,
    params: &TimelineParams,
    beside: &mut Beside,
    contacters: &mut crate::contacters::Contacters,
    progress: &dyn Progress,
) -> Result<SecondPass> {
    let started = Instant::now();
    let plan = Plan::new(ranked, params);
    let n_buckets = kept.len();
    let mut found: Vec<Option<Found>> = (0..n_buckets).map(|_| None).collect();
    let mut order: Vec<usize> = (0..n_buckets).collect();
    order.sort_by_key(|b| matches!(kept[*b], Kept::Spilled(..)));
    let mut pattern_sums = PatternSums::new();
    // Without a memory limit, the next spilled bucket's files are read while
    // a bucket is decoded and passed over: the passes leave a core free and
    // the device idle otherwise. Under a limit, each is read when its turn
    // comes (its bytes are counted then).
    let read_ahead = cfg.memory_limit_bytes.is_none();
    let mut ahead = ReadAhead::default();
    let mut spilled_bytes = 0;
    for (k, &b) in order.iter().enumerate() {
        let label = bucket_label(b, n_buckets);
        progress.buckets_done(b, n_buckets);
        let (annotated, bytes) = match std::mem::replace(&mut kept[b], Kept::Taken) {
            // (counted as held since the first pass)
            Kept::Held(annotated) => {
                let bytes = annotated.memory_size();
                (annotated, bytes)
            }
            Kept::Spilled(files, dictionaries) => {
                progress.stage(&format!("listing occurrences{label}"));
                let t = Instant::now();
                let read = ahead.take(b, &files)?;
                if read_ahead
                    && let Some(&next) = order.get(k + 1)
                    && let Kept::Spilled(next_files, _) = &kept[next]
                {
                    ahead.start(next, next_files.clone())?;
                }
                let annotated =
                    Arc::new(spill::decode_bucket(&s.pool, schema, read, &dictionaries)?);
                s.add_seconds("spill", t);
                let bytes = annotated.memory_size();
                s.held.grow(bytes, "the annotated contacts")?;
                (annotated, bytes)
            }
            Kept::Taken => unreachable!("each bucket is taken once"),
        };
        progress.stage(&format!("mining sequences{label}"));
        let (mut f, spilled) = bucket(
            s, &plan, b, &annotated, schema, &spill_dir, beside, contacters,
        )
        .await?;
        for batch in std::mem::take(&mut f.patterns) {
            pattern_sums.add(&batch)?;
        }
        spilled_bytes += spilled;
        drop(annotated);
        s.held.shrink(bytes);
        found[b] = Some(f);
    }
    let found = found
        .into_iter()
        .map(|f| f.expect("every bucket passed"))
        .collect();
    let mut pass = gather(s, cfg, found, pattern_sums, schema, started).await?;
    pass.spilled_bytes = spilled_bytes;
    pass._dir = spill_dir;
    Ok(pass)
}

/// The second passes over bucket `b`'s annotated contacts: the frequent
/// contacters below its own fence, the sequence counts along the clusters'
/// steps (returned in [`Found::patterns`]), the sequences, the passes
/// beside (null check, trends), the follow-ups and the outreach triggers
/// (spilled into `spill_dir` when given). Returns them and the bytes
/// spilled.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn bucket(
    s: &mut RunSession,
    plan: &Plan,
    b: usize,
    annotated: &Arc<SortedContactsExec>,
    schema: &SchemaRef,
    spill_dir: &Option<Arc<tempfile::TempDir>>,
    beside: &mut Beside,
    contacters: &mut crate::contacters::Contacters,
) -> Result<(Found, u64)> {
    let t = Instant::now();
    contacters.fill_bucket(b, &annotated.partitions())?;
    s.add_seconds("frequent_contacters", t);
    let t = Instant::now();
    let (_, counted) = s
        .timeline(annotated, Mode::SequenceCounts, plan.occ_params.clone())
        .await?;
    let patterns = counted.into_iter().flatten().collect();
    s.add_seconds("sequences", t);
    let occurrences = s
        .timeline(annotated, Mode::Sequences, plan.occ_params.clone())
        .await?;
    if let Some(check) = beside.null_check.as_mut() {
        let t = Instant::now();
        check
            .add_sequences(&s.ctx, annotated, b, &plan.params)
            .await?;
        s.add_seconds("null_check", t);
    }
    if let Some(trends) = beside.trends.as_mut() {
        let t = Instant::now();
        trends
            .add_sequences(&s.ctx, annotated, &plan.params)
            .await?;
        s.add_seconds("trends.sequences", t);
    }
    let t = Instant::now();
    let followups = s
        .timeline(annotated, Mode::Followups, plan.followup_params.clone())
        .await?;
    add_seconds(&mut s.seconds, "followups", t);
    let (triggers, spilled) =
        outreach_triggers(s, annotated, schema, &plan.triggers_sql, spill_dir, b).await?;
    Ok((
        Found {
            occurrences,
            followups,
            triggers,
            patterns,
        },
        spilled,
    ))
}

/// Every bucket's second passes gathered, in bucket order: the follow-ups
/// and triggers for the outreach list; registered in the session,
/// `sequence_occurrences`, `followups` and `sequence_counts` (the pattern
/// sums at the minimum support).
pub(crate) async fn gather(
    s: &mut RunSession,
    cfg: &PipelineConfig,
    found: Vec<Found>,
    pattern_sums: PatternSums,
    schema: &SchemaRef,
    started: Instant,
) -> Result<SecondPass> {
    let n_buckets = found.len();
    let mut occurrences = Collected::default();
    let mut followups = Collected::default();
    let mut pass = SecondPass {
        followups: Vec::with_capacity(n_buckets),
        followups_schema: schema.clone(),
        triggers: Vec::with_capacity(n_buckets),
        spilled_bytes: 0,
        _dir: None,
    };
    for f in found {
        occurrences.add(f.occurrences);
        pass.followups.push(f.followups.1.clone());
        followups.add(f.followups);
        pass.triggers.push(f.triggers);
    }
    s.register("sequence_occurrences", occurrences.table()?)?;
    let followups = followups.table()?;
    pass.followups_schema = followups.schema();
    s.register("followups", followups)?;
    let sequences_s = s.seconds.get("sequences").copied().unwrap_or(0.0);
    let followup_s = s.seconds.get("followups").copied().unwrap_or(0.0);
    s.seconds.insert(
        "sequence_occurrences".into(),
        started.elapsed().as_secs_f64() - followup_s - sequences_s,
    );
    // (only patterns at the minimum support: sequence_candidates.sql reads
    // no others, see PatternSums::finish)
    let t = Instant::now();
    let totals = pattern_sums.finish(i64::try_from(cfg.min_support).unwrap_or(i64::MAX))?;
    s.add_seconds("sequences.sum", t);
    register_sequence_counts(&s.ctx, totals)?;
    Ok(pass)
}

/// Bucket `b`'s outreach triggers (queries/outreach_triggers.sql over its
/// annotated contacts), kept on disk with several buckets: the outreach
/// list needs the member lags of every bucket first. Returns them and the
/// bytes spilled.
async fn outreach_triggers(
    s: &mut RunSession,
    annotated: &SortedContactsExec,
    schema: &SchemaRef,
    sql: &str,
    spill_dir: &Option<Arc<tempfile::TempDir>>,
    b: usize,
) -> Result<(Triggers, u64)> {
    let t = Instant::now();
    s.register("contacts", contacts_table(schema, &annotated.partitions())?)?;
    let (trigger_schema, parts) = query_batches(&s.ctx, sql).await?;
    let batches: Vec<RecordBatch> = parts.into_iter().flatten().collect();
    let triggers = match spill_dir {
        None => (Triggers::Held(trigger_schema, batches), 0),
        Some(dir) => {
            let path = dir.path().join(format!("triggers-{b}.arrow"));
            let bytes = crate::buckets::spill(&path, &trigger_schema, &batches)?;
            (Triggers::Spilled(trigger_schema, path), bytes)
        }
    };
    s.add_seconds("query.outreach_triggers", t);
    s.drop_table("contacts")?;
    Ok(triggers)
}
