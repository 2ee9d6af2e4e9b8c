//! Test plugin of the first contract (`engine:plugin@0.1.0`, from
//! `plugins/sdk/wit/v0.1.0`): a finding has no stage and an action no
//! notice. It asks to deactivate every finding it is given, with the
//! finding's user and credential as the reason, so a test can see which
//! findings the host gave it and that the answer's indices were mapped back
//! to the right ones.

wit_bindgen::generate!({
    world: "plugin",
    path: "../../sdk/wit/v0.1.0",
});

use engine::plugin::types::{Action, ActionKind, Context, Credential, Finding};
use exports::engine::plugin::decide::Guest;

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct ContractZeroOne;

impl Guest for ContractZeroOne {
    fn decide(_ctx: Context, findings: Vec<Finding>) -> Result<Vec<Action>, String> {
        Ok(findings
            .iter()
            .zip(0u32..)
            .map(|(f, i)| {
                let credential = match f.credential {
                    Credential::Password => "password",
                    Credential::AccessKey1 => "access-key-1",
                    Credential::AccessKey2 => "access-key-2",
                };
                Action {
                    finding: i,
                    kind: ActionKind::DeactivateAccessKey,
                    reason: Some(format!("given {} {credential}", f.user)),
                }
            })
            .collect())
    }
}

#[cfg(target_arch = "wasm32")]
export!(ContractZeroOne);
