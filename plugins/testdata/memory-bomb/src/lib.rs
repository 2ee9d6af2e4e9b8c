//! Hostile test plugin: allocates 1 MiB blocks until the host refuses memory.

use engine_plugin_sdk::{Action, Context, Finding, Plugin};

struct MemoryBomb;

impl Plugin for MemoryBomb {
    fn decide(_ctx: &Context, _findings: &[Finding]) -> Result<Vec<Action>, String> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
        }
    }
}

engine_plugin_sdk::export_plugin!(MemoryBomb);
