//! [`TimelineCodec`]: the per-customer pass in a serialized physical plan.
//!
//! A distributed scheduler such as Apache Ballista plans a query once and
//! ships each stage's physical plan to its executors in DataFusion's
//! protobuf form (`datafusion-proto`). DataFusion's own operators (the
//! Parquet scan, the hash repartition, the sort) serialize themselves; an
//! operator of a library's own needs a `PhysicalExtensionCodec`, which both
//! ends are given. This one writes a [`TimelineExec`] as its mode and
//! parameters (JSON, with a format number an executor of another version
//! refuses rather than misreads); its input is serialized by DataFusion as
//! the plan's child.
//!
//! Input: a physical plan whose nodes are DataFusion's or [`TimelineExec`]s.
//! Output: the same plan, after `physical_plan_to_bytes_with_extension_codec`
//! and `physical_plan_from_bytes_with_extension_codec` with this codec. The
//! pipeline's in-memory leaf ([`super::sorted::SortedContactsExec`]) holds
//! the sorted contacts themselves and is not serialized: on a cluster the
//! leaf is a scan, and the optimizer places the repartition and sort the
//! operator requires above it.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use chrono_tz::Tz;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use serde::{Deserialize, Serialize};

use super::exec::TimelineExec;
use super::{Mode, TimelineParams};

/// Encodes and decodes [`TimelineExec`] for `datafusion-proto` (see the
/// module docs).
#[derive(Debug, Default, Clone, Copy)]
pub struct TimelineCodec;

/// The version of [`Encoded`]; a decoder refuses any other.
const FORMAT: u32 = 2;

/// A [`TimelineExec`] (or a [`super::logical::TimelineNode`]) as encoded:
/// everything but its input.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Encoded {
    format: u32,
    mode: String,
    repeat_window_us: i64,
    cluster_window_us: i64,
    data_end_us: i64,
    as_of_us: i64,
    tz: String,
    max_gap_us: i64,
    max_span_us: i64,
    channel_items: bool,
    sequence_filter: Vec<String>,
    pair_windows_us: Vec<i64>,
    channel_cost_micros: BTreeMap<String, i64>,
    default_cost_micros: i64,
    pair_filter: Vec<(String, String)>,
    customer_cap: u32,
    sequence_steps: Option<Vec<(String, String)>>,
    #[serde(default)]
    trigger_period: Option<super::TriggerPeriod>,
}

pub(crate) const MODES: [(Mode, &str); 6] = [
    (Mode::Contacts, "contacts"),
    (Mode::Followups, "followups"),
    (Mode::Sequences, "sequences"),
    (Mode::SequenceCounts, "sequence_counts"),
    (Mode::PairCounts, "pair_counts"),
    (Mode::Exposure, "exposure"),
];

impl Encoded {
    pub(super) fn new(mode: Mode, p: &TimelineParams) -> Self {
        Encoded {
            format: FORMAT,
            mode: MODES
                .iter()
                .find(|(m, _)| *m == mode)
                .map(|(_, name)| name.to_string())
                .expect("every mode is named"),
            repeat_window_us: p.repeat_window_us,
            cluster_window_us: p.cluster_window_us,
            data_end_us: p.data_end_us,
            as_of_us: p.as_of_us,
            tz: p.tz.name().to_string(),
            max_gap_us: p.max_gap_us,
            max_span_us: p.max_span_us,
            channel_items: p.channel_items,
            sequence_filter: p.sequence_filter.as_ref().clone(),
            pair_windows_us: p.pair_windows_us.as_ref().clone(),
            channel_cost_micros: p.channel_cost_micros.as_ref().clone(),
            default_cost_micros: p.default_cost_micros,
            pair_filter: p.pair_filter.as_ref().clone(),
            customer_cap: p.customer_cap,
            sequence_steps: p.sequence_steps.as_ref().map(|s| s.as_ref().clone()),
            trigger_period: p.trigger_period,
        }
    }

