//! `recur run --cluster URL`: a run whose contact-handling stages run on a
//! Ballista cluster's executors.
//!
//! A run on one machine cuts the log into buckets of whole customers and
//! runs every stage a bucket at a time ([`crate::pipeline`]). On a cluster
//! the buckets are the executors' tasks, and the client keeps only what
//! the ranking and the reports read. Three jobs, each a plan of
//! [`TaskNode`]s that the scheduler plans with [`TaskPlanner`] and ships to
//! the executors as [`TaskExec`]s (encoded by [`TaskCodec`]):
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
//! 3. **Second passes** ([`Task::SecondPass`], a task per bucket, plus one
//!    that writes the contacts table): after the client has ranked the
//!    clusters, each bucket's annotated contacts are read back and passed
//!    over for sequences, follow-ups, outreach triggers, the frequent
//!    contacters and the trends' sequences
//!    ([`crate::stages::second_pass::bucket`]); the last task writes the
//!    contacts table (and the contact days) from every bucket's annotated
//!    contacts in bucket order, as one machine does.
//!
//! The client then ranks the sequences and writes the reports and the
//! manifest, as one machine does ([`crate::pipeline::after_first`]).
//!
//! Input: a validated [`PipelineConfig`] with `cluster` set, whose inputs
//! and output folder every node reads and writes at the same path.
//! Output: the run's tables under `cfg.out`, equal to one machine's run;
//! the staging folder `cfg.out/_cluster` is removed at the end.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, UserDefinedLogicalNodeCore};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::expressions::col;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, Distribution, ExecutionPlan,
    InputDistributionRequirements, Partitioning, PhysicalExpr, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream,
};
use datafusion::physical_planner::{ExtensionPlanner, PhysicalPlanner};
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::buckets::Buckets;
use crate::config::PipelineConfig;
use crate::contacters::Contacters;
use crate::error::{Error, Result};
use crate::ingest::{self, FileRead};
use crate::pipeline::{AfterFirst, Progress, Rest, RunSummary};
use crate::report::TableInfo;
use crate::session::{NoProgress, RunSession};
use crate::stages::first_pass::{self, ContactsTo, Counted};
use crate::stages::rank::Ranked;
use crate::stages::second_pass::{self, Found, SecondPass, Triggers};
use crate::stages::trends::{PeriodRows, Trends};
use crate::stages::{Beside, spill};
use crate::timeline::PatternSums;
use crate::timeline::sorted::SortedContactsExec;

/// A cluster run's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Task {
    /// One input file read for its counts (a task per file).
    ReadStats,
    /// One input file read into contacts with their bucket (a task per file).
    ReadContacts,
    /// The first passes over the buckets of one partition of the shuffle.
    FirstPass,
    /// The second passes over one bucket (a task per bucket).
    SecondPass,
    /// The contacts table and the contact days, from every bucket in
    /// order (one task).
    WriteContacts,
}

/// What every task of a job reads: the run's configuration and what the
/// client has learnt so far. Carried in the plan, as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Spec {
    cfg: PipelineConfig,
    /// The staging folder, under the run's folder.
    staging: PathBuf,
    /// Whether the log's contact ids are texts (else integers).
    text_ids: bool,
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

/// The output of a task: one row per file or bucket done.
fn done_schema(what: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(what, DataType::Int64, false),
        Field::new("result", DataType::Utf8, false),
    ]))
}

/// The column every contact's bucket is in, between the read and the
/// first passes.
const BUCKET_COLUMN: &str = "_bucket";

fn output_schema(task: Task, spec: &Spec) -> SchemaRef {
    match task {
        Task::ReadStats => done_schema("file"),
        Task::ReadContacts => {
            let mut fields: Vec<Field> = spec
                .contacts_in()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.push(Field::new(BUCKET_COLUMN, DataType::Int64, false));
            Arc::new(Schema::new(fields))
        }
        Task::FirstPass | Task::SecondPass | Task::WriteContacts => done_schema("bucket"),
    }
}

