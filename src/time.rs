//! Times and durations: the text forms a user writes (`2026-11-01 08:30`,
//! `24h`) and the epoch integers a log holds, as UTC microseconds, the one
//! unit every stage works in.
//!
//! Input: strings and integers from flags, config files and input columns.
//! Output: `i64` microseconds since the Unix epoch, UTC (or a duration in
//! microseconds), and the readable form of a duration for reports.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;

/// A date as days since the Unix epoch (Arrow's `Date32`).
pub fn epoch_day(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date")).num_days() as i32
}

/// Days since the Unix epoch (Arrow's `Date32`) as a date.
pub fn from_epoch_day(day: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date") + chrono::Duration::days(day as i64)
}

/// Converts an integer epoch to microseconds, telling the unit by magnitude:
/// |v| < 10^11 seconds, < 10^14 milliseconds, < 10^17 microseconds, else
/// nanoseconds (unambiguous for every instant between 1973 and 5138).
pub fn epoch_to_us(v: i64) -> i64 {
    let a = v.unsigned_abs();
    if a < 100_000_000_000 {
        v.saturating_mul(1_000_000)
    } else if a < 100_000_000_000_000 {
        v.saturating_mul(1_000)
    } else if a < 100_000_000_000_000_000 {
        v
    } else {
        v / 1_000
    }
}

/// Reads a local wall-clock time in `tz` as UTC microseconds. Ambiguous times
/// (the hour repeated when clocks go back) take the earlier instant; times in
/// a spring-forward gap are read one hour later.
pub fn local_to_utc_us(tz: Tz, ndt: NaiveDateTime) -> i64 {
    if tz == chrono_tz::UTC {
        return ndt.and_utc().timestamp_micros();
    }
    match tz.from_local_datetime(&ndt).earliest() {
        Some(dt) => dt.timestamp_micros(),
        None => {
            let later = ndt + chrono::Duration::hours(1);
            tz.from_local_datetime(&later)
                .earliest()
                .map(|dt| dt.timestamp_micros())
                .unwrap_or_else(|| ndt.and_utc().timestamp_micros())
        }
    }
}

/// A run's as-of: a bare date `YYYY-MM-DD` is the end of that day in `tz`
/// (its last microsecond, so that the day's contacts are in); anything else
/// is read by [`parse_time_str`].
pub fn parse_as_of(s: &str, tz: Tz) -> Option<i64> {
    match NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d") {
        Ok(d) => {
            let next = d.succ_opt()?.and_hms_opt(0, 0, 0)?;
            Some(local_to_utc_us(tz, next) - 1)
        }
        Err(_) => parse_time_str(s, tz),
    }
}

/// The local date in `tz` of the instant `us` (µs since the epoch, UTC).
pub fn local_date(tz: Tz, us: i64) -> NaiveDate {
    tz.timestamp_micros(us)
        .single()
        .map(|t| t.date_naive())
        .unwrap_or_else(|| {
            DateTime::from_timestamp_micros(us)
                .unwrap_or_default()
                .date_naive()
        })
}

/// The first instant (µs, UTC) of local date `d` in `tz`.
pub fn day_start_us(tz: Tz, d: NaiveDate) -> i64 {
    local_to_utc_us(tz, d.and_hms_opt(0, 0, 0).expect("midnight"))
}

/// Parses an RFC 3339 / ISO 8601 string; naive forms are read in `tz`.
pub fn parse_time_str(s: &str, tz: Tz) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_micros());
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(s, f) {
            return Some(dt.timestamp_micros());
        }
    }
    let naive = s.strip_suffix('Z').unwrap_or(s);
    let is_utc = naive.len() != s.len();
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(ndt) = NaiveDateTime::parse_from_str(naive, f) {
            return Some(if is_utc {
                ndt.and_utc().timestamp_micros()
            } else {
                local_to_utc_us(tz, ndt)
            });
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(naive, "%Y-%m-%d") {
        let ndt = d.and_hms_opt(0, 0, 0)?;
        return Some(if is_utc {
            ndt.and_utc().timestamp_micros()
        } else {
            local_to_utc_us(tz, ndt)
        });
    }
    None
}