    pub(super) fn into_parts(self) -> Result<(Mode, TimelineParams)> {
        let bad = |what: String| DataFusionError::Plan(format!("a recur timeline node: {what}"));
        if self.format != FORMAT {
            return Err(bad(format!(
                "format {} (this build reads format {FORMAT})",
                self.format
            )));
        }
        let mode = MODES
            .iter()
            .find(|(_, name)| *name == self.mode)
            .map(|(m, _)| *m)
            .ok_or_else(|| bad(format!("unknown mode {:?}", self.mode)))?;
        let tz = Tz::from_str(&self.tz).map_err(|e| bad(format!("time zone: {e}")))?;
        Ok((
            mode,
            TimelineParams {
                repeat_window_us: self.repeat_window_us,
                cluster_window_us: self.cluster_window_us,
                data_end_us: self.data_end_us,
                as_of_us: self.as_of_us,
                tz,
                max_gap_us: self.max_gap_us,
                max_span_us: self.max_span_us,
                channel_items: self.channel_items,
                sequence_filter: Arc::new(self.sequence_filter),
                pair_windows_us: Arc::new(self.pair_windows_us),
                channel_cost_micros: Arc::new(self.channel_cost_micros),
                default_cost_micros: self.default_cost_micros,
                pair_filter: Arc::new(self.pair_filter),
                customer_cap: self.customer_cap,
                sequence_steps: self.sequence_steps.map(Arc::new),
                trigger_period: self.trigger_period,
            },
        ))
    }
}

/// The one input of a timeline node or operator among `inputs`.
pub(super) fn the_input<T>(inputs: &[T]) -> Result<&T> {
    match inputs {
        [input] => Ok(input),
        _ => Err(DataFusionError::Plan(format!(
            "a recur timeline node has one input, not {}",
            inputs.len()
        ))),
    }
}

impl PhysicalExtensionCodec for TimelineCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (mode, params) = Encoded::read(buf)?.into_parts()?;
        Ok(Arc::new(TimelineExec::try_new(
            the_input(inputs)?.clone(),
            mode,
            params,
        )?))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let Some(timeline) = node.downcast_ref::<TimelineExec>() else {
            return Err(DataFusionError::NotImplemented(format!(
                "recur's codec serializes TimelineExec, not {}",
                node.name()
            )));
        };
        Encoded::new(timeline.mode(), timeline.params()).write(buf)
    }
}

impl Encoded {
    pub(super) fn read(buf: &[u8]) -> Result<Self> {
        serde_json::from_slice(buf)
            .map_err(|e| DataFusionError::Plan(format!("a recur timeline node: {e}")))
    }

