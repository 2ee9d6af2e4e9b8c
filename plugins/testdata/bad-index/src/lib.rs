//! Hostile test plugin: names a finding past the end of the list.

use engine_plugin_sdk::{Action, Context, Finding, Plugin};

struct BadIndex;

impl Plugin for BadIndex {
    fn decide(_ctx: &Context, findings: &[Finding]) -> Result<Vec<Action>, String> {
        Ok(vec![Action::deactivate_access_key(findings.len() + 5)])
    }
}

engine_plugin_sdk::export_plugin!(BadIndex);
