//! A mutated Parquet file through a whole run (ingest, the passes, the
//! reports, without report.html): never panics, and when the run succeeds
//! every row read is either analysed or counted as excluded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

use recur::config::{PipelineConfig, RunOptions};

/// One runtime for every input, as `recur run` has one for its run.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("log.parquet");
    std::fs::write(&input, data).expect("write input");
    let cfg = PipelineConfig::from_raw(RunOptions {
        inputs: Some(vec![input.display().to_string()]),
        out: Some(dir.path().join("out")),
        no_report: Some(true),
        threads: Some(1),
        ..Default::default()
    })
    .expect("config");
    if let Ok(summary) =
        runtime().block_on(recur::pipeline::run(&cfg, &recur::pipeline::NoProgress))
    {
        let rows = &summary.manifest.rows;
        let excluded: u64 = rows.excluded.values().map(|e| e.rows).sum();
        assert_eq!(
            rows.read,
            rows.used + excluded,
            "rows read = used + excluded: {rows:?}"
        );
    }
});
