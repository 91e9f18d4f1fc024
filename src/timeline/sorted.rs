//! The contacts, hash-partitioned on `customer_id` and sorted once.
//!
//! [`sort_plan`] is the repartition + sort that DataFusion's physical optimizer
//! would insert under every [`super::exec::TimelineExec`]; the pipeline runs it
//! once and keeps the result in a [`SortedContactsExec`], a leaf that declares
//! exactly that partitioning and ordering, so the optimizer inserts nothing
//! under the passes that read it. Each partition is kept as one batch, so a
//! pass reads it without copying.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::compute::{SortOptions, concat_batches};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::expressions::col;
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PhysicalExpr, PlanProperties,
    SendableRecordBatchStream,
};

/// The columns the pass orders each partition by.
pub const ORDER_COLUMNS: [&str; 4] = ["customer_id", "ts", "contact_id", "_row"];

/// Ascending, nulls last: the order the pass requires.
pub const ASC: SortOptions = SortOptions {
    descending: false,
    nulls_first: false,
};

fn ordering(schema: &SchemaRef) -> Result<LexOrdering> {
    let exprs = ORDER_COLUMNS
        .iter()
        .map(|c| Ok(PhysicalSortExpr::new(col(c, schema)?, ASC)))
        .collect::<Result<Vec<_>>>()?;
    LexOrdering::new(exprs).ok_or_else(|| DataFusionError::Internal("empty ordering".into()))
}

fn hash_partitioning(schema: &SchemaRef, partitions: usize) -> Result<Partitioning> {
    Ok(Partitioning::Hash(
        vec![col("customer_id", schema)?],
        partitions,
    ))
}

/// `input` (a `contacts_in` plan) hash-partitioned on `customer_id` into
/// `partitions` and sorted within each partition by [`ORDER_COLUMNS`].
pub fn sort_plan(
    input: Arc<dyn ExecutionPlan>,
    partitions: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = input.schema();
    let repartitioned = Arc::new(RepartitionExec::try_new(
        input,
        hash_partitioning(&schema, partitions)?,
    )?);
    Ok(Arc::new(
        SortExec::new(ordering(&schema)?, repartitioned).with_preserve_partitioning(true),
    ))
}

/// A leaf holding the output of [`sort_plan`], one batch per partition.
#[derive(Debug, Clone)]
pub struct SortedContactsExec {
    partitions: Arc<Vec<RecordBatch>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl SortedContactsExec {
    /// Takes the partitions [`sort_plan`] produced (each a list of batches).
    pub fn try_new(schema: SchemaRef, parts: Vec<Vec<RecordBatch>>) -> Result<Self> {
        let partitions = parts
            .into_iter()
            .map(|p| Ok(concat_batches(&schema, &p)?))
            .collect::<Result<Vec<_>>>()?;
        let eq = EquivalenceProperties::new_with_orderings(schema.clone(), [ordering(&schema)?]);
        let properties = Arc::new(PlanProperties::new(
            eq,
            hash_partitioning(&schema, partitions.len())?,
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(SortedContactsExec {
            partitions: Arc::new(partitions),
            schema,
            properties,
        })
    }

    /// Rows held.
    pub fn num_rows(&self) -> usize {
        self.partitions.iter().map(|b| b.num_rows()).sum()
    }

    /// Bytes held by the batches.
    pub fn memory_size(&self) -> usize {
        self.partitions
            .iter()
            .map(|b| b.get_array_memory_size())
            .sum()
    }
}

impl DisplayAs for SortedContactsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "SortedContactsExec: partitions={}, rows={}",
            self.partitions.len(),
            self.num_rows()
        )
    }
}

impl ExecutionPlan for SortedContactsExec {
    fn name(&self) -> &'static str {
        "SortedContactsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "SortedContactsExec is a leaf".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let batch = self.partitions.get(partition).cloned().ok_or_else(|| {
            DataFusionError::Internal(format!("no partition {partition}"))
        })?;
        Ok(Box::pin(MemoryStream::try_new(
            vec![batch],
            self.schema.clone(),
            None,
        )?))
    }
}
