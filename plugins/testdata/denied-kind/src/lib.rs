//! Hostile test plugin: deletes every access key (a kind external plugins are
//! not granted by default) and asks `delete-login-profile` of... access keys
//! too when `params.mode = "mismatch"` (a kind that does not fit).

use engine_plugin_sdk::{Action, Context, Finding, Plugin};

struct DeniedKind;

impl Plugin for DeniedKind {
    fn decide(ctx: &Context, findings: &[Finding]) -> Result<Vec<Action>, String> {
        let mismatch = ctx.param("mode") == Some("mismatch");
        Ok(findings
            .iter()
            .enumerate()
            .map(|(i, _)| {
                if mismatch {
                    Action::delete_login_profile(i)
                } else {
                    Action::delete_access_key(i)
                }
            })
            .collect())
    }
}

engine_plugin_sdk::export_plugin!(DeniedKind);
