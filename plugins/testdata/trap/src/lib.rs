//! Hostile test plugin: panics, which is a trap (`unreachable`) in wasm.
//! With `params = { mode = "unreachable" }` it executes `unreachable` directly.

use engine_plugin_sdk::{Action, Context, Finding, Plugin};

struct Trap;

impl Plugin for Trap {
    fn decide(ctx: &Context, findings: &[Finding]) -> Result<Vec<Action>, String> {
        if ctx.param("mode") == Some("unreachable") {
            #[cfg(target_arch = "wasm32")]
            core::arch::wasm32::unreachable();
        }
        panic!(
            "testdata-trap panics on purpose with {} findings",
            findings.len()
        );
    }
}

engine_plugin_sdk::export_plugin!(Trap);
