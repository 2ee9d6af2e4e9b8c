//! Hostile test plugin: answers far too much, chosen by `params.mode`:
//! - `many-actions` (default): 2,000,000 actions, whatever the findings;
//! - `giant-reason`: one `none` action with an 8 MiB reason;
//! - `log-flood`: 10,000 log lines of 10 KiB, then a normal answer;
//! - `giant-error`: `Err` with a 1 MiB message.

use engine_plugin_sdk::{Action, Context, Finding, Plugin, log};

struct HugeOutput;

impl Plugin for HugeOutput {
    fn decide(ctx: &Context, findings: &[Finding]) -> Result<Vec<Action>, String> {
        match ctx.param("mode").unwrap_or("many-actions") {
            "giant-reason" => Ok(vec![Action::none(0, "x".repeat(8 << 20))]),
            "log-flood" => {
                let line = "y".repeat(10 << 10);
                for _ in 0..10_000 {
                    log::info(&line);
                }
                Ok(findings
                    .iter()
                    .enumerate()
                    .map(|(i, _)| Action::none(i, "flooded"))
                    .collect())
            }
            "giant-error" => Err("z".repeat(1 << 20)),
            _ => Ok((0..2_000_000)
                .map(|i| Action::deactivate_access_key(i % 7))
                .collect()),
        }
    }
}

engine_plugin_sdk::export_plugin!(HugeOutput);
