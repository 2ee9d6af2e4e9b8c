//! Test plugin built against a contract version the host does not support
//! (`engine:plugin@9.0.0`, in `wit/v9.0.0`); otherwise well-behaved.

wit_bindgen::generate!({
    world: "plugin",
    path: "wit/v9.0.0",
});

use engine::plugin::types::{Action, Context, Finding};
use exports::engine::plugin::decide::Guest;

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct FutureContract;

impl Guest for FutureContract {
    fn decide(_ctx: Context, _findings: Vec<Finding>) -> Result<Vec<Action>, String> {
        Ok(Vec::new())
    }
}

// Exported only in the wasm build: the native linker rejects this version's
// export names, and nothing native uses them.
#[cfg(target_arch = "wasm32")]
export!(FutureContract);
