//! Stage 2 — the first passes, a bucket at a time: sort, annotate, count.
//!
//! Input: the ingested [`Buckets`] (whole customers each) and the run's
//! [`TimelineParams`]. Per bucket: the contacts hash-partitioned on customer
//! and sorted once; the contacts pass ([`Mode::Contacts`]), whose rows are
//! written to the contacts table and feed the per-bucket SQL (repeat
//! counts, the caps) and the frequent contacters; the pair-count and
//! exposure passes; the passes beside them ([`Beside`]: the null check's
//! permuted passes, the trends' passes by period).
//!
//! Output ([`FirstPass`]): what the buckets counted, summed or gathered over
//! buckets (a bucket holds whole customers, so counts add up), the contacts
//! table still being written, and each bucket's annotated contacts cut to
//! the columns the second passes read, kept in memory or spilled
//! ([`super::spill`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{MemTable, TableProvider};
use datafusion::physical_plan::collect_partitioned;

use super::Beside;
use super::spill::{self, Kept};
use crate::buckets::Buckets;
use crate::codes::TextDictionaries;
use crate::config::PipelineConfig;
use crate::contacters::Contacters;
use crate::error::Result;
use crate::queries;
use crate::report::{self, ContactsWriter};
use crate::session::{
    Collected, Progress, RunSession, batches_size, bucket_label, contacts_table, query_batches,
    register_dictionaries,
};
use crate::significance::Exposures;
use crate::timeline::sorted::SortedContactsExec;
use crate::timeline::{Mode, TimelineParams};

/// Most contacts in one partition of the pass (each partition is one batch,
/// whose string columns must stay under 2 GiB).
const MAX_PARTITION_ROWS: u64 = 16_000_000;

/// Where the first passes put the annotated contacts.
pub(crate) enum ContactsTo {
    /// The contacts table of the run (and, in an output folder of many
    /// runs, the contact days).
    Table(Option<report::contact_days::ContactDays>),
    /// Arrow IPC files in a folder, `part-P.arrow` per partition of the
    /// pass, for a cluster run's writer to read back; the exposure rows are
    /// then kept as rows ([`Counted::exposure_rows`]) for the client to sum.
    #[cfg_attr(not(feature = "ballista"), allow(dead_code))]
    Staged(std::path::PathBuf),
}

/// What the first passes gave over all buckets.
pub(crate) struct FirstPass {
    /// Each bucket's annotated contacts for the second passes.
    pub kept: Vec<Kept>,
    /// Their schema ([`spill::LATER_COLUMNS`]).
    pub schema: SchemaRef,
    /// The contacts table, its last rows still being written (None: the
    /// contacts were staged).
    pub contacts: Option<ContactsWriter>,
    /// What the buckets counted.
    pub counted: Counted,
}

/// What the first passes count, summed or gathered over buckets.
#[derive(Default)]
pub(crate) struct Counted {
    /// repeat_counts.sql over each bucket.
    pub repeat_counts: Collected,
    /// reason_days.sql over each bucket.
    pub reason_days: Collected,
    /// reason_precedents.sql over each bucket.
    pub reason_precedents: Collected,
    /// failure_counts.sql over each bucket.
    pub failure_counts: Collected,
    /// What the per-customer caps left out (queries/caps.sql).
    pub caps: BTreeMap<String, u64>,
    /// The pair-count pass's rows.
    pub pair_counts: Collected,
    /// The counted triggers' exposure.
    pub exposures: Exposures,
    /// With the contacts staged: the exposure pass's rows, not summed.
    pub exposure_rows: Vec<RecordBatch>,
    /// The customers by their number of contacts.
    pub contacters: Contacters,
    /// The sort's spills: (count, bytes).
    pub sort_spills: (u64, u64),
    /// Bytes of annotated contacts spilled.
    pub spilled_bytes: u64,
}