fn parse_spec(text: &str) -> datafusion::error::Result<Spec> {
    serde_json::from_str(text).map_err(|e| DataFusionError::Plan(format!("a recur task: {e}")))
}

/// A task of a cluster run as a logical plan node: a leaf (the reads, the
/// second passes) or over the reads (the first passes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskNode {
    task: Task,
    /// The [`Spec`], as JSON.
    spec: String,
    /// Partitions of a leaf.
    partitions: usize,
    input: Option<LogicalPlan>,
    schema: DFSchemaRef,
}

impl TaskNode {
    fn try_new(
        task: Task,
        spec: String,
        partitions: usize,
        input: Option<LogicalPlan>,
    ) -> datafusion::error::Result<TaskNode> {
        let schema = output_schema(task, &parse_spec(&spec)?);
        Ok(TaskNode {
            task,
            spec,
            partitions,
            input,
            schema: Arc::new(DFSchema::try_from(schema.as_ref().clone())?),
        })
    }

    fn into_plan(self) -> LogicalPlan {
        LogicalPlan::Extension(Extension {
            node: Arc::new(self),
        })
    }
}

impl PartialOrd for TaskNode {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        (self.task, &self.spec, self.partitions).partial_cmp(&(
            other.task,
            &other.spec,
            other.partitions,
        ))
    }
}

impl UserDefinedLogicalNodeCore for TaskNode {
    fn name(&self) -> &str {
        "RecurTask"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        self.input.iter().collect()
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "RecurTask: {:?}", self.task)
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        inputs: Vec<LogicalPlan>,
    ) -> datafusion::error::Result<Self> {
        TaskNode::try_new(
            self.task,
            self.spec.clone(),
            self.partitions,
            inputs.into_iter().next(),
        )
    }
}

/// Plans a [`TaskNode`] as a [`TaskExec`].
#[derive(Debug, Default, Clone, Copy)]
pub struct TaskPlanner;

#[async_trait]
impl ExtensionPlanner for TaskPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn datafusion::logical_expr::UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn datafusion::catalog::Session,
        _planning_ctx: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> datafusion::error::Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(task) = node.as_any().downcast_ref::<TaskNode>() else {
            return Ok(None);
        };
        Ok(Some(Arc::new(TaskExec::try_new(
            task.task,
            task.spec.clone(),
            task.partitions,
            physical_inputs.first().cloned(),
        )?)))
    }
}

/// A task of a cluster run as an operator (see the module docs).
#[derive(Debug)]
pub struct TaskExec {
    task: Task,
    spec: String,
    partitions: usize,
    input: Option<Arc<dyn ExecutionPlan>>,
    properties: Arc<PlanProperties>,
}

impl TaskExec {
    fn try_new(
        task: Task,
        spec: String,
        partitions: usize,
        input: Option<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::error::Result<TaskExec> {
        let schema = output_schema(task, &parse_spec(&spec)?);
        let partitions = match &input {
            Some(input) => input.properties().partitioning.partition_count(),
            None => partitions,
        };
        Ok(TaskExec {
            task,
            spec,
            partitions,
            input,
            properties: Arc::new(PlanProperties::new(
                EquivalenceProperties::new(schema),
                Partitioning::UnknownPartitioning(partitions.max(1)),
                EmissionType::Final,
                Boundedness::Bounded,
            )),
        })
    }
}

impl DisplayAs for TaskExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "RecurTaskExec: {:?}", self.task)
    }
}

