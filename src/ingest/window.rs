//! The run's window: which contacts a run as of a date reads.
//!
//! Input: the as-of instant and the lookback of a [`PipelineConfig`], and
//! the input files' paths.
//! Output: a [`Window`] — the instants a contact must fall in, the files
//! whose folder-name partition (`date=2026-11-01/`) lies outside it (not
//! opened: partition pruning) and, for a timestamp column, a predicate
//! DataFusion prunes Parquet row groups with.
//!
//! The window is (as_of − lookback, as_of], both ends in microseconds UTC.
//! Partition days and the pruning predicate are compared with a day's slack
//! on each side: a folder's day and a naive timestamp are local times, read
//! in `--timezone` only once a row is normalised; the exact test is made
//! row by row ([`Window::contains`]).

use std::path::Path;

use chrono::NaiveDate;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::prelude::{Expr, col, lit};

use crate::config::PipelineConfig;

const DAY_US: i64 = 86_400_000_000;

/// The instants a run reads: `start_us < ts <= end_us` where set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// Exclusive lower bound (as_of − lookback).
    pub start_us: Option<i64>,
    /// Inclusive upper bound (the as-of).
    pub end_us: Option<i64>,
}

impl Window {
    /// The window of a run: bounded above by `--as-of`, below by
    /// `--lookback` before it.
    pub fn of(cfg: &PipelineConfig) -> Window {
        Window {
            start_us: cfg.as_of_us.zip(cfg.lookback_us).map(|(a, l)| a - l),
            end_us: cfg.as_of_us,
        }
    }

    /// Whether the window bounds anything.
    pub fn is_bounded(&self) -> bool {
        self.start_us.is_some() || self.end_us.is_some()
    }

    /// Whether a contact at `ts` is in the window.
    pub fn contains(&self, ts: i64) -> bool {
        self.start_us.is_none_or(|s| ts > s) && self.end_us.is_none_or(|e| ts <= e)
    }

    /// Whether a file of partition day `day` may hold a contact in the
    /// window (a day's slack each side for time zones).
    pub fn may_hold_day(&self, day: NaiveDate) -> bool {
        let first = day
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp_micros();
        // the instants [lo, hi] its contacts may have
        let (lo, hi) = (first - DAY_US, first + 2 * DAY_US - 1);
        self.start_us.is_none_or(|s| hi > s) && self.end_us.is_none_or(|e| lo <= e)
    }

    /// A predicate on time column `name` of type `data_type` that keeps
    /// every row the window may hold (and nulls, which ingest counts as
    /// excluded), for DataFusion to skip row groups by their statistics;
    /// None for a column that is not an Arrow timestamp.
    pub fn scan_predicate(&self, name: &str, data_type: &DataType) -> Option<Expr> {
        let DataType::Timestamp(unit, zone) = data_type else {
            return None;
        };
        if !self.is_bounded() {
            return None;
        }
        let to_unit = |us: i64| match unit {
            TimeUnit::Second => us.div_euclid(1_000_000),
            TimeUnit::Millisecond => us.div_euclid(1_000),
            TimeUnit::Microsecond => us,
            TimeUnit::Nanosecond => us.saturating_mul(1_000),
        };
        let literal = |us: i64| {
            let v = Some(to_unit(us));
            let z = zone.clone();
            lit(match unit {
                TimeUnit::Second => ScalarValue::TimestampSecond(v, z),
                TimeUnit::Millisecond => ScalarValue::TimestampMillisecond(v, z),
                TimeUnit::Microsecond => ScalarValue::TimestampMicrosecond(v, z),
                TimeUnit::Nanosecond => ScalarValue::TimestampNanosecond(v, z),
            })
        };
        let column = col(format!("\"{}\"", name.replace('"', "\"\"")));
        let mut within = Vec::new();
        if let Some(s) = self.start_us {
            within.push(column.clone().gt_eq(literal(s - DAY_US)));
        }
        if let Some(e) = self.end_us {
            within.push(column.clone().lt_eq(literal(e + DAY_US)));
        }
        let within = within.into_iter().reduce(Expr::and)?;
        Some(column.is_null().or(within))
    }
}

/// The day a file's folder names for partition `column` (`…/date=2026-11-01/…`
/// or `…/date=2026-11-01T00:00:00/…`), if any.
pub fn partition_day(path: &Path, column: &str) -> Option<NaiveDate> {
    let prefix = format!("{column}=");
    path.parent()?.components().rev().find_map(|c| {
        let name = c.as_os_str().to_str()?;
        let value = name.strip_prefix(&prefix)?;
        NaiveDate::parse_from_str(value.get(..10)?, "%Y-%m-%d").ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_days_and_pruning() {
        let p = Path::new("/logs/date=2026-11-05/part-0.parquet");
        let day = NaiveDate::from_ymd_opt(2026, 11, 5).unwrap();
        assert_eq!(partition_day(p, "date"), Some(day));
        assert_eq!(partition_day(p, "day"), None);
        assert_eq!(
            partition_day(Path::new("x/day=2026-11-05T00:00:00/a.parquet"), "day"),
            Some(day)
        );
        // the file name itself is no partition
        assert_eq!(partition_day(Path::new("date=2026-11-05"), "date"), None);
        let end = |d: NaiveDate| d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_micros();
        let w = Window {
            start_us: Some(end(day) - 1),
            end_us: Some(end(day + chrono::Days::new(30)) - 1),
        };
        assert!(w.may_hold_day(day));
        assert!(w.may_hold_day(day - chrono::Days::new(1)));
        assert!(!w.may_hold_day(day - chrono::Days::new(2)));
        assert!(w.may_hold_day(day + chrono::Days::new(30)));
        assert!(!w.may_hold_day(day + chrono::Days::new(31)));
        assert!(w.contains(end(day)));
        assert!(!w.contains(end(day) - 1));
        assert!(!w.contains(end(day + chrono::Days::new(30))));
    }
}
