//! The `recur` command line: a thin layer over the library.
#![allow(clippy::result_large_err)]

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use recur::config::{PipelineConfig, RunOptions};
use recur::pipeline::{Progress, RunSummary};

/// mimalloc instead of the system allocator: the run allocates and frees many
/// large Arrow buffers, which glibc's malloc hands back to the kernel and
/// faults in again. Built without transparent huge pages (feature `no_thp`):
/// with them, every fresh page faults in and zeroes a whole 2 MiB, and the
/// kernel's page clearing becomes a large share of a run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_e` of the v3
/// header that libmimalloc-sys 0.1.49 builds; the crate names no constant
/// for it) and that version's default, 1,000 ms.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_DEFAULT_PURGE_DELAY_MS: std::os::raw::c_long = 1_000;

/// Keeps freed memory 10 s before handing it back to the kernel (mimalloc's
/// default is 1 s), unless `MIMALLOC_PURGE_DELAY` says otherwise: each
/// bucket of a large log allocates about what the one before freed, some
/// seconds earlier, and memory handed back is faulted in and zeroed again:
/// fewer page faults and less system time, for some more peak memory.
fn keep_freed_memory_longer() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: plain option calls into the allocator in use; the value is
    // only set where the option reads as that version's default, i.e. the
    // number is the purge delay's.
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == MI_DEFAULT_PURGE_DELAY_MS {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10_000);
        }
    }
}

/// Finds repeat contacts and event clusters in contact-center logs.
#[derive(Parser)]
#[command(name = "recur", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Analyse logs into OUT/as_of=DATE/ (see the README's nightly section).
    Run(Box<RunArgs>),
    /// Run on the bundled sample-data with its config (the flags of `run`
    /// apply on top of it).
    Demo(Box<RunArgs>),
    /// Score a run's clusters against a generated log's truth.
    Evaluate {
        /// The truth file written by `recur generate`.
        #[arg(long)]
        truth: PathBuf,
        /// The run's output folder.
        outdir: PathBuf,
    },
    /// Run SQL over the tables of a run (or a folder of runs: the latest as
    /// NAME, every run as runs.NAME with its as_of).
    Query {
        /// The output folder (of one run, or of many).
        outdir: PathBuf,
        /// The query (or -f FILE).
        sql: Option<String>,
        /// A file holding the query, e.g. queries/analyst/top_clusters.sql.
        #[arg(short = 'f', long = "file", conflicts_with = "sql")]
        file: Option<PathBuf>,
        /// How to give the result.
        #[arg(long, value_enum, default_value = "table")]
        format: recur::query::Format,
        /// Write the result to FILE instead of the terminal.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// Write report.html again for a run (or the latest of a folder of
    /// runs) from its tables and manifest.
    Report {
        /// The output folder (of one run, or of many).
        outdir: PathBuf,
    },
    /// Print the pseudonym `--pseudonymize` gives each customer id (the
    /// ids as arguments, else one per line on stdin): `id<TAB>pseudonym`,
    /// for whoever holds the key to find the customers of a list.
    Pseudonymize {
        /// File holding the key [default: the RECUR_PSEUDONYM_KEY variable].
        #[arg(long)]
        pseudonym_key_file: Option<PathBuf>,
        /// Customer ids.
        ids: Vec<String>,
    },
    /// Serve as an Apache Ballista scheduler that plans recur's passes
    /// (see the README's cluster section).
    #[cfg(feature = "ballista")]
    Scheduler(recur::distributed::processes::SchedulerOptions),
    /// Serve as an Apache Ballista executor that runs recur's passes, for
    /// the scheduler named.
    #[cfg(feature = "ballista")]
    Executor(recur::distributed::processes::ExecutorOptions),
    /// Run recur's per-customer passes over LOG on a cluster and on this
    /// machine, and compare them: exit 1 when they differ.
    #[cfg(feature = "ballista")]
    ClusterCheck(recur::distributed::check::CheckOptions),
    /// Write a synthetic log FILE and FILE.truth.json beside it.
    Generate {
        /// Output Parquet file.
        #[arg(long)]
        out: PathBuf,
        /// Customers.
        #[arg(long, default_value_t = recur::generate::DEFAULT_CUSTOMERS)]
        customers: u64,
        /// Days.
        #[arg(long, default_value_t = recur::generate::DEFAULT_DAYS)]
        days: u32,
        /// Random seed.
        #[arg(long, default_value_t = recur::generate::DEFAULT_SEED)]
        seed: u64,
        /// Spread (log-normal sigma) of the customers' activity.
        #[arg(long, default_value_t = 0.0)]
        rate_spread: f64,
        /// Share of episodes that become bursts of same-reason contacts.
        #[arg(long, default_value_t = 0.0)]
        bursts: f64,
        /// Heavy customers (shared or test accounts).
        #[arg(long, default_value_t = 0)]
        heavy_customers: u64,
        /// Contacts of each heavy customer.
        #[arg(long, default_value_t = 1000)]
        heavy_contacts: u64,
        /// Background reasons beyond the 25 built in.
        #[arg(long, default_value_t = 0)]
        extra_reasons: u32,
        /// A weekly rhythm in the volume: Mondays heaviest, Sundays lightest.
        #[arg(long)]
        weekly_rhythm: bool,
        /// Surges planted on background reasons beyond the policy-change one
        /// (lengths and heights differ; the first is on the rarest reason).
        #[arg(long, default_value_t = 0)]
        surges: u32,
        /// Plant a cluster that begins halfway through the log and one that
        /// stops there.
        #[arg(long)]
        changing_clusters: bool,
        /// Write a hive-partitioned log instead: OUT/date=YYYY-MM-DD/part-0.parquet,
        /// one folder per day.
        #[arg(long)]
        daily: bool,
    },
}

