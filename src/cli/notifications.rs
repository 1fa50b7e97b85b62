//! `segsync notifications list`: the outbox (every notification, with what
//! happened to its delivery).

use std::path::Path;

use clap::Subcommand;

use super::output::say;
use crate::lifecycle::notify::{self, Delivery};

/// `notifications` subcommands.
#[derive(Debug, Subcommand)]
pub enum NotificationsCmd {
    /// Every notification, oldest first.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(data_dir: &Path, cmd: NotificationsCmd) -> anyhow::Result<()> {
    let store = super::open_store(data_dir)?;
    let NotificationsCmd::List { json } = cmd;
    let all = notify::list(&store)?;
    if json {
        return super::print_json(&all);
    }
    if all.is_empty() {
        say!("no notifications (a sync notifies the emails given with --notify)");
    }
    for n in all {
        let delivery = match &n.delivery {
            Delivery::Recorded => "recorded (no [smtp] configured)".to_string(),
            Delivery::Sent => "sent".to_string(),
            Delivery::Failed(e) => format!("not delivered: {e}"),
            Delivery::Pending => "pending (the next delivery of the outbox sends it)".to_string(),
        };
        say!(
            "{:>4}  {}  {}  to {}  {}",
            n.id,
            super::fmt_ms(n.at_ms),
            n.subject,
            n.to.join(", "),
            delivery
        );
    }
    Ok(())
}
