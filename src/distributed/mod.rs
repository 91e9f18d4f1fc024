//! Running the per-customer pass on Apache Ballista (cargo feature
//! `ballista`).
//!
//! A Ballista client sends its scheduler logical plans; the scheduler plans
//! them with its session's query planner and ships each stage's physical
//! plan to executors. So the session a scheduler and its executors are made
//! from needs [`TimelineQueryPlanner`] (a [`TimelineNode`] becomes a
//! [`crate::timeline::exec::TimelineExec`] over the hash repartition and
//! sort it requires, which Ballista turns into a shuffle by customer) and
//! codecs that know the node and the operator besides Ballista's own plan
//! nodes: [`RecurLogicalCodec`] and [`RecurPhysicalCodec`] put recur's codec
//! ([`TimelineLogicalCodec`], [`TimelineCodec`]) in front of Ballista's,
//! each encoded node tagged with whose it is.
//!
//! Input: a [`SessionConfig`]. Output: a [`SessionState`] with the planner
//! and codecs ([`session_state`]), a [`SessionContext`] on an in-process
//! Ballista scheduler and executor ([`standalone`]) or on a running
//! cluster ([`connect`], with the settings [`cluster_config`] pins).
//!
//! [`processes`] starts a scheduler or an executor made from the same
//! session (`recur scheduler`, `recur executor`); [`check`] runs the
//! per-customer passes on a cluster and on this machine and compares them
//! (`recur cluster-check`).

pub mod check;
pub mod processes;
pub mod run;

use std::sync::Arc;

use ballista::prelude::{SessionConfigExt, SessionContextExt};
use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SessionState, SessionStateBuilder, TaskContext};
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};

use crate::timeline::codec::TimelineCodec;
use crate::timeline::exec::TimelineExec;
use crate::timeline::logical::{TimelineLogicalCodec, TimelineNode};

/// The tag of a node recur's codec encoded.
const RECUR: u8 = 1;
/// The tag of a node Ballista's codec encoded.
const BALLISTA: u8 = 0;
/// The tag of a cluster run's task ([`run::TaskCodec`]).
const TASK: u8 = 2;

/// `buf`'s tag and the rest.
fn untag(buf: &[u8]) -> Result<(u8, &[u8])> {
    match buf.split_first() {
        Some((tag, rest)) if [RECUR, BALLISTA, TASK].contains(tag) => Ok((*tag, rest)),
        _ => Err(DataFusionError::Plan(
            "an extension node encoded by neither recur nor Ballista".into(),
        )),
    }
}

/// [`TimelineCodec`] in front of Ballista's physical codec.
#[derive(Debug, Default)]
pub struct RecurPhysicalCodec {
    ballista: BallistaPhysicalExtensionCodec,
}

impl PhysicalExtensionCodec for RecurPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match untag(buf)? {
            (RECUR, rest) => TimelineCodec.try_decode(rest, inputs, ctx, proto_converter),
            (TASK, rest) => run::TaskCodec::decode_exec(rest, inputs),
            (_, rest) => self.ballista.try_decode(rest, inputs, ctx, proto_converter),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if node.downcast_ref::<TimelineExec>().is_some() {
            buf.push(RECUR);
            TimelineCodec.try_encode(node, buf, proto_converter)
        } else if node.downcast_ref::<run::TaskExec>().is_some() {
            buf.push(TASK);
            run::TaskCodec::encode_exec(&node, buf)
        } else {
            buf.push(BALLISTA);
            self.ballista.try_encode(node, buf, proto_converter)
        }
    }
}

/// [`TimelineLogicalCodec`] in front of Ballista's logical codec (which
/// also serializes file formats and table providers).
#[derive(Debug, Default)]
pub struct RecurLogicalCodec {
    ballista: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for RecurLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        match untag(buf)? {
            (RECUR, rest) => TimelineLogicalCodec.try_decode(rest, inputs, ctx),
            (TASK, rest) => run::TaskCodec::decode_node(rest, inputs),
            (_, rest) => self.ballista.try_decode(rest, inputs, ctx),
        }
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        if node.node.as_any().downcast_ref::<TimelineNode>().is_some() {
            buf.push(RECUR);
            TimelineLogicalCodec.try_encode(node, buf)
        } else if node.node.as_any().downcast_ref::<run::TaskNode>().is_some() {
            buf.push(TASK);
            run::TaskCodec::encode_node(node, buf)
        } else {
            buf.push(BALLISTA);
            self.ballista.try_encode(node, buf)
        }
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        self.ballista
            .try_decode_table_provider(buf, table_ref, schema, ctx)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.ballista
            .try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.ballista.try_encode_file_format(buf, node)
    }
}

