//! Stage 6 — `report.html`: the run's findings as one self-contained page
//! for a person to look at (no script, style or font from the network; it
//! opens from an e-mail attachment).
//!
//! Input: a run's folder as written — its Parquet tables and its manifest
//! (as JSON). Everything shown is read back from those tables by DataFusion
//! SQL (`queries/report_*.sql` for what is more than a plain select), so the
//! page shows what a data team querying the same files would find.
//! Output: `<run>/report.html` ([`write`]), its size and the seconds taken.
//!
//! Sections: the headline figures; repeat rate by day (surge days shaded),
//! channel, reason and agent; the channel-switch heat map; failure demand;
//! the top clusters and sequences with a lag histogram and example members
//! each; surges against their baseline; cluster trends; the outreach due by
//! reason and day; data quality (exclusions, caps, notes, parameters).
//! Charts are SVG drawn by [`charts`]; the page is rendered from the
//! template `src/html/report.html` by minijinja; its tables sort on a click
//! of their header with a few lines of script in the page.

pub mod charts;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use datafusion::prelude::SessionContext;
use serde::Serialize;
use serde_json::{Map, Value};

use self::charts::{Chart, count, percent};
use crate::error::{Error, Result};

/// Clusters (and sequences) shown, each with its histogram and examples.
pub const TOP_CLUSTERS: usize = 15;
/// Sequences shown.
pub const TOP_SEQUENCES: usize = 10;
/// Example members shown per cluster or sequence.
pub const EXAMPLES: usize = 3;
/// Surges drawn against their baseline (all are listed).
pub const SURGE_CHARTS: usize = 6;
/// Reasons, agents and failure-demand rows drawn in a chart.
pub const TOP_ROWS: usize = 15;

/// The file name of the report in a run's folder.
pub const REPORT_FILE: &str = "report.html";

/// What writing the report took, for the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct ReportFile {
    /// File name in the run's folder.
    pub path: String,
    /// Its size.
    pub bytes: u64,
    /// Seconds to read the tables, draw and write it.
    pub seconds: f64,
}

use crate::queries::{
    REPORT_EXAMPLES as EXAMPLES_SQL, REPORT_LAGS as LAGS, REPORT_OUTREACH_DUE as OUTREACH_DUE,
    REPORT_SURGE_DAYS as SURGE_DAYS,
};

/// The lag bins of the histograms: upper bounds in seconds and labels
/// (report_lags.sql numbers the bins in this order).
const LAG_BINS: [&str; 10] = [
    "<1h", "1-3h", "3-6h", "6-12h", "12-24h", "1-2d", "2-3d", "3-7d", "7-14d", "14d+",
];

