//! A cluster run's tasks in plans: [`TaskNode`] in the logical plan the
//! client sends, [`TaskExec`] the operator the scheduler plans it as
//! ([`TaskPlanner`]) and ships to the executors, both serialised by
//! [`TaskCodec`] (the task and its [`Spec`] as JSON; an input is the
//! node's child). The first passes' operator requires its input
//! partitioned by bucket, which Ballista makes a shuffle.
//!
//! Input: a [`Task`] and its [`Spec`]. Output: the task's rows (contacts
//! with their bucket, for the read before the shuffle; else one row per
//! file or bucket done, see [`super::work`]).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
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
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::Spec;
use super::work;
use crate::error::Error;

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

/// The output of a task: one row per file or bucket done.
pub(super) fn done_schema(what: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(what, DataType::Int64, false),
        Field::new("result", DataType::Utf8, false),
    ]))
}

/// The column every contact's bucket is in, between the read and the
/// first passes.
pub(super) const BUCKET_COLUMN: &str = "_bucket";

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
        // (how many buckets the task passed over)
        Task::FirstPass => done_schema("buckets"),
        Task::SecondPass | Task::WriteContacts => done_schema("bucket"),
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
    pub(super) fn try_new(
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

    pub(super) fn into_plan(self) -> LogicalPlan {
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
        let input = match physical_inputs.first() {
            Some(input) => input.clone(),
            None => items(task.partitions)?,
        };
        Ok(Some(Arc::new(TaskExec::try_new(
            task.task,
            task.spec.clone(),
            task.partitions,
            input,
        )?)))
    }
}

/// The work items of a task that reads no other stage (the files of the
/// reads, the buckets of the second passes): `n` partitions of one row
/// each, the item's number. A scheduler gives each task only its own
/// partitions of such a source (Ballista restricts in-memory sources to a
/// task's partitions, and would leave a leaf of recur's own whole: every
/// task would do every item).
fn items(n: usize) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    let schema = Arc::new(Schema::new(vec![Field::new(ITEM, DataType::Int64, false)]));
    let parts = (0..n as i64)
        .map(|i| {
            Ok(vec![RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(datafusion::arrow::array::Int64Array::from(vec![
                    i,
                ]))],
            )?])
        })
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    Ok(datafusion::datasource::memory::MemorySourceConfig::try_new_exec(&parts, schema, None)?)
}

/// The column of a task's work items.
const ITEM: &str = "item";

