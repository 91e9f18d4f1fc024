//! [`TimelineExec`]: the per-customer pass as a DataFusion operator.
//!
//! The operator declares what it needs rather than arranging it itself: its
//! input must be key-partitioned on `customer_id` and, within each partition,
//! ordered by (customer_id, ts, contact_id, _row). DataFusion's physical
//! optimizer (EnforceDistribution, EnforceSorting) inserts the repartition and
//! sort, on one machine or — with the same plan — on a distributed scheduler.
//! Each partition is processed independently ([`super::process`]) and comes
//! out as one batch (callers slice it if they want smaller ones).

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::compute::{SortOptions, concat_batches};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{
    EquivalenceProperties, LexRequirement, OrderingRequirements, PhysicalSortRequirement,
};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::expressions::col;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, Distribution, ExecutionPlan,
    InputDistributionRequirements, Partitioning, PhysicalExpr, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};

use super::{
    Mode, TimelineParams, contacts_schema, followups_schema, pair_counts_schema, process,
    sequence_counts_schema, sequences_schema,
};

/// The schema of what `mode` makes of a `contacts_in` input of `input`'s
/// schema.
pub(crate) fn output_schema(mode: Mode, input: &SchemaRef) -> SchemaRef {
    match mode {
        Mode::Contacts => contacts_schema(input),
        Mode::Followups => followups_schema(input),
        Mode::Sequences => sequences_schema(input),
        Mode::SequenceCounts => sequence_counts_schema(),
        Mode::PairCounts => pair_counts_schema(),
        Mode::Exposure => super::exposure_schema(),
    }
}

/// Whether `schema` has the columns the pass in `mode` reads, of the types
/// it reads them as (`contacts_in`'s): a plan error naming the column if
/// not. ([`Mode::Contacts`] also passes `agent` through.)
pub(crate) fn check_input(mode: Mode, schema: &Schema) -> Result<()> {
    schema.field_with_name("contact_id")?;
    if mode == Mode::Contacts {
        schema.field_with_name("agent")?;
    }
    // the types the pass reads its columns as (a Parquet scan, for one,
    // gives strings as views unless told otherwise)
    for (name, ok) in [
        (
            "customer_id",
            &(|t: &DataType| t == &DataType::Utf8) as &dyn Fn(&DataType) -> bool,
        ),
        ("reason", &|t| t == &DataType::Utf8),
        ("channel", &|t| t == &DataType::Utf8),
        ("ts", &|t| {
            matches!(t, DataType::Timestamp(TimeUnit::Microsecond, _))
        }),
        ("_row", &|t| t == &DataType::Int64),
    ] {
        let found = schema.field_with_name(name)?.data_type();
        if !ok(found) {
            return Err(DataFusionError::Plan(format!(
                "the timeline pass reads {name} as in contacts_in, not as {found}"
            )));
        }
    }
    Ok(())
}

/// The per-customer timeline operator.
#[derive(Debug, Clone)]
pub struct TimelineExec {
    input: Arc<dyn ExecutionPlan>,
    mode: Mode,
    params: TimelineParams,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl TimelineExec {
    /// Wraps `input` (a `contacts_in` plan).
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        mode: Mode,
        params: TimelineParams,
    ) -> Result<Self> {
        let in_schema = input.schema();
        check_input(mode, &in_schema)?;
        let schema = output_schema(mode, &in_schema);
        let partitions = input.properties().partitioning.partition_count();
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Ok(TimelineExec {
            input,
            mode,
            params,
            schema,
            properties,
        })
    }

    /// The table the pass produces.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The pass's parameters.
    pub fn params(&self) -> &TimelineParams {
        &self.params
    }

    fn key_exprs(&self) -> Result<Vec<Arc<dyn PhysicalExpr>>> {
        let s = self.input.schema();
        Ok(vec![col("customer_id", &s)?])
    }

    fn ordering(&self) -> Result<LexRequirement> {
        let s = self.input.schema();
        let asc = SortOptions {
            descending: false,
            nulls_first: false,
        };
        let reqs = ["customer_id", "ts", "contact_id", "_row"]
            .iter()
            .map(|c| Ok(PhysicalSortRequirement::new(col(c, &s)?, Some(asc))))
            .collect::<Result<Vec<_>>>()?;
        LexRequirement::new(reqs)
            .ok_or_else(|| DataFusionError::Internal("empty ordering requirement".into()))
    }
}

impl DisplayAs for TimelineExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "TimelineExec: mode={:?}, repeat_window_us={}, cluster_window_us={}",
            self.mode, self.params.repeat_window_us, self.params.cluster_window_us
        )
    }
}

impl ExecutionPlan for TimelineExec {
    fn name(&self) -> &'static str {
        "TimelineExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        match self.key_exprs() {
            Ok(keys) => {
                InputDistributionRequirements::new(vec![Distribution::KeyPartitioned(keys)])
            }
            Err(_) => InputDistributionRequirements::new(vec![Distribution::SinglePartition]),
        }
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        vec![self.ordering().ok().map(OrderingRequirements::new)]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "TimelineExec takes one child".into(),
            ));
        }
        Ok(Arc::new(TimelineExec::try_new(
            children.swap_remove(0),
            self.mode,
            self.params.clone(),
        )?))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let in_schema = self.input.schema();
        let out_schema = self.schema.clone();
        let mode = self.mode;
        let params = self.params.clone();
        let fut = async move {
            let mut batches: Vec<_> = input.try_collect().await?;
            let all = if batches.len() == 1 {
                batches.swap_remove(0)
            } else {
                let all = concat_batches(&in_schema, &batches)?;
                drop(batches);
                all
            };
            let out =
                process(&all, mode, &params).map_err(|e| DataFusionError::External(Box::new(e)))?;
            Ok::<_, DataFusionError>(futures::stream::iter([Ok(out)]))
        };
        let stream = futures::stream::once(fut).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            out_schema,
            stream.boxed(),
        )))
    }
}
