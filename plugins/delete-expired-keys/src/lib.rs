//! The default plugin: delete every expired access key the host may act on.
//!
//! - a remediable access-key finding (not exempt, not protected) gets
//!   `delete-access-key`;
//! - an exempt or protected one gets `none` with the reason, so the plan shows
//!   it was seen and deliberately left alone;
//! - a password finding gets `none`: passwords are not handled here (use
//!   `deactivate-unused-credentials` for cis-1.3 passwords);
//! - an upcoming finding (`warn_before_days`) gets `none`: not due yet.

use engine_plugin_sdk::{Action, Context, Finding, Plugin};

pub struct DeleteExpiredKeys;

impl Plugin for DeleteExpiredKeys {
    fn decide(_ctx: &Context, findings: &[Finding]) -> Result<Vec<Action>, String> {
        Ok(findings
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if f.is_password() {
                    Action::none(
                        i,
                        "passwords are not handled by this plugin; use deactivate-unused-credentials",
                    )
                } else if f.protected {
                    Action::none(i, "protected credential (root or the engine's own key)")
                } else if f.is_upcoming() {
                    Action::none(i, "not due yet")
                } else if f.exempt {
                    Action::none(i, "user is exempt under this policy")
                } else {
                    Action::delete_access_key(i)
                }
            })
            .collect())
    }
}

engine_plugin_sdk::export_plugin!(DeleteExpiredKeys);

#[cfg(test)]
mod tests {
    use super::*;
    use engine_plugin_sdk::testing::{self, key, password, summary};

    #[test]
    fn deletes_remediable_keys_only() {
        let findings = [
            key("alice").build(),
            key("bob").slot(2).exempt().build(),
            key("<root_account>").protected().build(),
            password("carol").build(),
            key("dave").slot(2).age(400).build(),
        ];
        let out = testing::run::<DeleteExpiredKeys>(&testing::context(), &findings);
        let actions = out.actions.unwrap();
        assert_eq!(
            summary(&actions),
            vec![
                (0, "delete-access-key"),
                (1, "none"),
                (2, "none"),
                (3, "none"),
                (4, "delete-access-key"),
            ]
        );
        match &actions[3].kind {
            engine_plugin_sdk::ActionKind::None(r) => {
                assert!(r.contains("passwords are not handled"))
            }
            other => panic!("expected none, got {other:?}"),
        }
    }

    #[test]
    fn no_findings_no_actions() {
        let out = testing::run::<DeleteExpiredKeys>(&testing::context(), &[]);
        assert!(out.actions.unwrap().is_empty());
    }
}