/// A task of a cluster run as an operator (see the module docs).
#[derive(Debug)]
pub struct TaskExec {
    task: Task,
    spec: String,
    /// The partitions the logical node asked for (encoded as given).
    partitions: usize,
    /// The work items, or for the first passes the contacts.
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl TaskExec {
    fn try_new(
        task: Task,
        spec: String,
        partitions: usize,
        input: Arc<dyn ExecutionPlan>,
    ) -> datafusion::error::Result<TaskExec> {
        let schema = output_schema(task, &parse_spec(&spec)?);
        let out = input.properties().partitioning.partition_count();
        Ok(TaskExec {
            task,
            spec,
            partitions,
            input,
            properties: Arc::new(PlanProperties::new(
                EquivalenceProperties::new(schema),
                Partitioning::UnknownPartitioning(out),
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
        // the first passes take whole buckets: the shuffle by bucket; the
        // others, their items as they are
        let keys = (self.task == Task::FirstPass)
            .then(|| col(BUCKET_COLUMN, &self.input.schema()).ok())
            .flatten();
        InputDistributionRequirements::new(vec![match keys {
            Some(k) => Distribution::KeyPartitioned(vec![k]),
            None => Distribution::UnspecifiedDistribution,
        }])
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        // (the first passes' input is shuffled by bucket even when it comes
        // in one partition, as a log of one file does: one task per bucket)
        vec![self.task == Task::FirstPass]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
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
        let [input] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("a recur task takes one input".into()))?;
        Ok(Arc::new(TaskExec::try_new(
            self.task,
            self.spec.clone(),
            self.partitions,
            input,
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
        let input = self.input.execute(partition, context)?;
        let task = self.task;
        let out = schema.clone();
        let fut = async move {
            // (the input read on the executor's runtime, the work on one of
            // its own: see `isolated`)
            let input: Vec<RecordBatch> = input.try_collect().await?;
            let batches = isolated(move || run_task(task, spec, input, out))
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            Ok::<_, DataFusionError>(futures::stream::iter(batches.into_iter().map(Ok)))
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::once(fut).try_flatten().boxed(),
        )))
    }
}

/// Task `task` of `spec` over its `input`: the items it is given (the
/// first passes: the shuffle's rows), its rows of `schema`.
async fn run_task(
    task: Task,
    spec: Spec,
    input: Vec<RecordBatch>,
    schema: SchemaRef,
) -> crate::error::Result<Vec<RecordBatch>> {
    if task == Task::FirstPass {
        return Ok(vec![work::first_passes(&spec, input).await?]);
    }
    let mut out = Vec::new();
    for item in input.iter().flat_map(|b| {
        b.column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .values()
            .to_vec()
    }) {
        let item = item as usize;
        match task {
            Task::ReadStats => out.push(work::read_stats(&spec, item).await?),
            Task::ReadContacts => out.extend(work::read_contacts(&spec, item, &schema).await?),
            Task::SecondPass => out.push(work::second_passes(&spec, item).await?),
            Task::WriteContacts => {
                let written = work::write_contacts(&spec).await?;
                out.push(work::done("bucket", 0, written)?);
            }
            Task::FirstPass => unreachable!("above"),
        }
    }
    Ok(out)
}

/// Runs `work` on a runtime of its own, on a thread of its own. A task's
/// work is CPU-bound for seconds at a time (the sort, the passes, on the
/// session's thread pool); on the executor's runtime it would hold up the
/// executor's heartbeats and its shuffle service, and a scheduler that
/// misses heartbeats takes the executor for dead.
async fn isolated<F, Fut, T>(work: F) -> crate::error::Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = crate::error::Result<T>>,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .map_err(|e| Error::io("a task's runtime", e))?;
        runtime.block_on(work())
    })
    .await
    .map_err(|e| Error::Cluster {
        reason: format!("a task ended abnormally: {e}"),
    })?
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

    fn write(
        task: Task,
        spec: &str,
        partitions: usize,
        buf: &mut Vec<u8>,
    ) -> datafusion::error::Result<()> {
        let e = Encoded {
            task,
            spec: spec.to_string(),
            partitions,
        };
        serde_json::to_writer(buf, &e).map_err(|e| DataFusionError::External(Box::new(e)))
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

    /// Encodes `node`, a [`TaskNode`].
    pub fn encode_node(node: &Extension, buf: &mut Vec<u8>) -> datafusion::error::Result<()> {
        let Some(t) = node.node.as_any().downcast_ref::<TaskNode>() else {
            return Err(DataFusionError::NotImplemented(format!(
                "recur's task codec encodes task nodes, not {}",
                node.node.name()
            )));
        };
        Self::write(t.task, &t.spec, t.partitions, buf)
    }

    /// The operator in `buf`, over `inputs`.
    pub fn decode_exec(
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let e = Self::read(buf)?;
        let input = inputs
            .first()
            .cloned()
            .ok_or_else(|| DataFusionError::Plan("a recur task without its input".into()))?;
        Ok(Arc::new(TaskExec::try_new(
            e.task,
            e.spec,
            e.partitions,
            input,
        )?))
    }

    /// Encodes `node`, a [`TaskExec`].
    pub fn encode_exec(
        node: &Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
    ) -> datafusion::error::Result<()> {
        let Some(t) = node.downcast_ref::<TaskExec>() else {
            return Err(DataFusionError::NotImplemented(format!(
                "recur's task codec encodes task operators, not {}",
                node.name()
            )));
        };
        Self::write(t.task, &t.spec, t.partitions, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PipelineConfig, RunOptions};
    use ballista_scheduler::planner::{DefaultDistributedPlanner, DistributedPlanner};
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::SessionContext;

    fn spec() -> Spec {
        let cfg = PipelineConfig::from_raw(RunOptions {
            inputs: Some(vec!["log.parquet".into()]),
            ..Default::default()
        })
        .unwrap();
        Spec::for_test(cfg, 3)
    }

    /// The first passes' job, as a scheduler splits it under the pinned
    /// settings: a stage of read tasks over the files as items, one
    /// partition each, the contacts shuffled by bucket; then the first
    /// passes over the shuffle's partitions.
    #[tokio::test]
    async fn the_first_passes_read_a_shuffle_by_bucket_of_files_read_once() {
        let ctx = SessionContext::new_with_state(super::super::super::session_state(
            super::super::super::cluster_config(3),
        ));
        let config = ctx.state().config_options().clone();
        let json = serde_json::to_string(&spec()).unwrap();
        let read = TaskNode::try_new(Task::ReadContacts, json.clone(), 60, None).unwrap();
        let first = TaskNode::try_new(Task::FirstPass, json, 0, Some(read.into_plan())).unwrap();
        let plan = ctx
            .state()
            .create_physical_plan(&first.into_plan())
            .await
            .unwrap();
        let stages = DefaultDistributedPlanner::new()
            .plan_query_stages(&"job".into(), plan, &config)
            .unwrap();
        let shown: Vec<String> = stages
            .iter()
            .map(|s| {
                displayable(s.as_ref() as &dyn ExecutionPlan)
                    .indent(false)
                    .to_string()
            })
            .collect();
        assert_eq!(shown.len(), 2, "{shown:#?}");
        let read: Vec<&str> = shown[0].lines().map(str::trim).collect();
        assert_eq!(read.len(), 3, "{shown:#?}");
        assert!(
            read[0].contains("ShuffleWriterExec") && read[0].contains("Hash([_bucket@7], 3)"),
            "{shown:#?}"
        );
        assert!(
            read[1].starts_with("RecurTaskExec: ReadContacts"),
            "{shown:#?}"
        );
        // the files as 60 partitions of an in-memory source, which a
        // scheduler restricts to each task's own
        assert!(
            read[2].starts_with("DataSourceExec: partitions=60"),
            "{shown:#?}"
        );
        assert_eq!(
            stages[0]
                .shuffle_output_partitioning()
                .map(|p| p.partition_count()),
            Some(3)
        );
        // a log of one file is shuffled into the buckets all the same
        let json = serde_json::to_string(&spec()).unwrap();
        let read = TaskNode::try_new(Task::ReadContacts, json.clone(), 1, None).unwrap();
        let first = TaskNode::try_new(Task::FirstPass, json, 0, Some(read.into_plan())).unwrap();
        let plan = ctx
            .state()
            .create_physical_plan(&first.into_plan())
            .await
            .unwrap();
        let stages = DefaultDistributedPlanner::new()
            .plan_query_stages(&"job".into(), plan, &config)
            .unwrap();
        assert_eq!(stages.len(), 2);
        assert_eq!(
            stages[0]
                .shuffle_output_partitioning()
                .map(|p| p.partition_count()),
            Some(3)
        );
    }
}
