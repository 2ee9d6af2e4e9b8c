//! The wasmtime configuration of the plugin sandbox, in one place.
//!
//! Shared by the crate and its build script (which includes this file): the
//! builtin plugins are precompiled at build time with exactly this
//! configuration, so the process that loads them can use the machine code as
//! is. wasmtime checks, when it deserializes, that the artifact was made by
//! the same wasmtime version with compatible settings; on any mismatch the
//! host compiles the plugin instead.
//!
//! The target is named explicitly (the triple the binary is built for), so
//! cranelift does not tune the code to the CPU of the machine that compiles
//! it: a precompiled builtin or a cached external plugin runs on any CPU of
//! that architecture, and the engine of a process on another CPU accepts it.

use wasmtime::{Config, WasmFeatures};

/// The wasm features no plugin needs; a plugin using one fails to load.
pub fn unneeded_features() -> WasmFeatures {
    WasmFeatures::MULTI_MEMORY
        | WasmFeatures::MEMORY64
        | WasmFeatures::THREADS
        | WasmFeatures::SHARED_EVERYTHING_THREADS
        | WasmFeatures::RELAXED_SIMD
        | WasmFeatures::GC
        | WasmFeatures::FUNCTION_REFERENCES
        | WasmFeatures::EXCEPTIONS
        | WasmFeatures::LEGACY_EXCEPTIONS
        | WasmFeatures::STACK_SWITCHING
        | WasmFeatures::CUSTOM_PAGE_SIZES
        | WasmFeatures::WIDE_ARITHMETIC
        | WasmFeatures::CM_ASYNC
        | WasmFeatures::CM_ASYNC_STACKFUL
        | WasmFeatures::CM_MORE_ASYNC_BUILTINS
        | WasmFeatures::CM_THREADING
        | WasmFeatures::CM_ERROR_CONTEXT
        | WasmFeatures::CM_GC
        | WasmFeatures::CM_MAP
        | WasmFeatures::CM64
        | WasmFeatures::CM_FIXED_LENGTH_LISTS
}

/// The sandbox's configuration for code that runs on `target` (a target
/// triple): epoch interruption on, the component model on, unneeded wasm
/// features off, no CPU features beyond the target's baseline.
pub fn config(target: &str) -> wasmtime::Result<Config> {
    let mut config = Config::new();
    config.target(target)?;
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    config.wasm_features(unneeded_features(), false);
    Ok(config)
}
