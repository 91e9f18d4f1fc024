//! The per-customer pass in a logical plan.
//!
//! [`TimelineNode`] is the pass as a node of a DataFusion logical plan, over
//! any plan of `contacts_in` rows (a table scan, a query): DataFusion
//! optimizes the plan around it, and [`TimelineQueryPlanner`] (a session's
//! query planner) plans it as [`TimelineExec`], under which the physical
//! optimizer then places the hash repartition and sort the operator
//! requires. [`TimelineLogicalCodec`] serializes the node for
//! `datafusion-proto`, as [`super::codec::TimelineCodec`] does the operator:
//! a distributed scheduler such as Apache Ballista receives logical plans
//! from its clients and plans them itself, so it needs both, and this
//! planner.
//!
//! Input: a logical plan of `contacts_in` rows (checked as the node is
//! made). Output: the table of the node's [`Mode`] (the schemas in
//! [`super`]).
//!
//! ```no_run
//! # async fn demo(params: recur::timeline::TimelineParams) -> datafusion::error::Result<()> {
//! use std::sync::Arc;
//! use datafusion::execution::SessionStateBuilder;
//! use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
//! use recur::timeline::Mode;
//! use recur::timeline::logical::{TimelineNode, TimelineQueryPlanner};
//!
//! let mut config = SessionConfig::new();
//! // the pass reads texts as Utf8, not as the views a scan gives by default
//! config.options_mut().execution.parquet.schema_force_view_types = false;
//! let state = SessionStateBuilder::new()
//!     .with_config(config)
//!     .with_default_features()
//!     .with_query_planner(Arc::new(TimelineQueryPlanner))
//!     .build();
//! let ctx = SessionContext::new_with_state(state);
//! // normalised contacts: contact_id, customer_id, ts, channel, reason, agent, _row
//! let contacts = ctx.read_parquet("contacts_in/", ParquetReadOptions::default()).await?;
//! let node = TimelineNode::try_new(contacts.logical_plan().clone(), Mode::Contacts, params)?;
//! let annotated = ctx.execute_logical_plan(node.into_plan()).await?.collect().await?;
//! # Ok(())
//! # }
//! ```

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::{DFSchema, DFSchemaRef, TableReference};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, UserDefinedLogicalNodeCore};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use datafusion_proto::logical_plan::LogicalExtensionCodec;

use super::codec::{Encoded, the_input};
use super::exec::{TimelineExec, check_input, output_schema};
use super::{Mode, TimelineParams};

/// The pass over `input`, as a logical plan node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TimelineNode {
    input: LogicalPlan,
    mode: Mode,
    params: TimelineParams,
    schema: DFSchemaRef,
}

impl TimelineNode {
    /// The pass in `mode` over `input`, whose rows must be `contacts_in`'s.
    pub fn try_new(input: LogicalPlan, mode: Mode, params: TimelineParams) -> Result<Self> {
        let in_schema: SchemaRef = Arc::new(input.schema().as_arrow().clone());
        check_input(mode, &in_schema)?;
        let schema = Arc::new(DFSchema::try_from(
            output_schema(mode, &in_schema).as_ref().clone(),
        )?);
        Ok(TimelineNode {
            input,
            mode,
            params,
            schema,
        })
    }

    /// The node as a logical plan.
    pub fn into_plan(self) -> LogicalPlan {
        LogicalPlan::Extension(Extension {
            node: Arc::new(self),
        })
    }
}

// (ordered by input and mode; nodes alike in both but not in their
// parameters are not ordered)
impl PartialOrd for TimelineNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.input.partial_cmp(&other.input)? {
            Ordering::Equal => match self.mode.cmp(&other.mode) {
                Ordering::Equal => (self.params == other.params).then_some(Ordering::Equal),
                o => Some(o),
            },
            o => Some(o),
        }
    }
}

impl UserDefinedLogicalNodeCore for TimelineNode {
    fn name(&self) -> &str {
        "Timeline"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "Timeline: mode={:?}, repeat_window_us={}, cluster_window_us={}",
            self.mode, self.params.repeat_window_us, self.params.cluster_window_us
        )
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> Result<Self> {
        TimelineNode::try_new(the_input(&inputs)?.clone(), self.mode, self.params.clone())
    }
}

/// Plans a [`TimelineNode`] as a [`TimelineExec`] over its planned input.
#[derive(Debug, Default, Clone, Copy)]
pub struct TimelinePlanner;

#[async_trait]
impl ExtensionPlanner for TimelinePlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn datafusion::logical_expr::UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn datafusion::catalog::Session,
        _planning_ctx: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(timeline) = node.as_any().downcast_ref::<TimelineNode>() else {
            return Ok(None);
        };
        Ok(Some(Arc::new(TimelineExec::try_new(
            the_input(physical_inputs)?.clone(),
            timeline.mode,
            timeline.params.clone(),
        )?)))
    }
}

/// A session's query planner that plans [`TimelineNode`]s
/// ([`TimelinePlanner`]) and everything else as DataFusion does.
#[derive(Debug, Default, Clone, Copy)]
pub struct TimelineQueryPlanner;

