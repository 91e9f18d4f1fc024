//! The contacts, hash-partitioned on `customer_id` and sorted once.
//!
//! [`sort_plan`] is the repartition + sort that DataFusion's physical optimizer
//! would insert under every [`super::exec::TimelineExec`]; the pipeline runs it
//! once and keeps the result in a [`SortedContactsExec`], a leaf that declares
//! exactly that partitioning and ordering, so the optimizer inserts nothing
//! under the passes that read it. Each partition is kept as one batch, so a
//! pass reads it without copying.
//!
//! The sort itself is [`TimelineSortExec`], a sort specialised to this key: it
//! groups the partition's rows by a hash of the customer id (an integer sort),
//! ranks the distinct customers by text (one string sort of one row each),
//! then sorts packed integer keys (customer rank, time, position) and breaks
//! the rare remaining ties by contact id and input row. DataFusion's general `SortExec`, which compares
//! the row-encoded strings in a many-way merge, took several times longer on
//! the same input. Under a memory limit the pipeline uses `SortExec` instead,
//! because it spills.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, UInt32Array, make_comparator};
use datafusion::arrow::compute::{SortOptions, concat_batches, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
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
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PhysicalExpr, PlanProperties,
    SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};

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
/// `partitions` and sorted within each partition by [`ORDER_COLUMNS`]: with
/// [`TimelineSortExec`] in memory, or with DataFusion's spilling `SortExec`
/// when `spill` is set.
pub fn sort_plan(
    input: Arc<dyn ExecutionPlan>,
    partitions: usize,
    spill: bool,
) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = input.schema();
    let repartitioned = Arc::new(RepartitionExec::try_new(
        input,
        hash_partitioning(&schema, partitions)?,
    )?);
    if spill {
        Ok(Arc::new(
            SortExec::new(ordering(&schema)?, repartitioned).with_preserve_partitioning(true),
        ))
    } else {
        Ok(Arc::new(TimelineSortExec::try_new(repartitioned)?))
    }
}

/// Sorts each partition of its input by [`ORDER_COLUMNS`], in memory (see
/// the module docs); keeps the input's partitioning.
#[derive(Debug, Clone)]
pub struct TimelineSortExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl TimelineSortExec {
    /// Sorts `input`, which must have the `contacts_in` columns.
    pub fn try_new(input: Arc<dyn ExecutionPlan>) -> Result<Self> {
        let schema = input.schema();
        let eq = EquivalenceProperties::new_with_orderings(schema.clone(), [ordering(&schema)?]);
        let properties = Arc::new(PlanProperties::new(
            eq,
            input.properties().partitioning.clone(),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Ok(TimelineSortExec { input, properties })
    }
}

impl DisplayAs for TimelineSortExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "TimelineSortExec: [{}]", ORDER_COLUMNS.join(", "))
    }
}

impl ExecutionPlan for TimelineSortExec {
    fn name(&self) -> &'static str {
        "TimelineSortExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
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

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "TimelineSortExec takes one child".into(),
            ));
        }
        Ok(Arc::new(TimelineSortExec::try_new(
            children.swap_remove(0),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = self.input.schema();
        let out_schema = schema.clone();
        let fut = async move {
            let batches: Vec<RecordBatch> = input.try_collect().await?;
            let all = concat_batches(&schema, &batches)?;
            drop(batches);
            sort_partition(&all)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            out_schema,
            futures::stream::once(fut).boxed(),
        )))
    }
}