/// Runs the first passes over every bucket of `buckets`.
pub(crate) async fn run(
    s: &mut RunSession,
    cfg: &PipelineConfig,
    mut buckets: Buckets,
    params: &TimelineParams,
    beside: &mut Beside,
    contacts_to: ContactsTo,
    progress: &dyn Progress,
) -> Result<FirstPass> {
    let (mut contact_days, staged) = match contacts_to {
        ContactsTo::Table(days) => (days, None),
        ContactsTo::Staged(dir) => (None, Some(dir)),
    };
    let n_buckets = buckets.len();
    let spill_dir = buckets.dir();
    let mut contacts: Option<ContactsWriter> = None;
    let mut kept = Vec::with_capacity(n_buckets);
    let mut kept_schema = None;
    let mut counted = Counted::default();
    for (b, rows) in buckets.rows().into_iter().enumerate() {
        let label = bucket_label(b, n_buckets);
        progress.buckets_done(b, n_buckets);
        progress.stage(&format!("sorting timelines{label}"));
        let (sorted, dictionaries) =
            sort_bucket(s, cfg, &mut buckets, b, rows, &mut counted).await?;

        progress.stage(&format!("finding repeats and events{label}"));
        let t = Instant::now();
        let (schema, parts) = s.timeline(&sorted, Mode::Contacts, params.clone()).await?;
        // The annotated contacts keep the pass's partitioning and order and
        // every column a pass reads: they feed the later passes, and the
        // sorted input is let go.
        let annotated = Arc::new(SortedContactsExec::try_new(schema.clone(), parts.clone())?);
        let sorted_bytes = sorted.memory_size();
        drop(sorted);
        // (the annotated contacts share most columns with the sorted ones)
        s.held.shrink(sorted_bytes);
        s.held
            .grow(annotated.memory_size(), "the annotated contacts")?;
        s.add_seconds("repeats", t);
        match &staged {
            None => {
                write_contacts(s, cfg, &mut contacts, &mut contact_days, &schema, &parts).await?
            }
            Some(dir) => stage_contacts(dir, &schema, &parts)?,
        }
        per_customer_sql(s, &schema, &parts, &mut counted).await?;
        let t = Instant::now();
        counted.contacters.add_bucket(&parts)?;
        s.add_seconds("frequent_contacters", t);

        progress.stage(&format!("counting follow-ups{label}"));
        let t = Instant::now();
        counted.pair_counts.add(
            s.timeline(&annotated, Mode::PairCounts, params.clone())
                .await?,
        );
        s.add_seconds("pair_counts", t);
        let t = Instant::now();
        let (_, exposed) = s
            .timeline(&annotated, Mode::Exposure, params.clone())
            .await?;
        if staged.is_some() {
            counted.exposure_rows.extend(exposed.into_iter().flatten());
        } else {
            for batch in exposed.iter().flatten() {
                counted.exposures.add(batch)?;
            }
        }
        s.add_seconds("exposure", t);
        if let Some(check) = beside.null_check.as_mut() {
            progress.stage(&format!("permuting reasons{label}"));
            let t = Instant::now();
            check.add_bucket(&s.ctx, &annotated, b, params).await?;
            s.add_seconds("null_check", t);
        }
        if let Some(trends) = beside.trends.as_mut() {
            progress.stage(&format!("counting follow-ups by period{label}"));
            let t = Instant::now();
            trends.add_bucket(&s.ctx, &annotated, params).await?;
            s.add_seconds("trends.count", t);
        }

        // Only what the later passes and queries read is kept (the columns
        // of the contacts table were written above).
        let (narrow_schema, narrow_parts) = spill::later_columns(&schema, &parts)?;
        drop(parts);
        kept_schema = Some(narrow_schema.clone());
        let full_bytes = annotated.memory_size();
        drop(annotated);
        s.held.shrink(full_bytes);
        // With several buckets they go to disk, all but the last when no
        // memory limit is set: that one stays in memory through the ranking
        // (the memory it holds is less than its sort needed), and the second
        // passes take it first.
        let bucket = match &spill_dir {
            Some(dir) if b + 1 < n_buckets || cfg.memory_limit_bytes.is_some() => {
                let t = Instant::now();
                let (files, bytes) = spill::write_bucket(
                    &s.pool,
                    dir.path(),
                    b,
                    &narrow_schema,
                    &narrow_parts,
                    &dictionaries,
                )?;
                counted.spilled_bytes += bytes;
                s.add_seconds("spill", t);
                Kept::Spilled(files, dictionaries)
            }
            _ => {
                let narrow = Arc::new(SortedContactsExec::try_new(narrow_schema, narrow_parts)?);
                s.held
                    .grow(narrow.memory_size(), "the annotated contacts")?;
                Kept::Held(narrow)
            }
        };
        kept.push(bucket);
    }
    Ok(FirstPass {
        kept,
        schema: kept_schema.expect("at least one bucket"),
        contacts,
        counted,
    })
}

