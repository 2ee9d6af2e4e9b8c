//! The last look before a write: is the credential still the one the plan saw?
//!
//! A plan is made from a credential report that can be hours old, and a
//! person may sit at apply's prompt for longer. Just before each write the
//! executor re-reads what may have changed (a key's existence and creation
//! date, its last use for cis-1.3, a user's and a password's creation dates,
//! the last sign-in) and asks this module whether the write may go. The
//! answers are pure functions of the finding, what the account says now and
//! the clock, so every case is tested without AWS.

use chrono::{DateTime, TimeDelta, Utc};

use crate::finding::Finding;
use crate::plan::ActionKind;
use crate::policy::Rule;
use crate::snapshot::AccessKeyMeta;

/// Whether a planned write may be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Go,
    /// Not sent, and why (for people and the journal).
    Skip(String),
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Whether a credential used at `last_used` is, at `now`, still unused for
/// the finding's threshold (cis-1.3 flags `>=`).
fn still_unused(f: &Finding, last_used: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now - last_used >= TimeDelta::days(i64::from(f.threshold_days))
}

fn used_since(f: &Finding, last_used: DateTime<Utc>, now: DateTime<Utc>) -> Verdict {
    Verdict::Skip(format!(
        "used since the report, at {} ({} days ago, under the {}-day threshold)",
        stamp(last_used),
        (now - last_used).num_days(),
        f.threshold_days
    ))
}

/// An access-key write (`delete-access-key`, `deactivate-access-key`).
///
/// `listed` is the key as `ListAccessKeys` shows it now (`None`: not listed).
/// `last_used` is `GetAccessKeyLastUsed`'s date, read for cis-1.3 findings only
/// (`None` when not read, `Some(None)` when never used).
pub fn access_key(
    action: ActionKind,
    f: &Finding,
    listed: Option<&AccessKeyMeta>,
    last_used: Option<Option<DateTime<Utc>>>,
    now: DateTime<Utc>,
) -> Verdict {
    let Some(key_id) = f.key_id.as_deref() else {
        return Verdict::Skip("the plan has no key id for this key".into());
    };
    let Some(key) = listed else {
        return Verdict::Skip(format!(
            "key {key_id} no longer exists (deleted or rotated since the plan)"
        ));
    };
    match f.credential_created {
        Some(created) if created.timestamp() == key.created.timestamp() => {}
        Some(created) => {
            return Verdict::Skip(format!(
                "key {key_id} was created at {}, not at {} as the report says: it is not the key the plan saw",
                stamp(key.created),
                stamp(created)
            ));
        }
        None => {
            return Verdict::Skip(format!(
                "the plan does not say when key {key_id} was created, so it cannot be told apart from another"
            ));
        }
    }
    if action == ActionKind::DeactivateAccessKey && !key.active {
        return Verdict::Skip(format!("key {key_id} is already inactive"));
    }
    // Planned as a key the engine deactivated: reactivated since, it is in
    // use again; the next run sees it as it is now.
    if f.stage == crate::finding::Stage::Deactivated && key.active {
        return Verdict::Skip(format!(
            "key {key_id} was reactivated since the plan; it is left alone"
        ));
    }
    if f.rule == Rule::Cis13 {
        match last_used {
            None => {
                return Verdict::Skip(format!("the last use of key {key_id} was not re-read"));
            }
            Some(Some(t)) if !still_unused(f, t, now) => return used_since(f, t, now),
            Some(_) => {}
        }
    }
    Verdict::Go
}

/// What the account says now about a user with a console password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordNow {
    /// `GetUser`'s `CreateDate`; `None`: no such user.
    pub user_created: Option<DateTime<Utc>>,
    /// `GetUser`'s `PasswordLastUsed`.
    pub last_used: Option<DateTime<Utc>>,
    /// `GetLoginProfile`'s `CreateDate`; `None`: no console password.
    pub profile_created: Option<DateTime<Utc>>,
}

/// A `delete-login-profile` write.
///
/// The user must be the one of the report (same creation second: not deleted
/// and re-created under the same name), the password must not have been set
/// after the report's `password_last_changed` (a new password is not the
/// stale one), and for cis-1.3 it must still be unused for the threshold.
pub fn password(f: &Finding, now_seen: &PasswordNow, now: DateTime<Utc>) -> Verdict {
    let Some(created) = now_seen.user_created else {
        return Verdict::Skip(format!("user {} no longer exists", f.user()));
    };
    match f.user_created {
        Some(was) if was.timestamp() == created.timestamp() => {}
        Some(was) => {
            return Verdict::Skip(format!(
                "user {} was created at {}, not at {} as the report says: deleted and re-created since",
                f.user(),
                stamp(created),
                stamp(was)
            ));
        }
        None => {
            return Verdict::Skip(format!(
                "the plan does not say when user {} was created, so it cannot be told apart from a re-created one",
                f.user()
            ));
        }
    }
    let Some(profile) = now_seen.profile_created else {
        return Verdict::Skip("the user has no console password any more".into());
    };
    match f.credential_created {
        Some(changed) if profile.timestamp() <= changed.timestamp() => {}
        Some(changed) => {
            return Verdict::Skip(format!(
                "the console password was set at {}, after the report's password_last_changed {}: it is a new password",
                stamp(profile),
                stamp(changed)
            ));
        }
        None => {
            return Verdict::Skip(
                "the report has no password_last_changed, so a new password cannot be told from the old one".into(),
            );
        }
    }
    if f.rule == Rule::Cis13
        && let Some(t) = now_seen.last_used
        && !still_unused(f, t, now)
    {
        return used_since(f, t, now);
    }
    Verdict::Go
}
