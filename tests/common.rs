//! Helpers shared by the integration tests.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use recur::config::{PipelineConfig, RunOptions};

/// One input row of a hand-made log.
#[derive(Debug, Clone)]
pub struct LogRow {
    pub contact_id: i64,
    pub customer: Option<String>,
    pub ts: Option<i64>,
    pub channel: Option<String>,
    pub reason: Option<String>,
    pub agent: Option<String>,
}

/// Writes rows as a Parquet log with the default column names.
pub fn write_log(path: &Path, rows: &[LogRow]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("contact_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Utf8, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("channel", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, true),
        Field::new("agent", DataType::Utf8, true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.contact_id),
        )),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.customer.clone()).collect::<Vec<_>>(),
        )),
        Arc::new(
            TimestampMicrosecondArray::from(rows.iter().map(|r| r.ts).collect::<Vec<_>>())
                .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.channel.clone()).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.reason.clone()).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.agent.clone()).collect::<Vec<_>>(),
        )),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
    write_batch(path, &batch);
}

/// Writes one batch as a Parquet file.
pub fn write_batch(path: &Path, batch: &RecordBatch) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// Reads a Parquet file into batches.
pub fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

/// A config for `inputs` writing to `out`, with overrides applied by `f`.
pub fn config(inputs: &[&Path], out: &Path, f: impl FnOnce(&mut RunOptions)) -> PipelineConfig {
    let mut raw = RunOptions {
        inputs: Some(
            inputs
                .iter()
                .map(|p| p.to_string_lossy().to_string())
                .collect(),
        ),
        out: Some(out.to_path_buf()),
        ..Default::default()
    };
    f(&mut raw);
    PipelineConfig::from_raw(raw).unwrap()
}

/// Column `name` of every batch, rendered as text per row (null → "null").
pub fn column_text(batches: &[RecordBatch], name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let col = b
            .column_by_name(name)
            .unwrap_or_else(|| panic!("no column {name}"));
        for i in 0..b.num_rows() {
            out.push(if col.is_null(i) {
                "null".to_string()
            } else {
                datafusion::arrow::util::display::array_value_to_string(col, i).unwrap()
            });
        }
    }
    out
}

/// Every file and folder under `dir`, recursively, sorted.
pub fn paths_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(paths_under(&p));
        }
        out.push(p);
    }
    out.sort();
    out
}

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

use datafusion::arrow::array::Array;

/// A list column of every batch, each element rendered as text.
pub fn list_text(batches: &[RecordBatch], name: &str) -> Vec<Vec<String>> {
    use datafusion::arrow::array::AsArray;
    let mut out = Vec::new();
    for b in batches {
        let col = b
            .column_by_name(name)
            .unwrap_or_else(|| panic!("no column {name}"));
        let list = col.as_list::<i32>();
        for i in 0..b.num_rows() {
            let v = list.value(i);
            out.push(
                (0..v.len())
                    .map(|k| {
                        datafusion::arrow::util::display::array_value_to_string(&v, k).unwrap()
                    })
                    .collect(),
            );
        }
    }
    out
}