#[async_trait]
impl QueryPlanner for TimelineQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn datafusion::catalog::Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(TimelinePlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

/// Encodes and decodes [`TimelineNode`] for `datafusion-proto` (its mode and
/// parameters, as [`super::codec::TimelineCodec`] does the operator's; the
/// input is serialized by DataFusion as the node's child).
#[derive(Debug, Default, Clone, Copy)]
pub struct TimelineLogicalCodec;

impl LogicalExtensionCodec for TimelineLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        _ctx: &TaskContext,
    ) -> Result<Extension> {
        let (mode, params) = Encoded::read(buf)?.into_parts()?;
        Ok(Extension {
            node: Arc::new(TimelineNode::try_new(
                the_input(inputs)?.clone(),
                mode,
                params,
            )?),
        })
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        let Some(timeline) = node.node.as_any().downcast_ref::<TimelineNode>() else {
            return Err(DataFusionError::NotImplemented(format!(
                "recur's codec serializes Timeline nodes, not {}",
                node.node.name()
            )));
        };
        Encoded::new(timeline.mode, &timeline.params).write(buf)
    }

    fn try_decode_table_provider(
        &self,
        _buf: &[u8],
        table_ref: &TableReference,
        _schema: SchemaRef,
        _ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        Err(DataFusionError::NotImplemented(format!(
            "recur's codec serializes no table providers ({table_ref})"
        )))
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        _node: Arc<dyn TableProvider>,
        _buf: &mut Vec<u8>,
    ) -> Result<()> {
        Err(DataFusionError::NotImplemented(format!(
            "recur's codec serializes no table providers ({table_ref})"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::codec::MODES;
    use crate::timeline::codec::tests::{config, operator_rows, params, sorted, three_files};
    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::{ParquetReadOptions, SessionContext};
    use datafusion_proto::bytes::{
        logical_plan_from_bytes_with_extension_codec, logical_plan_to_bytes_with_extension_codec,
    };

    /// Every mode, as a node over a scan of three files: planned by the
    /// session's planner it is the operator over the repartition and sort it
    /// requires, and gives the rows the operator planned directly gives;
    /// after a round trip through protobuf bytes, the same plan and rows.
    #[tokio::test]
    async fn the_node_plans_as_the_operator_and_round_trips() {
        let dir = three_files();
        let path = dir.path().to_str().unwrap();
        let state = SessionStateBuilder::new()
            .with_config(config())
            .with_default_features()
            .with_query_planner(Arc::new(TimelineQueryPlanner))
            .build();
        let ctx = SessionContext::new_with_state(state);
        for (mode, name) in MODES {
            let scan = ctx
                .read_parquet(path, ParquetReadOptions::default())
                .await
                .unwrap();
            let want = sorted(&operator_rows(&ctx, path, mode).await);
            assert!(want.num_rows() > 0, "{name}: no rows to compare");

            let plan = TimelineNode::try_new(scan.logical_plan().clone(), mode, params())
                .unwrap()
                .into_plan();
            let physical = ctx
                .execute_logical_plan(plan.clone())
                .await
                .unwrap()
                .create_physical_plan()
                .await
                .unwrap();
            let shown = displayable(physical.as_ref()).indent(true).to_string();
            for part in [
                "TimelineExec",
                "RepartitionExec: partitioning=Hash",
                "SortExec",
            ] {
                assert!(shown.contains(part), "{name}: {shown}");
            }
            let got = collect(physical, ctx.task_ctx()).await.unwrap();
            assert_eq!(sorted(&got), want, "{name}");

            let bytes =
                logical_plan_to_bytes_with_extension_codec(&plan, &TimelineLogicalCodec).unwrap();
            let back = logical_plan_from_bytes_with_extension_codec(
                &bytes,
                &ctx.task_ctx(),
                &TimelineLogicalCodec,
            )
            .unwrap();
            assert_eq!(
                back.display_indent().to_string(),
                plan.display_indent().to_string(),
                "{name}"
            );
            let node = match &back {
                LogicalPlan::Extension(e) => e.node.as_any().downcast_ref::<TimelineNode>(),
                _ => None,
            }
            .expect("a Timeline node at the root");
            assert_eq!((node.mode, &node.params), (mode, &params()), "{name}");
            let got = ctx
                .execute_logical_plan(back)
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            assert_eq!(sorted(&got), want, "{name}");
        }
    }

    #[tokio::test]
    async fn the_node_refuses_inputs_the_pass_cannot_read() {
        let dir = three_files();
        // DataFusion's default: strings scanned as views
        let ctx = SessionContext::new();
        let scan = ctx
            .read_parquet(dir.path().to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap();
        let err = TimelineNode::try_new(scan.logical_plan().clone(), Mode::Contacts, params())
            .unwrap_err();
        assert!(err.to_string().contains("customer_id"), "{err}");
        // no agent column, which the contacts mode passes through
        let ctx = SessionContext::new_with_config(config());
        let scan = ctx
            .read_parquet(dir.path().to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap()
            .drop_columns(&["agent"])
            .unwrap();
        let err = TimelineNode::try_new(scan.logical_plan().clone(), Mode::Contacts, params())
            .unwrap_err();
        assert!(err.to_string().contains("agent"), "{err}");
        // which the other modes do not read
        TimelineNode::try_new(scan.logical_plan().clone(), Mode::PairCounts, params()).unwrap();
    }
}