/// Takes bucket `b` (`rows` contacts) and sorts it; registers its text
/// dictionaries.
async fn sort_bucket(
    s: &mut RunSession,
    cfg: &PipelineConfig,
    buckets: &mut Buckets,
    b: usize,
    rows: u64,
    counted: &mut Counted,
) -> Result<(Arc<SortedContactsExec>, TextDictionaries)> {
    let spill = cfg.memory_limit_bytes.is_some();
    let t = Instant::now();
    // (texts for DataFusion's sort under a memory limit; the in-memory sort
    // reads the bucket files' codes)
    let parts = buckets.take(b, s.partitions, spill)?;
    s.add_seconds("sort.read", t);
    let read_bytes = batches_size(&parts);
    s.held.grow(read_bytes, "the contacts as read")?;
    // more partitions than threads for very large buckets: a partition is
    // one Arrow batch
    let partitions = s.partitions.max(rows.div_ceil(MAX_PARTITION_ROWS) as usize);
    let (sorted, sort_spills, dictionaries) =
        sort_contacts(s, buckets.schema(), parts, partitions, spill).await?;
    register_dictionaries(&s.ctx, &dictionaries)?;
    counted.sort_spills.0 += sort_spills.0;
    counted.sort_spills.1 += sort_spills.1;
    let sorted = Arc::new(sorted);
    s.held.grow(sorted.memory_size(), "the sorted contacts")?;
    s.held.shrink(read_bytes);
    s.add_seconds("sort", t);
    Ok((sorted, dictionaries))
}

/// Writes a bucket's part of the contacts table (buckets are customer ranges
/// in order), starting the writer at the first bucket.
pub(crate) async fn write_contacts(
    s: &mut RunSession,
    cfg: &PipelineConfig,
    writer: &mut Option<ContactsWriter>,
    days: &mut Option<report::contact_days::ContactDays>,
    schema: &SchemaRef,
    parts: &[Vec<RecordBatch>],
) -> Result<()> {
    let t = Instant::now();
    let (idx, written) = report::contacts_projection(schema)?;
    if writer.is_none() {
        *writer = Some(ContactsWriter::start(
            &s.ctx,
            written,
            &cfg.out,
            days.take(),
        )?);
    }
    writer
        .as_mut()
        .expect("started above")
        .write(
            parts
                .iter()
                // (one batch per partition: concat only slices it)
                .map(|p| Ok(concat_batches(schema, p)?))
                .collect::<Result<_>>()?,
            idx,
        )
        .await?;
    s.add_seconds("write.contacts", t);
    Ok(())
}

/// Writes a bucket's annotated contacts to `dir`, one Arrow IPC file per
/// partition (`part-P.arrow`).
fn stage_contacts(
    dir: &std::path::Path,
    schema: &SchemaRef,
    parts: &[Vec<RecordBatch>],
) -> Result<()> {
    for (p, batches) in parts.iter().enumerate() {
        crate::buckets::spill(&dir.join(format!("part-{p}.arrow")), schema, batches)?;
    }
    Ok(())
}

