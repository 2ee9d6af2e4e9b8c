//! Staged removal of expired access keys, with a word to the owner at each
//! step (contract 0.2.0):
//!
//! 1. **upcoming** (the policy's `warn_before_days`): nothing is done; the
//!    owner is told when the key will be deactivated and how to rotate it;
//! 2. **due**: the key is *deactivated* (reversible), and the owner is told
//!    how to get it back and when it will be deleted;
//! 3. **after the grace period** (`grace_days`, counted from when the engine
//!    deactivated it, from its journal): the key is *deleted*, and the owner
//!    told. A key its owner reactivated is deleted at the same date.
//!
//! Passwords, exempt users and protected credentials are left alone, with a
//! reason. The policy needs `follow_deactivated = true` so that the keys it
//! deactivated come back to it (stage `deactivated`) for step 3.
//!
//! Parameters: `grace_days` (default 14; a number >= 0, fractions allowed).

use engine_plugin_sdk::{Action, Context, Finding, Plugin, log, time};

/// The grace period when the policy does not set `grace_days`.
pub const DEFAULT_GRACE_DAYS: f64 = 14.0;

pub struct StagedKeyRemoval;

fn grace_secs(ctx: &Context) -> Result<i64, String> {
    let Some(raw) = ctx.param("grace_days") else {
        return Ok((DEFAULT_GRACE_DAYS * 86_400.0) as i64);
    };
    match raw.trim().parse::<f64>() {
        Ok(d) if d.is_finite() && (0.0..=3650.0).contains(&d) => Ok((d * 86_400.0).round() as i64),
        _ => Err(format!(
            "policy {:?}: params.grace_days = {raw:?} is not a number of days between 0 and 3650; use e.g. grace_days = \"14\"",
            ctx.policy
        )),
    }
}

/// `access key AKIA... of alice` (or the slot when the id is unknown).
fn key_of(f: &Finding) -> String {
    match &f.key_id {
        Some(id) => format!("access key {id} of {}", f.user),
        None => format!("an access key of {}", f.user),
    }
}

fn reactivate(f: &Finding) -> String {
    format!(
        "aws iam update-access-key --user-name {} --access-key-id {} --status Active",
        f.user,
        f.key_id.as_deref().unwrap_or("KEY_ID")
    )
}

impl Plugin for StagedKeyRemoval {
    fn decide(ctx: &Context, findings: &[Finding]) -> Result<Vec<Action>, String> {
        let grace = grace_secs(ctx)?;
        let now = time::parse(&ctx.now)
            .ok_or_else(|| format!("the host gave a malformed now: {:?}", ctx.now))?;
        let days = |secs: i64| format!("{}", (secs as f64 / 86_400.0 * 100.0).round() / 100.0);
        let mut actions = Vec::with_capacity(findings.len());
        let (mut deactivating, mut deleting) = (0usize, 0usize);
        for (i, f) in findings.iter().enumerate() {
            let rotated = f.timestamp.get(..10).unwrap_or(&f.timestamp);
            // When the engine deactivated the key, if it did.
            let off = f.deactivated_at.as_deref().and_then(time::parse);
            let action = if f.is_password() {
                Action::none(i, "passwords are left alone by this plugin")
            } else if f.protected {
                Action::none(i, "protected credential (root or the engine's own key)")
            } else if f.exempt {
                Action::none(i, "user is exempt under this policy")
            } else if f.is_upcoming() {
                let due = f.due_at.get(..10).unwrap_or(&f.due_at);
                Action::none(i, "not due yet").notify(format!(
                    "The {} was last rotated on {rotated}. Under policy {} it will be deactivated on {due}, and deleted {} days later. Rotate it before then: create a new key, move what uses this one to it, then delete this one.",
                    key_of(f),
                    ctx.policy,
                    days(grace)
                ))
            } else if let Some(off) = off {
                let delete_at = off + grace;
                if now >= delete_at {
                    deleting += 1;
                    Action::delete_access_key(i)
                        .with_reason(format!(
                            "deactivated on {}, grace period of {} days over",
                            time::date(off),
                            days(grace)
                        ))
                        .notify(format!(
                            "The {} was deleted under policy {}: it was deactivated on {} and its grace period of {} days is over. It cannot be recovered; create a new key if you still need one.",
                            key_of(f),
                            ctx.policy,
                            time::date(off),
                            days(grace)
                        ))
                } else if f.is_deactivated() {
                    Action::none(
                        i,
                        format!("deactivated; deleted on {}", time::date(delete_at)),
                    )
                } else {
                    // Active again: its owner reactivated it during the grace period.
                    Action::none(i, format!("reactivated by its owner; deleted on {}", time::date(delete_at)))
                        .notify(format!(
                            "The {} was reactivated after the engine deactivated it on {}. It will still be deleted on {} under policy {}: rotate it before then.",
                            key_of(f),
                            time::date(off),
                            time::date(delete_at),
                            ctx.policy
                        ))
                }
            } else {
                deactivating += 1;
                Action::deactivate_access_key(i)
                    .with_reason(format!(
                        "{} days old; deleted {} days after deactivation",
                        f.age_days,
                        days(grace)
                    ))
                    .notify(format!(
                        "The {} was deactivated under policy {}: it was last rotated on {rotated}, {} days ago (the limit is {}). It will be deleted on {}. To recover it, reactivate it before then ({}) and rotate it.",
                        key_of(f),
                        ctx.policy,
                        f.age_days,
                        f.threshold_days,
                        time::date(now + grace),
                        reactivate(f)
                    ))
            };
            actions.push(action);
        }
        log::info(&format!(
            "{} finding(s): {deactivating} to deactivate, {deleting} to delete, grace {} days",
            findings.len(),
            days(grace)
        ));
        Ok(actions)
    }
}