/// `recur run`: the run options, and the config file they may come from.
#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    options: RunOptions,
    /// TOML file with the same keys as the flags (flags win).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// The bundled sample: ./sample-data if present, else the source tree's.
fn sample_dir() -> PathBuf {
    let local = Path::new("sample-data");
    if local.join("recur.toml").is_file() {
        local.to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data")
    }
}

/// The configs of `recur run`: one, or one per day of an `--as-of
/// DATE..DATE` range (a backfill, oldest first).
fn configs_from(args: RunArgs, demo: bool) -> recur::Result<Vec<PipelineConfig>> {
    let mut file = match &args.config {
        Some(p) => RunOptions::load(p)?,
        None => RunOptions::default(),
    };
    let mut flags = args.options;
    if flags.inputs.as_ref().is_some_and(|i| i.is_empty()) {
        flags.inputs = None;
    }
    if demo {
        if flags.inputs.is_some() || file.inputs.is_some() {
            return Err(recur::Error::InvalidParameter {
                name: "inputs".into(),
                reason: "`recur demo` runs on the bundled sample; `recur run` takes your files"
                    .into(),
            });
        }
        let dir = sample_dir();
        file = file.or(RunOptions::load(&dir.join("recur.toml"))?);
        flags.inputs = Some(vec![dir.join("contacts.parquet").to_string_lossy().into()]);
    }
    if flags.inputs.is_none() && file.inputs.is_none() {
        return Err(recur::Error::InvalidParameter {
            name: "inputs".into(),
            reason: "no input given: name Parquet files, folders or globs \
                     (`recur demo` runs on the bundled sample)"
                .into(),
        });
    }
    let options = flags.or(file);
    match options.as_of.as_deref().and_then(|a| a.split_once("..")) {
        None => Ok(vec![PipelineConfig::from_raw(options)?]),
        Some((from, to)) => {
            let day = |d: &str| {
                chrono::NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d").map_err(|_| {
                    recur::Error::InvalidParameter {
                        name: "--as-of".into(),
                        reason: format!("'{d}' in a range is not a date YYYY-MM-DD"),
                    }
                })
            };
            let (from, to) = (day(from)?, day(to)?);
            if from > to {
                return Err(recur::Error::InvalidParameter {
                    name: "--as-of".into(),
                    reason: format!("the range {from}..{to} ends before it starts"),
                });
            }
            from.iter_days()
                .take_while(|d| *d <= to)
                .map(|d| {
                    PipelineConfig::from_raw(RunOptions {
                        as_of: Some(d.to_string()),
                        ..options.clone()
                    })
                })
                .collect()
        }
    }
}