impl ExecutionPlan for TaskExec {
    fn name(&self) -> &'static str {
        "RecurTaskExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        // the first passes take whole buckets: the shuffle by bucket
        let keys = self
            .input
            .as_ref()
            .and_then(|i| col(BUCKET_COLUMN, &i.schema()).ok());
        match keys {
            Some(k) => {
                InputDistributionRequirements::new(vec![Distribution::KeyPartitioned(vec![k])])
            }
            None => InputDistributionRequirements::new(vec![]),
        }
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.input.iter().collect()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> datafusion::error::Result<TreeNodeRecursion>,
    ) -> datafusion::error::Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(TaskExec::try_new(
            self.task,
            self.spec.clone(),
            self.partitions,
            children.into_iter().next(),
        )?))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> datafusion::error::Result<SendableRecordBatchStream> {
        let spec = parse_spec(&self.spec)?;
        let schema = self.schema();
        let input = match &self.input {
            Some(i) => Some(i.execute(partition, context)?),
            None => None,
        };
        let task = self.task;
        let out = schema.clone();
        let fut = async move {
            let external = |e: Error| DataFusionError::External(Box::new(e));
            let batches = match (task, input) {
                (Task::ReadStats, _) => vec![read_stats(&spec, partition).await.map_err(external)?],
                (Task::ReadContacts, _) => read_contacts(&spec, partition, &out)
                    .await
                    .map_err(external)?,
                (Task::FirstPass, Some(input)) => {
                    let batches: Vec<RecordBatch> = input.try_collect().await?;
                    vec![first_passes(&spec, batches).await.map_err(external)?]
                }
                (Task::SecondPass, _) => {
                    vec![second_passes(&spec, partition).await.map_err(external)?]
                }
                (Task::WriteContacts, _) => {
                    let written = write_contacts(&spec).await.map_err(external)?;
                    vec![done("bucket", 0, written).map_err(external)?]
                }
                (Task::FirstPass, None) => {
                    return Err(DataFusionError::Internal(
                        "the first passes read the contacts".into(),
                    ));
                }
            };
            Ok::<_, DataFusionError>(futures::stream::iter(batches.into_iter().map(Ok)))
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::once(fut).try_flatten().boxed(),
        )))
    }
}

/// Encodes a [`TaskExec`] or [`TaskNode`]: its task, spec and partitions
/// (the input is the node's child).
#[derive(Serialize, Deserialize)]
struct Encoded {
    task: Task,
    spec: String,
    partitions: usize,
}

/// The codec of [`TaskNode`] and [`TaskExec`], for `datafusion-proto`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TaskCodec;

impl TaskCodec {
    fn read(buf: &[u8]) -> datafusion::error::Result<Encoded> {
        serde_json::from_slice(buf).map_err(|e| DataFusionError::Plan(format!("a recur task: {e}")))
    }

    fn write(e: &Encoded, buf: &mut Vec<u8>) -> datafusion::error::Result<()> {
        serde_json::to_writer(buf, e).map_err(|e| DataFusionError::External(Box::new(e)))
    }

    /// The node in `buf`, over `inputs`.
    pub fn decode_node(buf: &[u8], inputs: &[LogicalPlan]) -> datafusion::error::Result<Extension> {
        let e = Self::read(buf)?;
        Ok(Extension {
            node: Arc::new(TaskNode::try_new(
                e.task,
                e.spec,
                e.partitions,
                inputs.first().cloned(),
            )?),
        })
    }

    /// Encodes `node` if it is a [`TaskNode`] (else false).
    pub fn encode_node(node: &Extension, buf: &mut Vec<u8>) -> datafusion::error::Result<bool> {
        let Some(t) = node.node.as_any().downcast_ref::<TaskNode>() else {
            return Ok(false);
        };
        Self::write(
            &Encoded {
                task: t.task,
                spec: t.spec.clone(),
                partitions: t.partitions,
            },
            buf,
        )?;
        Ok(true)
    }

    /// The operator in `buf`, over `inputs`.
    pub fn decode_exec(
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let e = Self::read(buf)?;
        Ok(Arc::new(TaskExec::try_new(
            e.task,
            e.spec,
            e.partitions,
            inputs.first().cloned(),
        )?))
    }