/// What is counted per customer, counted over this bucket's annotated
/// contacts: repeat_groups.sql and repeat_counts.sql, and the caps.
async fn per_customer_sql(
    s: &mut RunSession,
    schema: &SchemaRef,
    parts: &[Vec<RecordBatch>],
    counted: &mut Counted,
) -> Result<()> {
    s.register("contacts", contacts_table(schema, parts)?)?;
    let t = Instant::now();
    let groups = query_batches(&s.ctx, queries::REPEAT_GROUPS).await?;
    s.register(
        "repeat_groups",
        Arc::new(MemTable::try_new(groups.0, groups.1)?),
    )?;
    counted
        .repeat_counts
        .add(query_batches(&s.ctx, queries::REPEAT_COUNTS).await?);
    counted
        .reason_days
        .add(query_batches(&s.ctx, queries::REASON_DAYS).await?);
    counted
        .reason_precedents
        .add(query_batches(&s.ctx, queries::REASON_PRECEDENTS).await?);
    s.add_seconds("query.repeat_counts", t);
    let t = Instant::now();
    counted
        .failure_counts
        .add(query_batches(&s.ctx, queries::FAILURE_COUNTS).await?);
    s.add_seconds("query.failure_counts", t);
    for (name, n) in caps(s).await? {
        *counted.caps.entry(name).or_default() += n;
    }
    s.drop_table("contacts")
}

/// Hash-partitions the ingested contacts on customer and sorts each partition
/// once, for every pass to read: in memory by
/// [`crate::timeline::sorted::partition_sort_and_encode`] on the session's
/// pool, or with `spill` by DataFusion's `SortExec`, which spills to disk
/// when the memory pool is short. Returns the sorted contacts (with the
/// channel and reason codes the passes and the repeat counts use), the
/// sort's (spill count, spilled bytes) and the texts behind the codes.
async fn sort_contacts(
    s: &RunSession,
    schema: SchemaRef,
    contacts: Vec<Vec<RecordBatch>>,
    partitions: usize,
    spill: bool,
) -> Result<(SortedContactsExec, (u64, u64), TextDictionaries)> {
    let (coded, spills, dictionaries) = if !spill {
        let batches: Vec<RecordBatch> = contacts.into_iter().flatten().collect();
        let (sorted, dictionaries) = s
            .pool
            .install(|| crate::timeline::sorted::partition_sort_and_encode(&batches, partitions))?;
        drop(batches);
        (sorted, (0, 0), dictionaries)
    } else {
        let source = MemTable::try_new(schema.clone(), contacts)?;
        let input = source.scan(&s.ctx.state(), None, &[], None).await?;
        let plan = crate::timeline::sorted::sort_plan(input, partitions)?;
        let parts = collect_partitioned(plan.clone(), s.ctx.task_ctx()).await?;
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
        let (coded, dictionaries) = s.pool.install(|| crate::codes::encode_texts(parts))?;
        (coded, spills, dictionaries)
    };
    let mut parts: Vec<Vec<RecordBatch>> = coded.into_iter().map(|b| vec![b]).collect();
    // (no contacts: as many empty partitions)
    parts.resize(partitions, Vec::new());
    let schema = crate::codes::with_code_fields(&schema);
    Ok((
        SortedContactsExec::try_new(schema, parts)?,
        spills,
        dictionaries,
    ))
}

/// What the per-customer caps left out of the `contacts` table registered:
/// customers and their contacts (queries/caps.sql).
async fn caps(s: &RunSession) -> Result<BTreeMap<String, u64>> {
    use crate::timeline::{MAX_PAIR_CONTACTS_PER_CUSTOMER, MAX_SEQUENCE_CONTACTS_PER_CUSTOMER};
    let sql = queries::render(
        queries::CAPS,
        &[
            ("pair_cap", MAX_PAIR_CONTACTS_PER_CUSTOMER.to_string()),
            (
                "sequence_cap",
                MAX_SEQUENCE_CONTACTS_PER_CUSTOMER.to_string(),
            ),
        ],
    );
    let batches = s.ctx.sql(&sql).await?.collect().await?;
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
