//! The same log and flags give byte-identical Parquet files whatever the
//! threads, the bucket size or the memory limit: on the bundled sample,
//! every table of the run and every day of the contacts store, against
//! the run with one thread, one bucket and no limit.

use std::path::{Path, PathBuf};

use crate::cli::text;
use crate::common::{paths_under, root};

/// Every Parquet file under `dir`, relative to it, sorted.
fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    paths_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| p.strip_prefix(dir).unwrap().to_path_buf())
        .collect()
}

#[test]
fn parquet_outputs_are_byte_identical_across_threads_buckets_and_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let settings: [&[&str]; 6] = [
        &["--threads", "1"],
        &[],
        &["--threads", "4"],
        // 75k contacts in nine buckets, then 15 under a limit that spills
        &["--bucket-contacts", "9000"],
        &["--memory-limit", "128MiB"],
        &[
            "--bucket-contacts",
            "5000",
            "--memory-limit",
            "128MiB",
            "--threads",
            "3",
        ],
    ];
    let mut outs = Vec::new();
    for (i, args) in settings.iter().enumerate() {
        let out = tmp.path().join(format!("run{i}"));
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_recur"))
            .current_dir(root())
            .args(["demo", "--no-report", "--out", out.to_str().unwrap()])
            .args(*args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {:?}", text(&o));
        outs.push(out);
    }
    let reference = parquet_files(&outs[0]);
    assert!(reference.len() > 20, "{reference:?}");
    // the settings did what they say: many buckets, spilled under the limit
    let memory = |i: usize| crate::cli::manifest(&outs[i])["memory"].clone();
    assert_eq!(memory(3)["buckets"], 9);
    assert_eq!(memory(5)["buckets"], 15);
    assert!(memory(5)["bucket_spilled_bytes"].as_u64().unwrap() > 0);
    for (out, args) in outs.iter().zip(settings).skip(1) {
        assert_eq!(parquet_files(out), reference, "{args:?}: other files");
        for file in &reference {
            assert!(
                std::fs::read(outs[0].join(file)).unwrap()
                    == std::fs::read(out.join(file)).unwrap(),
                "{args:?}: {} differs",
                file.display()
            );
        }
    }
}
