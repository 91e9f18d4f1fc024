//! `recur scheduler` and `recur executor`: Ballista's scheduler and executor
//! processes, with recur's planner, codecs and functions registered, so a
//! cluster started from this binary plans and runs recur's per-customer
//! operator.
//!
//! Input: [`SchedulerOptions`] / [`ExecutorOptions`], named as Ballista's own
//! binaries name their flags (`--bind-host`, `--bind-port`,
//! `--scheduler-host`, `--scheduler-port`, `--bind-grpc-port`, `--work-dir`,
//! `--concurrent-tasks`), plus the heartbeat and timeout a test shortens.
//! Output: a process that serves until it is stopped. The scheduler says
//! on stderr when it listens and each time the number of live executors
//! changes (`recur scheduler: 2 executors alive`), which is what a script or
//! a test waits for instead of sleeping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::serde::protobuf::ExecutorStatus;
use ballista_core::serde::protobuf::executor_status::Status;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::{RecurLogicalCodec, RecurPhysicalCodec, session_state};
use crate::error::{Error, Result};

/// How `recur scheduler` listens and how soon it gives up on an executor.
#[derive(Debug, Clone, clap::Args)]
pub struct SchedulerOptions {
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_host: String,
    /// The host name executors and clients reach this scheduler by.
    #[arg(long, default_value = "localhost")]
    pub external_host: String,
    /// gRPC port of the scheduler (clients connect to df://HOST:PORT).
    #[arg(long, default_value_t = 50050)]
    pub bind_port: u16,
    /// Seconds without a heartbeat after which an executor is taken for
    /// dead and its tasks are run elsewhere.
    #[arg(long, default_value_t = 180)]
    pub executor_timeout_seconds: u64,
    /// How often, in seconds, the scheduler looks for dead executors.
    #[arg(long, default_value_t = 15)]
    pub expire_dead_executor_interval_seconds: u64,
    /// Times a task may fail (its executor lost, say) before its job fails.
    #[arg(long, default_value_t = 4)]
    pub task_max_failures: usize,
}

/// Where `recur executor` listens, which scheduler it serves, how much.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecutorOptions {
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_host: String,
    /// The host name other executors and the client fetch results from
    /// [default: the bind host].
    #[arg(long)]
    pub external_host: Option<String>,
    /// Port of the executor's Arrow Flight service (shuffle and results).
    #[arg(long, default_value_t = 50051)]
    pub bind_port: u16,
    /// Port of the executor's gRPC service.
    #[arg(long, default_value_t = 50052)]
    pub bind_grpc_port: u16,
    /// Host of the scheduler.
    #[arg(long, default_value = "localhost")]
    pub scheduler_host: String,
    /// Port of the scheduler.
    #[arg(long, default_value_t = 50050)]
    pub scheduler_port: u16,
    /// Seconds to keep trying to reach the scheduler at start.
    #[arg(long, default_value_t = 30)]
    pub scheduler_connect_timeout_seconds: u16,
    /// Folder for shuffle files and spills [default: a new temporary one].
    #[arg(long)]
    pub work_dir: Option<String>,
    /// Tasks run at once [default: the cores].
    #[arg(long)]
    pub concurrent_tasks: Option<usize>,
    /// Seconds between heartbeats to the scheduler.
    #[arg(long, default_value_t = 60)]
    pub executor_heartbeat_interval_seconds: u64,
}

