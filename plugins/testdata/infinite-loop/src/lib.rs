//! Hostile test plugin: loops forever; the host must stop it at `timeout_ms`.

use engine_plugin_sdk::{Action, Context, Finding, Plugin};

struct InfiniteLoop;

impl Plugin for InfiniteLoop {
    fn decide(_ctx: &Context, findings: &[Finding]) -> Result<Vec<Action>, String> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(findings.len() as u64 + 1));
        }
    }
}

engine_plugin_sdk::export_plugin!(InfiniteLoop);
