//! The one error type of the library.
//!
//! The binary maps errors to exit codes ([`Error::exit_code`]): bad input
//! (2) — a file, column or value the user can fix; an output folder another
//! run holds (3); no contact on the as-of day under `--require-data` (4);
//! anything else, an internal failure or a failed write (1).

use std::path::PathBuf;

/// Everything that can go wrong in a recur run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A path given as input does not exist or matches nothing.
    #[error("input not found: {path}")]
    InputNotFound {
        /// The path or glob as given.
        path: String,
    },
    /// A directory or glob held no Parquet files.
    #[error("no parquet files found under {path}")]
    NoParquetFiles {
        /// The directory or glob as given.
        path: String,
    },
    /// A file could not be opened or is not Parquet.
    #[error("failed to read {path} as parquet: {reason}")]
    UnreadableFile {
        /// The file.
        path: PathBuf,
        /// What the Parquet reader said.
        reason: String,
    },
    /// A mapped column is not in a file.
    #[error("column '{column}' ({role}) not found in {path}; the file has columns: {available}")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column name that was looked for.
        column: String,
        /// What the column is used for (customer, time, reason, ...).
        role: &'static str,
        /// The columns the file does have, comma separated.
        available: String,
    },
    /// A column whose type cannot be used for its role.
    #[error(
        "column '{column}' ({role}) in {path} has type {data_type}, which cannot be read as {expected}; example value: {example}"
    )]
    BadColumnType {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// What the column is used for.
        role: &'static str,
        /// The Arrow type found.
        data_type: String,
        /// What was expected.
        expected: &'static str,
        /// A value from the column, rendered as text.
        example: String,
    },
    /// A time column none of whose values can be read as a time.
    #[error(
        "column '{column}' in {path} cannot be read as time: none of its {count} non-null values parse; example value: {example:?}"
    )]
    UnparseableTimeColumn {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// How many non-null values failed.
        count: u64,
        /// One failing value.
        example: String,
    },
    /// A flag or configuration value is invalid.
    #[error("invalid {name}: {reason}")]
    InvalidParameter {
        /// The flag or key.
        name: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A query of `recur query` does not plan (syntax, table or column).
    #[error("the query does not run: {reason}")]
    Query {
        /// DataFusion's message.
        reason: String,
    },
    /// A configuration file could not be read or parsed.
    #[error("failed to read config {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The parse or I/O error.
        reason: String,
    },
    /// A ground-truth or other JSON file could not be handled.
    #[error("json error in {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser error.
        source: serde_json::Error,
    },
    /// `--memory-limit` is too small for a stage whose memory cannot spill.
    #[error("--memory-limit {limit} is too small for {stage}: {reason}")]
    MemoryLimit {
        /// The limit as given, in readable units.
        limit: String,
        /// The stage or query that ran short.
        stage: String,
        /// What it needed.
        reason: String,
    },
    /// report.html could not be made (a chart or the page template failed).
    #[error("report.html: {reason}")]
    Report {
        /// What failed.
        reason: String,
    },
    /// A query engine failure.
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// An Arrow failure.
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// A Parquet failure.
    #[error(transparent)]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    /// The input holds no rows (outside `--allow-empty`).
    #[error("the input holds no rows: {files}; pass --allow-empty if an empty log is expected")]
    EmptyInput {
        /// The files read, comma separated.
        files: String,
    },
    /// Rows were read but every one was excluded (a time column all null, a
    /// customer column of placeholders), outside `--allow-empty`.
    #[error(
        "none of the {read} rows read could be used ({files}): {why}; check the column \
         mapping, or pass --allow-empty if this is expected"
    )]
    NoUsableRows {
        /// Rows read.
        read: u64,
        /// The files read, comma separated.
        files: String,
        /// Each exclusion reason with rows, its count and an example.
        why: String,
    },
    /// No contact of the input falls in the run's window.
    #[error("no contact in the window {window}: {found}")]
    NoDataInWindow {
        /// The window, as text.
        window: String,
        /// What the input does hold.
        found: String,
    },
    /// `--require-data` and no contact on the as-of day.
    #[error("no contact on the as-of day {day} (--require-data): {found}")]
    NoDataForAsOf {
        /// The as-of day.
        day: String,
        /// The latest contact read.
        found: String,
    },
    /// Another run holds the output folder.
    #[error("another recur run is writing to {path} (it holds {lock}); try again when it ends")]
    OutputLocked {
        /// The output folder.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// A Ballista scheduler or executor failed, or a cluster could not be
    /// reached or gave other results than this machine.
    #[error("cluster: {reason}")]
    Cluster {
        /// What failed.
        reason: String,
    },
    /// An I/O failure, with the path involved.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the error is the user's input (exit code 2), false when it
    /// is an internal failure (exit code 1).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::InputNotFound { .. }
                | Error::NoParquetFiles { .. }
                | Error::UnreadableFile { .. }
                | Error::MissingColumn { .. }
                | Error::BadColumnType { .. }
                | Error::UnparseableTimeColumn { .. }
                | Error::InvalidParameter { .. }
                | Error::Query { .. }
                | Error::MemoryLimit { .. }
                | Error::Config { .. }
                | Error::Json { .. }
                | Error::EmptyInput { .. }
                | Error::NoUsableRows { .. }
                | Error::NoDataInWindow { .. }
        )
    }

    /// The process exit code of this error (see the module's list).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::OutputLocked { .. } => 3,
            Error::NoDataForAsOf { .. } => 4,
            e if e.is_bad_input() => 2,
            _ => 1,
        }
    }

    /// An input the user named could not be read: missing is bad input
    /// ([`Error::InputNotFound`], exit 2), anything else an I/O failure.
    pub fn read_input(path: &std::path::Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::InputNotFound {
                path: path.display().to_string(),
            }
        } else {
            Error::io(path, source)
        }
    }

    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A DataFusion error of `stage`: under a memory limit, running out of
    /// memory becomes [`Error::MemoryLimit`] (the limit is the user's to
    /// raise); anything else stays an internal failure.
    pub(crate) fn in_stage(
        e: datafusion::error::DataFusionError,
        stage: &str,
        limit: Option<u64>,
    ) -> Self {
        use datafusion::error::DataFusionError;
        match (e.find_root(), limit) {
            (DataFusionError::ResourcesExhausted(reason), Some(limit)) => Error::MemoryLimit {
                limit: bytesize::ByteSize(limit).to_string(),
                stage: stage.to_string(),
                reason: reason.clone(),
            },
            _ => Error::DataFusion(e),
        }
    }

    pub(crate) fn param(name: &str, reason: impl Into<String>) -> Self {
        Error::InvalidParameter {
            name: name.to_string(),
            reason: reason.into(),
        }
    }
}
