//! The SQL stages, compiled in from `queries/`.
//!
//! Each query is stored with `${name}` placeholders that [`render`] fills in
//! with numbers before the query is planned.

/// `repeat_summary.sql`: contacts → repeat_summary.
pub const REPEAT_SUMMARY: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/queries/repeat_summary.sql"
));

/// `clusters.sql`: contacts, followups → clusters.
pub const CLUSTERS: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/queries/clusters.sql"));

/// Every query by name, for listing and for the planning test.
pub const ALL: &[(&str, &str)] = &[("repeat_summary", REPEAT_SUMMARY), ("clusters", CLUSTERS)];

/// Replaces each `${key}` in `sql` with its value.
pub fn render(sql: &str, params: &[(&str, String)]) -> String {
    let mut out = sql.to_string();
    for (k, v) in params {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    out
}