    pub(super) fn write(&self, buf: &mut Vec<u8>) -> Result<()> {
        serde_json::to_writer(buf, self).map_err(|e| DataFusionError::External(Box::new(e)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ingest::contacts_in_schema;
    use datafusion::arrow::array::{
        Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    };
    use datafusion::arrow::compute::{SortColumn, SortOptions};
    use datafusion::arrow::compute::{concat_batches, lexsort_to_indices, take_record_batch};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
    use datafusion_proto::bytes::{
        physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
    };
    use rand::{Rng, SeedableRng};

    const H: i64 = 3_600_000_000;

    /// Random contacts: 40 customers, ties and steps exactly at the windows,
    /// null reasons and channels, in no particular order.
    pub(crate) fn contacts(seed: u64) -> RecordBatch {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let reasons = ["bill", "move", "fault", "cancel", "plan"];
        let channels = ["phone", "chat", "web"];
        let mut rows: Vec<(String, i64, Option<&str>, Option<&str>)> = Vec::new();
        for c in 0..40 {
            let mut t = rng.random_range(0..10 * 24 * H);
            for _ in 0..rng.random_range(1..30) {
                t += [0, H, 24 * H, 24 * H + 1, 3 * 24 * H][rng.random_range(0..5)];
                let reason = (rng.random_range(0..8) > 0).then(|| reasons[rng.random_range(0..5)]);
                let channel =
                    (rng.random_range(0..9) > 0).then(|| channels[rng.random_range(0..3)]);
                rows.push((format!("c{c}"), t, channel, reason));
            }
        }
        // shuffled, so the plan's own repartition and sort do the work
        for i in (1..rows.len()).rev() {
            rows.swap(i, rng.random_range(0..=i));
        }
        let n = rows.len() as i64;
        RecordBatch::try_new(
            contacts_in_schema(&DataType::Int64),
            vec![
                Arc::new(Int64Array::from_iter_values(1..=n)),
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.0.as_str()),
                )),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                        .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.3).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(vec![None::<&str>; rows.len()])),
                Arc::new(Int64Array::from_iter_values(0..n)),
            ],
        )
        .unwrap()
    }

    /// Parameters unlike the defaults in every field a decoder could drop.
    pub(crate) fn params() -> TimelineParams {
        TimelineParams {
            repeat_window_us: 24 * H,
            cluster_window_us: 5 * 24 * H,
            data_end_us: 40 * 24 * H,
            as_of_us: 30 * 24 * H,
            tz: chrono_tz::America::Toronto,
            max_gap_us: 3 * 24 * H,
            max_span_us: 9 * 24 * H,
            channel_items: false,
            sequence_filter: Arc::new(vec!["bill -> move".into(), "fault -> fault".into()]),
            pair_windows_us: Arc::new(vec![24 * H, 5 * 24 * H]),
            channel_cost_micros: Arc::new(
                [
                    ("phone".to_string(), 1_000_000),
                    ("chat".to_string(), 600_000),
                ]
                .into(),
            ),
            default_cost_micros: 250_000,
            pair_filter: Arc::new(vec![
                ("bill".into(), "move".into()),
                ("fault".into(), "fault".into()),
            ]),
            customer_cap: 3,
            sequence_steps: Some(Arc::new(vec![("bill".into(), "move".into())])),
            trigger_period: None,
        }
    }

    /// All rows of `batches`, sorted by every column.
    pub(crate) fn sorted(batches: &[RecordBatch]) -> RecordBatch {
        let all = concat_batches(&batches[0].schema(), batches).unwrap();
        let columns: Vec<SortColumn> = all
            .columns()
            .iter()
            .filter(|c| !matches!(c.data_type(), DataType::List(_)))
            .map(|c| SortColumn {
                values: c.clone(),
                options: Some(SortOptions::default()),
            })
            .collect();
        take_record_batch(&all, &lexsort_to_indices(&columns, None).unwrap()).unwrap()
    }

    /// Random contacts in three Parquet files, so that a scan of the folder
    /// has three partitions to repartition.
    pub(crate) fn three_files() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let batch = contacts(11);
        let third = batch.num_rows().div_ceil(3);
        for f in 0..3 {
            let file = std::fs::File::create(dir.path().join(format!("{f}.parquet"))).unwrap();
            let mut w =
                datafusion::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)
                    .unwrap();
            let start = f * third;
            w.write(&batch.slice(start, third.min(batch.num_rows() - start)))
                .unwrap();
            w.close().unwrap();
        }
        dir
    }

    /// Three partitions, strings scanned as Utf8 (as the pass reads them),
    /// not as views.
    pub(crate) fn config() -> SessionConfig {
        let mut config = SessionConfig::new().with_target_partitions(3);
        config
            .options_mut()
            .execution
            .parquet
            .schema_force_view_types = false;
        config
    }

    /// The rows of the pass in `mode` planned as the operator over a fresh
    /// scan of the Parquet files under `path` (a plan's scan is executed
    /// once), run by `ctx`.
    pub(crate) async fn operator_rows(
        ctx: &SessionContext,
        path: &str,
        mode: Mode,
    ) -> Vec<RecordBatch> {
        let scan = ctx
            .read_parquet(path, ParquetReadOptions::default())
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let plan = crate::session::plan_timeline(ctx, scan, mode, params()).unwrap();
        collect(plan, ctx.task_ctx()).await.unwrap()
    }

    #[tokio::test]
    async fn every_mode_runs_the_same_after_a_round_trip() {
        let dir = three_files();
        let ctx = SessionContext::new_with_config(config());
        for (mode, name) in MODES {
            // (a scan of its own: a plan's scan is executed once)
            let scan = ctx
                .read_parquet(dir.path().to_str().unwrap(), ParquetReadOptions::default())
                .await
                .unwrap()
                .create_physical_plan()
                .await
                .unwrap();
            let plan = crate::session::plan_timeline(&ctx, scan, mode, params()).unwrap();
            let shown = displayable(plan.as_ref()).indent(true).to_string();
            // DataFusion placed the repartition and the sort the pass requires
            assert!(
                shown.contains("RepartitionExec: partitioning=Hash"),
                "{shown}"
            );
            assert!(shown.contains("SortExec"), "{shown}");
            let bytes =
                physical_plan_to_bytes_with_extension_codec(plan.clone(), &TimelineCodec).unwrap();
            let back = physical_plan_from_bytes_with_extension_codec(
                &bytes,
                &ctx.task_ctx(),
                &TimelineCodec,
            )
            .unwrap();
            assert_eq!(
                displayable(back.as_ref()).indent(true).to_string(),
                shown,
                "{name}"
            );
            let timeline = back.downcast_ref::<TimelineExec>().expect("the root");
            assert_eq!(
                serde_json::to_string(&Encoded::new(timeline.mode(), timeline.params())).unwrap(),
                serde_json::to_string(&Encoded::new(mode, &params())).unwrap(),
                "{name}"
            );
            let before = collect(plan, ctx.task_ctx()).await.unwrap();
            let after = collect(back, ctx.task_ctx()).await.unwrap();
            let rows: usize = before.iter().map(|b| b.num_rows()).sum();
            assert!(rows > 0, "{name}: no rows to compare");
            assert_eq!(sorted(&before), sorted(&after), "{name}");
        }
    }

    #[tokio::test]
    async fn the_pass_refuses_string_views() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.parquet");
        let batch = contacts(5);
        let file = std::fs::File::create(&path).unwrap();
        let mut w =
            datafusion::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        // DataFusion's default: strings scanned as views
        let ctx = SessionContext::new();
        let scan = ctx
            .read_parquet(path.to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let err = TimelineExec::try_new(scan, Mode::Contacts, params()).unwrap_err();
        assert!(err.to_string().contains("customer_id"), "{err}");
    }

    #[test]
    fn refuses_other_formats_modes_and_nodes() {
        let mut encoded = Encoded::new(Mode::Contacts, &params());
        encoded.format = FORMAT + 1;
        assert!(
            encoded
                .into_parts()
                .unwrap_err()
                .to_string()
                .contains("format 2")
        );
        let mut encoded = Encoded::new(Mode::Contacts, &params());
        encoded.mode = "joins".into();
        assert!(
            encoded
                .into_parts()
                .unwrap_err()
                .to_string()
                .contains("unknown mode")
        );
        // the pipeline's in-memory leaf is not serialized
        let err = physical_plan_to_bytes_with_extension_codec(
            Arc::new(
                TimelineExec::try_new(
                    Arc::new(
                        crate::timeline::sorted::SortedContactsExec::try_new(
                            contacts_in_schema(&DataType::Int64),
                            vec![vec![contacts(3)]],
                        )
                        .unwrap(),
                    ),
                    Mode::Contacts,
                    params(),
                )
                .unwrap(),
            ),
            &TimelineCodec,
        )
        .unwrap_err();
        assert!(err.to_string().contains("SortedContactsExec"), "{err}");
    }
}
