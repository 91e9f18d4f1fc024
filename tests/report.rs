//! report.html as a person sees it: rendered by headless Chromium (Debian's
//! `chromium`, which `.ci/run` installs; a missing browser fails the test),
//! with no console message or script error, the headline figures equal to
//! repeat_summary.parquet's, every chart with data, nothing fetched from the
//! network, and a screenshot saved beside the run.

use std::path::{Path, PathBuf};
use std::process::Command;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{Float64Type, Int64Type};

use crate::common::read_parquet;

/// The browser: `$CHROMIUM`, else Debian's.
fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "{} not found: install Debian's chromium package (.ci/run does) or set CHROMIUM",
        path.display()
    );
    path
}

/// Runs headless Chromium on `page` with `args`: its stdout and stderr.
fn browse(page: &Path, profile: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium starts");
    assert!(out.status.success(), "chromium failed: {out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of `attr` on the element whose `key` attribute is `value`.
fn attribute(dom: &str, key: &str, value: &str, attr: &str) -> Option<String> {
    let at = dom.find(&format!("{key}=\"{value}\""))?;
    let tag_end = at + dom[at..].find('>')?;
    let tag_start = dom[..at].rfind('<')?;
    let tag = &dom[tag_start..tag_end];
    let from = tag.find(&format!("{attr}=\""))? + attr.len() + 2;
    Some(tag[from..from + tag[from..].find('"')?].to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_report_renders_with_its_figures_and_charts() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = crate::golden::sample_run(dir.path()).await;
    let page = out.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    // self-contained: nothing to fetch
    for outside in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(!html.contains(outside), "the page fetches {outside}…");
    }

    let profile = dir.path().join("profile");
    let (dom, log) = browse(&page, &profile, &["--dump-dom"]);
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    assert!(
        dom.contains("data-ready=\"true\""),
        "the page's script did not run to its end"
    );
    assert!(!dom.contains("data-errors="), "script errors on the page");

    // the headline figures are repeat_summary's 'all' row
    let summary = read_parquet(&out.join("repeat_summary.parquet"));
    let b = &summary[0];
    let dims = b.column_by_name("dimension").unwrap().as_string::<i32>();
    let all = (0..b.num_rows()).find(|i| dims.value(*i) == "all").unwrap();
    let figure = |name: &str| -> f64 {
        attribute(&dom, "data-figure", name, "data-value")
            .unwrap_or_else(|| panic!("no headline figure {name}"))
            .parse()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    for name in ["contacts", "pending"] {
        let want = b
            .column_by_name(name)
            .unwrap()
            .as_primitive::<Int64Type>()
            .value(all);
        assert_eq!(figure(name), want as f64, "{name}");
    }
    for name in ["repeat_rate", "contacts_per_event", "fcr_rate"] {
        let want = b
            .column_by_name(name)
            .unwrap()
            .as_primitive::<Float64Type>()
            .value(all);
        assert_eq!(figure(name), want, "{name}");
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        figure("customers"),
        manifest["rows"]["customers"].as_f64().unwrap()
    );
    assert!(figure("customers") > 0.0);
    let report = &manifest["report"];
    assert_eq!(report["bytes"].as_u64().unwrap(), html.len() as u64);

    // every chart has data, and the sample has every kind
    let mut kinds = std::collections::BTreeSet::new();
    let mut rest = dom.as_str();
    while let Some(at) = rest.find("<figure class=\"chart\"") {
        let tag = &rest[at..=at + rest[at..].find('>').unwrap()];
        let kind = attribute(tag, "class", "chart", "data-chart").unwrap();
        let points: usize = attribute(tag, "class", "chart", "data-points")
            .unwrap()
            .parse()
            .unwrap();
        assert!(points > 0, "chart {kind} has no data");
        let body = &rest[at..at + rest[at..].find("</figure>").unwrap()];
        assert!(body.contains("<svg"), "chart {kind} is not drawn");
        kinds.insert(kind);
        rest = &rest[at + 1..];
    }
    for kind in [
        "repeat_by_day",
        "repeat_by_channel",
        "repeat_by_reason",
        "repeat_by_agent",
        "channel_switches",
        "failure_demand",
        "lags",
        "surge",
        "outreach_by_reason",
        "outreach_by_day",
    ] {
        assert!(kinds.contains(kind), "no {kind} chart: {kinds:?}");
    }
    // every section is there, and the clusters show their examples
    for id in [
        "headline",
        "repeats",
        "failure",
        "clusters",
        "sequences",
        "surges",
        "outreach",
        "quality",
    ] {
        assert!(dom.contains(&format!("<section id=\"{id}\"")), "no {id}");
    }
    assert!(dom.contains("class=\"examples\""), "no example members");

    // a screenshot of the whole page, for a person to look at
    let shot = out.join("report.png");
    browse(
        &page,
        &profile,
        &[
            "--window-size=1300,9000",
            &format!("--screenshot={}", shot.display()),
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "no screenshot");
    assert!(png.len() > 100_000, "a near-empty screenshot");
    eprintln!("report.html: screenshot {}", shot.display());
}
