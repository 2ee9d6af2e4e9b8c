//! Example custom plugin: deactivate first, delete later.
//!
//! An expired access key is first deactivated (reversible: its owner notices
//! and asks for it back, or not). Once the key is older than
//! `delete_after_factor` times the policy's threshold (default 2, so 180 days
//! under a 90-day policy) it is deleted. Passwords, exempt users and protected
//! credentials are left alone, with a reason.
//!
//! Parameters (in the policy): `params = { delete_after_factor = "3" }`, a
//! number >= 1. Anything else fails the policy's run with a clear error.
//!
//! Deleting is not granted to external plugins by default: the policy must
//! say `allow = ["deactivate-access-key", "delete-access-key"]`.

use engine_plugin_sdk::{Action, Context, Finding, Plugin, log};

/// The factor used when the policy does not set `delete_after_factor`.
pub const DEFAULT_FACTOR: f64 = 2.0;

pub struct DeactivateThenDelete;

fn factor(ctx: &Context) -> Result<f64, String> {
    let Some(raw) = ctx.param("delete_after_factor") else {
        return Ok(DEFAULT_FACTOR);
    };
    match raw.trim().parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 1.0 => Ok(f),
        _ => Err(format!(
            "policy {:?}: params.delete_after_factor = {raw:?} is not a number >= 1; \
             use e.g. delete_after_factor = \"2\"",
            ctx.policy
        )),
    }
}

impl Plugin for DeactivateThenDelete {
    fn decide(ctx: &Context, findings: &[Finding]) -> Result<Vec<Action>, String> {
        let factor = factor(ctx)?;
        let mut actions = Vec::with_capacity(findings.len());
        let mut deletes = 0usize;
        for (i, f) in findings.iter().enumerate() {
            if f.is_password() {
                actions.push(Action::none(i, "this plugin only handles access keys"));
            } else if f.is_upcoming() {
                actions.push(Action::none(i, "not due yet"));
            } else if !f.remediable() {
                actions.push(Action::none(i, "exempt or protected: left alone"));
            } else {
                let delete_after = f64::from(f.threshold_days) * factor;
                if f.age_days as f64 > delete_after {
                    deletes += 1;
                    actions.push(Action::delete_access_key(i).with_reason(format!(
                        "{} days old, more than {delete_after} ({factor} x {} days)",
                        f.age_days, f.threshold_days
                    )));
                } else {
                    actions.push(Action::deactivate_access_key(i).with_reason(format!(
                        "{} days old; deleted after {delete_after} days",
                        f.age_days
                    )));
                }
            }
        }
        log::info(&format!(
            "{} finding(s): {deletes} to delete, factor {factor}",
            findings.len()
        ));
        Ok(actions)
    }
}

engine_plugin_sdk::export_plugin!(DeactivateThenDelete);

#[cfg(test)]
mod tests {
    use super::*;
    use engine_plugin_sdk::testing::{self, key, password, summary};

    fn findings() -> Vec<Finding> {
        vec![
            key("young").age(100).build(),
            key("old").age(181).build(),
            key("edge").age(180).build(),
            password("pw").build(),
            key("vip").age(500).exempt().build(),
        ]
    }

    #[test]
    fn deactivates_then_deletes_past_twice_the_threshold() {
        let out = testing::run::<DeactivateThenDelete>(&testing::context(), &findings());
        assert_eq!(
            summary(&out.actions.unwrap()),
            vec![
                (0, "deactivate-access-key"),
                (1, "delete-access-key"),
                (2, "deactivate-access-key"),
                (3, "none"),
                (4, "none"),
            ]
        );
        assert_eq!(out.logs.len(), 1);
        assert!(
            out.logs[0].message.contains("1 to delete"),
            "{:?}",
            out.logs
        );
    }

    #[test]
    fn factor_is_a_parameter() {
        let ctx = testing::context_with_params(&[("delete_after_factor", "1")]);
        let out = testing::run::<DeactivateThenDelete>(&ctx, &findings());
        assert_eq!(
            summary(&out.actions.unwrap())[..3],
            [
                (0, "delete-access-key"),
                (1, "delete-access-key"),
                (2, "delete-access-key"),
            ]
        );
    }

    #[test]
    fn a_bad_factor_is_an_error() {
        let ctx = testing::context_with_params(&[("delete_after_factor", "0.5")]);
        let err = testing::run::<DeactivateThenDelete>(&ctx, &findings())
            .actions
            .unwrap_err();
        assert!(err.contains("delete_after_factor"), "{err}");
    }
}
