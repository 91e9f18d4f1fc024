//! Beside stages 2–4 (optional, `--null-check N`) — the tests on the log with its
//! reasons permuted.
//!
//! Input: each bucket's annotated contacts (as the timeline pass reads
//! them) and the run's configuration.
//! Output: [`NullCheckSummary`], for the manifest and the terminal: how many
//! clusters and sequences each of N permuted logs yields at the run's
//! alpha, minimum support and minimum customers.
//!
//! A permuted log keeps every customer's timestamps and channels and deals
//! the reasons out again at random (within each partition of customers,
//! which is a random share of them), so no reason can predict another: what
//! the tests report on it is false by construction. The count per permuted
//! log is a direct, data-specific estimate of how many of the run's own
//! findings chance alone would produce. Each permutation runs the pair and
//! exposure passes and the clusters' ranking SQL as the run does
//! ([`NullCheck::add_bucket`], [`NullCheck::rank_clusters`]); then, where
//! its clusters leave steps for a sequence, the sequence pass over the same
//! permutation (dealt again from the same seed) and the sequences' ranking
//! ([`NullCheck::add_sequences`], [`NullCheck::finish`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::prelude::SessionContext;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::config::PipelineConfig;
use crate::error::Result;
use crate::report::NullCheckSummary;
use crate::session::register_sequence_counts;
use crate::significance::Exposures;
use crate::timeline::sorted::SortedContactsExec;
use crate::timeline::{Mode, PatternSums, TimelineParams};

/// A permuted log's session after its clusters' ranking, its clusters and
/// the steps its sequences may take.
type Ranked = (SessionContext, u64, Vec<(String, String)>);

/// One permuted log's counts so far.
#[derive(Default)]
struct Permuted {
    pair_counts: Vec<RecordBatch>,
    exposures: Exposures,
    /// After the clusters' ranking: its session, clusters and steps.
    ranked: Option<Ranked>,
    patterns: PatternSums,
}

/// The permuted logs' counts, a bucket at a time.
pub struct NullCheck {
    permuted: Vec<Permuted>,
    seed: u64,
}

impl NullCheck {
    /// `n` permutations, dealt from `seed`.
    pub fn new(n: u32, seed: u64) -> Self {
        NullCheck {
            permuted: (0..n).map(|_| Permuted::default()).collect(),
            seed,
        }
    }

    /// Counts bucket `bucket` under every permutation.
    pub async fn add_bucket(
        &mut self,
        ctx: &SessionContext,
        annotated: &SortedContactsExec,
        bucket: usize,
        params: &TimelineParams,
    ) -> Result<()> {
        for (r, permuted) in self.permuted.iter_mut().enumerate() {
            let exec = permuted_exec(annotated, self.seed, r, bucket)?;
            let (_, counts) =
                crate::session::run_timeline(ctx, &exec, Mode::PairCounts, params.clone()).await?;
            permuted.pair_counts.extend(counts.into_iter().flatten());
            let (_, exposed) =
                crate::session::run_timeline(ctx, &exec, Mode::Exposure, params.clone()).await?;
            for b in exposed.iter().flatten() {
                permuted.exposures.add(b)?;
            }
        }
        Ok(())
    }

    /// Ranks the clusters of every permuted log, as the run ranks its own.
    pub async fn rank_clusters(&mut self, cfg: &PipelineConfig) -> Result<()> {
        for permuted in &mut self.permuted {
            let pair_counts = std::mem::take(&mut permuted.pair_counts);
            let expectations =
                std::mem::take(&mut permuted.exposures).pair_expectations(&pair_counts)?;
            let (ctx, clusters, steps) =
                crate::stages::rank::rank_apart(cfg, pair_counts, expectations).await?;
            let n = clusters.iter().map(|b| b.num_rows() as u64).sum();
            permuted.ranked = Some((ctx, n, steps));
        }
        Ok(())
    }

    /// Mines bucket `bucket` (its annotated contacts, as the second pass
    /// reads them) for sequences under every permutation whose clusters
    /// leave a chain of two steps, dealt from the same seed as in
    /// [`NullCheck::add_bucket`].
    pub async fn add_sequences(
        &mut self,
        ctx: &SessionContext,
        annotated: &SortedContactsExec,
        bucket: usize,
        params: &TimelineParams,
    ) -> Result<()> {
        for (r, permuted) in self.permuted.iter_mut().enumerate() {
            let Some((_, _, steps)) = &permuted.ranked else {
                continue;
            };
            if steps.len() < 2 {
                continue;
            }
            let exec = permuted_exec(annotated, self.seed, r, bucket)?;
            let params = TimelineParams {
                sequence_steps: Some(Arc::new(steps.clone())),
                ..params.clone()
            };
            let (_, patterns) =
                crate::session::run_timeline(ctx, &exec, Mode::SequenceCounts, params).await?;
            for b in patterns.iter().flatten() {
                permuted.patterns.add(b)?;
            }
        }
        Ok(())
    }

    /// Ranks the sequences of every permuted log; what they all reported.
    pub async fn finish(self, cfg: &PipelineConfig) -> Result<NullCheckSummary> {
        let mut summary = NullCheckSummary {
            permutations: self.permuted.len() as u32,
            ..Default::default()
        };
        for permuted in self.permuted {
            let Some((ctx, clusters, _)) = permuted.ranked else {
                continue;
            };
            summary.clusters.push(clusters);
            let totals = permuted
                .patterns
                .finish(i64::try_from(cfg.min_support).unwrap_or(i64::MAX))?;
            register_sequence_counts(&ctx, totals)?;
            let mut seconds = BTreeMap::new();
            let chains = crate::stages::rank::rank_sequences(&ctx, cfg, &mut seconds).await?;
            summary
                .sequences
                .push(chains.iter().map(|b| b.num_rows() as u64).sum());
        }
        Ok(summary)
    }
}

/// Bucket `bucket`'s contacts under permutation `r`: the same in both
/// passes (dealt from the same seed), so that the sequences are mined on the
/// log the clusters were.
fn permuted_exec(
    annotated: &SortedContactsExec,
    seed: u64,
    r: usize,
    bucket: usize,
) -> Result<Arc<SortedContactsExec>> {
    let mut rng = StdRng::seed_from_u64(
        seed ^ ((r as u64) << 32) ^ (bucket as u64).wrapping_mul(0x9e37_79b9),
    );
    let shuffled = annotated
        .partitions()
        .iter()
        .map(|batches| {
            batches
                .iter()
                .map(|b| shuffle_reasons(b, &mut rng))
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    let schema = datafusion::physical_plan::ExecutionPlan::schema(annotated);
    Ok(Arc::new(SortedContactsExec::try_new(schema, shuffled)?))
}

/// `batch` with its `reason` and `_reason_code` dealt out at random (the same
/// permutation for both).
fn shuffle_reasons(batch: &RecordBatch, rng: &mut StdRng) -> Result<RecordBatch> {
    let mut order: Vec<u32> = (0..batch.num_rows() as u32).collect();
    order.shuffle(rng);
    let order = UInt32Array::from(order);
    let schema = batch.schema();
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| match f.name().as_str() {
            "reason" | "_reason_code" => Ok(take(c.as_ref(), &order, None)?),
            _ => Ok(c.clone()),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema, columns)?)
}
