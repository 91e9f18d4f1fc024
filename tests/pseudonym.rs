//! `--pseudonymize`: on the bundled sample, no raw customer id (they look
//! like `C0003108`) and no key in any file of the output folder, Parquet
//! values and metadata included; the same key gives the same pseudonyms
//! in two runs (so their tables join), another key others; the analysis is
//! the run without pseudonyms', id for id; a missing, short or unasked-for
//! key is exit 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::cli::{manifest, text};
use crate::common::{column_text, paths_under, read_parquet, root};

const KEY: &str = "k3y-for-the-pseudonym-test-0001";
const OTHER_KEY: &str = "another-key-for-the-test-00002";

/// `recur demo` into `out` with `args`, the key (if any) in the environment.
fn demo(out: &Path, key: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_recur"));
    cmd.current_dir(root())
        .arg("demo")
        .arg("--out")
        .arg(out)
        .args(args)
        .env_remove(recur::pseudonym::KEY_ENV);
    if let Some(key) = key {
        cmd.env(recur::pseudonym::KEY_ENV, key);
    }
    cmd.output().expect("run recur")
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    paths_under(dir)
        .into_iter()
        .filter(|p| p.is_file())
        .collect()
}

/// A file's content as text: a Parquet file's metadata and every value of
/// every row (nested values too, as JSON), any other file as it is.
fn content(path: &Path) -> String {
    if path.extension().is_some_and(|e| e == "parquet") {
        let file = std::fs::File::open(path).unwrap();
        let builder =
            datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                file,
            )
            .unwrap();
        let mut text = format!(
            "{:?}",
            builder.metadata().file_metadata().key_value_metadata()
        );
        let mut w = datafusion::arrow::json::LineDelimitedWriter::new(Vec::new());
        for b in builder.build().unwrap() {
            w.write(&b.unwrap()).unwrap();
        }
        w.finish().unwrap();
        text.push_str(&String::from_utf8(w.into_inner()).unwrap());
        text
    } else {
        String::from_utf8_lossy(&std::fs::read(path).unwrap()).to_string()
    }
}

/// The first raw sample id (`C` and seven digits, not inside a longer
/// word: a base64 pseudonym may hold such a run) in `text`.
fn raw_id(text: &str) -> Option<&str> {
    let b = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    (0..b.len().saturating_sub(7)).find_map(|i| {
        let id = b[i] == b'C' && b[i + 1..i + 8].iter().all(u8::is_ascii_digit);
        let alone = (i == 0 || !word(b[i - 1])) && b.get(i + 8).is_none_or(|c| !word(*c));
        (id && alone).then(|| &text[i..i + 8])
    })
}

/// The customer ids of the contacts an output folder keeps.
fn customers(out: &Path) -> std::collections::BTreeSet<String> {
    files(&out.join("contacts"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .flat_map(|p| column_text(&read_parquet(p), "customer_id"))
        .collect()
}

#[test]
fn no_raw_id_or_key_in_any_output_and_pseudonyms_join() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c, plain) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
        tmp.path().join("plain"),
    );
    let key_file = tmp.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();

    let o = demo(&a, Some(KEY), &["--pseudonymize"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let (stdout, stderr) = text(&o);
    assert!(!stdout.contains(KEY) && !stderr.contains(KEY));
    assert_eq!(raw_id(&stdout), None, "a raw id on the terminal: {stdout}");
    let written = files(&a);
    assert!(written.iter().any(|p| p.ends_with("report.html")));
    assert!(
        written
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .count()
            > 10
    );
    for path in &written {
        let content = content(path);
        assert_eq!(raw_id(&content), None, "a raw id in {}", path.display());
        assert!(!content.contains(KEY), "the key in {}", path.display());
    }
    let key_id = manifest(&a)["parameters"]["pseudonym"]["key_id"]
        .as_str()
        .unwrap()
        .to_string();

    // the same key from a file: the same pseudonyms, the same key id
    let o = demo(
        &b,
        None,
        &[
            "--pseudonymize",
            "--pseudonym-key-file",
            key_file.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(customers(&a), customers(&b));
    assert_eq!(
        manifest(&b)["parameters"]["pseudonym"]["key_id"],
        key_id.as_str()
    );

    // another key: no pseudonym in common, another key id
    let o = demo(&c, Some(OTHER_KEY), &["--pseudonymize"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(customers(&a).is_disjoint(&customers(&c)));
    assert_ne!(
        manifest(&c)["parameters"]["pseudonym"]["key_id"],
        key_id.as_str()
    );

    // the run without pseudonyms: the same counts, and each id's pseudonym
    // (from `recur pseudonymize`) is the pseudonymised run's id
    let o = demo(&plain, None, &[]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(manifest(&a)["rows"], manifest(&plain)["rows"]);
    let run = |out: &Path| recur::runs::resolve_run_dir(out);
    for table in ["repeat_summary", "clusters", "sequences", "surges"] {
        let file = format!("{table}.parquet");
        assert_eq!(
            read_parquet(&run(&a).join(&file)),
            read_parquet(&run(&plain).join(&file)),
            "{table} differs with pseudonyms"
        );
    }
    let ids: Vec<String> = customers(&plain).into_iter().collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_recur"));
    cmd.arg("pseudonymize").env(recur::pseudonym::KEY_ENV, KEY);
    let o = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(ids.join("\n").as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(o.status.success());
    let mapped: std::collections::BTreeSet<String> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').nth(1).unwrap().to_string())
        .collect();
    assert_eq!(mapped.len(), ids.len());
    assert_eq!(mapped, customers(&a));
}

#[test]
fn a_missing_short_or_unasked_for_key_is_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let short = tmp.path().join("short");
    std::fs::write(&short, "abc").unwrap();
    for (key, args, says) in [
        (None, vec!["--pseudonymize"], "RECUR_PSEUDONYM_KEY"),
        (Some("too-short"), vec!["--pseudonymize"], "at least 16"),
        (
            None,
            vec![
                "--pseudonymize",
                "--pseudonym-key-file",
                short.to_str().unwrap(),
            ],
            "at least 16",
        ),
        (
            None,
            vec!["--pseudonymize", "--pseudonym-key-file", "/nonexistent/key"],
            "/nonexistent/key",
        ),
        (
            None,
            vec!["--pseudonym-key-file", short.to_str().unwrap()],
            "without --pseudonymize",
        ),
    ] {
        let o = demo(&out, key, &args);
        let (_, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!out.exists(), "{args:?} wrote an output");
    }
}