/// A session state for Ballista from `config`: the codecs of this module
/// and [`TimelineQueryPlanner`], which a scheduler made from the state
/// plans its jobs with.
pub fn session_state(config: SessionConfig) -> SessionState {
    let config = config
        .upgrade_for_ballista()
        .with_ballista_logical_extension_codec(Arc::new(RecurLogicalCodec::default()))
        .with_ballista_physical_extension_codec(Arc::new(RecurPhysicalCodec::default()));
    SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_query_planner(Arc::new(RecurQueryPlanner))
        .build()
}

/// Plans recur's nodes, the per-customer pass
/// ([`crate::timeline::logical::TimelinePlanner`]) and a cluster run's tasks
/// ([`run::TaskPlanner`]), and everything else as DataFusion does.
#[derive(Debug, Default, Clone, Copy)]
pub struct RecurQueryPlanner;

#[async_trait::async_trait]
impl datafusion::execution::context::QueryPlanner for RecurQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn datafusion::catalog::Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        use datafusion::physical_planner::PhysicalPlanner;
        datafusion::physical_planner::DefaultPhysicalPlanner::with_extension_planners(vec![
            Arc::new(crate::timeline::logical::TimelinePlanner),
            Arc::new(run::TaskPlanner),
        ])
        .create_physical_plan(logical_plan, session)
        .await
    }
}

/// The settings a job of recur's needs from a cluster, over Ballista's
/// defaults, with `partitions` partitions after the shuffle by customer:
/// - the static planner (adaptive planning re-plans stages from runtime
///   statistics, and could coalesce the partitions of the shuffle by
///   customer);
/// - one partition per task, so that a lost task is one partition to run
///   again and a stage's tasks spread over every executor;
/// - hash joins, as DataFusion plans them on one machine;
/// - strings read as Utf8, the type the per-customer pass reads.
pub fn cluster_config(partitions: usize) -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_target_partitions(partitions.max(1))
        .upgrade_for_ballista();
    let options = config.options_mut();
    for (key, value) in [
        ("ballista.planner.adaptive.enabled", "false"),
        ("ballista.planner.coalesce.enabled", "false"),
        ("ballista.scheduler.max_partitions_per_task", "1"),
        ("ballista.job.name", "recur"),
        ("datafusion.optimizer.prefer_hash_join", "true"),
        (
            "datafusion.execution.parquet.schema_force_view_types",
            "false",
        ),
    ] {
        options
            .set(key, value)
            .expect("every key is one of DataFusion's or Ballista's");
    }
    config
}

/// A session on the Ballista cluster whose scheduler is at `url`
/// (`df://host:port`), with [`cluster_config`] of `partitions` and recur's
/// planner and codecs: what it plans runs on the cluster's executors.
pub async fn connect(url: &str, partitions: usize) -> Result<SessionContext> {
    SessionContext::remote_with_state(url, session_state(cluster_config(partitions))).await
}

