//! `segsync receive`: the built-in checking receiver as a process of its
//! own — to try a destination end to end on one machine, and to measure a
//! sync without the receiver sharing its process.

use std::time::Duration;

use serde::Serialize;

use crate::checking_receiver::{ReceiveFormat, Receiver, ReceiverOptions};

/// `receive` arguments.
#[derive(Debug, clap::Args)]
pub struct ReceiveArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: String,
    /// Identifier key every user must carry.
    #[arg(long, default_value = "uid")]
    pub id_key: String,
    /// Name of the added-users list.
    #[arg(long, default_value = "add_users")]
    pub add_key: String,
    /// Name of the removed-users list.
    #[arg(long, default_value = "remove_users")]
    pub remove_key: String,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Keep only counts and a checksum of the membership (constant memory,
    /// for runs of millions of users).
    #[arg(long)]
    pub checksum_only: bool,
    /// Body format to accept: segment_sync, or cohortsync (a Cohort Sync
    /// endpoint: Basic auth and the workspace headers, members by uid).
    #[arg(long, value_enum, default_value = "segment_sync")]
    pub format: crate::destination::Format,
    /// Largest Cohort Sync body accepted, in bytes.
    #[arg(long, default_value_t = crate::destination::cohort_sync::COHORT_MAX_BODY as usize)]
    pub max_body_bytes: usize,
}

#[derive(Serialize)]
struct Summary {
    requests: u64,
    pages_applied: u64,
    duplicates: u64,
    rejected: usize,
    members: u64,
    checksum: String,
    users_added: u64,
    users_removed: u64,
}

pub(crate) fn run(a: ReceiveArgs) -> anyhow::Result<()> {
    let opts = ReceiverOptions {
        id_key: a.id_key,
        add_key: a.add_key,
        remove_key: a.remove_key,
        keep_members: !a.checksum_only,
        format: match a.format {
            crate::destination::Format::SegmentSync => ReceiveFormat::SegmentSync,
            crate::destination::Format::Cohortsync => ReceiveFormat::CohortSync {
                max_body: a.max_body_bytes,
            },
        },
        ..Default::default()
    };
    let rx = Receiver::start_on(&a.listen, opts)?;
    eprintln!(
        "receiving on http://{} (any path); Ctrl-C prints a summary",
        rx.addr
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let stop = async {
            #[cfg(unix)]
            {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    r = tokio::signal::ctrl_c() => r,
                    _ = term.recv() => Ok(()),
                }
            }
            #[cfg(not(unix))]
            {
                tokio::signal::ctrl_c().await
            }
        };
        match a.seconds {
            Some(s) => {
                tokio::select! {
                    r = stop => r,
                    _ = tokio::time::sleep(Duration::from_secs(s)) => Ok(()),
                }
            }
            None => stop.await,
        }
    })?;
    let r = rx.summary();
    for e in r.errors.iter().take(20) {
        eprintln!("rejected: {e}");
    }
    super::print_json(&Summary {
        requests: r.requests,
        pages_applied: r.pages_applied,
        duplicates: r.duplicates,
        rejected: r.errors.len(),
        members: r.member_count,
        checksum: format!("{:016x}", r.checksum),
        users_added: r.users_added,
        users_removed: r.users_removed,
    })
}
