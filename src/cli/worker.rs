//! `segsync worker` (a stateless sender on NATS JetStream) and `segsync
//! workers` (the workers a running `serve --nats` hears from).

use std::time::Duration;

use crate::worker::{self, WorkerOptions};

/// `worker` arguments.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The NATS server (with JetStream) the coordinator uses.
    #[arg(long, env = "SEGSYNC_NATS")]
    pub nats: String,
    /// This worker's name in `segsync workers` (default: host-pid).
    #[arg(long)]
    pub name: Option<String>,
    /// Pages held at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Serve `/metrics` and `/healthz` here (port 0: any free port).
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// On SIGTERM, how long to finish the pages held before handing them
    /// back, in seconds.
    #[arg(long, default_value_t = 30)]
    pub drain_secs: u64,
    /// Deliveries of a page that cannot reach the destination from a
    /// worker before it is reported failed (instead of handed back).
    #[arg(long, default_value_t = 5)]
    pub handbacks: u32,
}

pub(crate) fn run(a: WorkerArgs) -> anyhow::Result<()> {
    if a.concurrency == 0 || a.concurrency > 10_000 {
        return Err(super::UsageError(format!(
            "--concurrency must be 1..=10000, not {}",
            a.concurrency
        ))
        .into());
    }
    let opts = WorkerOptions {
        url: a.nats,
        name: a.name.unwrap_or_else(worker::default_name),
        concurrency: a.concurrency,
        metrics_listen: a.metrics_listen,
        drain_timeout: Duration::from_secs(a.drain_secs),
        handbacks: a.handbacks.max(1),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(worker::run(opts, super::serve::shutdown_signal()))?;
    Ok(())
}

/// `workers` arguments.
#[derive(Debug, clap::Args)]
pub struct WorkersArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn list(args: &super::Args, a: &WorkersArgs) -> anyhow::Result<()> {
    let Some(remote) = super::remote::target(args) else {
        return Err(super::UsageError(
            "`segsync workers` asks the running `segsync serve --nats`, and none holds this data dir (or pass --server URL)".into(),
        )
        .into());
    };
    let body = remote.get_blocking("/workers")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let rows = body["workers"].as_array().cloned().unwrap_or_default();
    if body["nats"].is_null() {
        println!("serve runs without --nats: pages are sent in-process, there are no workers");
        return Ok(());
    }
    println!(
        "{:<28} {:<6} {:>9} {:>10} {:>7} {:>8}  last error",
        "NAME", "STATE", "IN FLIGHT", "DELIVERED", "FAILED", "SEEN"
    );
    let n = |v: &serde_json::Value| v.to_string();
    for w in rows {
        println!(
            "{:<28} {:<6} {:>9} {:>10} {:>7} {:>7}s  {}",
            w["name"].as_str().unwrap_or(""),
            if w["draining"].as_bool() == Some(true) {
                "drain"
            } else {
                w["state"].as_str().unwrap_or("")
            },
            n(&w["in_flight"]),
            n(&w["delivered"]),
            n(&w["failed"]),
            n(&w["seen_secs_ago"]),
            w["last_error"].as_str().unwrap_or("-"),
        );
    }
    Ok(())
}