/// Serves as a Ballista scheduler until the process is stopped.
pub async fn scheduler(opts: &SchedulerOptions) -> Result<()> {
    let addr: SocketAddr = format!("{}:{}", opts.bind_host, opts.bind_port)
        .parse()
        .map_err(|e| Error::InvalidParameter {
            name: "--bind-host/--bind-port".into(),
            reason: format!(
                "'{}:{}' is not an address: {e}",
                opts.bind_host, opts.bind_port
            ),
        })?;
    let mut config = SchedulerConfig {
        bind_host: opts.bind_host.clone(),
        external_host: opts.external_host.clone(),
        bind_port: opts.bind_port,
        executor_timeout_seconds: opts.executor_timeout_seconds,
        expire_dead_executor_interval_seconds: opts.expire_dead_executor_interval_seconds,
        // a job waits this long for an executor before it fails
        no_executors_grace_period_seconds: opts.executor_timeout_seconds,
        task_max_failures: opts.task_max_failures,
        ..SchedulerConfig::default()
    }
    .with_override_config_producer(Arc::new(cluster_config))
    .with_override_session_builder(Arc::new(|config: SessionConfig| Ok(session_state(config))));
    config.override_logical_codec = Some(Arc::new(RecurLogicalCodec::default()));
    config.override_physical_codec = Some(Arc::new(RecurPhysicalCodec::default()));
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(cluster_error)?;
    tokio::spawn(announce_executors(cluster.clone()));
    eprintln!("recur scheduler: listening on {addr}");
    start_server(cluster, addr, Arc::new(config))
        .await
        .map_err(cluster_error)
}

/// Serves as a Ballista executor of the scheduler `opts` names until the
/// process is stopped.
pub async fn executor(opts: &ExecutorOptions) -> Result<()> {
    let mut config = ExecutorProcessConfig {
        bind_host: opts.bind_host.clone(),
        external_host: opts.external_host.clone(),
        port: opts.bind_port,
        grpc_port: opts.bind_grpc_port,
        scheduler_host: opts.scheduler_host.clone(),
        scheduler_port: opts.scheduler_port,
        scheduler_connect_timeout_seconds: opts.scheduler_connect_timeout_seconds,
        work_dir: opts.work_dir.clone(),
        executor_heartbeat_interval_seconds: opts.executor_heartbeat_interval_seconds,
        print_thread_info: false,
        ..ExecutorProcessConfig::default()
    };
    if let Some(n) = opts.concurrent_tasks {
        config.vcores = n.max(1);
    }
    config.override_config_producer = Some(Arc::new(cluster_config));
    config.override_function_registry = Some(Arc::new(function_registry()));
    config.override_logical_codec = Some(Arc::new(RecurLogicalCodec::default()));
    config.override_physical_codec = Some(Arc::new(RecurPhysicalCodec::default()));
    eprintln!(
        "recur executor: serving scheduler {}:{} on {}:{} ({} tasks at once)",
        opts.scheduler_host, opts.scheduler_port, opts.bind_host, opts.bind_port, config.vcores
    );
    start_executor_process(Arc::new(config))
        .await
        .map_err(cluster_error)
}

/// The session configuration a scheduler and its executors start from:
/// Ballista's, with recur's codecs.
fn cluster_config() -> SessionConfig {
    session_state(SessionConfig::new()).config().clone()
}

/// Ballista's functions and recur's own ([`crate::udf`]), by name.
fn function_registry() -> BallistaFunctionRegistry {
    let mut registry = BallistaFunctionRegistry::default();
    let ctx = SessionContext::new();
    crate::udf::register_all(&ctx);
    let state = ctx.state();
    for (name, f) in state.scalar_functions() {
        registry.scalar_functions.insert(name.clone(), f.clone());
    }
    registry
}

/// Says on stderr how many executors are alive each time that changes.
async fn announce_executors(cluster: BallistaCluster) {
    let state = cluster.cluster_state();
    let mut said = None;
    loop {
        let alive = state
            .executor_heartbeats()
            .values()
            .filter(|h| {
                matches!(
                    h.status,
                    Some(ExecutorStatus {
                        status: Some(Status::Active(_))
                    })
                )
            })
            .count();
        if said != Some(alive) {
            eprintln!(
                "recur scheduler: {alive} executor{} alive",
                if alive == 1 { "" } else { "s" }
            );
            said = Some(alive);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn cluster_error(e: ballista_core::error::BallistaError) -> Error {
    Error::Cluster {
        reason: e.to_string(),
    }
}