/// The progress bar on a terminal: the stage, and rows read or buckets done.
struct Bar(Option<indicatif::ProgressBar>);

impl Progress for Bar {
    fn stage(&self, name: &str) {
        if let Some(b) = &self.0 {
            b.set_message(name.to_string());
        }
    }

    fn rows_read(&self, done: u64, total: u64) {
        if let Some(b) = &self.0 {
            b.set_length(total);
            b.set_position(done);
        }
    }

    fn buckets_done(&self, done: usize, total: usize) {
        if let Some(b) = &self.0 {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
    }
}

impl Bar {
    /// A bar on stderr when it is a terminal; none in a pipe.
    fn new() -> Bar {
        Bar(std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {elapsed:>4} {msg:<40} [{bar:30}] {human_pos}/{human_len}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b
        }))
    }
}

/// Log lines through the bar, so that they do not tear it.
#[derive(Clone)]
struct BarWriter(Option<indicatif::ProgressBar>);

impl Write for BarWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &self.0 {
            Some(b) => b.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Structured logs on stderr with the `tracing` crate: JSON lines with
/// `--log-format json`; text on a terminal (through the bar); errors only
/// in a pipe. `RUST_LOG` overrides the level.
fn init_logging(json: bool, bar: &Bar) {
    use tracing_subscriber::EnvFilter;
    let default = if json || std::io::stderr().is_terminal() {
        "recur=info"
    } else {
        "recur=error"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let writer = BarWriter(bar.0.clone());
    let make = move || writer.clone();
    // A log line that cannot be written (stderr closed or full) is dropped:
    // the run goes on (tracing would otherwise report it with eprintln!,
    // which panics on a closed stderr).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .log_internal_errors(false)
        .with_writer(make);
    // (a second init, as in a backfill's later days, keeps the first)
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.compact().try_init()
    };
}

/// A scheduler's or executor's log: recur's lines at info (or as
/// `RUST_LOG` says) on stderr. (Ballista logs through the `log` crate,
/// which this build does not forward.)
#[cfg(feature = "ballista")]
fn init_service_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,recur=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .compact()
        .try_init();
}

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1}%", v * 100.0))
        .unwrap_or_else(|| "n/a".into())
}

fn human_lag(s: f64) -> String {
    if s < 3600.0 {
        format!("{:.0}m", s / 60.0)
    } else if s < 2.0 * 86_400.0 {
        format!("{:.1}h", s / 3600.0)
    } else {
        format!("{:.1}d", s / 86_400.0)
    }
}

/// "1 customer", "7 customers".
fn customers(n: i64) -> String {
    if n == 1 {
        "1 customer".into()
    } else {
        format!("{n} customers")
    }
}

