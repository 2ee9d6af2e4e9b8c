//! Hostile test plugin: reads a host file, so it imports `wasi:filesystem`.

use engine_plugin_sdk::{Action, Context, Finding, Plugin};

struct WasiFilesystem;

impl Plugin for WasiFilesystem {
    fn decide(_ctx: &Context, _findings: &[Finding]) -> Result<Vec<Action>, String> {
        let secret = std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())?;
        Err(secret)
    }
}

engine_plugin_sdk::export_plugin!(WasiFilesystem);