/// A session on an in-process Ballista scheduler and executor made from
/// [`session_state`] of `config`: plans with [`TimelineNode`]s run on it.
pub async fn standalone(config: SessionConfig) -> Result<SessionContext> {
    SessionContext::standalone_with_state(session_state(config)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::Mode;
    use crate::timeline::codec::MODES;
    use crate::timeline::codec::tests::{config, operator_rows, params, sorted, three_files};
    use datafusion::arrow::array::{AsArray, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::ParquetReadOptions;
    use std::collections::BTreeMap;

    /// Every mode, as a node over a scan of three Parquet files, run by an
    /// in-process Ballista scheduler and executor: the rows of the operator
    /// planned and run by DataFusion alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_mode_runs_on_ballista_as_on_datafusion() {
        let dir = three_files();
        let path = dir.path().to_str().unwrap();
        let local = SessionContext::new_with_config(config());
        let cluster = standalone(config()).await.unwrap();
        for (mode, name) in MODES {
            let want = operator_rows(&local, path, mode).await;
            assert!(
                want.iter().map(|b| b.num_rows()).sum::<usize>() > 0,
                "{name}: no rows to compare"
            );

            let scan = cluster
                .read_parquet(path, ParquetReadOptions::default())
                .await
                .unwrap();
            let node = TimelineNode::try_new(scan.logical_plan().clone(), mode, params()).unwrap();
            let df = cluster
                .execute_logical_plan(node.into_plan())
                .await
                .unwrap();
            // the client's plan is the job it hands the scheduler
            let shown = displayable(df.clone().create_physical_plan().await.unwrap().as_ref())
                .indent(false)
                .to_string();
            assert!(shown.contains("DistributedQueryExec"), "{name}: {shown}");
            let got = df.collect().await.unwrap();
            if matches!(
                mode,
                Mode::PairCounts | Mode::SequenceCounts | Mode::Exposure
            ) {
                // counts per partition, and the cluster's partitions are
                // not DataFusion's: compare their totals
                assert_eq!(totals(&got), totals(&want), "{name}");
            } else {
                assert_eq!(sorted(&got), sorted(&want), "{name}");
            }
        }
    }

    /// Split into stages as a scheduler splits a job, the pass of each mode
    /// is in a stage of its own whose input is the shuffle by customer into
    /// the cluster's partitions, sorted by customer and time within each
    /// partition, under the settings [`cluster_config`] pins.
    #[tokio::test]
    async fn the_pass_reads_a_shuffle_by_customer_sorted_in_its_stage() {
        use ballista_scheduler::planner::{DefaultDistributedPlanner, DistributedPlanner};
        let dir = three_files();
        let ctx = SessionContext::new_with_state(session_state(cluster_config(5)));
        let config = ctx.state().config_options().clone();
        for (mode, name) in MODES {
            let scan = ctx
                .read_parquet(dir.path().to_str().unwrap(), ParquetReadOptions::default())
                .await
                .unwrap();
            let node = TimelineNode::try_new(scan.logical_plan().clone(), mode, params()).unwrap();
            let plan = ctx
                .state()
                .create_physical_plan(&node.into_plan())
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
            assert_eq!(shown.len(), 2, "{name}: {shown:#?}");
            assert!(
                shown[0]
                    .lines()
                    .next()
                    .unwrap()
                    .contains("ShuffleWriterExec")
                    && shown[0].contains("partitioning=Hash([customer_id@1], 5)"),
                "{name}: the first stage shuffles by customer: {}",
                shown[0]
            );
            let pass: Vec<&str> = shown[1].lines().map(str::trim_start).collect();
            let at = pass
                .iter()
                .position(|l| l.starts_with("TimelineExec"))
                .unwrap_or_else(|| panic!("{name}: no pass in {}", shown[1]));
            assert!(
                pass[at + 1].starts_with("SortExec: expr=[customer_id@1 ASC")
                    && pass[at + 1].contains("ts@2 ASC")
                    && pass[at + 1].contains("preserve_partitioning=[true]"),
                "{name}: {}",
                shown[1]
            );
            assert!(
                pass[at + 2].contains("ShuffleExec")
                    && pass[at + 2].contains("Hash([customer_id@1], 5)"),
                "{name}: {}",
                shown[1]
            );
        }
    }

    /// Rows summed by their key (every column but the integer counts and
    /// the lists; `length` is key): the counts summed, the lags gathered
    /// and sorted, integer lists (the pair counts' `g`) summed element by
    /// element after the counts.
    fn totals(batches: &[RecordBatch]) -> BTreeMap<Vec<String>, (Vec<i64>, Vec<String>)> {
        let mut out: BTreeMap<Vec<String>, (Vec<i64>, Vec<String>)> = BTreeMap::new();
        let options = FormatOptions::default().with_null("(null)");
        for b in batches {
            let schema = b.schema();
            let shown: Vec<ArrayFormatter> = b
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
                .collect();
            for i in 0..b.num_rows() {
                let (mut key, mut sums, mut lags) = (Vec::new(), Vec::new(), Vec::new());
                for (k, f) in schema.fields().iter().enumerate() {
                    match f.data_type() {
                        DataType::Int64 if f.name() != "length" => {
                            sums.push(b.column(k).as_primitive::<Int64Type>().value(i));
                        }
                        DataType::List(item) if item.data_type() == &DataType::Int64 => {
                            let l = b.column(k).as_list::<i32>().value(i);
                            let l = l.as_primitive::<Int64Type>();
                            // (padded: lists of partitions differ in length)
                            let mut padded = l.values().to_vec();
                            padded.resize(crate::timeline::triggers::K_BINS, 0);
                            sums.extend(padded);
                        }
                        DataType::List(_) => lags.extend(
                            b.column(k)
                                .as_list::<i32>()
                                .value(i)
                                .as_primitive::<Float64Type>()
                                .iter()
                                .map(|v| format!("{v:?}")),
                        ),
                        _ => key.push(shown[k].value(i).to_string()),
                    }
                }
                let entry = out
                    .entry(key)
                    .or_insert_with(|| (vec![0; sums.len()], Vec::new()));
                for (total, n) in entry.0.iter_mut().zip(&sums) {
                    *total += n;
                }
                entry.1.extend(lags);
            }
        }
        for (_, lags) in out.values_mut() {
            lags.sort();
        }
        out
    }
}
