//! Hostile test plugin: every string it hands the host carries terminal
//! control sequences (erase line, cursor up, a C1 CSI, a carriage return, a
//! bidi override), to check the host never prints them raw.
//!
//! It always logs such lines. By default it deactivates every remediable
//! access key with such a reason (and declines the rest with one);
//! `params = { mode = "none" }` declines every finding with such a reason
//! (the plan shows those), `mode = "error"` fails with such an error message
//! and `mode = "panic"` panics with such a message (its stderr).

use engine_plugin_sdk::{Action, Context, Finding, Plugin, log};

/// Erase the line, move up, CSI as a C1 control clearing the screen, return
/// to column 0, then a right-to-left override.
pub const EVIL: &str = "\x1b[2K\x1b[1A\u{9b}2J\r\u{202e}";

struct Escapes;

impl Plugin for Escapes {
    fn decide(ctx: &Context, findings: &[Finding]) -> Result<Vec<Action>, String> {
        log::warn(&format!("plugin-log-warn{EVIL}"));
        log::error(&format!("plugin-log-error{EVIL}"));
        match ctx.param("mode") {
            Some("error") => return Err(format!("plugin-error{EVIL}")),
            Some("panic") => panic!("plugin-panic{EVIL}"),
            _ => {}
        }
        let act = ctx.param("mode") != Some("none");
        Ok(findings
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if act && f.remediable() && f.is_access_key() {
                    Action::deactivate_access_key(i).with_reason(format!("plugin-reason{EVIL}"))
                } else {
                    Action::none(i, format!("plugin-none{EVIL}"))
                }
            })
            .collect())
    }
}

engine_plugin_sdk::export_plugin!(Escapes);