fn render_summary(s: &RunSummary, out: &Path) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let m = &s.manifest;
    let excluded: u64 = m.rows.excluded.values().map(|e| e.rows).sum();
    writeln!(
        t,
        "recur: {} rows read, {} contacts analysed, {} excluded (see manifest.json)",
        m.rows.read, s.contacts, excluded
    )
    .ok();
    writeln!(
        t,
        "repeat rate {} within {} | contacts per event {} | first-contact resolution {}",
        pct(s.repeat_rate),
        recur::time::format_duration_us(m.parameters.repeat_window_us),
        s.contacts_per_event
            .map(|v| format!("{v:.2}"))
            .unwrap_or_else(|| "n/a".into()),
        pct(s.fcr_rate),
    )
    .ok();
    let windows: Vec<String> = m
        .parameters
        .cluster_windows_us
        .iter()
        .map(|w| recur::time::format_duration_us(*w))
        .collect();
    let by_value = matches!(m.parameters.rank_by, recur::config::RankBy::Value);
    writeln!(
        t,
        "{} clusters significant at q <= {} (windows {}); top {} by {}:",
        s.clusters,
        m.parameters.alpha,
        windows.join(", "),
        s.top_clusters.len(),
        if by_value {
            "value (avoidable follow-ups × the cost of the channels they came on)".to_string()
        } else {
            format!("{:?}", m.parameters.rank_by).to_lowercase()
        },
    )
    .ok();
    for c in &s.top_clusters {
        let window = recur::time::format_duration_us(c.window_s * 1_000_000);
        writeln!(
            t,
            "{:>3}. {} -> {}: {:.0}% of {} {} contacts are followed by {} within {window} \
             ({:.1}x chance; median lag {}; {}; {:.0} avoidable{})",
            c.rank,
            c.antecedent,
            c.consequent,
            c.confidence * 100.0,
            c.n_antecedent,
            c.antecedent,
            c.consequent,
            c.lift,
            human_lag(c.median_lag_s),
            customers(c.customers),
            c.avoidable_contacts,
            // the weighting, where it sets the order
            if by_value {
                format!(", value {:.0}", c.value)
            } else {
                String::new()
            },
        )
        .ok();
    }
    writeln!(
        t,
        "{} sequences (chains of significant follow-ups){}",
        s.sequences.len(),
        if s.sequences.is_empty() {
            ""
        } else {
            "; top 5:"
        }
    )
    .ok();
    for q in s.sequences.iter().take(5) {
        let lags: Vec<String> = q.median_lag_s.iter().map(|l| human_lag(*l)).collect();
        writeln!(
            t,
            "{:>3}. {}: {} times, {:.0}% complete the last step ({:.1}x chance; median lags {}; {})",
            q.rank,
            q.pattern.join(" -> "),
            q.n_support,
            q.confidence * 100.0,
            q.lift,
            lags.join(", "),
            customers(q.customers),
        )
        .ok();
    }
    if !s.surges.is_empty() {
        writeln!(
            t,
            "{} surges (a reason far above its usual share of the day); largest first:",
            s.surges.len()
        )
        .ok();
        for (i, line) in s.surges.iter().take(5).enumerate() {
            writeln!(t, "{:>3}. {line}", i + 1).ok();
        }
    }
    let since = m.trends.recent_from.get(..10).unwrap_or_default();
    let listed: u64 = m.trends.statuses.values().sum();
    if !s.trends.is_empty() {
        writeln!(
            t,
            "{} clusters and sequences changed from before {since} to since (see cluster_trends); \
             new and growing first:",
            s.trends.len(),
        )
        .ok();
        for (i, line) in s.trends.iter().take(7).enumerate() {
            writeln!(t, "{:>3}. {line}", i + 1).ok();
        }
    } else if listed > 0 {
        writeln!(
            t,
            "cluster trends: the {listed} clusters and sequences of the periods before and since \
             {since} are stable (see cluster_trends)",
        )
        .ok();
    }
    if let Some(n) = &m.null_check {
        let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
        writeln!(
            t,
            "null check: {} logs with the reasons permuted yielded {} clusters and {} sequences",
            n.permutations,
            list(&n.clusters),
            list(&n.sequences),
        )
        .ok();
    }
    let f = &m.frequent_contacters;
    if f.customers > 0 {
        writeln!(
            t,
            "{} frequent contacters (more than {:.0} contacts each) make {:.1}% of contacts; \
             see frequent_contacters",
            f.customers,
            f.threshold,
            f.share_of_contacts * 100.0
        )
        .ok();
    }
    if let Some(note) = f.duplicates_note() {
        writeln!(t, "warning: {note}").ok();
    }
    for id in &f.placeholder_suspects {
        writeln!(
            t,
            "warning: customer id '{id}' makes more contacts than any real customer could; \
             if it stands for unidentified callers, rerun with --exclude-customer '{id}'"
        )
        .ok();
    }
    for removed in &s.removed_runs {
        writeln!(t, "removed {} (--keep)", removed.display()).ok();
    }
    let list = &m.outreach_list;
    writeln!(
        t,
        "outreach list: {} due, {} rows ({} new today, {} control, {} already reached)",
        customers(list.customers as i64),
        list.listed,
        list.new_today,
        list.control,
        list.removed_contacted
    )
    .ok();
    writeln!(t, "reports written to {}", out.display()).ok();
    if let Some(page) = &m.report {
        writeln!(t, "open {} for the charts", out.join(&page.path).display()).ok();
    }
    t
}