/// The longest duration a flag takes: 100 years (a window longer than any
/// log; it keeps every sum of a time and a window within i64).
pub const MAX_DURATION_US: i64 = 36_500 * 86_400_000_000;

/// Parses a duration such as `90s`, `15m`, `24h`, `7d` or `2w` into
/// microseconds. A bare number is seconds. The duration must be positive
/// and at most [`MAX_DURATION_US`].
pub fn parse_duration_us(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 15m, 24h or 7d"))?;
    let unit_s: f64 = match unit.trim() {
        "" | "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        "w" => 604_800.0,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{s}' (use s, m, h, d or w)"
            ));
        }
    };
    let us = (value * unit_s * 1e6).round();
    if us < 1.0 {
        return Err(format!("'{s}' must be a positive duration"));
    }
    if us > MAX_DURATION_US as f64 {
        return Err(format!(
            "'{s}' is longer than the {}d recur accepts",
            MAX_DURATION_US / 86_400_000_000
        ));
    }
    Ok(us as i64)
}

/// A UTC instant in µs as RFC 3339 (empty when out of chrono's range).
pub fn format_utc(us: i64) -> String {
    DateTime::from_timestamp_micros(us)
        .map(|d| d.to_rfc3339())
        .unwrap_or_default()
}

/// Renders microseconds as a readable exact duration: days from two days
/// up (`7d`), else hours (`24h`), minutes (`15m`) or seconds (`90s`).
pub fn format_duration_us(us: i64) -> String {
    const S: i64 = 1_000_000;
    if us % (86_400 * S) == 0 && us >= 2 * 86_400 * S {
        format!("{}d", us / (86_400 * S))
    } else if us % (3600 * S) == 0 {
        format!("{}h", us / (3600 * S))
    } else if us % (60 * S) == 0 {
        format!("{}m", us / (60 * S))
    } else {
        format!("{}s", us as f64 / S as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_units_by_magnitude() {
        let s = 1_700_000_000i64; // 2023-11-14
        assert_eq!(epoch_to_us(s), s * 1_000_000);
        assert_eq!(epoch_to_us(s * 1_000), s * 1_000_000);
        assert_eq!(epoch_to_us(s * 1_000_000), s * 1_000_000);
        assert_eq!(epoch_to_us(s * 1_000_000_000), s * 1_000_000);
    }

    #[test]
    fn strings_parse_in_zone() {
        let utc = chrono_tz::UTC;
        let t = parse_time_str("2026-11-01T08:30:00Z", utc).unwrap();
        assert_eq!(parse_time_str("2026-11-01 08:30:00", utc), Some(t));
        assert_eq!(parse_time_str("2026-11-01T09:30:00+01:00", utc), Some(t));
        assert_eq!(parse_time_str("2026-11-01T08:30", utc), Some(t));
        let paris: Tz = "Europe/Paris".parse().unwrap();
        assert_eq!(parse_time_str("2026-11-01 09:30:00", paris), Some(t));
        assert_eq!(parse_time_str("yesterday", utc), None);
        assert!(parse_time_str("2026-11-01", utc).is_some());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_us("24h").unwrap(), 86_400_000_000);
        assert_eq!(parse_duration_us("15m").unwrap(), 900_000_000);
        assert_eq!(parse_duration_us("7d").unwrap(), 604_800_000_000);
        assert_eq!(parse_duration_us("90").unwrap(), 90_000_000);
        assert_eq!(parse_duration_us("1.5h").unwrap(), 5_400_000_000);
        assert!(parse_duration_us("0h").is_err());
        assert!(parse_duration_us("h").is_err());
        assert!(parse_duration_us("5y").is_err());
        assert_eq!(parse_duration_us("36500d").unwrap(), MAX_DURATION_US);
        let long = parse_duration_us("99999999999d").unwrap_err();
        assert!(long.contains("longer than the 36500d"), "{long}");
        assert_eq!(format_duration_us(86_400_000_000), "24h");
        assert_eq!(format_duration_us(604_800_000_000), "7d");
        assert_eq!(format_duration_us(5_400_000_000), "90m");
        assert_eq!(format_duration_us(1_500_000), "1.5s");
    }
}
