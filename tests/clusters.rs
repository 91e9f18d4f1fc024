//! Clusters an outreach team can act on: calibration on shuffled reasons,
//! recovery of planted clusters (evaluate), and the outreach list on a log
//! whose expected customers are known by construction.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::compute::concat_batches;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recur::generate::{GenerateParams, generate};

use crate::common::{LogRow, column_text, config, read_parquet, write_batch, write_log};

fn placeholders(c: &mut recur::config::ConfigFile) {
    c.exclude_customer = Some(vec!["UNKNOWN".into(), "0".into()]);
}

/// Reasons shuffled at random across contacts: whatever timing linked them is
/// gone, so a calibrated run reports (almost) nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shuffled_reasons_report_almost_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut reported = Vec::new();
    for seed in [11u64, 12, 13] {
        let log = dir.path().join(format!("log{seed}.parquet"));
        generate(
            &log,
            &GenerateParams {
                customers: 8_000,
                days: 90,
                seed,
            },
        )
        .unwrap();
        let batches = read_parquet(&log);
        let batch = concat_batches(&batches[0].schema(), &batches).unwrap();
        let idx = batch.schema().index_of("reason").unwrap();
        let mut reasons = column_text(std::slice::from_ref(&batch), "reason");
        let mut rng = StdRng::seed_from_u64(seed);
        for i in (1..reasons.len()).rev() {
            reasons.swap(i, rng.random_range(0..=i));
        }
        let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
        cols[idx] = Arc::new(StringArray::from(reasons));
        let shuffled = dir.path().join(format!("shuffled{seed}.parquet"));
        write_batch(
            &shuffled,
            &RecordBatch::try_new(batch.schema(), cols).unwrap(),
        );
        let out = dir.path().join(format!("out{seed}"));
        let cfg = config(&[&shuffled], &out, placeholders);
        let s = recur::pipeline::run(&cfg, &recur::pipeline::NoProgress)
            .await
            .unwrap();
        reported.extend(s.top_clusters.iter().map(|c| format!("{c:?}")));
        reported.extend(s.sequences.iter().map(|c| format!("{c:?}")));

        // and the same log unshuffled finds its planted clusters
        if seed == 11 {
            let out = dir.path().join("unshuffled");
            let cfg = config(&[&log], &out, placeholders);
            let s = recur::pipeline::run(&cfg, &recur::pipeline::NoProgress)
                .await
                .unwrap();
            assert!(s.clusters >= 6, "planted clusters found: {}", s.clusters);
            assert_eq!(
                s.sequences
                    .iter()
                    .map(|q| q.pattern.join(" -> "))
                    .collect::<Vec<_>>(),
                vec!["moving_home -> service_transfer -> installation_issue"]
            );
        }
    }
    assert!(reported.len() <= 1, "shuffled logs reported: {reported:#?}");
}

/// On generated logs with different seeds, every planted cluster whose lag
/// fits a window is in the top 10 (recall@10 = 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_recalls_planted_clusters() {
    let dir = tempfile::tempdir().unwrap();
    for seed in [21u64, 22, 23] {
        let log = dir.path().join(format!("log{seed}.parquet"));
        generate(
            &log,
            &GenerateParams {
                customers: 10_000,
                days: 90,
                seed,
            },
        )
        .unwrap();
        let out = dir.path().join(format!("out{seed}"));
        let cfg = config(&[&log], &out, placeholders);
        recur::pipeline::run(&cfg, &recur::pipeline::NoProgress)
            .await
            .unwrap();
        let e = recur::evaluate::evaluate(&recur::generate::truth_path(&log), &out).unwrap();
        let at10 = e.clusters.iter().find(|k| k.k == 10).unwrap();
        assert_eq!(at10.recall, 1.0, "seed {seed}: {e:#?}");
        assert!(out.join("evaluation.json").is_file());
        // the month-lag cluster is found at the 30-day window
        let month = e
            .planted
            .iter()
            .find(|p| p.item == "plan_upgrade -> bill_shock")
            .unwrap();
        assert_eq!(month.window_s, Some(30 * 86_400), "seed {seed}");
    }
}

const H: i64 = 3_600_000_000;
const DAY: i64 = 24 * H;
const T0: i64 = 1_780_000_000_000_000;

fn row(id: &mut i64, customer: &str, ts: i64, reason: &str) -> LogRow {
    *id += 1;
    LogRow {
        contact_id: *id,
        customer: Some(customer.into()),
        ts: Some(ts),
        channel: Some("phone".into()),
        reason: Some(reason.into()),
        agent: None,
    }
}