/// Writes `run/report.html` from the run's tables and `manifest`.
pub async fn write(run: &Path, manifest: &Value) -> Result<ReportFile> {
    let started = Instant::now();
    let ctx = crate::query::session(run).await?;
    let page = Page::read(&ctx, manifest).await?;
    let html = render(&page)?;
    let path = run.join(REPORT_FILE);
    let partial = run.join(format!("{REPORT_FILE}.partial"));
    std::fs::write(&partial, html.as_bytes()).map_err(|e| Error::io(&partial, e))?;
    if let Err(e) = std::fs::rename(&partial, &path) {
        // (the page in place stays as it was; no half-made one is left)
        let _ = std::fs::remove_file(&partial);
        return Err(Error::io(&path, e));
    }
    Ok(ReportFile {
        path: REPORT_FILE.to_string(),
        bytes: html.len() as u64,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Rows of `sql` as JSON objects (dates and times as text, lists as arrays).
async fn rows(ctx: &SessionContext, sql: &str) -> Result<Vec<Map<String, Value>>> {
    let batches = ctx.sql(sql).await?.collect().await?;
    use datafusion::arrow::json::{WriterBuilder, writer::JsonArray};
    let mut w = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, JsonArray>(Vec::new());
    for b in &batches {
        w.write(b)?;
    }
    w.finish()?;
    let bytes = w.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let parsed: Vec<Map<String, Value>> =
        serde_json::from_slice(&bytes).map_err(|e| Error::Report {
            reason: format!("a table's rows did not read back: {e}"),
        })?;
    Ok(parsed)
}

/// Whether the run wrote table `name`.
async fn has(ctx: &SessionContext, name: &str) -> bool {
    ctx.table_exist(name).unwrap_or(false)
}

/// Rows of `sql` over table `name`, none when the run did not write it (a
/// run of an earlier version read again by `recur report`).
async fn rows_of(ctx: &SessionContext, name: &str, sql: &str) -> Result<Vec<Map<String, Value>>> {
    if has(ctx, name).await {
        rows(ctx, sql).await
    } else {
        Ok(Vec::new())
    }
}

fn num(row: &Map<String, Value>, key: &str) -> f64 {
    row.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

fn text(row: &Map<String, Value>, key: &str) -> String {
    match row.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

/// A chart with the rows it draws from (the page's table beside it).
#[derive(Debug, Serialize)]
struct Figure {
    chart: Chart,
    rows: Vec<Map<String, Value>>,
}

/// One cluster or sequence as the page shows it.
#[derive(Debug, Serialize)]
struct Pattern {
    row: Map<String, Value>,
    sentence: String,
    lags: Option<Chart>,
    examples: Vec<Map<String, Value>>,
}

/// One surge drawn against its baseline.
#[derive(Debug, Serialize)]
struct SurgeChart {
    title: String,
    chart: Chart,
}

/// Everything the template shows.
#[derive(Debug, Serialize)]
struct Page {
    manifest: Value,
    headline: Map<String, Value>,
    by_day: Option<Chart>,
    by_channel: Figure,
    by_reason: Figure,
    by_agent: Option<Figure>,
    switches: Option<Chart>,
    failure: Figure,
    failure_total: (f64, f64),
    clusters: Vec<Pattern>,
    sequences: Vec<Pattern>,
    surges: Vec<Map<String, Value>>,
    surge_charts: Vec<SurgeChart>,
    trends: Vec<Map<String, Value>>,
    outreach_by_reason: Option<Chart>,
    outreach_by_day: Option<Chart>,
    outreach_due: Vec<Map<String, Value>>,
    frequent: Vec<Map<String, Value>>,
    caps_hit: Vec<(String, u64)>,
    parameters: String,
}

impl Page {
    async fn read(ctx: &SessionContext, manifest: &Value) -> Result<Page> {
        let summary = rows(ctx, "SELECT * FROM repeat_summary").await?;
        let dim = |d: &str| -> Vec<Map<String, Value>> {
            summary
                .iter()
                .filter(|r| r.get("dimension").and_then(Value::as_str) == Some(d))
                .cloned()
                .collect()
        };
        let headline = dim("all").into_iter().next().unwrap_or_default();
        let surges = rows_of(ctx, "surges", "SELECT * FROM surges ORDER BY rank").await?;
        let by_day = by_day(&dim("date"), &surges)?;
        let mut channels = dim("channel");
        channels.sort_by(|a, b| num(b, "contacts").total_cmp(&num(a, "contacts")));
        let by_channel = rate_bars(channels)?;
        let mut reasons = dim("reason");
        reasons.sort_by(|a, b| num(b, "repeats").total_cmp(&num(a, "repeats")));
        let by_reason = rate_bars(reasons)?;
        let mut agents = dim("agent");
        agents.sort_by(|a, b| num(b, "contacts").total_cmp(&num(a, "contacts")));
        let by_agent = if agents.is_empty() {
            None
        } else {
            Some(rate_bars(agents)?)
        };
        let switches = switch_map(&dim("channel_transition"))?;
        let failure_rows = rows_of(ctx, "failure_demand", "SELECT * FROM failure_demand").await?;
        let failure_total = failure_rows.iter().fold((0.0, 0.0), |(a, s), r| {
            (
                a + num(r, "then_assisted"),
                s + num(r, "self_service_contacts"),
            )
        });
        let failure = {
            let shown: Vec<_> = failure_rows.iter().take(TOP_ROWS).collect();
            Figure {
                chart: charts::bars(
                    &shown.iter().map(|r| text(r, "reason")).collect::<Vec<_>>(),
                    &shown
                        .iter()
                        .map(|r| num(r, "then_assisted"))
                        .collect::<Vec<_>>(),
                    count,
                )?,
                rows: failure_rows,
            }
        };
        let (clusters, sequences) = patterns(ctx).await?;
        let trends = rows_of(
            ctx,
            "cluster_trends",
            "SELECT * FROM cluster_trends WHERE status <> 'stable' ORDER BY rank",
        )
        .await?;
        let (outreach_by_reason, outreach_by_day, outreach_due) = outreach(ctx).await?;
        let frequent = rows_of(
            ctx,
            "frequent_contacters",
            "SELECT * FROM frequent_contacters ORDER BY rank LIMIT 10",
        )
        .await?;
        Ok(Page {
            manifest: manifest.clone(),
            headline,
            by_day,
            by_channel,
            by_reason,
            by_agent,
            switches,
            failure,
            failure_total,
            clusters,
            sequences,
            surge_charts: surge_charts(ctx, &surges).await?,
            surges,
            trends,
            outreach_by_reason,
            outreach_by_day,
            outreach_due,
            frequent,
            caps_hit: manifest["caps"]
                .as_object()
                .map(|caps| {
                    caps.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                        .filter(|(_, n)| *n > 0)
                        .collect()
                })
                .unwrap_or_default(),
            parameters: serde_json::to_string_pretty(&manifest["parameters"]).unwrap_or_default(),
        })
    }
}

/// The repeat rate by day, surge days shaded.
fn by_day(days: &[Map<String, Value>], surges: &[Map<String, Value>]) -> Result<Option<Chart>> {
    if days.is_empty() {
        return Ok(None);
    }
    let mut days: Vec<_> = days.iter().collect();
    days.sort_by_key(|r| text(r, "key"));
    let labels: Vec<String> = days.iter().map(|r| text(r, "key")).collect();
    let marked: Vec<bool> = labels
        .iter()
        .map(|d| {
            surges.iter().any(|s| {
                text(s, "start_date").as_str() <= d.as_str()
                    && d.as_str() <= text(s, "end_date").as_str()
            })
        })
        .collect();
    let rates: Vec<f64> = days.iter().map(|r| num(r, "repeat_rate")).collect();
    Ok(Some(charts::daily(
        &labels, &rates, None, &marked, percent,
    )?))
}

/// The repeat rate of the first [`TOP_ROWS`] of `rows` as bars; the table
/// keeps every row.
fn rate_bars(rows: Vec<Map<String, Value>>) -> Result<Figure> {
    let shown: Vec<_> = rows.iter().take(TOP_ROWS).collect();
    Ok(Figure {
        chart: charts::bars(
            &shown.iter().map(|r| text(r, "key")).collect::<Vec<_>>(),
            &shown
                .iter()
                .map(|r| num(r, "repeat_rate"))
                .collect::<Vec<_>>(),
            percent,
        )?,
        rows,
    })
}

/// The channel-switch heat map: for each channel a customer came back from
/// (rows), the share of its repeats that came on each channel (columns).
fn switch_map(transitions: &[Map<String, Value>]) -> Result<Option<Chart>> {
    let mut repeats: BTreeMap<(String, String), f64> = BTreeMap::new();
    for r in transitions {
        let key = text(r, "key");
        if let Some((from, to)) = key.split_once(" -> ") {
            *repeats.entry((from.into(), to.into())).or_default() += num(r, "repeats");
        }
    }
    let mut names: Vec<String> = repeats
        .keys()
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() || repeats.values().all(|v| *v == 0.0) {
        return Ok(None);
    }
    let cells: Vec<Vec<Option<f64>>> = names
        .iter()
        .map(|from| {
            let total: f64 = names
                .iter()
                .map(|to| repeats.get(&(from.clone(), to.clone())).unwrap_or(&0.0))
                .sum();
            names
                .iter()
                .map(|to| {
                    let n = *repeats.get(&(from.clone(), to.clone())).unwrap_or(&0.0);
                    (total > 0.0).then(|| n / total)
                })
                .collect()
        })
        .collect();
    Ok(Some(charts::heat_map(&names, &names, &cells, percent)?))
}

/// The top clusters and sequences with their lag histograms and examples.
async fn patterns(ctx: &SessionContext) -> Result<(Vec<Pattern>, Vec<Pattern>)> {
    let top = [
        ("top_clusters", TOP_CLUSTERS.to_string()),
        ("top_sequences", TOP_SEQUENCES.to_string()),
        ("examples", EXAMPLES.to_string()),
    ];
    let clusters = rows(
        ctx,
        &format!("SELECT * FROM clusters ORDER BY rank LIMIT {TOP_CLUSTERS}"),
    )
    .await?;
    let sequences = rows(
        ctx,
        &format!("SELECT * FROM sequences ORDER BY rank LIMIT {TOP_SEQUENCES}"),
    )
    .await?;
    let members = has(ctx, "cluster_members").await;
    let (lags, examples) = if members {
        (
            rows(ctx, &crate::queries::render(LAGS, &top)).await?,
            rows(ctx, &crate::queries::render(EXAMPLES_SQL, &top)).await?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let examples_of = |id: &str| -> Vec<Map<String, Value>> {
        examples
            .iter()
            .filter(|e| text(e, "cluster_id") == id)
            .cloned()
            .collect()
    };
    let mut shown = Vec::new();
    for c in clusters {
        let id = text(&c, "cluster_id");
        let mut bins = [0.0; LAG_BINS.len()];
        for l in lags.iter().filter(|l| text(l, "cluster_id") == id) {
            if let Some(b) = bins.get_mut(num(l, "bin") as usize) {
                *b += num(l, "members");
            }
        }
        let last = bins.iter().rposition(|b| *b > 0.0).map_or(0, |i| i + 1);
        let lags = if last > 0 {
            let labels: Vec<String> = LAG_BINS[..last].iter().map(|s| s.to_string()).collect();
            Some(charts::columns(&labels, &bins[..last], count)?)
        } else {
            None
        };
        shown.push(Pattern {
            sentence: cluster_sentence(&c),
            examples: examples_of(&id),
            lags,
            row: c,
        });
    }
    let sequences = sequences
        .into_iter()
        .map(|s| {
            let id = text(&s, "sequence_id");
            Pattern {
                sentence: sequence_sentence(&s),
                examples: examples_of(&id),
                lags: None,
                row: s,
            }
        })
        .collect();
    Ok((shown, sequences))
}

/// A window in words: "24 hours", "7 days".
fn window_words(seconds: f64) -> String {
    let plural = |n: f64, unit: &str| {
        if n == 1.0 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    if seconds >= 86_400.0 && (seconds / 86_400.0).fract() == 0.0 {
        plural(seconds / 86_400.0, "day")
    } else if seconds >= 3_600.0 && (seconds / 3_600.0).fract() == 0.0 {
        plural(seconds / 3_600.0, "hour")
    } else {
        plural((seconds / 60.0).round(), "minute")
    }
}

fn cluster_sentence(c: &Map<String, Value>) -> String {
    format!(
        "{} of {} {} contacts ({}) were followed by {} within {}: {:.1}× what chance gives.",
        thousands(num(c, "n_support")),
        thousands(num(c, "n_antecedent")),
        text(c, "antecedent"),
        percent(num(c, "confidence")),
        text(c, "consequent"),
        window_words(num(c, "window_s")),
        num(c, "lift"),
    )
}

fn sequence_sentence(s: &Map<String, Value>) -> String {
    let steps: Vec<String> = s
        .get("pattern")
        .and_then(Value::as_array)
        .map(|p| {
            p.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{} customers went {} ({} of those who began it finished it, {:.1}× chance).",
        thousands(num(s, "customers")),
        steps.join(" → "),
        percent(num(s, "confidence")),
        num(s, "lift"),
    )
}

/// Each drawn surge's days: first contacts against the expected.
async fn surge_charts(
    ctx: &SessionContext,
    surges: &[Map<String, Value>],
) -> Result<Vec<SurgeChart>> {
    if surges.is_empty() || !has(ctx, "reason_days").await {
        return Ok(Vec::new());
    }
    let days = rows(
        ctx,
        &crate::queries::render(SURGE_DAYS, &[("top_surges", SURGE_CHARTS.to_string())]),
    )
    .await?;
    let mut out = Vec::new();
    for s in surges.iter().take(SURGE_CHARTS) {
        let rank = num(s, "rank");
        let own: Vec<_> = days.iter().filter(|d| num(d, "rank") == rank).collect();
        if own.is_empty() {
            continue;
        }
        let labels: Vec<String> = own.iter().map(|d| text(d, "date")).collect();
        let values: Vec<f64> = own.iter().map(|d| num(d, "first_contacts")).collect();
        let expected: Vec<f64> = own.iter().map(|d| num(d, "expected")).collect();
        let marked: Vec<bool> = own
            .iter()
            .map(|d| d.get("in_surge").and_then(Value::as_bool).unwrap_or(false))
            .collect();
        let on = match text(s, "channel") {
            c if c.is_empty() => String::new(),
            c => format!(" on {c}"),
        };
        out.push(SurgeChart {
            title: format!(
                "{}{on}: {} first contacts from {} to {} where {} were expected",
                text(s, "reason"),
                thousands(num(s, "first_contacts")),
                text(s, "start_date"),
                text(s, "end_date"),
                count((num(s, "expected") * 10.0).round() / 10.0),
            ),
            chart: charts::daily(&labels, &values, Some(&expected), &marked, count)?,
        });
    }
    Ok(out)
}

/// The outreach due: by expected reason (bars), by day (columns), and the
/// rows behind both.
async fn outreach(
    ctx: &SessionContext,
) -> Result<(Option<Chart>, Option<Chart>, Vec<Map<String, Value>>)> {
    if !has(ctx, "outreach").await {
        return Ok((None, None, Vec::new()));
    }
    let due = rows(ctx, OUTREACH_DUE).await?;
    let mut by_reason: BTreeMap<String, f64> = BTreeMap::new();
    let mut by_day: BTreeMap<String, f64> = BTreeMap::new();
    for r in &due {
        *by_reason.entry(text(r, "expected_reason")).or_default() += num(r, "customers");
        *by_day.entry(text(r, "due_date")).or_default() += num(r, "customers");
    }
    if due.is_empty() {
        return Ok((None, None, due));
    }
    let mut reasons: Vec<_> = by_reason.into_iter().collect();
    reasons.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    reasons.truncate(TOP_ROWS);
    let reason_chart = charts::bars(
        &reasons.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
        &reasons.iter().map(|r| r.1).collect::<Vec<_>>(),
        count,
    )?;
    let days: Vec<_> = by_day.into_iter().collect();
    let day_chart = charts::columns(
        &days.iter().map(|d| d.0.clone()).collect::<Vec<_>>(),
        &days.iter().map(|d| d.1).collect::<Vec<_>>(),
        count,
    )?;
    Ok((Some(reason_chart), Some(day_chart), due))
}

/// The page from the template.
fn render(page: &Page) -> Result<String> {
    let mut env = minijinja::Environment::new();
    use minijinja::Value as V;
    // numbers shown with their unit; a null (or missing) value as a dash
    let number = |v: V| f64::try_from(v).ok().filter(|f| f.is_finite());
    env.add_filter("pct", move |v: V| {
        number(v).map_or("–".into(), percent_precise)
    });
    env.add_filter("num", move |v: V| number(v).map_or("–".into(), thousands));
    env.add_filter("dec", move |v: V, places: usize| {
        number(v).map_or("–".into(), |f| format!("{f:.places$}"))
    });
    env.add_filter("dur", move |v: V| number(v).map_or("–".into(), duration));
    env.add_filter("pval", move |v: V| {
        number(v).map_or("–".into(), |p| {
            if p < 1e-4 {
                "< 0.0001".into()
            } else {
                format!("{p:.4}")
            }
        })
    });
    env.add_filter("window", move |v: V| {
        number(v).map_or("–".into(), window_words)
    });
    // an RFC 3339 instant to the minute: "2026-10-29 23:57 UTC"
    env.add_filter("minute", |v: V| {
        v.as_str().map_or("–".into(), |s| {
            chrono::DateTime::parse_from_rfc3339(s).map_or(s.to_string(), |t| {
                t.with_timezone(&chrono::Utc)
                    .format("%Y-%m-%d %H:%M UTC")
                    .to_string()
            })
        })
    });
    env.add_template("report.html", include_str!("report.html"))
        .map_err(template_failed)?;
    env.get_template("report.html")
        .and_then(|t| t.render(page))
        .map_err(template_failed)
}

fn template_failed(e: minijinja::Error) -> Error {
    Error::Report {
        reason: format!("the page template failed: {e:#}"),
    }
}

/// A share with one decimal: "31.9%".
fn percent_precise(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

/// An integer with thousands separators; other numbers with two decimals.
fn thousands(v: f64) -> String {
    if v.fract() != 0.0 {
        return format!("{v:.2}");
    }
    let digits = format!("{}", v.abs() as u64);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

/// Seconds in the largest unit that keeps a readable number: "45 min",
/// "3.2 h", "2.5 d".
fn duration(s: f64) -> String {
    if s < 3_600.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 86_400.0 {
        format!("{:.1} h", s / 3_600.0)
    } else {
        format!("{:.1} d", s / 86_400.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_right() {
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1.5), "1.50");
        assert_eq!(percent_precise(0.3190), "31.9%");
        assert_eq!(duration(1_800.0), "30 min");
        assert_eq!(duration(7_200.0), "2.0 h");
        assert_eq!(duration(259_200.0), "3.0 d");
        assert_eq!(window_words(86_400.0), "1 day");
        assert_eq!(window_words(604_800.0), "7 days");
        assert_eq!(window_words(7_200.0), "2 hours");
    }

    #[test]
    fn the_switch_map_shares_each_channels_repeats() {
        let row = |key: &str, repeats: f64| {
            let mut m = Map::new();
            m.insert("key".into(), Value::from(key));
            m.insert("repeats".into(), Value::from(repeats));
            m
        };
        let chart = switch_map(&[row("app -> phone", 3.0), row("app -> app", 1.0)])
            .unwrap()
            .unwrap();
        // app → phone is 75% of app's repeats; phone has none of its own
        assert!(chart.svg.contains("75%"), "{}", chart.svg);
        assert_eq!(chart.points, 2);
        assert!(switch_map(&[]).unwrap().is_none());
    }
}
