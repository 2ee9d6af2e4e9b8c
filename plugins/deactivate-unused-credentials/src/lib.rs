//! Disable unused credentials (CIS 1.3), the way AWS's
//! `AWSConfigRemediation-RevokeUnusedIAMUserCredentials` does:
//!
//! - a remediable access-key finding gets `deactivate-access-key` (reversible);
//! - a remediable password finding gets `delete-login-profile`;
//! - an exempt or protected finding gets `none` with the reason, and so does
//!   one not due yet (`warn_before_days`) or a key deactivated already.

use engine_plugin_sdk::{Action, Context, Finding, Plugin};

pub struct DeactivateUnusedCredentials;

impl Plugin for DeactivateUnusedCredentials {
    fn decide(_ctx: &Context, findings: &[Finding]) -> Result<Vec<Action>, String> {
        Ok(findings
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if f.protected {
                    Action::none(i, "protected credential (root or the engine's own key)")
                } else if f.is_upcoming() {
                    Action::none(i, "not due yet")
                } else if f.is_deactivated() {
                    Action::none(i, "deactivated already")
                } else if f.exempt {
                    Action::none(i, "user is exempt under this policy")
                } else if f.is_password() {
                    Action::delete_login_profile(i)
                } else {
                    Action::deactivate_access_key(i)
                }
            })
            .collect())
    }
}

engine_plugin_sdk::export_plugin!(DeactivateUnusedCredentials);

#[cfg(test)]
mod tests {
    use super::*;
    use engine_plugin_sdk::testing::{self, key, password, summary};

    #[test]
    fn keys_are_deactivated_passwords_removed() {
        let findings = [
            key("alice").rule(engine_plugin_sdk::Rule::Cis13).build(),
            password("alice").build(),
            password("bob").exempt().build(),
            key("<root_account>").protected().build(),
            key("carol").slot(2).build(),
        ];
        let out = testing::run::<DeactivateUnusedCredentials>(&testing::context(), &findings);
        assert_eq!(
            summary(&out.actions.unwrap()),
            vec![
                (0, "deactivate-access-key"),
                (1, "delete-login-profile"),
                (2, "none"),
                (3, "none"),
                (4, "deactivate-access-key"),
            ]
        );
    }
}