/// 300 customers order a feature; 60% ask how to use it two to four days
/// later. At the end, five customers ordered a day ago and have not asked
/// yet: they, and only they, are on the outreach list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outreach_lists_customers_known_by_construction() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut id = 0;
    let mut rows = Vec::new();
    let end = T0 + 60 * DAY;
    for c in 0..300 {
        let cust = format!("hist{c}");
        let t = T0 + rng.random_range(0..50) * DAY + rng.random_range(0..10) * H;
        rows.push(row(&mut id, &cust, t, "order_feature"));
        if c % 5 < 3 {
            let lag = 2 * DAY + rng.random_range(0..48) * H;
            rows.push(row(&mut id, &cust, t + lag, "how_to_use"));
        }
        // background contacts that follow nothing in particular
        for _ in 0..3 {
            let t = T0 + rng.random_range(0..60 * 24) * H;
            let r = ["billing", "outage", "password"][rng.random_range(0..3)];
            rows.push(row(&mut id, &cust, t, r));
        }
    }
    for k in 0..5 {
        rows.push(row(
            &mut id,
            &format!("due{k}"),
            end - DAY + k * H,
            "order_feature",
        ));
    }
    // ordered three days ago and already asked: not listed
    rows.push(row(&mut id, "asked", end - 3 * DAY, "order_feature"));
    rows.push(row(&mut id, "asked", end - 2 * H, "how_to_use"));
    // ordered 20 days ago: past the lag distribution, not listed
    rows.push(row(&mut id, "stale", end - 20 * DAY, "order_feature"));
    // the data ends at `end`
    rows.push(row(&mut id, "last", end, "billing"));

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.parquet");
    write_log(&log, &rows);
    let out = dir.path().join("out");
    let cfg = config(&[&log], &out, |c| {
        c.min_support = Some(10);
    });
    let s = recur::pipeline::run(&cfg, &recur::pipeline::NoProgress)
        .await
        .unwrap();
    let top = &s.top_clusters[0];
    assert_eq!(
        (top.antecedent.as_str(), top.consequent.as_str()),
        ("order_feature", "how_to_use")
    );

    let o = read_parquet(&out.join("outreach.parquet"));
    let rows: Vec<(String, String, String)> = column_text(&o, "customer_id")
        .into_iter()
        .zip(column_text(&o, "expected_reason"))
        .zip(column_text(&o, "probability"))
        .map(|((c, r), p)| (c, r, p))
        .filter(|r| r.1 == "how_to_use")
        .collect();
    let mut customers: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    customers.sort();
    assert_eq!(customers, vec!["due0", "due1", "due2", "due3", "due4"]);
    // one day after ordering no follow-up has come yet (all lags are >= 2 days),
    // so the probability is the cluster's confidence
    for r in &rows {
        assert!(
            (r.2.parse::<f64>().unwrap() - top.confidence).abs() < 1e-12,
            "{r:?}"
        );
    }
    // a customer appears once per expected follow-up
    let all: Vec<(String, String)> = column_text(&o, "customer_id")
        .into_iter()
        .zip(column_text(&o, "expected_reason"))
        .collect();
    let distinct: std::collections::BTreeSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), all.len());
    // an as-of before the last orders lists nobody who ordered after it
    let out2 = dir.path().join("out2");
    let cfg = config(&[&log], &out2, |c| {
        c.min_support = Some(10);
        c.as_of = Some("2026-06-01T00:00:00Z".into());
    });
    recur::pipeline::run(&cfg, &recur::pipeline::NoProgress)
        .await
        .unwrap();
    let o = read_parquet(&out2.join("outreach.parquet"));
    assert!(
        !column_text(&o, "customer_id")
            .iter()
            .any(|c| c.starts_with("due"))
    );
}

/// With (channel, reason) items the planted sequence is found with the
/// channels it was planted on: moving_home by phone, service_transfer on the
/// web, installation_issue by phone or a field visit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_reason_items() {
    let sample = crate::common::root().join("sample-data/contacts.parquet");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = config(&[&sample], &out, |c| {
        placeholders(c);
        c.sequence_items = Some("channel_reason".into());
    });
    let s = recur::pipeline::run(&cfg, &recur::pipeline::NoProgress)
        .await
        .unwrap();
    let patterns: Vec<String> = s.sequences.iter().map(|q| q.pattern.join(" -> ")).collect();
    assert!(!patterns.is_empty());
    for p in &patterns {
        assert!(
            p.starts_with("phone:moving_home -> web:service_transfer -> ")
                && (p.ends_with("field:installation_issue")
                    || p.ends_with("phone:installation_issue")),
            "{patterns:?}"
        );
    }
}