/// One partition sorted by [`ORDER_COLUMNS`] (see the module docs).
pub fn sort_partition(batch: &RecordBatch) -> Result<RecordBatch> {
    let n = batch.num_rows();
    if n == 0 {
        return Ok(batch.clone());
    }
    if n > u32::MAX as usize {
        return Err(DataFusionError::ResourcesExhausted(format!(
            "a partition of {n} contacts; use more partitions (--threads)"
        )));
    }
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| DataFusionError::Internal(format!("no column {name}")))
    };
    let customer = column("customer_id")?.as_string::<i32>();
    let ts = column("ts")?
        .as_primitive::<TimestampMicrosecondType>()
        .values();
    // 1. group rows by customer: sort (hash of the id, position); a run of
    //    equal hashes is one customer unless two ids collide, which the text
    //    comparison below separates
    let hasher = foldhash::fast::FixedState::with_seed(0);
    let mut by_hash: Vec<u128> = (0..n)
        .map(|i| ((hasher.hash_one(customer.value(i)) as u128) << 32) | i as u128)
        .collect();
    by_hash.sort_unstable();
    // 2. the distinct customers (one row each), ranked by text
    let mut firsts: Vec<u32> = Vec::new();
    let mut code = vec![0u32; n];
    let mut run_start = 0;
    while run_start < n {
        let h = by_hash[run_start] >> 32;
        let mut run_end = run_start + 1;
        while run_end < n && by_hash[run_end] >> 32 == h {
            run_end += 1;
        }
        // within a hash run, each row joins the first earlier distinct id
        // equal to it (one id in all but astronomically rare cases)
        let group_base = firsts.len();
        for key in &by_hash[run_start..run_end] {
            let row = *key as u32;
            let text = customer.value(row as usize);
            let found = firsts[group_base..]
                .iter()
                .position(|f| customer.value(*f as usize) == text);
            code[row as usize] = match found {
                Some(off) => (group_base + off) as u32,
                None => {
                    firsts.push(row);
                    (firsts.len() - 1) as u32
                }
            };
        }
        run_start = run_end;
    }
    drop(by_hash);
    let mut by_text: Vec<u32> = (0..firsts.len() as u32).collect();
    by_text.sort_unstable_by(|a, b| {
        customer
            .value(firsts[*a as usize] as usize)
            .cmp(customer.value(firsts[*b as usize] as usize))
    });
    let mut rank = vec![0u32; firsts.len()];
    for (r, c) in by_text.iter().enumerate() {
        rank[*c as usize] = r as u32;
    }
    // 3. (rank, time) in the high 96 bits, position in the low 32
    let mut keys: Vec<u128> = (0..n)
        .map(|i| {
            let t = (ts[i] as u64) ^ (1 << 63);
            ((rank[code[i] as usize] as u128) << 96) | ((t as u128) << 32) | i as u128
        })
        .collect();
    keys.sort_unstable();
    let mut perm: Vec<u32> = keys.iter().map(|k| *k as u32).collect();
    // 4. equal (customer, time): by contact id, then input row
    let id = column("contact_id")?;
    let row = column("_row")?.as_primitive::<Int64Type>().values();
    let cmp_id = make_comparator(id.as_ref(), id.as_ref(), ASC)?;
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && keys[end] >> 32 == keys[start] >> 32 {
            end += 1;
        }
        if end - start > 1 {
            perm[start..end].sort_unstable_by(|a, b| {
                let (a, b) = (*a as usize, *b as usize);
                cmp_id(a, b).then(row[a].cmp(&row[b]))
            });
        }
        start = end;
    }
    drop(keys);
    Ok(take_record_batch(batch, &UInt32Array::from(perm))?)
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

    /// The partitions, one batch each (shared, not copied).
    pub fn partitions(&self) -> Vec<Vec<RecordBatch>> {
        self.partitions.iter().map(|b| vec![b.clone()]).collect()
    }

    /// Bytes held by the batches.
    pub fn memory_size(&self) -> usize {
        self.partitions
            .iter()
            .map(datafusion::common::utils::memory::get_record_batch_memory_size)
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
        let batch = self
            .partitions
            .get(partition)
            .cloned()
            .ok_or_else(|| DataFusionError::Internal(format!("no partition {partition}")))?;
        Ok(Box::pin(MemoryStream::try_new(
            vec![batch],
            self.schema.clone(),
            None,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::contacts_in_schema;
    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::DataType;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Rows (customer, ts, contact id, _row) with many ties on (customer, ts).
    fn rows(seed: u64, n: usize) -> Vec<(String, i64, i64, i64)> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|r| {
                (
                    format!("c{}", rng.random_range(0..n / 4 + 1)),
                    rng.random_range(-3..4) * 1_000_000,
                    rng.random_range(0..5),
                    r as i64,
                )
            })
            .collect()
    }

    fn batch(rows: &[(String, i64, i64, i64)], text_ids: bool) -> RecordBatch {
        let id_type = if text_ids {
            DataType::Utf8
        } else {
            DataType::Int64
        };
        let ids: ArrayRef = if text_ids {
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| format!("id{}", r.2)),
            ))
        } else {
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2)))
        };
        let n = rows.len();
        RecordBatch::try_new(
            contacts_in_schema(&id_type),
            vec![
                ids,
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                        .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from(vec![Some("phone"); n])),
                Arc::new(StringArray::from(vec![None::<&str>; n])),
                Arc::new(StringArray::from(vec![None::<&str>; n])),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3))),
            ],
        )
        .unwrap()
    }

    #[test]
    fn sorts_like_a_plain_sort_with_ties() {
        for seed in 0..20 {
            for text_ids in [false, true] {
                let input = rows(seed, 1 + seed as usize * 37);
                let mut expected = input.clone();
                expected.sort_by(|a, b| {
                    let id = |r: &(String, i64, i64, i64)| {
                        if text_ids {
                            format!("id{}", r.2)
                        } else {
                            format!("{:020}", r.2)
                        }
                    };
                    (&a.0, a.1, id(a), a.3).cmp(&(&b.0, b.1, id(b), b.3))
                });
                let sorted = sort_partition(&batch(&input, text_ids)).unwrap();
                let rows: Vec<i64> = sorted
                    .column_by_name("_row")
                    .unwrap()
                    .as_primitive::<Int64Type>()
                    .values()
                    .to_vec();
                let want: Vec<i64> = expected.iter().map(|r| r.3).collect();
                assert_eq!(rows, want, "seed {seed}, text ids {text_ids}");
            }
        }
    }
}