    /// Encodes `node` if it is a [`TaskExec`] (else false).
    pub fn encode_exec(
        node: &Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
    ) -> datafusion::error::Result<bool> {
        let Some(t) = node.downcast_ref::<TaskExec>() else {
            return Ok(false);
        };
        Self::write(
            &Encoded {
                task: t.task,
                spec: t.spec.clone(),
                partitions: t.partitions,
            },
            buf,
        )?;
        Ok(true)
    }
}

// ---- the executors' side --------------------------------------------------

/// A one-row result: `what` done, with `result` (JSON).
fn done(what: &str, n: usize, result: String) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        done_schema(what),
        vec![
            Arc::new(Int64Array::from(vec![n as i64])),
            Arc::new(StringArray::from(vec![result])),
        ],
    )?)
}

fn to_json<T: Serialize>(path: &Path, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn from_json<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads file `j` of the log into a bucket of its own: its contacts,
/// numbered within the file, and what reading it gave.
async fn read_one(spec: &Spec, j: usize) -> Result<(Vec<RecordBatch>, FileRead)> {
    let cfg = &spec.cfg;
    let prep = ingest::prepare(cfg)?;
    let sink = Arc::new(crate::buckets::Sink::new(
        prep.schema.clone(),
        Vec::new(),
        cfg.columns.agent.is_some(),
    )?);
    let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ctx = crate::session::session(cfg)?;
    let file = ingest::read_file(&ctx, cfg, &prep, j, 0, &sink, &read).await?;
    let assigned = ingest::assigned_ids(&prep, j..j + 1, vec![0])?;
    let sink = Arc::into_inner(sink).expect("every reading task has ended");
    let mut buckets = sink.finish(assigned.as_ref())?;
    let batches = buckets.take(0, 1, true)?.into_iter().flatten().collect();
    Ok((batches, file))
}

/// Job 1's task: file `j`'s counts.
async fn read_stats(spec: &Spec, j: usize) -> Result<RecordBatch> {
    let (_, file) = read_one(spec, j).await?;
    done("file", j, to_json(&spec.staging, &file)?)
}

/// Job 2's read: file `j`'s contacts, their row numbers made the log's
/// (the file's index in the high bits: files in order, rows in order
/// within each) and their bucket's key added.
async fn read_contacts(spec: &Spec, j: usize, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    let (batches, _) = read_one(spec, j).await?;
    let offset = (j as i64) << FILE_ROW_BITS;
    batches
        .into_iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| {
            let mut columns = b.columns().to_vec();
            let row_idx = b.schema().index_of("_row")?;
            let rows = b.column(row_idx).as_primitive::<Int64Type>();
            columns[row_idx] = Arc::new(Int64Array::from_iter_values(
                rows.values().iter().map(|r| offset | r),
            ));
            let customer = b
                .column_by_name("customer_id")
                .expect("contacts_in")
                .as_string::<i32>();
            columns.push(Arc::new(Int64Array::from_iter_values(customer.iter().map(
                |c| spec.keys[crate::buckets::bucket_of(&spec.bounds, c.unwrap_or(""))],
            ))));
            Ok(RecordBatch::try_new(schema.clone(), columns)?)
        })
        .collect()
}

/// Bits of a row number for the row within its file.
const FILE_ROW_BITS: u32 = 40;

/// The first passes over every bucket in `batches` (one partition of the
/// shuffle by bucket), each in turn.
async fn first_passes(spec: &Spec, batches: Vec<RecordBatch>) -> Result<RecordBatch> {
    let mut by_bucket: BTreeMap<usize, Vec<RecordBatch>> = BTreeMap::new();
    for batch in batches.iter().filter(|b| b.num_rows() > 0) {
        let keys = batch
            .column_by_name(BUCKET_COLUMN)
            .expect("the read's output")
            .as_primitive::<Int64Type>();
        let contacts = batch.project(&(0..batch.num_columns() - 1).collect::<Vec<_>>())?;
        for (b, key) in spec.keys.iter().enumerate() {
            let mask =
                datafusion::arrow::compute::kernels::cmp::eq(keys, &Int64Array::new_scalar(*key))?;
            if mask.true_count() > 0 {
                by_bucket
                    .entry(b)
                    .or_default()
                    .push(filter_record_batch(&contacts, &mask)?);
            }
        }
    }
    let mut listed = Vec::new();
    for (b, contacts) in by_bucket {
        listed.push((b, first_bucket(spec, b, contacts).await?));
    }
    done(
        "bucket",
        listed.first().map_or(usize::MAX, |l| l.0),
        to_json(&spec.staging, &listed)?,
    )
}

