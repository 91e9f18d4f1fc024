//! recur finds the contacts a contact center should never have had to take.
//!
//! It reads interaction logs (Parquet), finds **repeat contacts** (the same
//! customer back within a window, 24 hours by default) and **event
//! clusters** (A → B: contacts with reason A that tend to be followed by a
//! B-contact within days), and writes ranked Parquet reports.
//!
//! [`pipeline`] runs the stages over typed results: [`ingest`] (files →
//! normalised contacts, in [`buckets`] of whole customers when a log is
//! larger than memory) → [`stages::first_pass`] (the per-customer pass of
//! [`timeline`], a DataFusion operator, sorted once per bucket) →
//! [`stages::rank`] ([`significance`]: what chance gives each A → B pair;
//! the tests and the ranking in SQL, [`queries`]) → [`stages::second_pass`]
//! (sequences, follow-ups, outreach triggers) → [`stages::reports`]
//! (Parquet tables, see [`report`]; today's outreach list, [`daily_list`]).
//! [`runs`] keeps many runs in one output folder, each published whole
//! under its as-of. [`session`] holds what the stages
//! share; [`codes`] turns channel and reason texts into integers;
//! [`config`] and [`time`] read the options. [`generate`] writes synthetic
//! logs with planted truth, [`evaluate`] scores a run against them;
//! [`query`] runs SQL over a run's outputs (`recur query`); [`surges`] and
//! [`stages::trends`] say what changed. With
//! the `ballista` cargo feature, `distributed` runs recur on an Apache
//! Ballista cluster (`recur run --cluster`) and holds `recur scheduler`,
//! `recur executor` and `recur cluster-check` (docs/CLUSTER.md).
//! docs/architecture.md has the module tree.
//!
//! ```no_run
//! # async fn demo() -> recur::Result<()> {
//! use recur::config::{PipelineConfig, RunOptions};
//! let cfg = PipelineConfig::from_raw(RunOptions {
//!     inputs: Some(vec!["sample-data/contacts.parquet".into()]),
//!     out: Some("recur-out".into()),
//!     exclude_customer: Some(vec!["UNKNOWN".into(), "0".into()]),
//!     ..Default::default()
//! })?;
//! let summary = recur::pipeline::run(&cfg, &recur::pipeline::NoProgress).await?;
//! println!("repeat rate {:?}", summary.repeat_rate);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]
// Errors carry the file, column and an example value for the user; they are
// built once per run, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod buckets;
pub mod codes;
pub mod config;
pub mod contacters;
pub mod daily_list;
#[cfg(feature = "ballista")]
pub mod distributed;
pub mod error;
pub mod evaluate;
pub mod generate;
pub mod html;
pub mod ingest;
pub mod outreach;
pub mod pipeline;
pub mod pseudonym;
pub mod queries;
pub mod query;
pub mod report;
pub mod runs;
pub mod session;
pub mod significance;
pub mod stages;
pub mod surges;
pub mod time;
pub mod timeline;
pub mod udf;

pub use error::{Error, Result};
