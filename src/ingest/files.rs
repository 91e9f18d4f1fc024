//! Finding the input files and reading what each holds.
//!
//! Input: the files, folders (read recursively) and globs a user gave.
//! Output: the Parquet files, sorted, each with its rows, bytes and schema
//! ([`FilePlan`]), or an error naming the path.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Error, Result};

/// Resolves inputs (files, folders, globs) into a sorted list of files.
pub fn resolve_inputs(inputs: &[String]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        let path = Path::new(input);
        if path.is_file() {
            files.push(path.to_path_buf());
        } else if path.is_dir() {
            let before = files.len();
            walk_dir(path, &mut files)?;
            if files.len() == before {
                return Err(Error::NoParquetFiles {
                    path: input.clone(),
                });
            }
        } else if input.contains(['*', '?', '[']) {
            let paths = glob::glob(input).map_err(|e| Error::param("input glob", e.to_string()))?;
            let mut found = Vec::new();
            for p in paths.flatten() {
                if p.is_file() {
                    found.push(p);
                } else if p.is_dir() {
                    walk_dir(&p, &mut found)?;
                }
            }
            if found.is_empty() {
                return Err(Error::NoParquetFiles {
                    path: input.clone(),
                });
            }
            found.sort();
            files.extend(found);
        } else {
            return Err(Error::InputNotFound {
                path: input.clone(),
            });
        }
    }
    let mut seen = HashSet::new();
    files.retain(|f| seen.insert(f.clone()));
    Ok(files)
}

fn walk_dir(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        if p.is_dir() {
            walk_dir(&p, out)?;
        } else if name.ends_with(".parquet") || name.ends_with(".parq") {
            out.push(p);
        }
    }
    Ok(())
}

/// The columns to read from one file and how to interpret them.
#[derive(Debug, Clone)]
pub(super) struct FilePlan {
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
    pub schema: SchemaRef,
    pub has_channel: bool,
    pub has_contact_id: bool,
}

/// Opens `path` as Parquet: its rows, bytes and schema.
pub(super) fn inspect_file(path: &Path) -> Result<FilePlan> {
    let file = std::fs::File::open(path).map_err(|e| Error::UnreadableFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::UnreadableFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
    Ok(FilePlan {
        path: path.to_path_buf(),
        rows,
        bytes,
        schema: builder.schema().clone(),
        has_channel: false,
        has_contact_id: false,
    })
}

/// The error of a column `plan`'s file lacks.
pub(super) fn missing(plan: &FilePlan, column: &str, role: &'static str) -> Error {
    Error::MissingColumn {
        path: plan.path.clone(),
        column: column.to_string(),
        role,
        available: plan
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>()
            .join(", "),
    }
}