engine_plugin_sdk::export_plugin!(StagedKeyRemoval);

#[cfg(test)]
mod tests {
    use super::*;
    use engine_plugin_sdk::testing::{self, key, password, summary};

    fn ctx(grace: &str) -> Context {
        let mut c = testing::context_with_params(&[("grace_days", grace)]);
        c.now = "2026-11-28T00:00:00Z".to_string();
        c
    }

    #[test]
    fn warns_deactivates_then_deletes_after_the_grace_period() {
        let findings = [
            key("soon")
                .age(85)
                .upcoming()
                .due_at("2026-12-03T00:00:00Z")
                .build(),
            key("due").age(120).build(),
            key("off-recently")
                .deactivated_at("2026-11-20T00:00:00Z")
                .build(),
            key("off-long-ago")
                .deactivated_at("2026-11-01T00:00:00Z")
                .build(),
            key("back").age(130).build(),
            password("pw").build(),
            key("vip").exempt().build(),
        ];
        let mut back = findings[4].clone();
        back.deactivated_at = Some("2026-11-25T00:00:00Z".to_string());
        let mut findings = findings.to_vec();
        findings[4] = back;
        let out = testing::run::<StagedKeyRemoval>(&ctx("14"), &findings);
        let actions = out.actions.expect("decides");
        assert_eq!(
            summary(&actions),
            vec![
                (0, "none"),
                (1, "deactivate-access-key"),
                (2, "none"),
                (3, "delete-access-key"),
                (4, "none"),
                (5, "none"),
                (6, "none"),
            ]
        );
        let note = |i: usize| actions[i].notify.clone().unwrap_or_default();
        assert!(
            note(0).contains("will be deactivated on 2026-12-03"),
            "{}",
            note(0)
        );
        assert!(
            note(1).contains("deleted on 2026-12-12") && note(1).contains("--status Active"),
            "{}",
            note(1)
        );
        assert!(actions[2].notify.is_none());
        assert!(note(3).contains("deactivated on 2026-11-01"), "{}", note(3));
        assert!(
            note(4).contains("reactivated") && note(4).contains("2026-12-09"),
            "{}",
            note(4)
        );
        assert!(actions[5].notify.is_none() && actions[6].notify.is_none());
    }

    #[test]
    fn a_fractional_grace_and_a_bad_one() {
        // 0.5 days: deactivated 13 hours ago is past it.
        let f = [key("k").deactivated_at("2026-11-27T11:00:00Z").build()];
        let out = testing::run::<StagedKeyRemoval>(&ctx("0.5"), &f);
        assert_eq!(
            summary(&out.actions.expect("decides")),
            vec![(0, "delete-access-key")]
        );
        let out = testing::run::<StagedKeyRemoval>(&ctx("soon"), &f);
        assert!(out.actions.unwrap_err().contains("grace_days"));
    }
}
