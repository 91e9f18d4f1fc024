//! Finding the input files and reading what each holds.
//!
//! Input: the files, folders (read recursively) and globs a user gave.
//! Output: the Parquet files, sorted, each with its rows, bytes and schema
//! ([`FilePlan`]), or an error naming the path.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::SchemaRef;

use super::SkippedFile;
use crate::error::{Error, Result};

/// The input files, and what was passed over on the way.
#[derive(Debug, Default)]
pub struct Resolved {
    /// The Parquet files to read, in order, each once.
    pub files: Vec<PathBuf>,
    /// Entries of the folders walked that were not read: files that are not
    /// regular (a FIFO, a socket, a device), links to nothing, and links to a
    /// folder already walked (a loop), each with why.
    pub passed_over: Vec<SkippedFile>,
}

/// Resolves inputs (files, folders, globs) into a sorted list of files.
///
/// Folders are walked following links, but never into a folder already
/// walked (a `loop -> .` link would otherwise repeat the files without
/// end); a file reached by two paths is read once; entries named
/// `*.parquet` that are not regular files are passed over (a FIFO would
/// block the read) and listed. An input named directly must be a regular
/// file, a folder or a glob.
pub fn resolve_inputs(inputs: &[String]) -> Result<Resolved> {
    let mut walk = Walk::default();
    for input in inputs {
        let path = Path::new(input);
        let kind = std::fs::metadata(path).map(|m| m.file_type());
        match kind {
            Ok(t) if t.is_file() => walk.found.push(path.to_path_buf()),
            Ok(t) if t.is_dir() => {
                let before = walk.found.len();
                walk.dir(path)?;
                if walk.found.len() == before {
                    return Err(Error::NoParquetFiles {
                        path: input.clone(),
                    });
                }
            }
            Ok(_) => {
                return Err(Error::UnreadableFile {
                    path: path.to_path_buf(),
                    reason: "not a regular file (a FIFO, socket or device)".into(),
                });
            }
            Err(_) if input.contains(['*', '?', '[']) => {
                let paths =
                    glob::glob(input).map_err(|e| Error::param("input glob", e.to_string()))?;
                let before = walk.found.len();
                for p in paths.flatten() {
                    walk.entry(&p, true)?;
                }
                if walk.found.len() == before {
                    return Err(Error::NoParquetFiles {
                        path: input.clone(),
                    });
                }
                walk.found[before..].sort();
            }
            Err(_) => {
                return Err(Error::InputNotFound {
                    path: input.clone(),
                });
            }
        }
    }
    // each file once, however it was reached
    let mut seen = HashSet::new();
    let files = walk
        .found
        .into_iter()
        .filter(|f| seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())))
        .collect();
    Ok(Resolved {
        files,
        passed_over: walk.passed_over,
    })
}

/// A walk over input folders.
#[derive(Default)]
struct Walk {
    found: Vec<PathBuf>,
    passed_over: Vec<SkippedFile>,
    /// The folders walked, by their canonical path.
    visited: HashSet<PathBuf>,
}

impl Walk {
    fn pass_over(&mut self, path: &Path, reason: &str) {
        self.passed_over.push(SkippedFile {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        });
    }

    fn dir(&mut self, dir: &Path) -> Result<()> {
        let canonical = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
        if !self.visited.insert(canonical) {
            self.pass_over(dir, "a link to a folder already read");
            return Ok(());
        }
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
            self.entry(&p, false)?;
        }
        Ok(())
    }

    /// A folder's entry (or a glob's match, `matched`: taken whatever its
    /// name).
    fn entry(&mut self, p: &Path, matched: bool) -> Result<()> {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let parquet = matched || name.ends_with(".parquet") || name.ends_with(".parq");
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => self.dir(p)?,
            Ok(m) if m.is_file() && parquet => self.found.push(p.to_path_buf()),
            Ok(m) if m.is_file() => {}
            Ok(_) if parquet => self.pass_over(p, "not a regular file (a FIFO, socket or device)"),
            Err(_) if parquet => self.pass_over(p, "a link to nothing"),
            _ => {}
        }
        Ok(())
    }
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
    let builder = crate::report::open_parquet(path)?;
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
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
