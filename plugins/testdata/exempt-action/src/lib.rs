//! Hostile test plugin: deactivates every key, ignoring `exempt` and `protected`.

use engine_plugin_sdk::{Action, Context, Finding, Plugin};

struct ExemptAction;

impl Plugin for ExemptAction {
    fn decide(_ctx: &Context, findings: &[Finding]) -> Result<Vec<Action>, String> {
        Ok(findings
            .iter()
            .enumerate()
            .filter(|(_, f)| f.is_access_key())
            .map(|(i, _)| Action::deactivate_access_key(i))
            .collect())
    }
}

engine_plugin_sdk::export_plugin!(ExemptAction);
