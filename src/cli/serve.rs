//! `segsync serve`: the long-running process (scheduler, REST API). Stops
//! gracefully on Ctrl-C or SIGTERM.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::server::{serve, ServeOptions};

/// `serve` arguments. Limits of the inbound endpoints come from `[inbound]`
/// in `segsync.toml`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// How often the scheduler looks for due syncs, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub tick_ms: u64,
    /// Listen beyond loopback although no API token exists (the admin API
    /// is then open to anyone who can reach it).
    #[arg(long)]
    pub insecure: bool,
    /// Coordinate workers over this NATS server (JetStream enabled): pages
    /// are published for `segsync worker` processes instead of being sent
    /// from here.
    #[arg(long, env = "SEGSYNC_NATS")]
    pub nats: Option<String>,
    /// With --nats: seconds a worker may hold a page without a sign of life
    /// before it goes to another worker.
    #[arg(long, default_value_t = 30)]
    pub ack_wait_secs: u64,
    /// With --nats: longest milliseconds from a rate permit's grant to its
    /// request; the shared limiter is stricter by that much.
    #[arg(long, default_value_t = 500)]
    pub permit_grace_ms: u64,
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub(crate) fn run(data_dir: &Path, a: ServeArgs) -> anyhow::Result<()> {
    // The whole file is validated before anything listens: a bad setting
    // stops `serve` here, naming the key.
    let settings = crate::config::load(data_dir)?;
    let store = Arc::new(crate::store::Store::open(data_dir)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let cluster = match &a.nats {
            Some(url) => {
                if a.ack_wait_secs == 0 || a.permit_grace_ms == 0 || a.permit_grace_ms > 10_000 {
                    return Err(super::UsageError(
                        "--ack-wait-secs must be at least 1 and --permit-grace-ms 1..=10000".into(),
                    )
                    .into());
                }
                let mut o = crate::cluster::ClusterOptions::new(url.clone());
                o.ack_wait = Duration::from_secs(a.ack_wait_secs);
                o.grace = Duration::from_millis(a.permit_grace_ms);
                Some(crate::cluster::Cluster::start(o).await?)
            }
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(&a.listen).await?;
        // Printed (and flushed) so scripts and tests can find a port-0 address.
        println!(
            "segsync serve listening on http://{}",
            listener.local_addr()?
        );
        use std::io::Write;
        std::io::stdout().flush()?;
        eprintln!(
            "the console is at http://{}/ (sign in with a token from `segsync token create NAME`)",
            listener.local_addr()?
        );
        // Where this machine's CLI finds us, and a token for it that lives
        // as long as this process.
        let mut local = listener.local_addr()?;
        if local.ip().is_unspecified() {
            local.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let token = format!(
            "local_{}",
            hex::encode(crate::secret::random_bytes::<16>()?)
        );
        super::remote::write_serve_file(
            data_dir,
            &super::remote::ServeFile {
                url: format!("http://{local}"),
                token: token.clone(),
                pid: std::process::id(),
            },
        )?;
        let served = serve(
            listener,
            store,
            ServeOptions {
                tick: Duration::from_millis(a.tick_ms.max(10)),
                cohort: settings.receiver,
                insecure: a.insecure,
                commands: Some(super::command_runner()),
                local_token: Some(token),
                retention: settings.retention,
                cluster,
                personas: Default::default(),
            },
            shutdown_signal(),
        )
        .await;
        let _ = std::fs::remove_file(data_dir.join(super::remote::SERVE_FILE));
        served?;
        eprintln!("segsync serve stopped");
        Ok(())
    })
}