async fn run_cli(cli: Cli) -> recur::Result<()> {
    match cli.command {
        Command::Generate {
            out,
            customers,
            days,
            seed,
            rate_spread,
            bursts,
            heavy_customers,
            heavy_contacts,
            extra_reasons,
            weekly_rhythm,
            surges,
            changing_clusters,
            daily,
        } => {
            let params = recur::generate::GenerateParams {
                customers,
                days,
                seed,
                rate_spread,
                bursts,
                heavy_customers,
                heavy_contacts,
                extra_reasons,
                weekly_rhythm,
                surges,
                changing_clusters,
            };
            if daily {
                let truth = recur::generate::generate_daily(&out, &params)?;
                return say(&format!(
                    "wrote {} rows to {} (one folder per day) and {}\n",
                    truth.rows,
                    out.display(),
                    recur::generate::truth_path(&out).display()
                ));
            }
            let truth = recur::generate::generate(&out, &params)?;
            say(&format!(
                "wrote {} rows to {} and {}\n",
                truth.rows,
                out.display(),
                recur::generate::truth_path(&out).display()
            ))
        }
        Command::Pseudonymize {
            pseudonym_key_file,
            ids,
        } => {
            let p = recur::pseudonym::Pseudonymizer::load(pseudonym_key_file.as_deref())?;
            let ids = if ids.is_empty() {
                std::io::stdin()
                    .lines()
                    .collect::<std::io::Result<Vec<_>>>()
                    .map_err(|e| recur::Error::io("stdin", e))?
            } else {
                ids
            };
            let text: String = ids
                .iter()
                .map(|id| format!("{id}\t{}\n", p.pseudonym(id)))
                .collect();
            say(&text)
        }
        Command::Report { outdir } => {
            let run = recur::runs::resolve_run_dir(&outdir);
            let path = run.join("manifest.json");
            let text =
                std::fs::read_to_string(&path).map_err(|_| recur::error::Error::InputNotFound {
                    path: path.display().to_string(),
                })?;
            let manifest: serde_json::Value =
                serde_json::from_str(&text).map_err(|source| recur::error::Error::Json {
                    path: path.clone(),
                    source,
                })?;
            let written = recur::html::write(&run, &manifest).await?;
            say(&format!(
                "{} written ({}, {:.2} s)\n",
                run.join(&written.path).display(),
                bytesize::ByteSize(written.bytes),
                written.seconds
            ))
        }
        Command::Query {
            outdir,
            sql,
            file,
            format,
            output,
        } => {
            let sql = match (sql, file) {
                (Some(sql), _) => sql,
                (None, Some(f)) => {
                    std::fs::read_to_string(&f).map_err(|e| recur::error::Error::io(&f, e))?
                }
                (None, None) => {
                    return Err(recur::error::Error::InvalidParameter {
                        name: "query".into(),
                        reason: "give the SQL as an argument or with -f FILE".into(),
                    });
                }
            };
            let (schema, batches) = recur::query::run(&outdir, &sql).await?;
            recur::query::write(
                &schema,
                &batches,
                format,
                output.as_deref(),
                &mut std::io::stdout().lock(),
            )
        }
        Command::Evaluate { truth, outdir } => {
            let outdir = recur::runs::resolve_run_dir(&outdir);
            let e = recur::evaluate::evaluate(&truth, &outdir)?;
            let mut t = format!(
                "{} clusters reported, precision {:.2}{}\n   K  precision  recall\n",
                e.reported,
                e.precision,
                if e.not_planted.is_empty() {
                    String::new()
                } else {
                    format!(" (not planted: {})", e.not_planted.join(", "))
                }
            );
            for k in &e.clusters {
                t += &format!("{:>4}  {:>9.2}  {:>6.2}\n", k.k, k.precision, k.recall);
            }
            t += "planted                                         rank  window\n";
            for p in &e.planted {
                t += &format!(
                    "{:<46} {:>5}  {}{}\n",
                    p.item,
                    p.rank.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
                    p.window_s
                        .map(|w| recur::time::format_duration_us(w * 1_000_000))
                        .unwrap_or_else(|| "-".into()),
                    if p.findable {
                        ""
                    } else {
                        "  (lag beyond the longest window)"
                    },
                );
            }
            let s = &e.surges;
            t += &format!(
                "surges: {} of {} planted found (start within {} day), {} reported, {} false \
                 in {} reason-days tested{}\n",
                s.found,
                s.planted.len(),
                recur::evaluate::SURGE_START_SLACK_DAYS,
                s.reported,
                s.false_surges.len(),
                s.reason_days_tested,
                if s.false_surges.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", s.false_surges.join(", "))
                }
            );
            for p in &s.planted {
                t += &format!(
                    "  {:<44} from {}  {}\n",
                    p.reason,
                    p.start_date,
                    match p.start_error_days {
                        Some(e) => format!("found, start {e:+} days"),
                        None => "not found".into(),
                    }
                );
            }
            let tr = &e.trends;
            if !tr.planted.is_empty() || !tr.unplanted_changes.is_empty() {
                t += &format!(
                    "trends: {} of {} planted changes given the right status, {} other changes{}\n",
                    tr.right,
                    tr.planted.len(),
                    tr.unplanted_changes.len(),
                    if tr.unplanted_changes.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", tr.unplanted_changes.join(", "))
                    }
                );
                for p in &tr.planted {
                    t += &format!(
                        "  {:<44} {:<7} {}\n",
                        p.item,
                        p.change,
                        p.status.as_deref().unwrap_or("not listed"),
                    );
                }
            }
            t += &format!("written to {}\n", outdir.join("evaluation.json").display());
            say(&t)
        }
        #[cfg(feature = "ballista")]
        Command::Scheduler(opts) => {
            init_service_logging();
            recur::distributed::processes::scheduler(&opts).await
        }
        #[cfg(feature = "ballista")]
        Command::Executor(opts) => {
            init_service_logging();
            recur::distributed::processes::executor(&opts).await
        }
        #[cfg(feature = "ballista")]
        Command::ClusterCheck(opts) => cluster_check(&opts).await,
        Command::Run(args) => {
            for cfg in configs_from(*args, false)? {
                run_one(&cfg).await?;
            }
            Ok(())
        }
        Command::Demo(args) => {
            for cfg in configs_from(*args, true)? {
                run_one(&cfg).await?;
            }
            Ok(())
        }
    }
}