/// What one bucket's first passes staged besides the tables' rows.
#[derive(Serialize, Deserialize)]
struct FirstStaged {
    contacts: u64,
    /// Batches per partition of each counted table.
    parts: BTreeMap<String, Vec<usize>>,
    caps: BTreeMap<String, u64>,
    contacters: Contacters,
    sort_spills: (u64, u64),
}

/// The counted tables a bucket's first passes give, by their file names.
fn counted_tables(c: &mut Counted) -> [(&'static str, &mut crate::session::Collected); 5] {
    [
        ("repeat_counts", &mut c.repeat_counts),
        ("reason_days", &mut c.reason_days),
        ("reason_precedents", &mut c.reason_precedents),
        ("failure_counts", &mut c.failure_counts),
        ("pair_counts", &mut c.pair_counts),
    ]
}

/// Bucket `b`'s first passes over `contacts`, staged in its folder (also
/// run by the client for a bucket no contact fell in). Returns its
/// contacts.
pub(crate) async fn first_bucket(spec: &Spec, b: usize, contacts: Vec<RecordBatch>) -> Result<u64> {
    let cfg = &spec.cfg;
    let dir = spec.bucket_dir(b);
    // (a task run again starts afresh)
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let n: u64 = contacts.iter().map(|c| c.num_rows() as u64).sum();
    let mut s = RunSession::new(cfg)?;
    let mut beside = Beside {
        null_check: None,
        trends: spec.trends(),
    };
    let buckets = Buckets::from_batches(spec.contacts_in(), contacts);
    let first = first_pass::run(
        &mut s,
        cfg,
        buckets,
        &spec.params(),
        &mut beside,
        ContactsTo::Staged(dir.clone()),
        &NoProgress,
    )
    .await?;
    let mut counted = first.counted;
    let mut parts = BTreeMap::new();
    for (name, table) in counted_tables(&mut counted) {
        let (schema, p) = std::mem::take(table).into_parts();
        let schema = schema.expect("one bucket passed");
        parts.insert(name.to_string(), p.iter().map(Vec::len).collect());
        let batches: Vec<RecordBatch> = p.into_iter().flatten().collect();
        write_ipc(&dir.join(format!("{name}.arrow")), &schema, &batches)?;
    }
    write_rows(&dir.join("exposure.arrow"), &counted.exposure_rows)?;
    if let Some(trends) = beside.trends.as_mut() {
        for (i, rows) in trends.take_rows().into_iter().enumerate() {
            write_rows(
                &dir.join(format!("trends-{i}-pair_counts.arrow")),
                &rows.pair_counts,
            )?;
            write_rows(
                &dir.join(format!("trends-{i}-exposure.arrow")),
                &rows.exposure,
            )?;
        }
    }
    let staged = FirstStaged {
        contacts: n,
        parts,
        caps: counted.caps,
        contacters: counted.contacters,
        sort_spills: counted.sort_spills,
    };
    let path = dir.join("first.json");
    write_atomic(&path, to_json(&path, &staged)?.as_bytes())?;
    Ok(n)
}

/// The second passes' task `b`: bucket `b`'s second passes.
async fn second_passes(spec: &Spec, b: usize) -> Result<RecordBatch> {
    let cfg = &spec.cfg;
    let second = spec.second.as_ref().ok_or_else(|| Error::Cluster {
        reason: "the second passes were sent no ranking".into(),
    })?;
    let dir = spec.bucket_dir(b);
    let (schema, parts) = read_annotated(&dir)?;
    let (narrow_schema, narrow_parts) = spill::later_columns(&schema, &parts)?;
    drop(parts);
    let annotated = Arc::new(SortedContactsExec::try_new(
        narrow_schema.clone(),
        narrow_parts,
    )?);
    let params = spec.params();
    let plan = second_pass::Plan::of(
        second.steps.clone(),
        second.pairs.clone(),
        second.horizon_s,
        &params,
    );
    let path = spec.staging.join("contacters.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut contacters: Contacters = from_json(&path, &text)?;
    let before = contacters.listed_len();
    let mut beside = Beside {
        null_check: None,
        trends: spec.trends(),
    };
    let mut s = RunSession::new(cfg)?;
    // (the outreach triggers' SQL reads the clusters)
    let path = spec.staging.join("clusters.arrow");
    let (clusters_schema, clusters) = read_ipc(&path)?;
    s.register(
        "clusters",
        Arc::new(datafusion::catalog::MemTable::try_new(
            clusters_schema,
            vec![clusters],
        )?),
    )?;
    let (found, _) = second_pass::bucket(
        &mut s,
        &plan,
        b,
        &annotated,
        &narrow_schema,
        &None,
        &mut beside,
        &mut contacters,
    )
    .await?;
    let out = dir.join("second");
    if out.exists() {
        std::fs::remove_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    }
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let (occ_schema, occ) = found.occurrences;
    write_ipc(
        &out.join("occurrences.arrow"),
        &occ_schema,
        &occ.into_iter().flatten().collect::<Vec<_>>(),
    )?;
    let (f_schema, f) = found.followups;
    write_ipc(
        &out.join("followups.arrow"),
        &f_schema,
        &f.into_iter().flatten().collect::<Vec<_>>(),
    )?;
    let (t_schema, t) = found.triggers.read()?;
    write_ipc(&out.join("triggers.arrow"), &t_schema, &t)?;
    write_rows(&out.join("patterns.arrow"), &found.patterns)?;
    if let Some(trends) = beside.trends.as_mut() {
        for (i, rows) in trends.take_rows().into_iter().enumerate() {
            write_rows(
                &out.join(format!("trends-{i}-patterns.arrow")),
                &rows.patterns,
            )?;
        }
    }
    let path = out.join("second.json");
    let part = contacters.fill_part(b, before);
    write_atomic(&path, to_json(&path, &part)?.as_bytes())?;
    done("bucket", b, String::from("{}"))
}

/// What the contacts table's task wrote: the table, and the contact days.
#[derive(Serialize, Deserialize)]
struct ContactsWritten {
    tables: BTreeMap<String, TableInfo>,
    /// The days written, YYYY-MM-DD.
    days: Vec<String>,
}

/// The contacts table (and, in an output folder of many runs, the contact
/// days) from every bucket's annotated contacts, in bucket order; returns
/// what was written, as JSON.
async fn write_contacts(spec: &Spec) -> Result<String> {
    let cfg = &spec.cfg;
    let mut s = RunSession::new(cfg)?;
    let mut days = match &cfg.history {
        Some(root) => Some(crate::report::contact_days::ContactDays::load(root, cfg)?),
        None => None,
    };
    let mut writer = None;
    for b in 0..spec.keys.len() {
        let (schema, parts) = read_annotated(&spec.bucket_dir(b))?;
        first_pass::write_contacts(&mut s, cfg, &mut writer, &mut days, &schema, &parts).await?;
    }
    let mut tables = BTreeMap::new();
    let days = match writer {
        Some(w) => w.finish(&mut tables).await?,
        None => Vec::new(),
    };
    let written = ContactsWritten {
        tables,
        days: days.iter().map(|d| d.to_string()).collect(),
    };
    to_json(&spec.staging, &written)
}

/// A bucket's annotated contacts as its first passes staged them: its
/// partitions in order.
fn read_annotated(dir: &Path) -> Result<(SchemaRef, Vec<Vec<RecordBatch>>)> {
    let mut parts = Vec::new();
    let mut schema = None;
    for p in 0.. {
        let path = dir.join(format!("part-{p}.arrow"));
        if !path.exists() {
            break;
        }
        // (written by the first passes as Arrow IPC files, see ContactsTo)
        let io = |e: std::io::Error| Error::io(&path, e);
        let reader = datafusion::arrow::ipc::reader::FileReader::try_new(
            std::io::BufReader::new(std::fs::File::open(&path).map_err(io)?),
            None,
        )?;
        schema.get_or_insert(reader.schema());
        let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
        parts.push(batches);
    }
    let schema = schema.ok_or_else(|| Error::Cluster {
        reason: format!("no annotated contacts in {}", dir.display()),
    })?;
    Ok((schema, parts))
}

// ---- files ------------------------------------------------------------------

fn write_ipc(path: &Path, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    let io = |e: std::io::Error| Error::io(path, e);
    let partial = path.with_extension("partial");
    let file = std::fs::File::create(&partial).map_err(io)?;
    // (the stream format: batches of one file may carry other dictionaries)
    let mut w = datafusion::arrow::ipc::writer::StreamWriter::try_new(
        std::io::BufWriter::new(file),
        schema,
    )?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    drop(w);
    std::fs::rename(&partial, path).map_err(io)
}

/// `rows` of one schema (none: an empty file without columns).
fn write_rows(path: &Path, rows: &[RecordBatch]) -> Result<()> {
    let schema = rows
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(|| Arc::new(Schema::empty()));
    write_ipc(path, &schema, rows)
}

fn read_ipc(path: &Path) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader =
        datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::BufReader::new(file), None)?;
    let schema = reader.schema();
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes).map_err(|e| Error::io(&partial, e))?;
    std::fs::rename(&partial, path).map_err(|e| Error::io(path, e))
}

