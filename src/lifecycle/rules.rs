//! The seed's status × action table, as one pure function so that the CLI,
//! the REST API and the scheduler cannot disagree about it.
//!
//! | action | allowed in | notes |
//! |---|---|---|
//! | edit | active, paused, failed | never one-time ↔ periodic; start date fixed once passed |
//! | run (ad hoc) | active, paused, failed | resumes a paused or failed sync |
//! | pause | active, failed | |
//! | resync all users | active, paused, failed | only if the destination allows resync |
//! | resync last difference | failed | |
//! | archive | active, paused, failed, inactive | irreversible |
//!
//! Archived is final: nothing is allowed.

use serde::Serialize;

use super::SyncStatus;

/// What a user can do to a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Change destination, schedule, end date, notification emails.
    Edit,
    /// Run now (ad hoc).
    Run,
    /// Pause scheduled runs.
    Pause,
    /// Send the whole current membership again.
    ResyncAll,
    /// Send the last execution's difference again.
    ResyncLast,
    /// Stop for good.
    Archive,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 6] = [
        Action::Edit,
        Action::Run,
        Action::Pause,
        Action::ResyncAll,
        Action::ResyncLast,
        Action::Archive,
    ];

    /// The action in words, as refusals and the audit log say it.
    pub fn name(self) -> &'static str {
        match self {
            Action::Edit => "edit",
            Action::Run => "run",
            Action::Pause => "pause",
            Action::ResyncAll => "resync all users",
            Action::ResyncLast => "resync last difference",
            Action::Archive => "archive",
        }
    }
}

/// The status in words.
pub fn status_name(s: SyncStatus) -> &'static str {
    match s {
        SyncStatus::Active => "active",
        SyncStatus::Paused => "paused",
        SyncStatus::Failed => "failed",
        SyncStatus::Inactive => "inactive",
        SyncStatus::Archived => "archived",
    }
}

/// Why an action was refused (the API answers 409 with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a sync that is {status}: {why}")]
pub struct Refused {
    /// The action.
    pub action: &'static str,
    /// The sync's status.
    pub status: &'static str,
    /// The rule.
    pub why: &'static str,
}

impl crate::error::Classify for Refused {
    fn fault(&self) -> crate::error::Fault {
        crate::error::Fault::Conflict
    }
}

/// Checks an action against the table; `resync_allowed` is the
/// destination's setting.
pub fn check(status: SyncStatus, action: Action, resync_allowed: bool) -> Result<(), Refused> {
    use Action::*;
    use SyncStatus::*;
    let why = match (action, status) {
        (_, Archived) => Some("archived syncs are final"),
        (Edit | Run, Active | Paused | Failed) => None,
        (Edit | Run, Inactive) => Some("its end date has passed; create a new sync or archive it"),
        (Pause, Active | Failed) => None,
        (Pause, Paused) => Some("it is paused already"),
        (Pause, Inactive) => Some("it has ended"),
        (ResyncAll, Active | Paused | Failed) if resync_allowed => None,
        (ResyncAll, Active | Paused | Failed) => {
            Some("its destination does not allow resync (destination edit --allow-resync)")
        }
        (ResyncAll, Inactive) => Some("it has ended"),
        (ResyncLast, Failed) => None,
        (ResyncLast, _) => Some("only a failed sync can resync its last difference"),
        (Archive, _) => None,
    };
    match why {
        None => Ok(()),
        Some(why) => Err(Refused {
            action: action.name(),
            status: status_name(status),
            why,
        }),
    }
}

/// Every action with whether the status allows it now, and why not: what
/// the API and the console show beside a sync.
pub fn allowed(status: SyncStatus, resync_allowed: bool) -> Vec<(Action, Option<String>)> {
    Action::ALL
        .iter()
        .map(|&a| {
            (
                a,
                check(status, a, resync_allowed)
                    .err()
                    .map(|r| r.to_string()),
            )
        })
        .collect()
}

/// The status after a run ends: success makes a sync active again (the seed:
/// an ad hoc run resumes a paused or failed sync), failure makes it failed.
pub fn after_run(succeeded: bool) -> SyncStatus {
    if succeeded {
        SyncStatus::Active
    } else {
        SyncStatus::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use SyncStatus::*;

    /// The whole table, written out independently of `check`'s match.
    fn expected(status: SyncStatus, action: Action, resync: bool) -> bool {
        let allowed: &[SyncStatus] = match action {
            Edit | Run => &[Active, Paused, Failed],
            Pause => &[Active, Failed],
            ResyncAll if resync => &[Active, Paused, Failed],
            ResyncAll => &[],
            ResyncLast => &[Failed],
            Archive => &[Active, Paused, Failed, Inactive],
        };
        allowed.contains(&status)
    }

    #[test]
    fn every_status_and_action() {
        for status in [Active, Paused, Failed, Inactive, Archived] {
            for action in Action::ALL {
                for resync in [false, true] {
                    let got = check(status, action, resync);
                    assert_eq!(
                        got.is_ok(),
                        expected(status, action, resync),
                        "{status:?} {action:?} resync={resync}"
                    );
                    if let Err(e) = got {
                        let msg = e.to_string();
                        assert!(
                            msg.starts_with("cannot ") && msg.contains(status_name(status)),
                            "{msg}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn refusals_say_why() {
        let e = check(Active, ResyncAll, false).unwrap_err();
        assert!(e.to_string().contains("does not allow resync"));
        let e = check(Archived, Archive, true).unwrap_err();
        assert!(e.to_string().contains("final"));
        assert_eq!(after_run(true), Active);
        assert_eq!(after_run(false), Failed);
    }
}