/// `recur cluster-check`: a line per pass, exit 1 when one differs.
#[cfg(feature = "ballista")]
async fn cluster_check(opts: &recur::distributed::check::CheckOptions) -> recur::Result<()> {
    let checks = recur::distributed::check::check(opts).await?;
    let mut t = format!(
        "{:<20} {:>8} {:>11} {:>9}  result\n",
        "pass", "rows", "cluster s", "local s"
    );
    for c in &checks {
        t += &format!(
            "{:<20} {:>8} {:>11.2} {:>9}  {}\n",
            c.pass,
            c.rows,
            c.cluster_seconds,
            c.local_seconds.map_or("-".into(), |s| format!("{s:.2}")),
            match (&c.difference, c.local_seconds) {
                (Some(d), _) => format!("DIFFERS: {d}"),
                (None, Some(_)) => "same".into(),
                (None, None) => "not compared".into(),
            }
        );
    }
    say(&t)?;
    match checks.iter().find(|c| c.difference.is_some()) {
        Some(c) => Err(recur::Error::Cluster {
            reason: format!("the {} pass gave other results on the cluster", c.pass),
        }),
        None => Ok(()),
    }
}

/// One run into its output folder, with the bar, the logs and the summary.
async fn run_one(cfg: &PipelineConfig) -> recur::Result<()> {
    let progress = Bar::new();
    init_logging(cfg.log_json, &progress);
    let result = recur::runs::run(cfg, &progress).await;
    if let Some(b) = &progress.0 {
        b.finish_and_clear();
    }
    let summary = result?;
    say(&render_summary(&summary, &summary.run_dir))
}

/// Writes `text` to stdout. A closed pipe (`recur run | head`) is not an
/// error; any other failure (a full device) is, named, exit 1, not a panic.
fn say(text: &str) -> recur::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(recur::Error::io("stdout", e)),
        _ => Ok(()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    keep_freed_memory_longer();
    let cli = Cli::parse();
    match run_cli(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // (nowhere to say it when stderr itself fails: the exit code says it)
            let _ = writeln!(std::io::stderr(), "recur: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