// ---- the client's side --------------------------------------------------------

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
        min_ts_us: None,
        max_ts_us: None,
        bounds: Vec::new(),
        keys: Vec::new(),
        second: None,
    };
    let json = |spec: &Spec| to_json(&staging, spec);
    let rows = run_job(
        &ctx,
        &url,
        TaskNode::try_new(Task::ReadStats, json(&spec)?, prep.files(), None)?.into_plan(),
        "reading the log",
    )
    .await?;
    let mut reads = Vec::new();
    for (j, text) in results(&rows) {
        reads.push(
            from_json::<FileRead>(&staging, &text).map_err(|e| Error::Cluster {
                reason: format!("file {j}'s counts: {e}"),
            })?,
        );
    }
    let stats = ingest::finish_stats(cfg, &prep, reads)?;
    s.add_seconds("ingest", t);
    let cfg = &PipelineConfig {
        as_of_us: cfg
            .as_of_us
            .or(stats.max_ts_us)
            .or(Some(started.timestamp_micros())),
        ..cfg.clone()
    };
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
    let (trends, no_trends) = match Trends::new(cfg, stats.min_ts_us) {
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
            // no contact fell in this bucket
            first_bucket(&spec, b, Vec::new()).await?;
        }
        absorb_first(&dir, &mut counted, beside.trends.as_mut())?;
    }
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
        rest: Rest::Cluster(Cluster {
            contacts,
            ctx,
            url,
            spec,
        }),
    };
    let summary = crate::pipeline::after_first(&mut s, cfg, after, progress).await;
    // (the staging folder goes whether the run succeeded or not)
    let _ = std::fs::remove_dir_all(&staging);
    summary
}

/// Sums bucket `dir`'s first passes into `counted` (and the trends').
fn absorb_first(dir: &Path, counted: &mut Counted, trends: Option<&mut Trends>) -> Result<()> {
    let path = dir.join("first.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let staged: FirstStaged = from_json(&path, &text)?;
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
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            contacters.add_fill(b, from_json(&path, &text)?);
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
